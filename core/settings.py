"""One Settings object, read from NEXTLABEL_* environment variables.

The defaults run on a laptop with nothing installed: SQLite and local image storage in
./nextlabel-data, and a Celery broker kept in a SQLite file beside them.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET = "dev-secret-change-me"
REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEXTLABEL_", env_file=".env", extra="ignore")

    environment: Literal["development", "production", "test"] = "development"
    data_dir: Path = Path("nextlabel-data")
    database_url: str | None = None
    broker_url: str | None = None
    secret_key: str = DEFAULT_SECRET
    lease_seconds: int = 600
    # How long a process trusts a token it has checked: a rotated token or a deleted
    # annotator stops working everywhere within this many seconds. 0: check every request.
    token_cache_seconds: float = 5.0
    max_upload_bytes: int = 512 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_zip_members: int = 200_000
    max_zip_ratio: int = 200
    embedded_worker: bool | None = None
    # `serve --workers N` migrates once in the parent, then starts its workers with this off.
    migrate_on_start: bool = True
    log_format: Literal["auto", "json", "text"] = "auto"
    log_level: str = "INFO"
    # Webhook deliveries (core.webhooks): each attempt's time limit, attempts in all, and the
    # wait before the first retry, doubled after each failure up to the maximum.
    webhook_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0
    webhook_max_attempts: Annotated[int, Field(ge=1, le=100)] = 8
    webhook_backoff_seconds: Annotated[float, Field(ge=0)] = 30.0
    webhook_backoff_max_seconds: Annotated[float, Field(ge=0)] = 3600.0
    # Images one embedding task embeds: several workers share a large pool chunk by chunk.
    embedding_chunk_items: Annotated[int, Field(ge=1, le=100_000)] = 512

    @model_validator(mode="after")
    def _refuse_default_secret_in_production(self) -> Settings:
        if self.environment == "production" and self.secret_key == DEFAULT_SECRET:
            raise ValueError("NEXTLABEL_SECRET_KEY must be set to a real secret in production")
        return self

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'nextlabel.db').resolve()}"

    @cached_property
    def resolved_broker_url(self) -> str:
        if self.broker_url:
            return self.broker_url
        # Kombu's SQLAlchemy transport: a broker that needs no server (about 1 s latency).
        return f"sqla+sqlite:///{(self.data_dir / 'broker.db').resolve()}"

    @property
    def broker_is_embedded(self) -> bool:
        return self.resolved_broker_url.startswith("sqla+")

    @property
    def starts_embedded_worker(self) -> bool:
        """`serve` starts a worker beside the API when the broker needs no server."""
        if self.embedded_worker is not None:
            return self.embedded_worker
        return self.broker_is_embedded

    @property
    def image_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def model_dir(self) -> Path:
        """Each round's exported model and its card (core.storage.ModelStore)."""
        return self.data_dir / "models"

    @property
    def embedding_dir(self) -> Path:
        """Embeddings by (image content, backbone, preprocessing), shared by all projects."""
        return self.data_dir / "embeddings"

    @property
    def json_logs(self) -> bool:
        if self.log_format == "auto":
            return self.environment == "production"
        return self.log_format == "json"


def get_settings() -> Settings:
    return Settings()

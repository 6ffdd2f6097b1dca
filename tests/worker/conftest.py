"""Fixtures for the round, Celery and Compose tests: digits projects and databases.

Fixture names start with `wk_` so they never shadow the service tests' fixtures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from round_support import DigitsProject, fresh_pg_database, insert_digits_project, own_redis_db
from sqlalchemy.orm import Session

from core.migrate import upgrade_database
from core.settings import Settings
from core.storage import LocalImageStore
from worker.engine.images import ImageCache
from worker.engine.training import TrainConfig

if TYPE_CHECKING:
    from worker.round.run import WorkerContext


# The machine's two cores are shared; one thread keeps timings steady and the others alive.
torch.set_num_threads(1)


# --------------------------------------------------------------------------- SQLite


@pytest.fixture
def wk_settings(tmp_path: Path) -> Settings:
    data_dir = tmp_path / "data"
    return Settings(
        environment="test",
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / 'nextlabel.db'}",
        broker_url=f"sqla+sqlite:///{data_dir / 'broker.db'}",
    )


@dataclass
class Sent:
    """Round ids a context enqueued, in order (stands in for Celery in-process)."""

    ids: list[int] = field(default_factory=list)

    def __call__(self, round_id: int) -> None:
        self.ids.append(round_id)


@pytest.fixture
def wk_sent() -> Sent:
    return Sent()


@pytest.fixture
def wk_context(wk_settings: Settings, wk_sent: Sent) -> Iterator[WorkerContext]:
    # Imported here, not at the top: this conftest also serves the engine's tests, which
    # must collect even while worker.round (or a module it needs) is being written.
    from worker.round.run import WorkerContext

    wk_settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_database(wk_settings.resolved_database_url)
    context = WorkerContext.from_settings(wk_settings, enqueue=wk_sent)
    # A shorter schedule: these tests check what a round writes, not how well it trains.
    context.train_config = TrainConfig(min_steps=60, epoch_steps=20, max_epochs=30)
    context.images = ImageCache(
        wk_settings.cache_dir, max_pixels=wk_settings.max_image_pixels, threads=1
    )
    yield context
    context.session_factory.kw["bind"].dispose()


@pytest.fixture
def wk_session(wk_context: WorkerContext) -> Iterator[Session]:
    with wk_context.session_factory() as session:
        yield session


@pytest.fixture
def wk_store(wk_context: WorkerContext) -> LocalImageStore:
    assert isinstance(wk_context.store, LocalImageStore)
    return wk_context.store


@pytest.fixture
def wk_digits(wk_session: Session, wk_store: LocalImageStore) -> Callable[..., DigitsProject]:
    def make(**kwargs: object) -> DigitsProject:
        return insert_digits_project(wk_session, wk_store, **kwargs)  # type: ignore[arg-type]

    return make


# --------------------------------------------------------------------------- PostgreSQL, Redis


@pytest.fixture
def wk_pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards (skipped locally when unreachable)."""
    with fresh_pg_database() as url:
        yield url


@pytest.fixture
def wk_redis_url() -> Iterator[str]:
    """The machine's Redis on a database number of our own, flushed before and after."""
    with own_redis_db() as url:
        yield url

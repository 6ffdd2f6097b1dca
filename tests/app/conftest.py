"""API test helpers: an app on a fresh database, tokens, images, and a live server."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.services.annotators import create_annotator
from core.settings import Settings
from core.tables import Role

CLASSES = ["cat", "dog", "bird"]


def png_bytes(seed: int, size: int = 8, mode: str = "L") -> bytes:
    """A small PNG whose pixels depend on `seed`: distinct seeds, distinct sha256."""
    rng = np.random.default_rng(seed)
    shape = (size, size) if mode == "L" else (size, size, 3)
    pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Api:
    """A TestClient plus the tokens a test needs; `as_(token)` picks who is calling."""

    client: TestClient
    app: FastAPI
    admin_token: str
    tokens: dict[str, str] = field(default_factory=dict)

    def user(self, name: str, *, role: Role = Role.annotator, projects: Sequence[int] = ()) -> str:
        with self.app.state.session_factory() as session:
            _, token = create_annotator(session=session, name=name, role=role, project_ids=projects)
        self.tokens[name] = token
        return token

    def get(self, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, headers=bearer(token or self.admin_token), **kwargs)

    def post(self, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, headers=bearer(token or self.admin_token), **kwargs)

    def patch(self, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        return self.client.patch(path, headers=bearer(token or self.admin_token), **kwargs)

    def put(self, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        return self.client.put(path, headers=bearer(token or self.admin_token), **kwargs)

    def delete(self, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        return self.client.delete(path, headers=bearer(token or self.admin_token), **kwargs)

    def project(self, name: str = "animals", **fields: Any) -> dict[str, Any]:
        body = {"name": name, "classes": CLASSES, **fields}
        response = self.post("/api/v1/projects", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def upload(
        self, project_id: int, files: list[tuple[str, bytes]], token: str | None = None
    ) -> httpx.Response:
        multipart = [("files", (name, data, "application/octet-stream")) for name, data in files]
        return self.post(f"/api/v1/projects/{project_id}/items", token, files=multipart)

    def upload_images(self, project_id: int, count: int, *, first_seed: int = 0) -> list[int]:
        files = [
            (f"img{seed:03d}.png", png_bytes(seed))
            for seed in range(first_seed, first_seed + count)
        ]
        response = self.upload(project_id, files)
        assert response.status_code == 200, response.text
        created: list[int] = response.json()["created"]
        assert len(created) == count
        return created

    def next(self, project_id: int, token: str, n: int = 1) -> list[dict[str, Any]]:
        response = self.get(f"/api/v1/projects/{project_id}/next", token, params={"n": n})
        assert response.status_code == 200, response.text
        return list(response.json())

    def label(self, item_id: int, label: str, token: str) -> httpx.Response:
        return self.post(f"/api/v1/items/{item_id}/labels", token, json={"label": label})


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        environment="test",
        data_dir=tmp_path / "data",
        database_url=database_url,
        broker_url=None,
        lease_seconds=600,
        max_upload_bytes=8 * 1024 * 1024,
        embedded_worker=False,
        log_level="WARNING",
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def api(app: FastAPI) -> Iterator[Api]:
    with TestClient(app) as client:
        with app.state.session_factory() as session:
            _, token = create_annotator(session=session, name="root", role=Role.admin)
        yield Api(client=client, app=app, admin_token=token)


@contextlib.contextmanager
def open_api(settings: Settings) -> Iterator[Api]:
    """An app made from `settings`, running (lifespan on), with an admin token."""
    app = create_app(settings)
    with TestClient(app) as client:
        with app.state.session_factory() as session:
            _, token = create_annotator(session=session, name="root", role=Role.admin)
        yield Api(client=client, app=app, admin_token=token)


@pytest.fixture
def small_limit_api(settings: Settings) -> Iterator[Api]:
    """An app whose upload limit is 10 kB."""
    with open_api(settings.model_copy(update={"max_upload_bytes": 10_000})) as api:
        yield api


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """`app` behind a real uvicorn server on 127.0.0.1 (threads, sockets, the works): its URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def live_server(app: FastAPI) -> Iterator[str]:
    with serving(app) as url:
        yield url


@pytest.fixture
def png() -> Callable[..., bytes]:
    return png_bytes

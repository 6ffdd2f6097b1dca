"""The token cache: it saves a query per request, and a revoked token dies within its TTL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from app.main import create_app
from app.security import TokenOwner, make_token_cache
from app.services.annotators import create_annotator, rotate_token
from core.db import make_engine, ping_idle_connections
from core.settings import Settings
from core.tables import Annotator, Role
from tests.app.conftest import Api, bearer

OWNER = TokenOwner(id=1, name="ann", role=Role.annotator, created_at=datetime.now(UTC))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_cache_forgets_an_entry_after_its_ttl(clock: FakeClock) -> None:
    cache = make_token_cache(5.0, timer=clock)
    assert cache is not None
    cache["h"] = OWNER
    clock.now += 4.9
    assert cache.get("h") == OWNER
    clock.now += 0.2
    assert cache.get("h") is None


def test_cache_is_bounded_in_size() -> None:
    cache = make_token_cache(60.0, max_entries=3)
    assert cache is not None
    for key in "abcd":
        cache[key] = OWNER
    assert len([key for key in "abcd" if cache.get(key) is not None]) == 3
    assert cache.get("d") == OWNER


def test_ttl_zero_caches_nothing() -> None:
    assert make_token_cache(0.0) is None


def _rotate(api: Api, name: str) -> str:
    with api.app.state.session_factory() as session:
        annotator = session.scalar(select(Annotator).where(Annotator.name == name))
        assert annotator is not None
        return rotate_token(session=session, annotator=annotator)


def test_rotated_token_stops_working_once_the_cache_entry_expires(
    api: Api, clock: FakeClock
) -> None:
    ttl = api.app.state.settings.token_cache_seconds
    api.app.state.token_cache = make_token_cache(ttl, timer=clock)
    old = api.user("ann")
    assert api.get("/api/v1/me", old).json()["name"] == "ann"
    new = _rotate(api, "ann")  # as another process would: this app's cache is not told
    assert api.get("/api/v1/me", new).status_code == 200, "a new token works at once"
    assert api.get("/api/v1/me", old).status_code == 200, "within the TTL, by design"
    clock.now += ttl + 0.1
    assert api.get("/api/v1/me", old).status_code == 401
    assert api.get("/api/v1/me", new).json()["name"] == "ann"


def test_without_the_cache_a_rotated_token_fails_at_once(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"token_cache_seconds": 0.0}))
    with TestClient(app) as client:
        with app.state.session_factory() as session:
            annotator, old = create_annotator(session=session, name="ann", role=Role.annotator)
            assert client.get("/api/v1/me", headers=bearer(old)).status_code == 200
            rotate_token(session=session, annotator=annotator)
        assert client.get("/api/v1/me", headers=bearer(old)).status_code == 401


def test_a_dead_pooled_connection_is_replaced_after_idling(database_url: str) -> None:
    engine = make_engine(database_url, pool_pre_ping=False, pool_size=1, max_overflow=0)
    ping_idle_connections(engine, idle_seconds=0.0)
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
        dbapi_connection = connection.connection.dbapi_connection
    assert dbapi_connection is not None
    dbapi_connection.close()  # what a server restart does to a pooled connection
    with engine.connect() as connection:
        assert connection.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()

"""PostgreSQL's hot path (`next` and labelling): round trips, and a busy connection pool.

On a server that shares the machine with PostgreSQL, each round trip costs CPU on both
sides and labels/s falls with their number (bench/bench_api.py), so these counts are part
of the contract. A round trip is a statement, or a BEGIN, COMMIT or ROLLBACK the driver
sends; psycopg sends BEGIN before the first statement of a transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.pq import TransactionStatus
from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.services import ANNOTATOR_LOCKS
from tests.app.conftest import CLASSES, Api, bearer

pytestmark = pytest.mark.postgres


@pytest.fixture
def backend() -> str:
    return "postgresql"


@dataclass
class RoundTrips:
    sent: list[str] = field(default_factory=list)

    def take(self) -> list[str]:
        sent, self.sent = self.sent, []
        return sent


def _driver(connection: Any) -> psycopg.AsyncConnection[Any]:
    # The hot routes' engine is an asyncio one: SQLAlchemy adapts psycopg's AsyncConnection.
    driver: psycopg.AsyncConnection[Any] = connection.connection.driver_connection
    return driver


def _hot_engine(api: Api) -> AsyncEngine:
    factory: async_sessionmaker[AsyncSession] = api.app.state.hot_session_factory
    engine = factory.kw["bind"]
    assert isinstance(engine, AsyncEngine)
    return engine


@pytest.fixture
def round_trips(api: Api) -> Iterator[RoundTrips]:
    engine = _hot_engine(api).sync_engine
    trips = RoundTrips()

    def before_execute(connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        driver = _driver(connection)
        if not driver.autocommit and driver.info.transaction_status == TransactionStatus.IDLE:
            trips.sent.append("BEGIN")
        trips.sent.append(statement.split()[0].upper())

    def before_end(name: str) -> Any:
        def listener(connection: Any) -> None:
            if _driver(connection).info.transaction_status != TransactionStatus.IDLE:
                trips.sent.append(name)

        return listener

    listeners = [
        ("before_cursor_execute", before_execute),
        ("commit", before_end("COMMIT")),
        ("rollback", before_end("ROLLBACK")),
    ]
    for name, listener in listeners:
        event.listen(engine, name, listener)
    yield trips
    for name, listener in listeners:
        event.remove(engine, name, listener)


def test_next_and_label_round_trips(api: Api, round_trips: RoundTrips) -> None:
    project = api.project(retrain_every=1_000)
    token = api.user("ann", projects=[project["id"]])
    api.upload_images(project["id"], 5)
    api.next(project["id"], token)  # the first call also checks the token
    api.label(api.next(project["id"], token)[0]["item"]["id"], CLASSES[0], token)
    round_trips.take()

    [served] = api.next(project["id"], token)
    # BEGIN; project + the caller's lock; own leases; pool; lease; COMMIT.
    assert round_trips.take() == ["BEGIN", "SELECT", "SELECT", "SELECT", "INSERT", "COMMIT"]

    assert api.label(served["item"]["id"], CLASSES[1], token).status_code == 201
    # BEGIN; item under lock; lease + label + count in one; COMMIT; the retrain check,
    # autocommitted.
    assert round_trips.take() == ["BEGIN", "SELECT", "WITH", "COMMIT", "SELECT"]


def test_relabel_round_trips(api: Api, round_trips: RoundTrips) -> None:
    project = api.project(retrain_every=1_000)
    token = api.user("ann", projects=[project["id"]])
    api.upload_images(project["id"], 2)
    [served] = api.next(project["id"], token)
    item_id = served["item"]["id"]
    api.label(item_id, CLASSES[0], token)
    round_trips.take()

    relabelled = api.label(item_id, CLASSES[1], token)
    assert relabelled.json()["replaced_previous"] is True
    # The earlier label is retired first (one UPDATE), and the item's count stays.
    assert round_trips.take() == ["BEGIN", "SELECT", "UPDATE", "WITH", "COMMIT", "SELECT"]
    item = api.get(f"/api/v1/items/{item_id}", token).json()
    assert item["label_count"] == 1


def test_busy_pool_is_a_503_and_changes_nothing(api: Api, live_server: str) -> None:
    project = api.project()
    ann, bob = (api.user(name, projects=[project["id"]]) for name in ("ann", "bob"))
    api.upload_images(project["id"], 3)
    ann_id = api.get("/api/v1/me", ann).json()["id"]
    # One hot connection per process; ann's `next` will hold it, waiting for her lock.
    url = _hot_engine(api).url
    tiny = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=0.5)
    api.app.state.hot_session_factory = async_sessionmaker(tiny, expire_on_commit=False)
    next_url = f"{live_server}/api/v1/projects/{project['id']}/next"
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as blocker, ThreadPoolExecutor(1) as pool:
        blocker.execute("SELECT pg_advisory_lock(%s, %s)", (ANNOTATOR_LOCKS, ann_id))
        first = pool.submit(httpx.get, next_url, headers=bearer(ann), timeout=30)
        _wait_for_lock_waiter(blocker)
        busy = httpx.get(next_url, headers=bearer(bob), timeout=30)
        blocker.execute("SELECT pg_advisory_unlock(%s, %s)", (ANNOTATOR_LOCKS, ann_id))
        assert first.result().status_code == 200
    assert busy.status_code == 503
    assert busy.headers["Retry-After"] == "1"
    assert "busy" in busy.json()["detail"]
    # The refused request wrote nothing: bob holds no lease, ann holds the one she got.
    with psycopg.connect(dsn) as check:
        leases = check.execute("SELECT annotator_id FROM leases").fetchall()
    assert leases == [(ann_id,)]


def _wait_for_lock_waiter(connection: psycopg.Connection[Any]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        waiting = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'"
        ).fetchone()
        if waiting and waiting[0]:
            return
        time.sleep(0.02)
    raise AssertionError("the first request never waited for its lock")

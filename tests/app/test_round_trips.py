"""Round trips to PostgreSQL per request on the hot path: `next` and labelling.

On a server that shares the machine with PostgreSQL, each round trip costs CPU on both
sides and labels/s falls with their number (bench/bench_api.py), so these counts are part
of the contract. A round trip is a statement, or a BEGIN, COMMIT or ROLLBACK the driver
sends; psycopg sends BEGIN before the first statement of a transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus
from sqlalchemy import Engine, event

from tests.app.conftest import CLASSES, Api

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


def _driver(connection: Any) -> psycopg.Connection[Any]:
    driver: psycopg.Connection[Any] = connection.connection.dbapi_connection
    return driver


@pytest.fixture
def round_trips(api: Api) -> Iterator[RoundTrips]:
    engine: Engine = api.app.state.session_factory.kw["bind"]
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

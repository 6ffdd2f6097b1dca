"""The logic behind the routers: plain keyword-only functions over a Session.

Services raise the errors below instead of HTTP exceptions, so the CLI can call the same
functions; `app.main` maps each to its status code with the message as `detail`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session


class ServiceError(Exception):
    """Base class: the message is a sentence a person understands."""

    status_code = 400


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class Invalid(ServiceError):
    status_code = 422


class TooLarge(ServiceError):
    status_code = 413


def is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def read_outside_transaction(session: Session) -> None:
    """PostgreSQL: run the session's next statements in autocommit mode, until its next
    commit.

    For a lone read right after a commit: on PostgreSQL it then costs one round trip
    instead of three (BEGIN, the read, ROLLBACK). Call it when no transaction is open.
    SQLite has no round trips to save, and switching costs a PRAGMA each way: a no-op there.
    """
    if is_postgresql(session):
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


def dialect_insert(session: Session) -> Callable[..., Any]:
    """The dialect's INSERT construct, which has `on_conflict_do_*` on SQLite and PostgreSQL."""
    return pg_insert if is_postgresql(session) else sqlite_insert


# Namespace of PostgreSQL advisory locks taken per annotator (any constant; it only has to
# differ from other advisory locks, such as the migration lock in app.migrate).
ANNOTATOR_LOCKS = 7_215


def begin_write(session: Session, *, annotator_id: int | None = None) -> None:
    """Start a transaction that will write, so that what it reads first is still true when
    it writes.

    SQLite: BEGIN IMMEDIATE takes the write lock now (and this process's writer lock, see
    `app.engines.serialize_sqlite_writes`): everything is serialised. PostgreSQL: callers lock
    the rows they read (FOR UPDATE ... SKIP LOCKED); with `annotator_id`, a transaction-level
    advisory lock also serialises that annotator's own transactions, so two of their
    requests at once see each other's leases, as on SQLite.

    Must be the first statement after a commit or rollback.
    """
    if not is_postgresql(session):
        session.execute(text("BEGIN IMMEDIATE"))
    elif annotator_id is not None:
        session.execute(select(annotator_lock(bindparam("me"))), {"me": annotator_id})


def annotator_lock(annotator_id: ColumnElement[int]) -> ColumnElement[Any]:
    """PostgreSQL: `begin_write`'s per-annotator lock, as an expression a query can select."""
    return func.pg_advisory_xact_lock(ANNOTATOR_LOCKS, annotator_id)

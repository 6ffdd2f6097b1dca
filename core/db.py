"""Engine, session factory and the get_db dependency."""

from __future__ import annotations

import time
from typing import Any, cast

from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine tuned for the backend behind `url`."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )
        event.listen(engine, "connect", _tune_sqlite)
        return engine
    options: dict[str, Any] = {"pool_size": 20, "max_overflow": 20, "pool_pre_ping": True}
    return create_engine(url, **{**options, **kwargs})


def ping_idle_connections(engine: Engine, *, idle_seconds: float) -> None:
    """Check a pooled connection before use only if it sat idle for `idle_seconds`.

    `pool_pre_ping` costs a round trip on every checkout, several per request on a busy
    API. A connection that went back to the pool moments ago is as good as a ping says;
    one idle longer (the server may have restarted, a proxy may have dropped it) is pinged,
    and replaced if dead. A connection that dies while in use still fails that request,
    as with pre-ping, and SQLAlchemy then drops the rest of the pool.
    """

    def remember_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKED_IN] = time.monotonic()

    def ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get(_CHECKED_IN, 0.0) < idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool discards this connection and checks out another.
            raise DisconnectionError(f"stale pooled connection: {exc}") from exc

    event.listen(engine.pool, "checkin", remember_checkin)
    event.listen(engine.pool, "checkout", ping_if_idle)


_CHECKED_IN = "nextlabel_checked_in"


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the worker write a round while the API keeps serving reads.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def table_of(model: type[Any]) -> Table:
    """A model's Table, for Core statements on hot paths (no ORM bookkeeping)."""
    return cast(Table, model.__table__)

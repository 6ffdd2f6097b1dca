"""The API's database engines: a pooled sync engine, and an asyncio one on PostgreSQL.

On SQLite the sync engine also gets a larger page cache and writes serialised within the
process (`serialize_sqlite_writes`), so request threads queue for SQLite's one writer
instead of sleeping in its busy handler. `app.main.create_app` makes both engines here.
"""

from __future__ import annotations

import fcntl
import os
import threading
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.deps import HOT_CONNECTIONS
from core.db import make_engine, ping_idle_connections

# Threads serving sync endpoints; below app.db's PostgreSQL pool of 20 (+20 overflow).
REQUEST_THREADS = 16
# Pooled PostgreSQL connections idle longer than this are pinged before use.
IDLE_PING_SECONDS = 5.0
# A hot request waits this long for one of the hot engine's connections, then fails (503).
HOT_POOL_TIMEOUT_SECONDS = 30.0


def make_api_engine(url: str) -> Engine:
    """The engine sync endpoints use: pooled per request thread; on SQLite, tuned as above."""
    engine = _pooled_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _more_sqlite_cache)
        serialize_sqlite_writes(engine)
    return engine


def _pooled_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # One pooled connection per request thread (SQLite connections are cheap to keep,
        # costly to open: WAL and cache pragmas run on each).
        return make_engine(url, pool_size=REQUEST_THREADS, max_overflow=REQUEST_THREADS)
    engine = make_engine(url, pool_pre_ping=False)
    ping_idle_connections(engine, idle_seconds=IDLE_PING_SECONDS)
    return engine


def make_hot_engine(url: str) -> AsyncEngine | None:
    """PostgreSQL: an asyncio engine for the hottest routes (`next`, labelling).

    They run their sync service code through `AsyncSession.run_sync`, in a greenlet on the
    event loop: each database wait yields to other requests, and no request hops to a
    thread (see `app.deps.HOT_CONNECTIONS`). SQLite keeps threads: its driver has no
    asyncio interface, and it waits on no network.
    """
    if url.startswith("sqlite"):
        return None
    hot_engine = create_async_engine(
        url, pool_size=HOT_CONNECTIONS, max_overflow=0, pool_timeout=HOT_POOL_TIMEOUT_SECONDS
    )
    ping_idle_connections(hot_engine.sync_engine, idle_seconds=IDLE_PING_SECONDS)
    return hot_engine


def _more_sqlite_cache(dbapi_connection: Any, _record: Any) -> None:
    # SQLite's default page cache is 2 MB per connection; a larger one plus a memory-mapped
    # file keep a large project's index pages in memory across requests instead of
    # re-reading them with read() calls. (Connection-level settings, nothing is stored.)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA cache_size=-32000")
    cursor.execute("PRAGMA mmap_size=1073741824")
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()


def serialize_sqlite_writes(engine: Engine) -> None:
    """Let one thread of this process write to SQLite at a time, queueing the others.

    SQLite allows one writer; a second connection that wants to write gets SQLITE_BUSY and
    its busy handler sleeps and retries (1 ms, 2 ms, ... up to 100 ms a nap), which turns
    a few contended writes into tail latencies of hundreds of milliseconds. A lock taken
    before a transaction's first write and released when its connection goes back to the
    pool (after the commit or rollback) makes request threads wait their turn instead,
    without sleeping. API processes started together (`serve --workers N`) queue the same
    way on an exclusive lock of a file beside the database, taken while holding the thread
    lock. Other processes (the worker, the CLI) still meet the busy handler, rarely.
    """
    lock = threading.Lock()
    lock_file = _write_lock_file(engine)

    def before_execute(conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        if conn.info.get(_WRITE_LOCK) or statement.lstrip()[:6].upper() not in _WRITES:
            return
        lock.acquire()
        if lock_file is not None:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
            except BaseException:
                lock.release()
                raise
        conn.info[_WRITE_LOCK] = True

    def checkin(_dbapi_connection: Any, record: Any) -> None:
        # After the commit or rollback has really happened: a Session hands its connection
        # back when its transaction ends (the engine's "commit" event fires too early).
        if record.info.pop(_WRITE_LOCK, False):
            try:
                if lock_file is not None:
                    fcntl.flock(lock_file, fcntl.LOCK_UN)
            finally:
                lock.release()

    event.listen(engine, "before_cursor_execute", before_execute)
    event.listen(engine.pool, "checkin", checkin)


def _write_lock_file(engine: Engine) -> int | None:
    """A descriptor of `<database>.write.lock`, shared by this process's threads."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database).with_suffix(".write.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    weakref.finalize(engine, os.close, descriptor)
    return descriptor


_WRITE_LOCK = "nextlabel_write_lock"
# First six characters of statements that write (or start a write: BEGIN IMMEDIATE).
_WRITES = frozenset({"INSERT", "UPDATE", "DELETE", "REPLAC", "BEGIN "})

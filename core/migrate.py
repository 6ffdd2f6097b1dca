"""Run Alembic migrations from code, safely when several processes start at once.

`create_app` and `nextlabel migrate` both call `upgrade_database`. Two API processes starting
together must not both try to create the tables, so the upgrade runs under a lock: a
PostgreSQL advisory lock, or an exclusive file lock beside a SQLite database.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

from core.db import make_engine
from core.settings import REPO_ROOT

logger = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every nextlabel process.
_ADVISORY_LOCK_KEY = 7_215_301_866


def alembic_config(url: str) -> Config:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    config.set_main_option("path_separator", "os")
    config.attributes["database_url"] = url
    return config


def upgrade_database(url: str) -> None:
    """Bring the database at `url` to the latest schema; a no-op when it is current."""
    if make_url(url).get_backend_name() == "sqlite":
        with _sqlite_file_lock(url):
            _upgrade(url)
    else:
        _upgrade(url, advisory_lock=True)


def _upgrade(url: str, *, advisory_lock: bool = False) -> None:
    config = alembic_config(url)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            if advisory_lock:
                _pg_lock(connection)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            connection.commit()
    finally:
        engine.dispose()
    logger.info("database schema is current", extra={"database": _safe(url)})


def _pg_lock(connection: Connection) -> None:
    # Session-level lock: released when the connection closes, even if the upgrade fails.
    connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
    connection.commit()


@contextlib.contextmanager
def _sqlite_file_lock(url: str) -> Iterator[None]:
    database = make_url(url).database
    if not database or database == ":memory:":
        yield
        return
    lock_path = Path(database).with_suffix(".migrate.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _safe(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)

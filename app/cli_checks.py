"""What the CLI checks before it touches anything: which data directory and database a
command uses, that a command meant for an existing database finds one, and that the port
`serve` and `demo` would listen on is free.

Run from the wrong folder, a command used to create an empty database there and answer "No
project"; started on a port in use, `demo` printed fresh tokens for a server that then died.
These checks turn both into one clear error before anything is created or printed.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.engine import URL, make_url

from core.db import make_engine
from core.settings import Settings

# Alembic's table: present in every database `migrate`, `serve` or `demo` has set up.
SCHEMA_MARKER = "alembic_version"
POINT_AT_IT = (
    "Run the command from the folder that holds it, or point at it with --data-dir PATH "
    "(or NEXTLABEL_DATA_DIR=PATH, or NEXTLABEL_DATABASE_URL for a database server); "
    "`nextlabel serve`, `nextlabel demo` or `nextlabel migrate` set up a new one."
)


class Refused(Exception):
    """The command must not go on; the message says why and what to do instead."""


def describe(settings: Settings) -> str:
    """One line naming the data directory and the database (its password hidden)."""
    database = make_url(settings.resolved_database_url).render_as_string(hide_password=True)
    return f"data directory {settings.data_dir.resolve()} · database {database}"


def require_database(settings: Settings) -> None:
    """Refuse unless the database exists and nextlabel has set it up.

    Checked before connecting: opening a SQLite URL creates the file.
    """
    url = make_url(settings.resolved_database_url)
    where = f"in {settings.data_dir.resolve()}"
    sqlite_file = _sqlite_file(url)
    if sqlite_file is not None and not sqlite_file.is_file():
        raise Refused(f"No nextlabel database {where} (no {sqlite_file}). {POINT_AT_IT}")
    if not _has_schema(url):
        shown = url.render_as_string(hide_password=True)
        raise Refused(f"The database {shown} has no nextlabel tables. {POINT_AT_IT}")


def require_free_port(host: str, port: int) -> None:
    """Refuse if nothing could listen on host:port, as uvicorn will try to (SO_REUSEADDR:
    a port left in TIME_WAIT by a stopped server is free; one a server listens on is not)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise Refused(
                    f"Port {port} on {host} is already in use: another nextlabel (or another "
                    f"program) is listening there. If it is nextlabel, open "
                    f"http://{host}:{port}/ with its tokens; otherwise choose another port "
                    "with --port."
                ) from None
            raise Refused(f"Cannot listen on {host}:{port}: {error.strerror}.") from None


def _sqlite_file(url: URL) -> Path | None:
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database or "")


def _has_schema(url: URL) -> bool:
    engine = make_engine(url.render_as_string(hide_password=False))
    try:
        return inspect(engine).has_table(SCHEMA_MARKER)
    finally:
        engine.dispose()

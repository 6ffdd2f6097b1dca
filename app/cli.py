"""The `nextlabel` command: serve, demo, worker, migrate, import, export, create-user, simulate."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TextIO, TypeVar

import numpy as np
import typer
import uvicorn
from tqdm import tqdm

from app.demo import ensure_demo, tokens_path
from app.main import create_app
from app.schemas import ExportFormat, SkippedFile
from app.services import ServiceError
from app.services.annotators import create_annotator
from app.services.export import export_rows, render
from app.services.imports import (
    Candidate,
    ImportTotals,
    ZipLimits,
    batched_candidates,
    import_batch,
    iter_arrays,
    iter_folder,
    iter_zip,
    open_zip,
)
from app.services.projects import find_project
from core.db import make_engine, make_session_factory
from core.logs import configure_logging
from core.migrate import upgrade_database
from core.settings import REPO_ROOT, Settings, get_settings
from core.storage import LocalImageStore
from core.tables import Role, Split

T = TypeVar("T")

cli = typer.Typer(
    name="nextlabel",
    help="Label images with Bayesian active learning: a model picks the image that teaches "
    "it most. Settings come from NEXTLABEL_* environment variables.",
    no_args_is_help=True,
    add_completion=False,
)

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
def serve(host: Host = "127.0.0.1", port: Port = 8000, workers: Workers = 1) -> None:
    """Run the API and web UI (plus a worker when the broker is the embedded one)."""
    settings = _settings()
    _run(settings, host=host, port=port, workers=workers)


@cli.command()
def demo(host: Host = "127.0.0.1", port: Port = 8000) -> None:
    """Like serve, with a ready demo project of 5,000 handwritten digits."""
    settings = _settings()
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
def worker() -> None:
    """Run the round worker (Celery, queue 'gpu', one task at a time)."""
    configure_logging(_settings())
    os.execvpe(sys.executable, [sys.executable, *WORKER_COMMAND], _worker_env())


@cli.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    settings = _settings()
    upgrade_database(settings.resolved_database_url)
    typer.echo("database schema is current", err=True)


@cli.command("import")
def import_(
    project: Annotated[str, typer.Argument(help="Project id or name.")],
    path: Annotated[Path, typer.Argument(exists=True, help="A folder, a .zip or a .npz.")],
    split: Annotated[Split, typer.Option(help="Where the images go.")] = Split.pool,
) -> None:
    """Import many images: a folder, a zip (labels.csv → validation) or an .npz (x, y)."""
    settings = _settings()
    upgrade_database(settings.resolved_database_url)
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    store = LocalImageStore(settings.image_dir)
    with factory() as session:
        target = _or_exit(lambda: find_project(session=session, ref=project))
        candidates, total = _candidates(
            path, split=split, settings=settings, classes=target.classes
        )
        totals = ImportTotals()
        with tqdm(total=total, unit="img", desc=f"import → {target.name}") as bar:
            for batch, skipped in batched_candidates(candidates):
                totals.skipped.extend(skipped)
                totals.add(
                    import_batch(
                        session=session,
                        store=store,
                        project=target,
                        batch=batch,
                        max_pixels=settings.max_image_pixels,
                    )
                )
                bar.update(len(batch) + len(skipped))
    _print_summary(totals)


@cli.command()
def export(
    project: Annotated[str, typer.Argument(help="Project id or name.")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="csv, json or jsonl.")] = "csv",
    out: Annotated[Path | None, typer.Option(help="File to write (default: stdout).")] = None,
) -> None:
    """Write the project's current labels."""
    settings = _settings()
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    with factory() as session:
        target = _or_exit(lambda: find_project(session=session, ref=project))
    chunks = render(export_rows(session_factory=factory, project_id=target.id), fmt=fmt)
    with _output(out) as stream:
        for chunk in chunks:
            stream.write(chunk)


@cli.command("create-user")
def create_user(
    name: Annotated[str, typer.Argument(help="A unique name.")],
    role: Annotated[Role, typer.Option(help="admin or annotator.")] = Role.annotator,
    project: Annotated[
        list[int] | None, typer.Option("--project", help="Project id to join (repeatable).")
    ] = None,
) -> None:
    """Create a user and print their API token (shown only this once)."""
    settings = _settings()
    upgrade_database(settings.resolved_database_url)
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    with factory() as session:
        _, token = _or_exit(
            lambda: create_annotator(
                session=session, name=name, role=role, project_ids=project or []
            )
        )
    typer.echo(f"created {role.value} {name!r}; their token (shown once):", err=True)
    typer.echo(token)


# Simulated annotators drive a running service over HTTP only (see docs/results.md). The
# simulator is a package of its own (simulate/) with dependencies the API does without
# (httpx, matplotlib, scipy, ...): this command imports it only when it runs and hands it
# every argument, --help included, so its options and help are simulate.cli's own.
SIMULATE_EXTRA = "pip install 'nextlabel[sim]'"


@cli.command(
    "simulate",
    add_help_option=False,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
def simulate_command(ctx: typer.Context) -> None:
    """Label a dataset with simulated annotators through the REST API; write CSV and plot."""
    try:
        # Imported on use, not to dodge a cycle: the simulator is an optional install.
        from simulate.cli import main as simulate_main
    except ModuleNotFoundError as error:
        typer.echo(
            f"nextlabel simulate needs the simulator and its dependencies ({error}); "
            f"install them with: {SIMULATE_EXTRA}",
            err=True,
        )
        raise typer.Exit(1) from error
    simulate_main(ctx.args, prog_name=ctx.command_path)


def main() -> None:
    cli()


# --- helpers ------------------------------------------------------------------------------


def _settings() -> Settings:
    settings = get_settings()
    configure_logging(settings)
    return settings


def _or_exit(action: Callable[[], T]) -> T:
    try:
        return action()
    except ServiceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None


def _run(
    settings: Settings, *, host: str, port: int, app: object | None = None, workers: int = 1
) -> None:
    target: object
    if workers > 1:
        # Uvicorn's worker processes each build the app from the factory (an import
        # string): migrate once here, so they need not queue on the migration lock.
        upgrade_database(settings.resolved_database_url)
        os.environ["NEXTLABEL_MIGRATE_ON_START"] = "false"
        target = "app.main:create_app"
    else:
        target = app or create_app(settings)
    worker_process = _start_worker() if settings.starts_embedded_worker else None
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


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    # `python -m worker.main` must find this checkout.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def _start_worker() -> subprocess.Popen[bytes]:
    typer.echo("starting the embedded round worker", err=True)
    return subprocess.Popen([sys.executable, *WORKER_COMMAND], env=_worker_env())


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _candidates(
    path: Path, *, split: Split, settings: Settings, classes: list[str]
) -> tuple[Iterator[Candidate | SkippedFile], int]:
    if path.is_dir():
        return iter_folder(path, split=split), sum(1 for p in path.rglob("*") if p.is_file())
    if path.suffix.lower() == ".zip":
        limits = ZipLimits(
            max_members=settings.max_zip_members,
            max_ratio=settings.max_zip_ratio,
            max_total_bytes=None,
        )
        archive: zipfile.ZipFile = _or_exit(
            lambda: open_zip(path.open("rb"), size=path.stat().st_size, limits=limits)
        )
        return iter_zip(archive, split=split), len(archive.infolist())
    if path.suffix.lower() == ".npz":
        return _npz_candidates(path, split=split, classes=classes)
    typer.echo(f"error: {path} is not a folder, .zip or .npz", err=True)
    raise typer.Exit(code=2)


def _npz_candidates(
    path: Path, *, split: Split, classes: list[str]
) -> tuple[Iterator[Candidate | SkippedFile], int]:
    arrays = np.load(path, allow_pickle=False)
    images = arrays["x"]
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        typer.echo("error: x must be uint8 images shaped [N, H, W] or [N, H, W, C]", err=True)
        raise typer.Exit(code=2)
    labels = arrays.get("y")
    names = next((arrays[k] for k in ("classes", "class_names") if k in arrays), None)
    class_names = [str(n) for n in names] if names is not None else classes
    candidates = iter_arrays(
        images=images, labels=labels, class_names=class_names, stem=path.stem, split=split
    )
    return candidates, int(images.shape[0])


def _print_summary(totals: ImportTotals) -> None:
    typer.echo(f"created {len(totals.created)} items, skipped {len(totals.skipped)}", err=True)
    reasons = collections.Counter(skip.reason for skip in totals.skipped)
    for reason, count in reasons.most_common(10):
        typer.echo(f"  {count:6d} × {reason}", err=True)


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    with path.open("w", encoding="utf-8", newline="") as handle:
        yield handle


if __name__ == "__main__":
    main()

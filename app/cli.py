"""The `nextlabel` command: serve, demo, worker, migrate, import, export, create-user,
project create, simulate."""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import signal
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, BinaryIO, TextIO, TypeVar

import numpy as np
import typer
import uvicorn
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker
from tqdm import tqdm

from app.cli_checks import Refused, describe, require_database, require_free_port
from app.demo import ensure_demo, tokens_path
from app.main import create_app
from app.schemas import ImportReport, ProjectCreate, ProjectSettings
from app.services import ServiceError
from app.services.annotators import create_annotator
from app.services.export import (
    ExportKind,
    PredictionsAs,
    export_rows,
    imagefolder_zip,
    labelled_pages,
    prediction_pages,
    predictions_summary,
    render,
    render_predictions,
)
from app.services.imports import (
    ImportRefused,
    Listing,
    ZipLimits,
    arrays_listing,
    folder_listing,
    open_zip,
    plan_import,
    write_import,
    zip_listing,
)
from app.services.manifests import LabelUse, parse_manifest
from app.services.projects import create_project, find_project
from core.catalog import STRATEGIES
from core.db import make_engine, make_session_factory
from core.logs import configure_logging
from core.migrate import upgrade_database
from core.settings import REPO_ROOT, Settings, get_settings
from core.storage import LocalImageStore
from core.tables import Project, Role, Split

T = TypeVar("T")

cli = typer.Typer(
    name="nextlabel",
    help="Label images with Bayesian active learning: a model picks the image that teaches "
    "it most. Settings come from NEXTLABEL_* environment variables.",
    no_args_is_help=True,
    add_completion=False,
    # Click's own help layout: typer's rich one prints a type beside every option, `<bool>`
    # beside flags such as --help that take no value.
    rich_markup_mode=None,
)

# The worker is a process of its own (it imports torch; the API never imports worker/):
# worker.main runs Celery with the one worker command line, core.broker.worker_argv.
WORKER_COMMAND = ["-m", "worker.main"]

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        file_okay=False,
        help="Folder holding the database and images (default: NEXTLABEL_DATA_DIR, else "
        "./nextlabel-data).",
    ),
]
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
    _refuse_on(lambda: require_free_port(host, port))
    settings = _settings(data_dir)
    _run(settings, host=host, port=port, workers=workers)


@cli.command()
def demo(host: Host = "127.0.0.1", port: Port = 8000, data_dir: DataDir = None) -> None:
    """Like serve, with a ready demo project of 5,000 handwritten digits."""
    _refuse_on(lambda: require_free_port(host, port))
    settings = _settings(data_dir)
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
    settings = _settings(data_dir)
    os.execvpe(sys.executable, [sys.executable, *WORKER_COMMAND], _worker_env(settings))


@cli.command()
def migrate(data_dir: DataDir = None) -> None:
    """Bring the database schema up to date (creating the database if there is none)."""
    settings = _settings(data_dir)
    upgrade_database(settings.resolved_database_url)
    typer.echo("database schema is current", err=True)


@cli.command("import")
def import_(
    project: Annotated[str, typer.Argument(help="Project id or name.")],
    path: Annotated[Path, typer.Argument(exists=True, help="A folder, a .zip or a .npz.")],
    split: Annotated[Split, typer.Option(help="Where images without a label go.")] = Split.pool,
    labels_as: Annotated[
        LabelUse | None,
        typer.Option(
            "--labels-as",
            help="What labels without a split of their own become (default: labels.csv → "
            "validation, class folders and other manifests → training).",
        ),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="A CSV or JSONL manifest (filename,label[,split]), names relative to PATH.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check everything and say what would happen.")
    ] = False,
    skip_problems: Annotated[
        bool,
        typer.Option("--skip-problems", help="Import what has no problem, skip the rest."),
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Import images and their labels: a folder or zip (class folders, labels.csv or a
    manifest) or an .npz (x, y). Nothing is written while a label would be lost."""
    settings = _settings(data_dir, existing=True)
    upgrade_database(settings.resolved_database_url)
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    store = LocalImageStore(settings.image_dir)
    with factory() as session:
        target = _or_exit(lambda: find_project(session=session, ref=project))
        if path.suffix.lower() == ".npz" and labels_as is None and split == Split.validation:
            labels_as = LabelUse.validation  # an .npz's y always labelled validation items
        listing = _listing(
            path, split=split, labels_as=labels_as, settings=settings, classes=target.classes
        )
        if manifest is not None:
            listing.manifests.append(parse_manifest(manifest.read_bytes(), name=manifest.name))
        # Counts images only: manifests are not files to import.
        with tqdm(total=len(listing.entries), unit="img", desc="check") as bar:
            plan = plan_import(
                session=session,
                project=target,
                listing=listing,
                labels_as=labels_as,
                max_pixels=settings.max_image_pixels,
                progress=bar.update,
            )
        if dry_run:
            _print_report(plan.report(dry_run=True))
            return
        with tqdm(total=len(plan.files), unit="img", desc=f"import → {target.name}") as bar:
            try:
                report = write_import(
                    session=session,
                    store=store,
                    project=target,
                    plan=plan,
                    unlabelled_split=split,
                    skip_problems=skip_problems,
                    progress=bar.update,
                )
            except ImportRefused as refused:
                _print_report(refused.report)
                typer.echo(f"error: {refused}", err=True)
                raise typer.Exit(code=1) from None
    _print_report(report)


project_cli = typer.Typer(help="Create projects.", no_args_is_help=True)
cli.add_typer(project_cli, name="project")


@project_cli.command("create")
def project_create(
    name: Annotated[str, typer.Argument(help="A unique name.")],
    classes: Annotated[str, typer.Option(help="Class names, comma-separated: cat,dog,bird.")],
    strategy: Annotated[
        str, typer.Option(help=f"Acquisition strategy: {', '.join(STRATEGIES)}.")
    ] = "batchbald",
    retrain_every: Annotated[int, typer.Option(help="New labels per round.")] = 10,
    query_size: Annotated[int, typer.Option(help="Items a round picks at once.")] = 10,
    image_size: Annotated[int, typer.Option(help="Side images are resized to.")] = 28,
    image_channels: Annotated[int, typer.Option(help="1: greyscale, 3: RGB.")] = 1,
    network: Annotated[str, typer.Option(help="auto, mnist_cnn or resnet18.")] = "auto",
    data_dir: DataDir = None,
) -> None:
    """Create a project and print its id (its settings go to stderr)."""
    fields = {
        "name": name,
        "classes": [c.strip() for c in classes.split(",") if c.strip()],
        "strategy": strategy,
        "retrain_every": retrain_every,
        "query_size": query_size,
        "image_size": image_size,
        "image_channels": image_channels,
        "network": network,
    }
    try:
        data = ProjectCreate.model_validate(fields)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            where = ".".join(str(part) for part in error["loc"])
            typer.echo(f"error: {where}: {error['msg']}", err=True)
        raise typer.Exit(code=2) from None
    settings = _settings(data_dir, existing=True)
    upgrade_database(settings.resolved_database_url)
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    with factory() as session:
        created = _or_exit(lambda: create_project(session=session, data=data))
        typer.echo(f"created project {created.id} {created.name!r}", err=True)
        for key in ("classes", *ProjectSettings.model_fields):
            typer.echo(f"  {key}: {getattr(created, key, None)}", err=True)
        typer.echo(created.id)


@cli.command()
def export(
    project: Annotated[str, typer.Argument(help="Project id or name.")],
    fmt: Annotated[
        ExportKind,
        typer.Option(
            "--format",
            help="csv, json or jsonl (the labels), imagefolder (a zip of the labelled images) "
            "or predictions (the latest round's, for every pool item).",
        ),
    ] = "csv",
    as_: Annotated[
        PredictionsAs | None,
        typer.Option("--as", help="How predictions are written: csv (default) or jsonl."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="File to write (default: stdout).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Write the project's current labels, an ImageFolder zip of them, or its predictions."""
    if as_ is not None and fmt != "predictions":
        typer.echo("error: --as is for --format predictions only", err=True)
        raise typer.Exit(code=2)
    if fmt == "imagefolder" and out is None and sys.stdout.isatty():
        typer.echo("error: a zip is not for a terminal: give --out FILE", err=True)
        raise typer.Exit(code=2)
    settings = _settings(data_dir, existing=True)
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    with factory() as session:
        target = _or_exit(lambda: find_project(session=session, ref=project))
    if fmt == "imagefolder":
        pages = labelled_pages(session_factory=factory, project_id=target.id)
        store = LocalImageStore(settings.image_dir)
        with _output_bytes(out) as binary:
            for data in imagefolder_zip(pages=pages, store=store, classes=target.classes):
                binary.write(data)
        return
    if fmt == "predictions":
        chunks = _predictions(factory, target, as_=as_ or "csv")
    else:
        chunks = render(export_rows(session_factory=factory, project_id=target.id), fmt=fmt)
    with _output(out) as stream:
        for chunk in chunks:
            stream.write(chunk)


def _predictions(
    factory: sessionmaker[Session], project: Project, *, as_: PredictionsAs
) -> Iterator[str]:
    """The latest round's predictions, after saying on stderr which round and what it lacks."""
    with factory() as session:
        summary = _or_exit(lambda: predictions_summary(session=session, project_id=project.id))
    typer.echo(
        f"round {summary.round_id}: {summary.pool_items} pool items, "
        f"{summary.without_prediction} without a prediction",
        err=True,
    )
    pages = prediction_pages(
        session_factory=factory, project_id=project.id, round_id=summary.round_id
    )
    return render_predictions(pages, classes=project.classes, as_=as_)


@contextlib.contextmanager
def _output_bytes(path: Path | None) -> Iterator[BinaryIO]:
    if path is None:
        yield sys.stdout.buffer
        return
    with path.open("wb") as handle:
        yield handle


@cli.command("create-user")
def create_user(
    name: Annotated[str, typer.Argument(help="A unique name.")],
    role: Annotated[Role, typer.Option(help="admin or annotator.")] = Role.annotator,
    project: Annotated[
        list[int] | None, typer.Option("--project", help="Project id to join (repeatable).")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Create a user and print their API token (shown only this once)."""
    settings = _settings(data_dir, existing=True)
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


def _settings(data_dir: Path | None, *, existing: bool = False) -> Settings:
    """The settings, with --data-dir over NEXTLABEL_DATA_DIR; says on stderr which data
    directory and database the command uses. `existing`: refuse to set up a new database
    (the command reads or changes one that should be there)."""
    settings = get_settings() if data_dir is None else Settings(data_dir=data_dir)
    configure_logging(settings)
    typer.echo(f"nextlabel: {describe(settings)}", err=True)
    if existing:
        _refuse_on(lambda: require_database(settings))
    return settings


def _refuse_on(check: Callable[[], None]) -> None:
    try:
        check()
    except Refused as refused:
        typer.echo(f"error: {refused}", err=True)
        raise typer.Exit(code=1) from None


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


def _listing(
    path: Path,
    *,
    split: Split,
    labels_as: LabelUse | None,
    settings: Settings,
    classes: list[str],
) -> Listing:
    if path.is_dir():
        return folder_listing(path)
    if path.suffix.lower() == ".zip":
        limits = ZipLimits(
            max_members=settings.max_zip_members,
            max_ratio=settings.max_zip_ratio,
            max_total_bytes=None,
        )
        archive: zipfile.ZipFile = _or_exit(
            lambda: open_zip(path.open("rb"), size=path.stat().st_size, limits=limits)
        )
        return zip_listing(archive)
    if path.suffix.lower() == ".npz":
        return _npz_listing(path, split=split, labels_as=labels_as, classes=classes)
    typer.echo(f"error: {path} is not a folder, .zip or .npz", err=True)
    raise typer.Exit(code=2)


def _npz_listing(
    path: Path, *, split: Split, labels_as: LabelUse | None, classes: list[str]
) -> Listing:
    """x's images; y's labels as --labels-as says, else (as always) only with
    --split validation."""
    arrays = np.load(path, allow_pickle=False)
    images = arrays["x"]
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        typer.echo("error: x must be uint8 images shaped [N, H, W] or [N, H, W, C]", err=True)
        raise typer.Exit(code=2)
    labels = arrays.get("y")
    if labels is not None and labels_as is None and split != Split.validation:
        typer.echo("note: y is ignored; --labels-as training imports it as labels", err=True)
        labels = None
    names = next((arrays[k] for k in ("classes", "class_names") if k in arrays), None)
    class_names = [str(n) for n in names] if names is not None else classes
    return arrays_listing(images=images, labels=labels, class_names=class_names, stem=path.stem)


def _print_report(report: ImportReport) -> None:
    """What the import found and did (or, on a dry run, would do), on stderr."""
    echo = functools.partial(typer.echo, err=True)
    verb = "would import" if report.dry_run else "imported"
    echo(f"{report.images} images: {report.new_items} new, {report.unchanged} unchanged")
    for use, counts in (("training", report.training), ("validation", report.validation)):
        if counts:
            listed = ", ".join(f"{label} {count}" for label, count in counts.items())
            echo(f"  {verb} {sum(counts.values())} {use} labels: {listed}")
    if report.unlabelled:
        echo(f"  {verb} {report.unlabelled} without a label")
    if not report.dry_run:
        echo(f"created {len(report.created)} items, skipped {len(report.skipped)}")
    elif report.skipped:
        echo(f"would skip {len(report.skipped)}")
    for reason, count in collections.Counter(s.reason for s in report.skipped).most_common(10):
        echo(f"  {count:6d} × {reason}")
    if report.problems:
        echo(f"{len(report.problems)} problems:")
        for problem in report.problems:
            echo(f"  {problem.name}: {problem.reason}")
    for note in report.notes:
        echo(f"note: {note}")
    if report.round_queued is not None:
        echo(f"round {report.round_queued} queued: the labels made it due")


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    with path.open("w", encoding="utf-8", newline="") as handle:
        yield handle


if __name__ == "__main__":
    main()

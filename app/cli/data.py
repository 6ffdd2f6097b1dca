"""The commands that create or read a project's records: project create, create-user and
export (labels, an ImageFolder zip, predictions or the latest model, to a file or stdout)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, BinaryIO, TextIO

import typer
from pydantic import ValidationError

from app.cli.base import DataDir, cli, or_exit, settings_for
from app.schemas import ProjectCreate, ProjectSettings
from app.services.annotators import create_annotator
from app.services.export import (
    ExportKind,
    PredictionsAs,
    open_export,
)
from app.services.projects import create_project, find_project
from core.catalog import STRATEGIES
from core.db import make_engine, make_session_factory
from core.migrate import upgrade_database
from core.storage import LocalImageStore, ModelStore
from core.tables import Role

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
    settings = settings_for(data_dir, existing=True)
    upgrade_database(settings.resolved_database_url)
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    with factory() as session:
        created = or_exit(lambda: create_project(session=session, data=data))
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
            help="csv, json or jsonl (the labels), imagefolder (a zip of the labelled images), "
            "predictions (the latest round's, for every pool item) or model (a zip of the "
            "latest round's TorchScript model and its model card).",
        ),
    ] = "csv",
    as_: Annotated[
        PredictionsAs | None,
        typer.Option("--as", help="How predictions are written: csv (default) or jsonl."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="File to write (default: stdout).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Write the project's current labels, an ImageFolder zip of them, its predictions or its
    latest trained model."""
    if as_ is not None and fmt != "predictions":
        typer.echo("error: --as is for --format predictions only", err=True)
        raise typer.Exit(code=2)
    zipped = fmt in ("imagefolder", "model")
    if zipped and out is None and sys.stdout.isatty():
        typer.echo("error: a zip is not for a terminal: give --out FILE", err=True)
        raise typer.Exit(code=2)
    settings = settings_for(data_dir, existing=True)
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    store = LocalImageStore(settings.image_dir)
    with factory() as session:
        target = or_exit(lambda: find_project(session=session, ref=project))
        opened = or_exit(
            lambda: open_export(
                kind=fmt,
                as_=as_,
                project=target,
                session=session,
                session_factory=factory,
                store=store,
                models=ModelStore(settings.model_dir),
            )
        )
    if opened.predictions is not None:
        summary = opened.predictions
        typer.echo(
            f"round {summary.round_id}: {summary.pool_items} pool items, "
            f"{summary.without_prediction} without a prediction",
            err=True,
        )
    if opened.model_round_id is not None:
        typer.echo(f"the model of round {opened.model_round_id}", err=True)
    if zipped:
        with _output_bytes(out) as binary:
            for data in opened.chunks:
                binary.write(data if isinstance(data, bytes) else data.encode())
        return
    with _output(out) as stream:
        for chunk in opened.chunks:
            stream.write(chunk if isinstance(chunk, str) else chunk.decode())


@contextlib.contextmanager
def _output_bytes(path: Path | None) -> Iterator[BinaryIO]:
    if path is None:
        yield sys.stdout.buffer
        return
    with path.open("wb") as handle:
        yield handle


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    with path.open("w", encoding="utf-8", newline="") as handle:
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
    settings = settings_for(data_dir, existing=True)
    upgrade_database(settings.resolved_database_url)
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    with factory() as session:
        _, token = or_exit(
            lambda: create_annotator(
                session=session, name=name, role=role, project_ids=project or []
            )
        )
    typer.echo(f"created {role.value} {name!r}; their token (shown once):", err=True)
    typer.echo(token)

"""What every `nextlabel` command shares: the typer app they register on, the --data-dir
option, loading the settings, and turning a refusal or a service error into an exit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from app.cli_checks import Refused, describe, require_database
from app.services import ServiceError
from core.logs import configure_logging
from core.settings import Settings, get_settings

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

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        file_okay=False,
        help="Folder holding the database and images (default: NEXTLABEL_DATA_DIR, else "
        "./nextlabel-data).",
    ),
]


def settings_for(data_dir: Path | None, *, existing: bool = False) -> Settings:
    """The settings, with --data-dir over NEXTLABEL_DATA_DIR; says on stderr which data
    directory and database the command uses. `existing`: refuse to set up a new database
    (the command reads or changes one that should be there)."""
    settings = get_settings() if data_dir is None else Settings(data_dir=data_dir)
    configure_logging(settings)
    typer.echo(f"nextlabel: {describe(settings)}", err=True)
    if existing:
        refuse_on(lambda: require_database(settings))
    return settings


def refuse_on(check: Callable[[], None]) -> None:
    try:
        check()
    except Refused as refused:
        typer.echo(f"error: {refused}", err=True)
        raise typer.Exit(code=1) from None


def or_exit(action: Callable[[], T]) -> T:
    try:
        return action()
    except ServiceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None

"""The `nextlabel` command, one module per job: serving (serve, demo, worker, migrate),
importing (import), data (project create, create-user, export) and simulation (simulate),
all registered on the typer app in base. `main` is the console script's entry point."""

from __future__ import annotations

from app.cli.base import cli

# Imported for their commands: each registers its own on `cli`, and help lists them in this
# order (typer keeps registration order).
# isort: off
from app.cli import serving, importing, data, simulation  # noqa: F401
# isort: on

__all__ = ["cli", "main"]


def main() -> None:
    cli()

"""`nextlabel simulate`: hands every argument to the simulator (simulate.cli), imported only
when the command runs."""

from __future__ import annotations

import typer

from app.cli.base import cli

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

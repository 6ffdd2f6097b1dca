"""``nextlabel simulate``: simulated annotators label a benchmark dataset through the API.

``app.cli`` registers a thin ``simulate`` command that imports this module only when it
runs and hands it its arguments (:func:`main`), so the API installs and runs without the
simulator's dependencies (the ``sim`` extra: httpx, matplotlib, scipy, ...). Also runnable
on its own as ``python -m simulate``.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from simulate.datasets import DatasetUnavailable, load_dataset
from simulate.experiment import run_experiment, summarise
from simulate.records import RunConfig

STRATEGY_HELP = "A strategy the service offers (its GET /api/v1/catalog), or a comma list of them."


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` lists seeds; a bare number is a count: ``"5"`` means seeds 0..4.

    One explicit seed takes a comma: ``"3,"`` is seed 3 alone.
    """
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        seeds = list(range(int(parts[0]))) if "," not in text else [int(p) for p in parts]
    except (ValueError, IndexError) as error:
        raise typer.BadParameter(f"seeds must be a count or a comma list, not {text!r}") from error
    if not seeds:
        raise typer.BadParameter(f"{text!r} selects no seed (a count must be at least 1)")
    return seeds


def format_seeds(seeds: list[int]) -> str:
    """An explicit ``--seeds`` list that :func:`parse_seeds` reads back as ``seeds``."""
    return ",".join(map(str, seeds)) + ("," if len(seeds) == 1 else "")


def simulate(
    dataset: Annotated[
        str, typer.Option(help="mnist5k, repeated-mnist, digits or fashion-mnist.")
    ] = "digits",
    strategy: Annotated[str, typer.Option(help=STRATEGY_HELP)] = "batchbald",
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Acquisition size b.")] = 10,
    seeds: Annotated[
        str, typer.Option(help="Seeds '0,1,2' ('4,' = seed 4 alone), or a count: '3' = 0,1,2.")
    ] = "1",
    annotators: Annotated[int, typer.Option(help="Simulated annotators (threads).")] = 1,
    budget: Annotated[int, typer.Option(help="Total labels, the initial set included.")] = 300,
    mc_samples: Annotated[int, typer.Option("--mc-samples", "-k", help="MC samples K.")] = 20,
    out: Annotated[Path, typer.Option(help="Folder for the CSV, plot and logs.")] = Path(
        "simulate-out"
    ),
    url: Annotated[str | None, typer.Option(help="Drive this running service.")] = None,
    token: Annotated[str | None, typer.Option(help="An admin token for --url.")] = None,
    live: Annotated[bool, typer.Option(help="Annotators never wait for rounds.")] = False,
    seconds_per_label: Annotated[
        float | None, typer.Option(help="Simulated seconds per label [0; 2 with --live].")
    ] = None,
    initial_per_class: Annotated[int, typer.Option(help="Balanced initial labels/class.")] = 2,
    network: Annotated[
        str,
        typer.Option(help="The project's network: a name the service offers (GET /catalog)."),
    ] = "auto",
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory for the started service (kept).")
    ] = None,
) -> None:
    """Label a dataset with simulated annotators through the REST API; write CSV and plot."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.StreamHandler(), _file_handler(out)],
    )
    # SIGTERM (a grid being stopped) unwinds like Ctrl-C, so the started service, which runs
    # in its own process group, is stopped and its data directory removed.
    signal.signal(signal.SIGTERM, _interrupt)
    # One line per HTTP request would drown the per-round lines.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if url is not None and token is None:
        raise typer.BadParameter("--url needs --token (an admin token)")
    template = RunConfig(
        dataset=dataset,
        strategy="random",
        batch_size=batch_size,
        seed=0,
        budget=budget,
        mc_samples=mc_samples,
        annotators=annotators,
        live=live,
        seconds_per_label=(2.0 if live else 0.0)
        if seconds_per_label is None
        else seconds_per_label,
        initial_per_class=initial_per_class,
        network=network,
    )
    strategies = [name.strip() for name in strategy.split(",") if name.strip()]
    try:
        loaded = load_dataset(dataset)
    except (DatasetUnavailable, ValueError) as error:
        raise typer.BadParameter(str(error), param_hint="--dataset") from error
    failures = run_experiment(
        template,
        strategies,
        parse_seeds(seeds),
        out,
        url=url,
        token=token,
        data_dir=data_dir,
        dataset=loaded,
    )
    title = f"{dataset}, b={batch_size}, K={mc_samples}" + (
        "" if network == "auto" else f", {network}"
    )
    table = summarise(out, title=title)
    if table:
        print(table)
        print(f"rounds: {out / 'rounds.csv'}  plot: {out / 'accuracy.png'}")
    if failures:
        print(f"{failures} run(s) failed: see {out / 'runs.jsonl'} and {out / 'simulate.log'}")
        raise typer.Exit(1)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _file_handler(out: Path) -> logging.Handler:
    out.mkdir(parents=True, exist_ok=True)
    return logging.FileHandler(out / "simulate.log")


def main(args: Sequence[str] | None = None, prog_name: str | None = None) -> None:
    """Run the command on ``args`` (default: ``sys.argv[1:]``); exits like a typer app.

    ``nextlabel simulate`` calls it with its own arguments and ``prog_name="nextlabel
    simulate"``, so usage lines and ``--help`` read as they would for a typer subcommand.
    """
    command = typer.Typer(add_completion=False)
    command.command()(simulate)
    command(args=None if args is None else list(args), prog_name=prog_name)

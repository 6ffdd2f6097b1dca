"""Several simulated runs (strategies × seeds) against one service, written to one folder.

Output folder:
    rounds.csv    one row per completed round of every finished run
    progress.csv  the same rows, appended as each round lands (unfinished runs included)
    runs.jsonl    one line per run: its config, checks, import time, total time
    summary.md    labels to 90% / 95% (p25 / median / p75 over seeds) per strategy
    accuracy.png  accuracy against labels, mean and 95% band over seeds
    serve.log     the started service's log (API and worker)
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path

from nextlabel_client import Client
from simulate.datasets import Dataset, load_dataset
from simulate.records import RoundRecord, RunConfig, result_json
from simulate.report import (
    ROUND_FIELDS,
    group_curves,
    markdown_table,
    plot_curves,
    read_rounds_csv,
    threshold_table,
    write_rounds_csv,
)
from simulate.runner import run_one
from simulate.service import LocalService, Service
from simulate.upload import Archives

logger = logging.getLogger(__name__)

ROUNDS_CSV = "rounds.csv"
RUNS_JSONL = "runs.jsonl"
PROGRESS_CSV = "progress.csv"
SUMMARY_MD = "summary.md"
PLOT_PNG = "accuracy.png"


def run_experiment(
    template: RunConfig,
    strategies: Sequence[str],
    seeds: Sequence[int],
    out: Path,
    *,
    url: str | None = None,
    token: str | None = None,
    data_dir: Path | None = None,
    dataset: Dataset | None = None,
) -> int:
    """Run every (strategy, seed) in turn; return how many runs failed.

    ``dataset`` is the one ``template.dataset`` names, loaded already (a test passes a small
    part of it); None: load it here.
    """
    out.mkdir(parents=True, exist_ok=True)
    dataset = dataset or load_dataset(template.dataset)
    archives = Archives.build(dataset)
    records: list[RoundRecord] = []
    failures = 0
    with ExitStack() as stack:
        if url is None:
            local = LocalService(data_dir=data_dir, log_path=out / "serve.log")
            service = stack.enter_context(local)
        else:
            service = Service(url=url, token=token or "")
        admin = stack.enter_context(Client(service.url, service.token))
        for strategy in strategies:
            for seed in seeds:
                config = replace(template, strategy=strategy, seed=seed)
                failures += not _run_and_save(admin, dataset, archives, config, records, out)
    return failures


def _run_and_save(
    admin: Client,
    dataset: Dataset,
    archives: Archives,
    config: RunConfig,
    records: list[RoundRecord],
    out: Path,
) -> bool:
    logger.info("run: %s", config)
    line: dict[str, object]
    try:
        result = run_one(
            admin, dataset, archives, config, on_round=lambda r: _append_progress(r, out)
        )
    except Exception as error:  # one failed run must not lose the others
        logger.exception("run failed: %s", config)
        line = {"config": config.__dict__, "error": repr(error)}
        ok = False
    else:
        records.extend(result.records)
        line = result_json(result)
        ok = all(bool(value) for key, value in result.checks.items() if key != "labels_from_queue")
        if not ok:
            logger.error("run checks failed: %s", result.checks)
    write_rounds_csv(records, out / ROUNDS_CSV)
    with (out / RUNS_JSONL).open("a") as handle:
        handle.write(json.dumps(line, default=str) + "\n")
    return ok


def _append_progress(record: RoundRecord, out: Path) -> None:
    """progress.csv: every round the moment it lands, for watching a run that takes hours."""
    path = out / PROGRESS_CSV
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=ROUND_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(asdict(record))


def summarise(out: Path, title: str) -> str | None:
    """Write summary.md and accuracy.png from rounds.csv; return the table (None if empty)."""
    path = out / ROUNDS_CSV
    if not path.exists():
        return None
    groups = group_curves(read_rounds_csv(path))
    if not groups:
        return None
    table = markdown_table(threshold_table(groups))
    (out / SUMMARY_MD).write_text(table)
    plot_curves(groups, out / PLOT_PNG, title=title)
    return table

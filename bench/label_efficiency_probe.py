"""The training-schedule probe: the engine's schedule against the one before, in-process.

An investigation beside the benchmark (`python bench/label_efficiency.py probe`): its lines
go to bench/results/label_efficiency/schedule_probe.jsonl, its table into docs/results.md.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from label_efficiency_plan import OUT

from simulate.datasets import balanced_initial, load_dataset
from worker.engine.networks import NetworkSpec, build_network
from worker.engine.training import TrainConfig, evaluate, fit

logger = logging.getLogger("label_efficiency")

PROBE_JSONL = OUT / "schedule_probe.jsonl"
PROBE_SIZES = (20, 60, 120)
# The engine's default (the BatchBALD reference's: epochs of 5,056 sampled items = 79 steps
# of 64, patience 3 on validation accuracy, at most 30 epochs) against what it used before
# (20-step epochs, patience 3 on validation NLL, at most 200) and the two halves of the change.
PROBE_SCHEDULES: dict[str, dict[str, object]] = {
    "default": {},
    "old_engine": {"epoch_steps": 20, "stop_on": "nll", "max_epochs": 200},
    "long_nll": {"stop_on": "nll"},
    "short_acc": {"epoch_steps": 20},
}


def probe_schedule(seeds: int, schedules: Sequence[str]) -> None:
    """How much does the training schedule cap accuracy at small label counts?

    Investigation, not the benchmark: it calls the engine in-process (worker.engine.training) on the
    same random labelled sets of MNIST-5k (2 per class + random) under each schedule, early
    stopping on a quarter of the 1,000 test items and evaluating as a round does
    (MC-averaged accuracy, K=20) on the other three quarters.
    """
    torch.set_num_threads(1)  # the 2-core machine runs the grid too
    data = load_dataset("mnist5k")
    x_pool = torch.tensor(data.pool.images, dtype=torch.float32).unsqueeze(1) / 255
    y_pool = torch.tensor(data.pool.labels)
    x_test = torch.tensor(data.test.images, dtype=torch.float32).unsqueeze(1) / 255
    y_test = torch.tensor(data.test.labels)
    stop_rows, report_rows = slice(0, 250), slice(250, None)

    for n in PROBE_SIZES:
        for seed in range(seeds):
            rng = np.random.default_rng(1000 + seed)
            initial = balanced_initial(data.pool.labels, 2, seed)
            rest = np.setdiff1d(np.arange(len(y_pool)), initial)
            extra = rng.choice(rest, n - len(initial), replace=False)
            rows = torch.as_tensor(np.concatenate([initial, extra]).astype(np.int64))
            for schedule in schedules:
                config = TrainConfig(seed=seed, **PROBE_SCHEDULES[schedule])  # type: ignore[arg-type]
                model = build_network(
                    NetworkSpec(num_classes=10, in_channels=1, image_size=28), seed=seed
                )
                started = time.monotonic()
                report = fit(
                    model,
                    x_pool[rows],
                    y_pool[rows],
                    config=config,
                    x_val=x_test[stop_rows],
                    y_val=y_test[stop_rows],
                )
                result = evaluate(
                    model, x_test[report_rows], y_test[report_rows], mc_samples=20, seed=seed
                )
                line = {
                    "n": n,
                    "seed": seed,
                    "schedule": schedule,
                    "acc": round(result.accuracy, 4),
                    "nll": round(result.nll, 4),
                    "epochs": report.epochs,
                    "steps": report.steps,
                    "s": round(time.monotonic() - started, 1),
                }
                logger.info("probe %s", line)
                with PROBE_JSONL.open("a") as handle:
                    handle.write(json.dumps(line) + "\n")


def probe_section() -> str:
    if not PROBE_JSONL.exists():
        return "_Probe not run (`python bench/label_efficiency.py probe`)._\n"
    lines = [json.loads(line) for line in PROBE_JSONL.read_text().splitlines() if line.strip()]
    cells: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for line in lines:
        cells[(line["n"], line["schedule"])].append(line)
    schedules = [s for s in PROBE_SCHEDULES if any(k[1] == s for k in cells)]
    header = "| labels | " + " | ".join(f"{s}: accuracy (steps)" for s in schedules) + " |"
    out = [header, "|---|" + "---|" * len(schedules)]
    for n in sorted({k[0] for k in cells}):
        row = [f"| {n} "]
        for schedule in schedules:
            runs = cells.get((n, schedule), [])
            if not runs:
                row.append("| – ")
                continue
            accs = [r["acc"] for r in runs]
            steps = statistics.median(r["steps"] for r in runs)
            row.append(
                f"| {statistics.mean(accs):.3f} ({', '.join(f'{a:.3f}' for a in accs)}; "
                f"{steps:.0f}) "
            )
        out.append("".join(row) + "|")
    return "\n".join(out) + "\n" + _probe_gap(cells)


def _probe_gap(cells: dict[tuple[int, str], list[dict[str, Any]]]) -> str:
    """The old schedule's shortfall against the default, read off the probe's cells."""
    sizes = sorted(n for n, name in cells if name == "old_engine" and (n, "default") in cells)
    if not sizes:
        return ""

    def mean_accuracy_of(n: int, schedule: str) -> float:
        return statistics.mean(run["acc"] for run in cells[(n, schedule)])

    gaps = [mean_accuracy_of(n, "default") - mean_accuracy_of(n, "old_engine") for n in sizes]
    steps = [statistics.median(run["steps"] for run in cells[(n, "old_engine")]) for n in sizes]
    return (
        f"\nThe old schedule stops after {min(steps):.0f}-{max(steps):.0f} optimiser steps "
        f"(median) and trails the default by {100 * min(gaps):.1f}-{100 * max(gaps):.1f} "
        "points of mean accuracy.\n"
    )

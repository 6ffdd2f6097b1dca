"""Does class-balanced batch sampling rescue top-b BALD on Repeated-MNIST? An investigation.

The engine samples class-balanced training batches while fewer than
``TrainConfig.balanced_below`` items are labelled; the BatchBALD reference samples the
labelled set uniformly. Top-b BALD on Repeated-MNIST buys copies of the same few digits, so
its labelled set is lopsided, and balanced batches may hide the cost of that. This script
runs the synchronous active-learning loop in-process with the engine's own parts
(worker.engine.training, worker.engine.acquisition) under both samplers and prints the
labels each run needs to reach 90% test accuracy:

    python bench/balanced_batches.py [--dataset repeated-mnist|mnist5k]
        [--strategies bald,random] [--samplers balanced,uniform] [--seeds 0,1,2]

Each round trains a fresh network (the shipped schedule, early stopping on the first 250
test items), measures accuracy on the other 750 (MC-averaged with the grid's K: 10 on
Repeated-MNIST, 20 on MNIST-5k) and acquires b=10 more items with the engine's selection. A
run stops at 90% or at the 300-label budget. Rounds go to
bench/results/balanced_batches/DATASET.jsonl; finished runs there are skipped, so an
interrupted sweep resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulate.datasets import Dataset, balanced_initial, load_dataset
from simulate.report import percentile
from worker.engine.acquisition import random_select, select
from worker.engine.networks import MCDropoutNetwork, NetworkSpec, build_network
from worker.engine.training import TrainConfig, evaluate, fit, mc_log_probs

BATCH_SIZE = 10
MC_SAMPLES = {"mnist5k": 20, "repeated-mnist": 10}  # as in the grid
BUDGET = 300
TARGET = 0.90
EARLY_STOPPING_ITEMS = 250  # as in the grid: a quarter of the test set
# balanced_below for each sampler: the engine's default, or never balanced (the reference)
SAMPLERS = {"balanced": TrainConfig().balanced_below, "uniform": 0}
OUT = Path("bench/results/balanced_batches")


@dataclass(frozen=True)
class Tensors:
    x_pool: torch.Tensor
    y_pool: torch.Tensor
    x_stop: torch.Tensor
    y_stop: torch.Tensor
    x_report: torch.Tensor
    y_report: torch.Tensor
    mc_samples: int


def as_tensors(dataset: Dataset, mc_samples: int) -> Tensors:
    def images(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).float().div(255).unsqueeze(1)

    x_test, y_test = images(dataset.test.images), torch.from_numpy(dataset.test.labels).long()
    return Tensors(
        x_pool=images(dataset.pool.images),
        y_pool=torch.from_numpy(dataset.pool.labels).long(),
        x_stop=x_test[:EARLY_STOPPING_ITEMS],
        y_stop=y_test[:EARLY_STOPPING_ITEMS],
        x_report=x_test[EARLY_STOPPING_ITEMS:],
        y_report=y_test[EARLY_STOPPING_ITEMS:],
        mc_samples=mc_samples,
    )


def acquire(
    strategy: str, model: MCDropoutNetwork, data: Tensors, labelled: list[int], seed: int
) -> list[int]:
    """The next b pool rows, chosen by the engine's own selection among the unlabelled."""
    unlabelled = np.setdiff1d(np.arange(len(data.y_pool)), labelled)
    generator = torch.Generator().manual_seed(seed)
    if strategy == "random":
        selection = random_select(len(unlabelled), BATCH_SIZE, generator=generator)
    else:
        rows = torch.as_tensor(unlabelled)
        log_probs = mc_log_probs(model, data.x_pool[rows], mc_samples=data.mc_samples, seed=seed)
        selection = select(strategy, log_probs, BATCH_SIZE, generator=generator)
    return [int(i) for i in unlabelled[selection.indices.numpy()]]


def run(strategy: str, sampler: str, seed: int, data: Tensors) -> Iterator[dict[str, object]]:
    """One active-learning run; yields a record per round until 90% or the budget."""
    labelled = balanced_initial(data.y_pool.numpy(), 2, seed)
    for round_index in range(BUDGET):
        # Not worker.round.run.round_seed: the committed runs used this derivation (also
        # independent across seeds), and the loop must reproduce them.
        round_seed = seed * 1000 + round_index
        config = TrainConfig(seed=round_seed, balanced_below=SAMPLERS[sampler])
        model = build_network(
            NetworkSpec(num_classes=10, in_channels=1, image_size=28), seed=round_seed
        )
        started = time.monotonic()
        rows = torch.as_tensor(labelled)
        fit(
            model,
            data.x_pool[rows],
            data.y_pool[rows],
            config=config,
            x_val=data.x_stop,
            y_val=data.y_stop,
        )
        accuracy = evaluate(
            model, data.x_report, data.y_report, mc_samples=data.mc_samples, seed=round_seed
        ).accuracy
        classes = np.bincount(data.y_pool[rows].numpy(), minlength=10)
        yield {
            "strategy": strategy,
            "sampler": sampler,
            "seed": seed,
            "labels": len(labelled),
            "accuracy": round(accuracy, 4),
            "smallest_class": int(classes.min()),
            "largest_class": int(classes.max()),
            "s": round(time.monotonic() - started, 1),
        }
        if accuracy >= TARGET or len(labelled) >= BUDGET:
            return
        labelled += acquire(strategy, model, data, labelled, round_seed)


def run_ends(out: Path) -> dict[tuple[str, str], dict[int, dict[str, Any]]]:
    """(strategy, sampler) -> seed -> the last round of each finished run (90% or budget)."""
    ends: dict[tuple[str, str], dict[int, dict[str, Any]]] = defaultdict(dict)
    if out.exists():
        for line in out.read_text().splitlines():
            row = json.loads(line)
            if row["accuracy"] >= TARGET or row["labels"] >= BUDGET:
                ends[(row["strategy"], row["sampler"])][row["seed"]] = row
    return ends


def markdown_table(out: Path) -> str:
    """Labels to 90% per strategy and sampler, seed by seed, with the labelled set's class
    spread when the run stopped."""
    lines = [
        "| strategy | batches | labels to 90%, seed by seed | median "
        "| labels per class at the end (fewest–most) |",
        "|---|---|---|---|---|",
    ]
    for (strategy, sampler), by_seed in sorted(run_ends(out).items()):
        rows = [by_seed[seed] for seed in sorted(by_seed)]
        needed = [row["labels"] if row["accuracy"] >= TARGET else math.inf for row in rows]
        lines.append(
            f"| {strategy} | {sampler} | "
            + ", ".join(
                f"s{row['seed']}: {_labels(n)}" for row, n in zip(rows, needed, strict=True)
            )
            + f" | {_labels(percentile(needed, 50))} | "
            + ", ".join(f"{row['smallest_class']}–{row['largest_class']}" for row in rows)
            + " |"
        )
    return "\n".join(lines) + "\n"


def _labels(needed: float) -> str:
    return f">{BUDGET}" if math.isinf(needed) else f"{needed:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", default="bald,random")
    parser.add_argument("--samplers", default="balanced,uniform")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--dataset", choices=tuple(MC_SAMPLES), default="repeated-mnist")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the 2-core machine runs the grid too
    data = as_tensors(load_dataset(args.dataset), MC_SAMPLES[args.dataset])
    out = OUT / f"{args.dataset}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    ends = run_ends(out)
    for seed in (int(s) for s in args.seeds.split(",")):
        for strategy in args.strategies.split(","):
            for sampler in args.samplers.split(","):
                if seed in ends.get((strategy, sampler), {}):
                    continue
                for record in run(strategy, sampler, seed, data):
                    print(json.dumps(record), flush=True)
                    with out.open("a") as handle:
                        handle.write(json.dumps(record) + "\n")
    print(markdown_table(out))


if __name__ == "__main__":
    main()

"""Label efficiency on Fashion-MNIST: frozen pretrained features against the from-scratch CNN.

    python bench/label_efficiency_fashion.py plan
    python bench/label_efficiency_fashion.py run [--only pretrained|scratch] [--seeds 0,1,2]
    python bench/label_efficiency_fashion.py report

Three configurations, each simulated annotators through the REST API (`nextlabel simulate
--dataset fashion-mnist`: 4,000-item pool, 1,000 test items, 20 balanced initial labels),
b=10, K=20, 300 labels, seeds 0, 1, 2:

* ``pretrained``: network efficientnet_lite0 with BatchBALD and with random, in one
  `simulate` call: one service, so its first round embeds the 5,000 images once and every
  later project reuses the vectors (the store is keyed by image content);
* ``scratch``: network mnist_cnn (the paper's CNN, trained on pixels every round) with
  BatchBALD; about 30-40 s a round on 2 shared cores, so run it last, in the background.

Each configuration's files go to bench/results/label_efficiency_fashion/CONFIG/ (rounds.csv,
runs.jsonl and summary.md are kept; logs and plots are gitignored); `run` skips a
configuration whose runs all finished. `report` prints, per network and strategy, the test
accuracy at 20, 50, 100, 200 and 300 labels (median over seeds, and seed by seed), the labels
to reach 75 % and how long the runs took. Not the MNIST grid (bench/label_efficiency.py):
that one's report reads bench/results/label_efficiency/ and knows one network per dataset.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from simulate.cli import format_seeds, parse_seeds  # noqa: E402
from simulate.report import Curve, labels_to_reach, percentile, read_rounds_csv  # noqa: E402

OUT = REPO / "bench" / "results" / "label_efficiency_fashion"
BUDGET = 300
BATCH = 10
K = 20
CHECKPOINTS = (20, 50, 100, 200, 300)
THRESHOLD = 0.75


@dataclass(frozen=True)
class Config:
    name: str
    network: str
    strategies: tuple[str, ...]

    @property
    def out(self) -> Path:
        return OUT / self.name

    def command(self, seeds: Sequence[int]) -> list[str]:
        return [
            "nextlabel",
            "simulate",
            "--dataset",
            "fashion-mnist",
            "--network",
            self.network,
            "--strategy",
            ",".join(self.strategies),
            "--batch-size",
            str(BATCH),
            "--mc-samples",
            str(K),
            "--budget",
            str(BUDGET),
            "--seeds",
            format_seeds(list(seeds)),
            "--out",
            str(self.out.relative_to(REPO)),
        ]

    def finished(self, seeds: Sequence[int]) -> bool:
        """Every (strategy, seed) has a run without an error in runs.jsonl."""
        runs = self.out / "runs.jsonl"
        if not runs.exists():
            return False
        done = {
            (line["config"]["strategy"], line["config"]["seed"])
            for line in map(json.loads, runs.read_text().splitlines())
            if "error" not in line
        }
        return {(s, seed) for s in self.strategies for seed in seeds} <= done


CONFIGS = (
    Config("pretrained", "efficientnet_lite0", ("batchbald", "random")),
    Config("scratch", "mnist_cnn", ("batchbald",)),
)


def run(configs: Sequence[Config], seeds: Sequence[int]) -> None:
    """Each unfinished configuration as one `python -m simulate`, its output to stdout.log."""
    for config in configs:
        if config.finished(seeds):
            print(f"{config.name}: finished, skipped")
            continue
        config.out.mkdir(parents=True, exist_ok=True)
        arguments = config.command(seeds)
        command = [sys.executable, "-m", "simulate", *arguments[2:]]
        print(f"{config.name}: {shlex.join(arguments)}", flush=True)
        started = time.monotonic()
        with (config.out / "stdout.log").open("w") as log:
            code = subprocess.call(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        print(f"{config.name}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)


# --- report -------------------------------------------------------------------------------


def load_curves() -> dict[tuple[str, str], dict[int, Curve]]:
    """(network, strategy) → seed → curve, from every configuration's rounds.csv."""
    curves: dict[tuple[str, str], dict[int, Curve]] = defaultdict(lambda: defaultdict(list))
    for config in CONFIGS:
        path = config.out / "rounds.csv"
        if not path.exists():
            continue
        for row in read_rounds_csv(path):
            if row["status"] == "done" and row["accuracy"] is not None:
                key = (str(row["network"]), str(row["strategy"]))
                curves[key][int(row["seed"])].append((int(row["labels"]), float(row["accuracy"])))
    return {key: {seed: sorted(c) for seed, c in seeds.items()} for key, seeds in curves.items()}


def _at(curve: Curve, labels: int) -> float | None:
    return dict(curve).get(labels)


def _labels(value: float) -> str:
    return f">{BUDGET}" if math.isinf(value) else f"{value:g}"


def accuracy_table(curves: dict[tuple[str, str], dict[int, Curve]]) -> str:
    header = " | ".join(f"{n} labels" for n in CHECKPOINTS)
    lines = [
        f"| network | strategy | seeds | {header} | labels to {THRESHOLD:.0%}: per seed (median) |",
        "|---|---|---|" + "---|" * len(CHECKPOINTS) + "---|",
    ]
    for (network, strategy), runs in sorted(curves.items()):
        cells = []
        for n in CHECKPOINTS:
            per_seed = {seed: _at(curve, n) for seed, curve in sorted(runs.items())}
            present = [v for v in per_seed.values() if v is not None]
            median = f"{statistics.median(present):.3f}" if present else "–"
            seeds = ", ".join("–" if v is None else f"{v:.3f}" for v in per_seed.values())
            cells.append(f"{median} ({seeds})")
        reached = {seed: labels_to_reach(curve, THRESHOLD) for seed, curve in sorted(runs.items())}
        median_reached = _labels(percentile(list(reached.values()), 50))
        per_seed_reached = ", ".join(_labels(v) for v in reached.values())
        lines.append(
            f"| {network} | {strategy} | {len(runs)} | "
            + " | ".join(cells)
            + f" | {per_seed_reached} ({median_reached}) |"
        )
    return "\n".join(lines) + "\n"


def timing_lines() -> list[str]:
    """How long each configuration's runs took, from runs.jsonl and rounds.csv."""
    lines = []
    for config in CONFIGS:
        runs_path, rounds_path = config.out / "runs.jsonl", config.out / "rounds.csv"
        if not runs_path.exists():
            continue
        runs = [json.loads(line) for line in runs_path.read_text().splitlines() if line.strip()]
        finished = [r for r in runs if "error" not in r]
        rows = read_rounds_csv(rounds_path) if rounds_path.exists() else []
        worker = [r["worker_s"] for r in rows if r.get("worker_s") is not None]
        observed = [r["observed_s"] for r in rows if r.get("observed_s") is not None]
        per_run = ", ".join(
            f"{r['config']['strategy']} s{r['config']['seed']}: {r['total_s']:.0f} s"
            + (
                f" (upload's rounds {r['upload_rounds_s']:.0f} s)"
                if r.get("upload_rounds_s", 0) >= 0.5
                else ""
            )
            for r in finished
        )
        lines.append(
            f"- {config.name} ({config.network}): {len(finished)} runs finished, "
            f"{len(runs) - len(finished)} failed; total {sum(r['total_s'] for r in finished):.0f} s"
            f"; per run: {per_run}; median per round: worker {_median(worker)} s, "
            f"label → round done {_median(observed)} s"
        )
    return lines


def _median(values: list[Any]) -> str:
    return f"{statistics.median(values):.1f}" if values else "–"


def report() -> None:
    curves = load_curves()
    if not curves:
        print("no finished round yet")
        return
    print(
        f"Fashion-MNIST, b={BATCH}, K={K}: test accuracy, median over seeds (seed by seed), "
        f"and labels to reach {THRESHOLD:.0%}\n"
    )
    print(accuracy_table(curves))
    print("\n".join(timing_lines()))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("plan", "run", "report"))
    parser.add_argument("--only", choices=[config.name for config in CONFIGS])
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    configs = [c for c in CONFIGS if args.only in (None, c.name)]
    if args.action == "plan":
        for config in configs:
            state = "done" if config.finished(seeds) else "todo"
            print(f"{state:6}{shlex.join(config.command(seeds))}")
    elif args.action == "run":
        run(configs, seeds)
    else:
        report()


if __name__ == "__main__":
    main()

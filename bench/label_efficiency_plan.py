"""The label-efficiency grid: its cells (dataset × strategy × b × K × seed) and their order.

A cell is one `nextlabel simulate` run with a fresh service of its own. Its files live in
bench/results/label_efficiency/DATASET/STRATEGY-bB-KK-seedS/, and they alone say whether
it is done, running (another runner's claim, a `running` file holding a process id) or
still to do.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from core.rounds import pid_alive

REPO = Path(__file__).resolve().parent.parent
# The engine files a cell's provenance fingerprints (the tree changes while the grid runs).
ENGINE_FILES = (
    "worker/engine/training.py",
    "worker/engine/scores.py",
    "worker/engine/acquisition.py",
    "worker/engine/batchbald.py",
    "worker/engine/networks.py",
    "worker/round/run.py",
    "worker/round/data.py",
    "worker/round/model.py",
    "worker/round/plan.py",
    "worker/round/write.py",
)
OUT = REPO / "bench" / "results" / "label_efficiency"
BUDGET = 300


@dataclass(frozen=True)
class Cell:
    dataset: str
    strategy: str
    batch_size: int
    mc_samples: int
    seed: int
    budget: int = BUDGET

    @property
    def out(self) -> Path:
        name = f"{self.strategy}-b{self.batch_size}-K{self.mc_samples}-seed{self.seed}"
        return OUT / self.dataset / name

    def command(self, seeds: str | None = None, out: Path | None = None) -> list[str]:
        return [
            "nextlabel",
            "simulate",
            "--dataset",
            self.dataset,
            "--strategy",
            self.strategy,
            "--batch-size",
            str(self.batch_size),
            "--mc-samples",
            str(self.mc_samples),
            "--budget",
            str(self.budget),
            "--seeds",
            seeds if seeds is not None else f"{self.seed},",
            "--out",
            str((out or self.out).relative_to(REPO)),
        ]

    def failed_twice(self) -> bool:
        """Two failed attempts: leave the cell for a person rather than loop on it."""
        attempts = self.out / "attempts"
        return attempts.exists() and len(attempts.read_text().split()) >= 2

    def claim(self) -> bool:
        """Take the cell for this process; False while another live runner has it."""
        marker = self.out / "running"
        try:
            descriptor = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            owner = marker.read_text().strip()
            if owner.isdigit() and int(owner) != os.getpid() and pid_alive(int(owner)):
                return False
            marker.unlink(missing_ok=True)  # its runner died: the cell is free again
            return self.claim()
        with os.fdopen(descriptor, "w") as file:
            file.write(str(os.getpid()))
        return True

    def state(self) -> str:
        if self.finished():
            return "done"
        owner = self.out / "running"
        running = owner.exists() and pid_alive(int(owner.read_text().strip() or 0))
        return "running" if running else "todo"

    def release(self) -> None:
        (self.out / "running").unlink(missing_ok=True)

    def finished(self) -> bool:
        runs = self.out / "runs.jsonl"
        if not runs.exists():
            return False
        lines = [json.loads(line) for line in runs.read_text().splitlines() if line.strip()]
        return any("error" not in line for line in lines)


# K per dataset: MC samples dominate the CPU cost of inference and of BatchBALD, so the CPU
# grid uses K=20 on MNIST-5k (paper: 100) and the paper's K=10 on Repeated-MNIST.
K_FOR = {"mnist5k": 20, "repeated-mnist": 10}


# The CPU grid, in the order it runs so that a grid cut short still answers the most: per
# seed, the strategies issue 6's targets compare, then the rest of its minimum grid (which
# must reach MINIMUM_SEEDS seeds first), then PowerBALD.
GRID_CELLS = (
    ("mnist5k", "batchbald"),
    ("mnist5k", "random"),
    ("repeated-mnist", "batchbald"),
    ("repeated-mnist", "random"),
    ("repeated-mnist", "bald"),
    ("mnist5k", "bald"),
    ("mnist5k", "margin"),
    ("repeated-mnist", "margin"),
)
LATER_CELLS = (("mnist5k", "powerbald"), ("repeated-mnist", "powerbald"))
# Random against BALD on Repeated-MNIST swings by tens of labels from seed to seed: the
# ranking target needs their later seeds before anything else.
CONTESTED_CELLS = (("repeated-mnist", "random"), ("repeated-mnist", "bald"))
# The extras a CPU affords: b=40 takes 7 rounds (~10 minutes a cell here), a quarter of
# b=10's; entropy at b=10 is a full-length cell.
BATCH_40_EXTRAS = (("mnist5k", "bald", 40), ("mnist5k", "batchbald", 40))
ENTROPY_EXTRA = ("mnist5k", "entropy", 10)
# BatchBALD's joint mutual information cannot exceed log K: the paper's K=100 on MNIST
# (log 100 = 4.6 nats) against the CPU grid's K=20 (3.0 nats). 150 labels cover the 90% mark.
DIAGNOSTIC = Cell("mnist5k", "batchbald", 10, 100, 0, budget=150)
MINIMUM_SEEDS = 3
IN_NO_TARGET = ("repeated-mnist", "margin")  # the minimum grid's one row no target reads


def plan_cells(plan: str, seeds: int, only: str | None) -> list[Cell]:
    """The minimum grid seed by seed (PowerBALD after the others' first MINIMUM_SEEDS
    seeds), the contested comparison's later seeds, the minimum grid's other later seeds
    row by row (a row is whole only with all its seeds; margin on Repeated-MNIST, in no
    target, after the ~10-minute b=40 extras), entropy over the first seeds, PowerBALD's
    later seeds, the extras' later seeds, then (full plan) the K=100 diagnostic and the
    rest."""
    first_seeds = range(min(seeds, MINIMUM_SEEDS))
    later_seeds = range(MINIMUM_SEEDS, seeds)
    order = [(seed, d, s, 10) for seed in first_seeds for d, s in GRID_CELLS]
    order += [(seed, d, s, 10) for seed in first_seeds for d, s in LATER_CELLS]
    order += [(seed, d, s, 10) for seed in later_seeds for d, s in CONTESTED_CELLS]
    later_rows = [row for row in _cheapest_first(GRID_CELLS) if row != IN_NO_TARGET]
    order += [(seed, d, s, 10) for d, s in later_rows for seed in later_seeds]
    order += [(seed, d, s, b) for seed in first_seeds for d, s, b in BATCH_40_EXTRAS]
    order += [(seed, *IN_NO_TARGET, 10) for seed in later_seeds]
    order += [(seed, *ENTROPY_EXTRA) for seed in first_seeds]
    order += [(seed, d, s, 10) for d, s in LATER_CELLS for seed in later_seeds]
    order += [(seed, d, s, b) for d, s, b in BATCH_40_EXTRAS for seed in later_seeds]
    order += [(seed, *ENTROPY_EXTRA) for seed in later_seeds]
    cells = list(dict.fromkeys(Cell(d, s, b, K_FOR[d], seed) for seed, d, s, b in order))
    if plan == "full":
        cells.append(DIAGNOSTIC)
        for seed in range(seeds):
            cells += [cell for cell in _full_extras(seed) if cell not in cells]
    return [cell for cell in cells if only is None or cell.dataset == only]


def _cheapest_first(cells: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    """MNIST-5k rows before Repeated-MNIST's (a pool three times the size): more whole rows
    in a grid cut short."""
    return sorted(cells, key=lambda cell: cell[0] == "repeated-mnist")


def _full_extras(seed: int) -> list[Cell]:
    """The rest of issue 6's grid: b ∈ {1, 5, 40} for BALD and BatchBALD, and entropy.

    Seed 004's "K=1 vs K=10 BALD" is its acquisition size (one item or ten per step), so the
    b=1 vs b=10 BALD rows answer it; BALD with one MC sample would be undefined.
    """
    extras = [Cell("mnist5k", "bald", b, 20, seed) for b in (1, 5, 40)]
    extras += [Cell("mnist5k", "batchbald", b, 20, seed) for b in (5, 40, 1)]
    extras.append(Cell("mnist5k", "entropy", 10, 20, seed))
    return extras

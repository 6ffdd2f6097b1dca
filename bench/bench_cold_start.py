"""Cold start on a long-tailed pool: how many classes the first 30 items cover before any model.

Issue 17's benchmark: a long-tailed pool built from Fashion-MNIST (one class at least 40 % of
the pool, the rarest at most 1 %); the first 30 items served before any model (TypiClust,
ProbCover: worker.engine.coldstart, over the EfficientNet-Lite0 vectors a round uses) against
seeded random order, the median over 5 seeds. Each seed draws its own long-tailed pool (and
its own order of which class is the head), so the methods are compared on the same pools.

The target (decided before the run): the median number of classes covered by TypiClust's
first 30 is above random order's.

    python bench/bench_cold_start.py [--seeds 5] [--budget 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.fashion_features import fashion_features  # noqa: E402
from worker.engine.coldstart import probcover, typiclust  # noqa: E402

# Items per class, head first, drawn from the 400 per class of the 4,000-image pool: 400 of
# 906 is 44 %, 9 is 0.99 %.
LONG_TAIL = (400, 190, 100, 62, 50, 38, 25, 19, 13, 9)
METHODS = ("random", "typiclust", "probcover")


def long_tailed_pool(labels_N: np.ndarray, seed: int) -> np.ndarray:
    """Row indices of a long-tailed pool: a random class order, LONG_TAIL items of each."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(10)
    rows = [
        rng.choice(np.flatnonzero(labels_N == cls), size=count, replace=False)
        for cls, count in zip(order, LONG_TAIL, strict=True)
    ]
    return rng.permutation(np.concatenate(rows))


def first_picks(method: str, features_N_D: np.ndarray, budget: int, seed: int) -> np.ndarray:
    if method == "random":
        return np.random.default_rng(seed).permutation(len(features_N_D))[:budget]
    if method == "typiclust":
        return typiclust(features_N_D, budget, seed=seed).indices
    return probcover(features_N_D, budget, num_classes=10, seed=seed).indices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=30)
    args = parser.parse_args()
    features = fashion_features()
    print(f"space: {features.space_key}")
    print(
        f"pool: {sum(LONG_TAIL)} items, class shares {LONG_TAIL[0] / sum(LONG_TAIL):.1%} "
        f"down to {LONG_TAIL[-1] / sum(LONG_TAIL):.2%}; first {args.budget} items"
    )
    covered: dict[str, list[int]] = {method: [] for method in METHODS}
    rare: dict[str, list[int]] = {method: [] for method in METHODS}
    seconds: dict[str, list[float]] = {method: [] for method in METHODS}
    for seed in range(args.seeds):
        rows = long_tailed_pool(features.pool_y, seed)
        pool_N_D, labels_N = features.pool_N_D[rows], features.pool_y[rows]
        present, counts = np.unique(labels_N, return_counts=True)
        tail = set(present[counts <= LONG_TAIL[6]].tolist())
        line = [f"seed {seed}:"]
        for method in METHODS:
            started = time.perf_counter()
            picks = first_picks(method, pool_N_D, args.budget, seed)
            seconds[method].append(time.perf_counter() - started)
            classes = set(labels_N[picks].tolist())
            covered[method].append(len(classes))
            rare[method].append(len(classes & tail))
            line.append(f"{method} {len(classes)} classes ({len(classes & tail)} of the 4 rarest)")
        print("  ".join(line))
    print(f"\nload average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(
        f"{'method':<10} {'median classes':>14} {'per seed':>18} {'median of 4 rarest':>19} "
        f"{'median s':>9}"
    )
    for method in METHODS:
        print(
            f"{method:<10} {statistics.median(covered[method]):>14} "
            f"{covered[method]!s:>18} {statistics.median(rare[method]):>19} "
            f"{statistics.median(seconds[method]):>9.2f}"
        )


if __name__ == "__main__":
    main()

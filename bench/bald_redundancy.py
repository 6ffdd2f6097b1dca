"""How redundant is top-b BALD on Repeated-MNIST? An investigation, not the benchmark.

The BatchBALD paper's explanation of BALD losing to random on Repeated-MNIST is that top-b
BALD takes an item together with its near-identical copies, wasting labels. This script
checks that mechanism on our Repeated-MNIST (the MNIST-5k pool ×3 with the reference's
noise): it trains the engine's network in-process (worker.engine.training, the shipped schedule)
on the balanced initial set plus some random labels, scores the whole pool with BALD under
K consistent MC-dropout masks, and prints how many distinct original digits the top b hold
and where the copies of the top items rank.

    python bench/bald_redundancy.py [--seeds 3] [--extra 0,80] [--batch-size 10]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulate.datasets import Dataset, balanced_initial, load_dataset
from worker.engine.networks import NetworkSpec, build_network
from worker.engine.scores import bald_scores
from worker.engine.training import TrainConfig, fit, mc_log_probs

COPIES = 3
MC_SAMPLES = 10  # the paper's K on Repeated-MNIST
EARLY_STOPPING_ITEMS = 250  # as in the grid: a quarter of the test set


def as_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).float().div(255).unsqueeze(1)


def labelled_set(dataset: Dataset, *, seed: int, extra: int) -> list[int]:
    """The run's balanced initial set (2 per class) plus `extra` random originals."""
    originals = len(dataset.pool) // COPIES
    initial = balanced_initial(dataset.pool.labels[:originals], 2, seed)
    rng = np.random.default_rng(seed)
    others = np.setdiff1d(np.arange(originals), initial)
    return initial + [int(i) for i in rng.choice(others, extra, replace=False)]


def bald_of_pool(dataset: Dataset, labelled: list[int], *, seed: int) -> torch.Tensor:
    x_pool = as_tensor(dataset.pool.images)
    y_pool = torch.from_numpy(dataset.pool.labels).long()
    x_val = as_tensor(dataset.test.images[:EARLY_STOPPING_ITEMS])
    y_val = torch.from_numpy(dataset.test.labels[:EARLY_STOPPING_ITEMS]).long()
    model = build_network(NetworkSpec(num_classes=10, in_channels=1, image_size=28), seed=seed)
    fit(model, x_pool[labelled], y_pool[labelled], config=TrainConfig(), x_val=x_val, y_val=y_val)
    return bald_scores(mc_log_probs(model, x_pool, mc_samples=MC_SAMPLES, seed=seed))


def describe(scores: torch.Tensor, *, batch_size: int) -> str:
    originals = len(scores) // COPIES
    order = torch.argsort(scores, descending=True).numpy()
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    top = order[:batch_size] % originals
    distinct = list(dict.fromkeys(top.tolist()))
    copy_ranks = [
        sorted(rank[[o + c * originals for c in range(COPIES)]].tolist()) for o in distinct
    ]
    return (
        f"top-{batch_size} BALD holds {len(distinct)} distinct originals; "
        f"ranks of their copies: {copy_ranks}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--extra", default="0,80", help="random labels beyond the initial 20")
    parser.add_argument("--batch-size", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    dataset = load_dataset("repeated-mnist")
    for extra in (int(value) for value in args.extra.split(",")):
        for seed in range(args.seeds):
            labelled = labelled_set(dataset, seed=seed, extra=extra)
            scores = bald_of_pool(dataset, labelled, seed=seed)
            found = describe(scores, batch_size=args.batch_size)
            print(f"{len(labelled)} labels, seed {seed}: {found}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()

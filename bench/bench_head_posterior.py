"""Which posterior for the head on frozen features: MC dropout, a deep ensemble, or a
last-layer Laplace approximation (laplace-torch)?

Issue 17 item 4: offer a second posterior only if it measures better on the label-efficiency
benchmark, and report the comparison either way. This runs that loop in the engine itself
(no service), on the EfficientNet-Lite0 vectors of Fashion-MNIST's 4,000-image pool
(bench/fashion_features.py): 20 balanced initial labels, BatchBALD batches of b=10 up to 300
labels, the worker's training schedule, validation as a round splits it (a quarter of the
1,000 test items steer early stopping, the rest report), seeds paired across posteriors.

- ``mc_dropout``: what the worker ships: worker.engine.networks.FeatureHead, K=20
  consistent masks.
- ``ensemble``: 5 FeatureHeads from 5 seeds, each a deterministic sample (K=5)
  (Lakshminarayanan et al., NeurIPS 2017; Beluch et al., CVPR 2018 for active learning).
- ``laplace``: the MC-dropout head's weights, then a Kronecker-factored (KFAC) Laplace
  approximation of its last layer with the prior precision fitted by marginal likelihood,
  K=20 weight samples shared by every item (Daxberger et al., "Laplace Redux", NeurIPS
  2021, whose recommended default this is). The full-covariance variant was tried first:
  its marginal-likelihood fit took 313 s per round on this machine (2,570 weights, a
  2,570² covariance), too slow for a round that should take seconds.

Decided before the run: a second posterior ships only if its mean test accuracy over
20–300 labels beats MC dropout's on every seed. Prints per-seed curves' summaries and a CSV
path; never run as a test.

    python bench/bench_head_posterior.py [--seeds 0 1 2] [--posteriors mc_dropout laplace]
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.fashion_features import Features, fashion_features  # noqa: E402
from worker.engine.acquisition import select  # noqa: E402
from worker.engine.networks import FeatureHead, NetworkSpec, build_network  # noqa: E402
from worker.engine.training import TrainConfig, fit, mc_log_probs  # noqa: E402

CPU = torch.device("cpu")
POSTERIORS = ("mc_dropout", "ensemble", "laplace")
ENSEMBLE_SIZE = 5
K = 20
INITIAL_PER_CLASS = 2
BATCH = 10
BUDGET = 300
STOPPING_ITEMS = 250
OUT = REPO / "bench" / "results" / "head_posterior.csv"

# (x_train, y_train, x_stop, y_stop, x_all for scaling, seed) -> a function pool -> [N, K, C]
Posterior = Callable[..., Callable[[torch.Tensor], torch.Tensor]]


def _head(features: torch.Tensor, seed: int) -> FeatureHead:
    spec = NetworkSpec(num_classes=10, in_channels=1, image_size=28, name="efficientnet_lite0")
    head = build_network(spec, seed=seed, feature_dim=features.shape[1])
    assert isinstance(head, FeatureHead)
    head.fit_scaling(features)
    return head


def _fit(head: FeatureHead, data: tuple[torch.Tensor, ...], seed: int) -> FeatureHead:
    x_train, y_train, x_stop, y_stop = data
    fit(
        head,
        x_train,
        y_train,
        config=TrainConfig(seed=seed),
        x_val=x_stop,
        y_val=y_stop,
        device=CPU,
    )
    return head.eval()


def mc_dropout(
    data: tuple[torch.Tensor, ...], every: torch.Tensor, seed: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    head = _fit(_head(every, seed), data, seed)
    return lambda x: mc_log_probs(head, x, mc_samples=K, seed=seed + 7, device=CPU)


def ensemble(
    data: tuple[torch.Tensor, ...], every: torch.Tensor, seed: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    heads = [_fit(_head(every, seed * 100 + m), data, seed * 100 + m) for m in range(ENSEMBLE_SIZE)]

    @torch.inference_mode()
    def log_probs(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([F.log_softmax(head(x), dim=-1) for head in heads], dim=1)

    return log_probs


def laplace(
    data: tuple[torch.Tensor, ...], every: torch.Tensor, seed: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    from laplace import Laplace

    head = _fit(_head(every, seed), data, seed)
    x_train, y_train = data[0], data[1]
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x_train, y_train), batch_size=64
    )
    approximation = Laplace(
        head, "classification", subset_of_weights="last_layer", hessian_structure="kron"
    )
    approximation.fit(loader)
    approximation.optimize_prior_precision(method="marglik")

    def log_probs(x: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(seed + 7)  # laplace-torch samples from the global generator
        probs_K_N_C = approximation.predictive_samples(x, pred_type="nn", n_samples=K)
        return probs_K_N_C.clamp_min(1e-12).log().transpose(0, 1).float()

    return log_probs


def initial_labels(labels_N: np.ndarray, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [
        int(row)
        for cls in range(10)
        for row in rng.choice(np.flatnonzero(labels_N == cls), INITIAL_PER_CLASS, replace=False)
    ]


def run_one(features: Features, posterior: str, seed: int) -> list[dict[str, float]]:
    pool = torch.from_numpy(features.pool_N_D)
    pool_y = torch.from_numpy(features.pool_y).long()
    test = torch.from_numpy(features.test_M_D)
    test_y = torch.from_numpy(features.test_y).long()
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(1234))
    stop, report = order[:STOPPING_ITEMS], order[STOPPING_ITEMS:]
    every = torch.cat([pool, test])
    make = {"mc_dropout": mc_dropout, "ensemble": ensemble, "laplace": laplace}[posterior]
    labelled = initial_labels(features.pool_y, seed)
    rows = []
    generator = torch.Generator().manual_seed(seed)
    while True:
        started = time.perf_counter()
        data = (pool[labelled], pool_y[labelled], test[stop], test_y[stop])
        predict = make(data, every, seed * 1000 + len(labelled))
        test_log_probs = predict(test[report])
        mean_log_probs = torch.logsumexp(test_log_probs.double(), dim=1) - math.log(
            test_log_probs.shape[1]
        )
        accuracy = float((mean_log_probs.argmax(1) == test_y[report]).double().mean())
        nll = float(F.nll_loss(mean_log_probs, test_y[report]))
        rows.append(
            {
                "posterior": posterior,
                "seed": seed,
                "labels": len(labelled),
                "accuracy": accuracy,
                "nll": nll,
                "seconds": time.perf_counter() - started,
            }
        )
        if len(labelled) >= BUDGET:
            return rows
        unlabelled = torch.tensor(sorted(set(range(len(pool))) - set(labelled)))
        picks = select("batchbald", predict(pool[unlabelled]), BATCH, generator=generator)
        labelled += unlabelled[picks.indices].tolist()


def summarise(rows: list[dict[str, float]]) -> dict[str, float]:
    by_labels = {int(row["labels"]): row for row in rows}
    reached = [n for n, row in sorted(by_labels.items()) if row["accuracy"] >= 0.75]
    return {
        "mean_accuracy": statistics.fmean(row["accuracy"] for row in rows),
        **{f"acc@{n}": by_labels[n]["accuracy"] for n in (20, 50, 100, 200, 300) if n in by_labels},
        "labels_to_75": float(reached[0]) if reached else float("nan"),
        "nll@300": by_labels[max(by_labels)]["nll"],
        "median_round_s": statistics.median(row["seconds"] for row in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--posteriors", nargs="+", choices=POSTERIORS, default=list(POSTERIORS))
    args = parser.parse_args()
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    features = fashion_features()
    print(f"space: {features.space_key}; load average {os.getloadavg()[0]:.2f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    results: dict[tuple[str, int], dict[str, float]] = {}
    with OUT.open("w", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=["posterior", "seed", "labels", "accuracy", "nll", "seconds"]
        )
        writer.writeheader()
        for seed in args.seeds:
            for posterior in args.posteriors:
                rows = run_one(features, posterior, seed)
                writer.writerows(rows)
                handle.flush()
                results[posterior, seed] = summary = summarise(rows)
                print(
                    f"{posterior:<10} seed {seed}: "
                    + ", ".join(f"{key} {value:.3f}" for key, value in summary.items()),
                    flush=True,
                )
    print(f"\nper-round rows: {OUT.relative_to(REPO)}; load average {os.getloadavg()[0]:.2f}")
    for posterior in args.posteriors:
        if posterior == "mc_dropout" or "mc_dropout" not in args.posteriors:
            continue
        wins = [
            results[posterior, seed]["mean_accuracy"] > results["mc_dropout", seed]["mean_accuracy"]
            for seed in args.seeds
        ]
        verdict = "ships" if all(wins) else "does not ship"
        print(
            f"{posterior} beats mc_dropout's mean accuracy on {sum(wins)} of {len(wins)} "
            f"seeds: it {verdict}"
        )


if __name__ == "__main__":
    main()

"""The catalog: every acquisition strategy, network and round phase, defined once.

The API validates settings against it and serves it (`GET /api/v1/catalog`), so the
dashboard, the annotator page and the simulator read it instead of keeping lists of their
own; the worker's engine implements exactly these (tests/worker/test_acquisition.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Strategy = Literal[
    "random",
    "entropy",
    "least_confidence",
    "margin",
    "variation_ratios",
    "bald",
    "batchbald",
    "powerbald",
]
Network = Literal["auto", "mnist_cnn", "resnet18"]
Phase = Literal["load", "train", "evaluate", "infer", "select", "write"]

STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
NETWORKS: tuple[Network, ...] = get_args(Network)
# A round's phases in the order they run; its timings add "total".
PHASES: tuple[Phase, ...] = get_args(Phase)
# Strategies that read the model's disagreement across its K stochastic passes (K >= 2).
BAYESIAN_STRATEGIES: frozenset[Strategy] = frozenset(
    {"bald", "batchbald", "powerbald", "variation_ratios"}
)


@dataclass(frozen=True)
class Entry:
    """One name and what a person reads about it."""

    name: str
    label: str
    description: str


STRATEGY_ENTRIES: tuple[Entry, ...] = (
    Entry("random", "Random", "The pool in seeded random order: the baseline."),
    Entry("entropy", "Max entropy", "Where the mean prediction is most uncertain."),
    Entry("least_confidence", "Least confidence", "Where the top class is least probable."),
    Entry("margin", "Margin", "Where the top two classes are closest."),
    Entry(
        "variation_ratios",
        "Variation ratios",
        "Where the K passes vote least for their modal class.",
    ),
    Entry(
        "bald",
        "BALD",
        "Top-b mutual information between label and weights (Houlsby et al., 2011).",
    ),
    Entry(
        "batchbald",
        "BatchBALD",
        "The batch with the most joint information, so no two picks say the same "
        "(Kirsch et al., 2019).",
    ),
    Entry(
        "powerbald",
        "PowerBALD",
        "BALD scores sampled with a power-law tilt: diverse at top-k cost (Kirsch et al., 2023).",
    ),
)
NETWORK_ENTRIES: tuple[Entry, ...] = (
    Entry("auto", "Automatic", "The paper's CNN for small grey images, else ResNet-18."),
    Entry("mnist_cnn", "MNIST CNN", "The BatchBALD paper's small CNN with MC dropout."),
    Entry("resnet18", "ResNet-18", "A ResNet-18 with an MC-dropout head, from scratch."),
)
PHASE_ENTRIES: tuple[Entry, ...] = (
    Entry("load", "Load", "Read labels and decode images."),
    Entry("train", "Train", "Train a fresh MC-dropout network on the labels."),
    Entry("evaluate", "Evaluate", "Accuracy and NLL on the validation items."),
    Entry("infer", "Infer", "K stochastic passes over the unlabelled pool."),
    Entry("select", "Select", "Score the pool and choose the queue."),
    Entry("write", "Write", "Queue, predictions and metrics in one transaction."),
)

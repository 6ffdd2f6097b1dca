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
Network = Literal["auto", "mnist_cnn", "resnet18", "efficientnet_lite0", "custom", "embeddings"]
ColdStart = Literal["typiclust", "probcover", "random"]
NearDuplicates = Literal["flag", "skip", "off"]
Phase = Literal["load", "embed", "train", "evaluate", "infer", "select", "write"]

STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
NETWORKS: tuple[Network, ...] = get_args(Network)
# Networks that learn a small MC-dropout head on frozen, cached embeddings (the rest learn
# from pixels every round).
EMBEDDING_NETWORKS: frozenset[Network] = frozenset({"efficientnet_lite0", "custom", "embeddings"})
# "auto" picks the paper CNN up to this side length for single-channel images.
MNIST_CNN_MAX_SIZE = 32
COLD_STARTS: tuple[ColdStart, ...] = get_args(ColdStart)
NEAR_DUPLICATE_POLICIES: tuple[NearDuplicates, ...] = get_args(NearDuplicates)
# A round's phases in the order they run; its timings add "total".
PHASES: tuple[Phase, ...] = get_args(Phase)
# Strategies that read the model's disagreement across its K stochastic passes (K >= 2).
BAYESIAN_STRATEGIES: frozenset[Strategy] = frozenset(
    {"bald", "batchbald", "powerbald", "variation_ratios"}
)


def resolve_network(network: str, *, channels: int, size: int) -> Network:
    """The concrete network of a project's settings: "auto" is the paper's CNN for grey
    images up to MNIST_CNN_MAX_SIZE px (where it reaches 90 % on digits with 100 labels)
    and the pretrained EfficientNet-Lite0 for everything else (photos: features learnt from
    a million images beat any network learnt from a few hundred labels).

    Raises:
        ValueError: an unknown network name.
    """
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; expected one of {NETWORKS}")
    if network != "auto":
        return network
    if channels == 1 and size <= MNIST_CNN_MAX_SIZE:
        return "mnist_cnn"
    return "efficientnet_lite0"


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
    Entry(
        "auto",
        "Automatic",
        "The paper's CNN for grey images up to 32 px, else pretrained EfficientNet-Lite0.",
    ),
    Entry("mnist_cnn", "MNIST CNN", "The BatchBALD paper's small CNN with MC dropout."),
    Entry("resnet18", "ResNet-18", "A ResNet-18 with an MC-dropout head, from scratch."),
    Entry(
        "efficientnet_lite0",
        "EfficientNet-Lite0 (pretrained)",
        "Frozen ImageNet features, embedded once per image, with an MC-dropout head.",
    ),
    Entry(
        "custom",
        "Your own backbone",
        "A torchvision or timm model with a local weights file, frozen, with an MC-dropout head.",
    ),
    Entry(
        "embeddings",
        "Imported embeddings",
        "Vectors you imported for every image, with an MC-dropout head.",
    ),
)
COLD_START_ENTRIES: tuple[Entry, ...] = (
    Entry(
        "typiclust",
        "TypiClust",
        "Before any model: the most typical image of each uncovered cluster of the "
        "embeddings (Hacohen et al., 2022).",
    ),
    Entry(
        "probcover",
        "ProbCover",
        "Before any model: the images whose neighbourhoods cover most of the embedding "
        "space (Yehuda et al., 2022).",
    ),
    Entry("random", "Random", "Before any model: the pool in seeded random order."),
)
PHASE_ENTRIES: tuple[Entry, ...] = (
    Entry("load", "Load", "Read labels and decode images."),
    Entry("embed", "Embed", "Embed the images not yet in the store with the frozen backbone."),
    Entry("train", "Train", "Train a fresh MC-dropout network on the labels."),
    Entry("evaluate", "Evaluate", "Accuracy and NLL on the validation items."),
    Entry("infer", "Infer", "K stochastic passes over the unlabelled pool."),
    Entry("select", "Select", "Score the pool and choose the queue."),
    Entry("write", "Write", "Queue, predictions and metrics in one transaction."),
)

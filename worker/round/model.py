"""The model phases of a round: train a fresh network, evaluate it, infer on the pool."""

from __future__ import annotations

import math
from typing import Any

import torch

from worker.engine.networks import FeatureHead, MCDropoutNetwork, NetworkSpec, build_network
from worker.engine.training import FitReport, TrainConfig, evaluate, fit, mc_log_probs
from worker.round.data import (
    MIN_VALIDATION_TO_SPLIT,
    NO_VALIDATION_NOTE,
    ProjectSnapshot,
    RoundData,
    RoundTensors,
)


def train_model(
    data: RoundData,
    tensors: RoundTensors,
    config: TrainConfig,
    device: torch.device,
    *,
    feature_dim: int | None = None,
) -> tuple[MCDropoutNetwork, FitReport]:
    """A fresh network (or head, on embeddings of `feature_dim`) trained on the labels."""
    project = data.project
    spec = NetworkSpec(
        num_classes=len(project.classes),
        in_channels=project.image_channels,
        image_size=project.image_size,
        name=project.network,
    )
    # A fresh network every round (no weights carried over), initialised from the round's seed.
    model = build_network(spec, seed=config.seed, feature_dim=feature_dim).to(device)
    if isinstance(model, FeatureHead):
        # Label-free statistics of every vector the round reads.
        every = (tensors.x_train, tensors.x_val, tensors.x_stop, tensors.x_pool)
        model.fit_scaling(torch.cat([x for x in every if len(x)]))
    # Early stopping watches its own share of the validation items (see split_validation).
    x_val, y_val = _seen_class_subset(tensors.x_stop, tensors.y_stop, tensors.y_train)
    report = fit(
        model,
        tensors.x_train,
        tensors.y_train,
        config=config,
        x_val=x_val if len(y_val) else None,
        y_val=y_val if len(y_val) else None,
        device=device,
    )
    return model, report


def _seen_class_subset(
    x: torch.Tensor, y: torch.Tensor, y_train: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    keep = torch.isin(y, torch.unique(y_train))
    return x[keep], y[keep]


def evaluate_model(
    model: MCDropoutNetwork,
    data: RoundData,
    tensors: RoundTensors,
    seed: int,
    device: torch.device,
    notes: list[str],
) -> dict[str, Any]:
    """Validation metrics over the classes seen in training; never on training labels."""
    classes = data.project.classes
    seen = sorted(int(c) for c in torch.unique(tensors.y_train).tolist())
    quality: dict[str, Any] = {
        "classes_seen": [classes[c] for c in seen],
        "metrics_over": "validation items of the classes seen in training",
        "validation_items": 0,
        "validation_items_unseen_classes": 0,
        "validation_items_without_label": data.validation_without_label,
        # Items that only steered early stopping; equal to the reporting set when too few.
        "early_stopping_items": len(tensors.y_stop),
        "early_stopping_items_shared": len(data.validation) < MIN_VALIDATION_TO_SPLIT,
    }
    if len(tensors.y_val) == 0:
        notes.append(NO_VALIDATION_NOTE)
        return {**quality, "accuracy": None, "nll": None, "per_class_accuracy": {}}
    result = evaluate(
        model,
        tensors.x_val,
        # Labels on the CPU: `classes` is turned into a CPU tensor to filter them with, and a
        # CPU mask indexes the images on any device.
        tensors.y_val.cpu(),
        mc_samples=data.project.mc_samples,
        seed=seed,
        classes=seen,
        device=device,
    )
    unseen = len(tensors.y_val) - result.count
    if result.count == 0:
        notes.append("no validation items of the classes seen in training")
    elif unseen:
        notes.append(f"accuracy over {len(seen)} of {len(classes)} classes (those labelled)")
    return {
        **quality,
        "accuracy": _finite_or_none(result.accuracy) if result.count else None,
        "nll": _finite_or_none(result.nll) if result.count else None,
        "per_class_accuracy": {
            classes[c]: round(acc, 6) for c, acc in sorted(result.per_class_accuracy.items())
        },
        "validation_items": result.count,
        "validation_items_unseen_classes": unseen,
    }


def _finite_or_none(value: float) -> float | None:
    return round(float(value), 6) if math.isfinite(value) else None


def infer_pool(
    model: MCDropoutNetwork,
    tensors: RoundTensors,
    project: ProjectSnapshot,
    seed: int,
    device: torch.device,
) -> torch.Tensor | None:
    if not tensors.pool_ids:
        return None
    return mc_log_probs(
        model, tensors.x_pool, mc_samples=project.mc_samples, seed=seed, device=device
    )

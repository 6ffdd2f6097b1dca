"""A round's report: what it measured and how long each phase took, typed once.

The worker writes it into `rounds.metrics` and `rounds.timings`; the API serves it (the
OpenAPI schema of a round names every field), and the metrics service, the simulator and
the dashboard read these fields rather than guessing at keys.

Every metric is optional: a queued or running round holds only who runs it (`worker`) or
why it was put back (`requeued`), and a round with no labels yet trains no model.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class FitSummary(BaseModel):
    """How the round's network was trained."""

    epochs: int = Field(description="Epochs run (79-step epochs, or one pass if longer).")
    steps: int = Field(description="Optimiser steps.")
    early_stopped: bool
    best_validation_nll: float | None
    best_validation_accuracy: float | None
    stopped_on: str = Field(description="What early stopping watched: accuracy or nll.")
    seconds: float


class RoundMetrics(BaseModel):
    """What a round measured, over the validation items of the classes seen in training."""

    # Rows written by earlier versions may hold keys no longer reported: read, not kept.
    model_config = ConfigDict(extra="ignore")

    accuracy: float | None = None
    nll: float | None = Field(default=None, description="Mean negative log-likelihood.")
    per_class_accuracy: dict[str, float] | None = None
    classes_seen: list[str] | None = Field(
        default=None, description="Classes with training labels."
    )
    metrics_over: str | None = None
    validation_items: int | None = Field(default=None, description="Items the figures are over.")
    validation_items_unseen_classes: int | None = None
    validation_items_without_label: int | None = None
    early_stopping_items: int | None = Field(
        default=None, description="Validation items that only chose the epoch."
    )
    early_stopping_items_shared: bool | None = Field(
        default=None, description="Too few validation items to split: the same ones did both."
    )
    train_items: int | None = None
    labels_used: int | None = None
    pool_items: int | None = None
    queue_items: int | None = None
    decode_failures: int | None = None
    fit: FitSummary | None = None
    mc_samples: int | None = None
    network: str | None = Field(default=None, description="The network the round trained.")
    embedding_space: str | None = Field(
        default=None, description="The backbone and preprocessing of the features (or null)."
    )
    embedded_now: int | None = Field(
        default=None, description="Images the round embedded (the rest came from the store)."
    )
    strategy: str | None = Field(default=None, description="What chose the queue's head.")
    device: str | None = None
    attempt: int | None = None
    note: str | None = None
    worker: str | None = Field(default=None, description="host:pid of the worker that ran it.")
    requeued: str | None = Field(default=None, description="Why a running round was put back.")


class PhaseTimings(BaseModel):
    """Seconds per phase (core.catalog.PHASES), and in all; a failed round has the phases it
    reached."""

    model_config = ConfigDict(extra="ignore")

    load: float | None = None
    embed: float | None = None
    train: float | None = None
    evaluate: float | None = None
    infer: float | None = None
    select: float | None = None
    write: float | None = None
    total: float | None = None


def stored(report: BaseModel) -> dict[str, object]:
    """The JSON a report is stored as: every field, null where there is no value, so the
    row reads the same as the API's answer."""
    return report.model_dump(mode="json")

"""What a simulated run is and what it records: its configuration, one row per round.

`RoundRecord` is the recorded format of the grid's results (the CSV the simulator writes and
simulate.report and bench/label_efficiency_report.py read back), and `make_record` the one
place a round as the API serves it becomes such a row. The runner drives the service; this
module only describes and converts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from nextlabel_client import Round, RoundDetail

INITIAL_PER_CLASS = 2
# The phases the CSV records, one `<phase>_s` column each: the recorded format of the grid's
# results. The service defines the phases (GET /catalog); `simulate.runner.run_one` checks
# they agree.
PHASES = ("load", "embed", "train", "evaluate", "infer", "select", "write", "total")


@dataclass(frozen=True)
class RunConfig:
    dataset: str
    strategy: str
    batch_size: int
    seed: int
    budget: int
    mc_samples: int = 20
    annotators: int = 1
    live: bool = False
    seconds_per_label: float = 0.0
    initial_per_class: int = INITIAL_PER_CLASS
    network: str = "auto"
    round_timeout_s: float = 3_600.0

    @property
    def mode(self) -> str:
        return "live" if self.live else "sync"


@dataclass
class RoundRecord:
    """One completed (or failed) round: a row of the simulation's CSV."""

    dataset: str
    strategy: str
    batch_size: int
    mc_samples: int
    seed: int
    mode: str
    # The network the round trained (its metrics say; a failed round: the run's --network).
    network: str
    project_id: int
    round_id: int
    status: str
    labels: int
    accuracy: float | None
    nll: float | None
    worker_s: float | None
    queue_wait_s: float | None
    observed_s: float | None
    load_s: float | None = None
    embed_s: float | None = None
    train_s: float | None = None
    evaluate_s: float | None = None
    infer_s: float | None = None
    select_s: float | None = None
    write_s: float | None = None
    total_s: float | None = None
    epochs: int | None = None
    early_stopped: str | None = None
    served_from_queue: int | None = None
    metrics_json: str = "{}"
    timings_json: str = "{}"
    # The round's queue scores in rank order (BatchBALD: each pick's gain in joint MI, nats).
    queue_scores_json: str = "[]"
    error: str | None = None


@dataclass
class RunResult:
    config: RunConfig
    project_id: int
    records: list[RoundRecord]
    labels_made: int
    labels_exported: int
    distinct_items_labelled: int
    import_s: float
    total_s: float
    # Waiting for the rounds the upload queued (on frozen features: embedding the dataset).
    upload_rounds_s: float = 0.0
    checks: dict[str, Any] = field(default_factory=dict)


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    """Seconds from `start` to `end`; None when the service has not recorded both."""
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


def _number(mapping: dict[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = mapping.get(key)
        if isinstance(value, int | float):
            return float(value)
    return None


def _phase_seconds(timings: dict[str, Any], phase: str) -> float | None:
    return _number(timings, phase, f"{phase}_s", f"{phase}_seconds")


def make_record(
    config: RunConfig, project_id: int, round_: Round, observed_s: float | None
) -> RoundRecord:
    # As the service sent them: fields it left out stay out of the record.
    metrics = round_.metrics.model_dump(exclude_unset=True)
    timings = round_.timings.model_dump(exclude_unset=True)
    record = RoundRecord(
        dataset=config.dataset,
        strategy=config.strategy,
        batch_size=config.batch_size,
        mc_samples=config.mc_samples,
        seed=config.seed,
        mode=config.mode,
        network=str(metrics.get("network") or config.network),
        project_id=project_id,
        round_id=round_.id,
        status=round_.status,
        labels=round_.labels_used,
        accuracy=_number(metrics, "accuracy", "val_accuracy", "validation_accuracy"),
        nll=_number(metrics, "nll", "val_nll", "validation_nll"),
        worker_s=seconds_between(round_.started_at, round_.finished_at),
        queue_wait_s=seconds_between(round_.created_at, round_.started_at),
        observed_s=observed_s,
        metrics_json=json.dumps(_small(metrics), sort_keys=True),
        timings_json=json.dumps(timings, sort_keys=True),
        error=round_.error,
    )
    if isinstance(round_, RoundDetail):
        ordered = sorted(round_.queue, key=lambda entry: entry.rank)
        record.queue_scores_json = json.dumps([round(entry.score, 5) for entry in ordered])
    for phase in PHASES:
        setattr(record, f"{phase}_s", _phase_seconds(timings, phase))
    fit = metrics.get("fit")
    if isinstance(fit, dict):
        # The training schedule the engine chose: the first suspect when a target is missed.
        epochs = fit.get("epochs")
        record.epochs = int(epochs) if isinstance(epochs, int | float) else None
        record.early_stopped = (
            None if fit.get("early_stopped") is None else str(fit["early_stopped"])
        )
    return record


def _small(metrics: dict[str, Any]) -> dict[str, Any]:
    """Scalars and short lists only: a confusion matrix has no place in one CSV cell."""
    return {
        key: value
        for key, value in metrics.items()
        if not isinstance(value, list | dict) or len(json.dumps(value)) < 400
    }


def result_json(result: RunResult) -> dict[str, Any]:
    summary = asdict(result)
    summary.pop("records")
    return summary

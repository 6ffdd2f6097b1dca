"""What a round writes: queue and predictions, its report and status, in one fenced
transaction; the random round when nothing is labelled yet; the failure of a round.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import torch
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core.report import RoundMetrics, stored
from core.rounds import Claim, RoundAbandoned, ensure_still_ours, fenced
from core.tables import Prediction, QueueEntry, Round, RoundStatus, WebhookEvent
from core.webhooks import emit_round_event
from worker.round.data import (
    COLD_START_NOTE,
    NO_LABELS_NOTE,
    NO_VALIDATION_NOTE,
    POOL_USED_UP_NOTE,
    RoundData,
    RoundTensors,
)
from worker.round.plan import QueuePlan

# The round's phase timings as stored, read at the moment of writing (PhaseTimer.stored).
Timings = Callable[[], dict[str, object]]


def write_round(
    session_factory: sessionmaker[Session],
    worker_id: str,
    claim: Claim,
    data: RoundData,
    strategy: str,
    pool_ids: list[int],
    log_probs_N_K_C: torch.Tensor | None,
    plan: QueuePlan | None,
    metrics: RoundMetrics,
    timings: Timings,
) -> None:
    """Queue, predictions, metrics, timings and status: one transaction, fenced."""
    queue_rows, prediction_rows = _rows(
        claim.round_id, data.project.classes, pool_ids, log_probs_N_K_C, plan
    )
    _commit_round(
        session_factory, worker_id, claim, strategy, queue_rows, prediction_rows, metrics, timings
    )


def _rows(
    round_id: int,
    classes: list[str],
    pool_ids: list[int],
    log_probs_N_K_C: torch.Tensor | None,
    plan: QueuePlan | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if log_probs_N_K_C is None or plan is None:
        return [], []
    K = log_probs_N_K_C.shape[1]
    probs_N_C = (torch.logsumexp(log_probs_N_K_C.double(), dim=1) - math.log(K)).exp()
    confidence_N, predicted_N = probs_N_C.max(dim=1)
    scores_N = torch.nan_to_num(plan.scores.double(), nan=0.0, posinf=1e30, neginf=-1e30)
    picks = zip(plan.indices.tolist(), plan.pick_scores.tolist(), plan.pick_strategies, strict=True)
    queue_rows = [
        {
            "round_id": round_id,
            "item_id": pool_ids[index],
            "rank": rank,
            "score": float(score) if math.isfinite(score) else 0.0,
            "strategy": strategy,
        }
        for rank, (index, score, strategy) in enumerate(picks)
    ]
    probabilities = probs_N_C.round(decimals=6).tolist()
    prediction_rows = [
        {
            "round_id": round_id,
            "item_id": item_id,
            "predicted": classes[int(predicted_N[n])],
            "confidence": float(confidence_N[n]),
            "probabilities": probabilities[n],
            "score": float(scores_N[n]),
        }
        for n, item_id in enumerate(pool_ids)
    ]
    return queue_rows, prediction_rows


def _commit_round(
    session_factory: sessionmaker[Session],
    worker_id: str,
    claim: Claim,
    strategy: str,
    queue_rows: list[dict[str, Any]],
    prediction_rows: list[dict[str, Any]],
    metrics: RoundMetrics,
    timings: Timings,
) -> None:
    with session_factory() as session:
        try:
            with session.begin():
                # The fenced status change goes first: it locks the round row (PostgreSQL), so
                # a concurrent project delete waits for this commit, and an abandoned round
                # rolls back before inserting anything.
                finished = session.execute(
                    fenced(claim).values(
                        status=RoundStatus.done,
                        strategy=strategy,
                        finished_at=datetime.now(UTC),
                        metrics=stored(metrics.model_copy(update={"worker": worker_id})),
                        timings=timings(),
                    )
                )
                if finished.rowcount != 1:  # type: ignore[attr-defined]
                    raise RoundAbandoned("round deleted or taken over before writing")
                if queue_rows:
                    session.execute(insert(QueueEntry), queue_rows)
                if prediction_rows:
                    session.execute(insert(Prediction), prediction_rows)
                # The timings must include the write itself: refresh them just before commit.
                session.execute(_done_row(claim).values(timings=timings()))
                emit_round_event(session, round_id=claim.round_id, event=WebhookEvent.round_done)
        except IntegrityError as exc:
            # Items or the project vanished under us: if the round is gone, that's a delete.
            ensure_still_ours(session_factory=session_factory, claim=claim)
            raise RuntimeError(f"could not write the round: {exc.orig}") from exc


def _done_row(claim: Claim) -> Any:
    return update(Round).where(
        Round.id == claim.round_id,
        Round.status == RoundStatus.done,
        Round.attempts == claim.attempt,
    )


def write_first_round(
    session_factory: sessionmaker[Session],
    worker_id: str,
    claim: Claim,
    data: RoundData,
    tensors: RoundTensors,
    timings: Timings,
    device: torch.device,
    *,
    cold_start: tuple[str, QueuePlan] | None = None,
    embedding_space: str | None = None,
    embedded_now: int | None = None,
) -> None:
    """No labels to train on, so no model: queue the cold start's picks (worker.round.plan.
    plan_cold_start) and then the pool in its seeded random order, or that order alone."""
    notes = [NO_LABELS_NOTE if cold_start is None else COLD_START_NOTE]
    if not tensors.pool_ids:
        notes.append(POOL_USED_UP_NOTE)
    if len(tensors.y_val) == 0:
        notes.append(NO_VALIDATION_NOTE)
    size = min(data.project.queue_size, len(tensors.pool_ids))
    picks: list[tuple[int, float, str]] = []
    if cold_start is not None:
        strategy, plan = cold_start
        picks = [
            (tensors.pool_ids[index], float(score), strategy)
            for index, score in zip(plan.indices.tolist(), plan.pick_scores.tolist(), strict=True)
        ]
    picked = {item_id for item_id, _, _ in picks}
    rest = (item_id for item_id in tensors.pool_ids if item_id not in picked)
    picks += [(item_id, 0.0, "random") for item_id in itertools.islice(rest, size - len(picks))]
    queue_rows = [
        {
            "round_id": claim.round_id,
            "item_id": item_id,
            "rank": rank,
            "score": score if math.isfinite(score) else 0.0,
            "strategy": strategy,
        }
        for rank, (item_id, score, strategy) in enumerate(picks[:size])
    ]
    head = cold_start[0] if cold_start is not None else "random"
    metrics = RoundMetrics(
        per_class_accuracy={},
        classes_seen=[],
        validation_items=0,
        train_items=0,
        labels_used=data.labels_used,
        pool_items=len(tensors.pool_ids),
        queue_items=len(queue_rows),
        decode_failures=tensors.decode_failures,
        network=data.project.resolved_network,
        embedding_space=embedding_space,
        embedded_now=embedded_now,
        strategy=head,
        device=str(device),
        attempt=claim.attempt,
        note="; ".join(notes),
    )
    _commit_round(session_factory, worker_id, claim, head, queue_rows, [], metrics, timings)


def set_note(session_factory: sessionmaker[Session], claim: Claim, note: str | None) -> None:
    """Replace the note of a round this worker finished (what happened after its write)."""
    with session_factory() as session, session.begin():
        done = session.scalar(select(Round).where(Round.id == claim.round_id).with_for_update())
        if done is None or done.status != RoundStatus.done or done.attempts != claim.attempt:
            return
        done.metrics = {**(done.metrics or {}), "note": note}


def mark_failed(
    session_factory: sessionmaker[Session], claim: Claim, error: str, timings: dict[str, object]
) -> None:
    with session_factory() as session, session.begin():
        failed = session.execute(
            fenced(claim).values(
                status=RoundStatus.failed,
                error=error[:4000],
                finished_at=datetime.now(UTC),
                timings=timings,
            )
        )
        if failed.rowcount == 1:  # type: ignore[attr-defined]
            emit_round_event(session, round_id=claim.round_id, event=WebhookEvent.round_failed)

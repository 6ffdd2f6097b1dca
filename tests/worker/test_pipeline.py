"""A round in-process (worker.round, core.rounds) on SQLite with real digits: every phase and
every edge case.

Rows are made through the models (what the API would have written) and `run_round` is called
directly; tests/worker/test_round_celery.py runs the same pipeline in a real Celery worker.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import torch
from round_support import (
    DigitsProject,
    add_labels,
    balanced_pool_ids,
    digit_pngs,
    queue_round,
    round_row,
)
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from core import rounds
from core.rounds import MAX_ATTEMPTS, RoundOutcome
from core.storage import LocalImageStore
from core.tables import Item, Prediction, Project, QueueEntry, Round, RoundStatus
from worker.engine.images import ImageCache, ImageSpec, ItemImage, decode_image
from worker.round import model
from worker.round.data import (
    NO_LABELS_NOTE,
    NO_VALIDATION_NOTE,
    POOL_USED_UP_NOTE,
    majority_label,
    split_validation,
)
from worker.round.run import WorkerContext, round_seed, run_round

PHASES = {"load", "train", "evaluate", "infer", "select", "write", "total"}


def _run(context: WorkerContext, round_id: int) -> RoundOutcome:
    return run_round(round_id, settings=context.settings, context=context)


def _queue(session: Session, round_id: int) -> list[QueueEntry]:
    session.expire_all()
    return list(
        session.scalars(
            select(QueueEntry).where(QueueEntry.round_id == round_id).order_by(QueueEntry.rank)
        )
    )


def _predictions(session: Session, round_id: int) -> dict[int, Prediction]:
    rows = session.scalars(select(Prediction).where(Prediction.round_id == round_id))
    return {row.item_id: row for row in rows}


def recover_rounds(context: WorkerContext) -> list[int]:
    return rounds.recover_rounds(
        session_factory=context.session_factory, worker_id=context.worker_id, send=context.enqueue
    )


def sweep_rounds(context: WorkerContext, *, running: int | None) -> list[int]:
    return rounds.sweep_rounds(
        session_factory=context.session_factory,
        worker_id=context.worker_id,
        send=context.enqueue,
        running=running,
    )


def _during_fit(monkeypatch: pytest.MonkeyPatch, action: Callable[[], None]) -> None:
    """Run `action` while the round trains (as another process would, mid-round)."""
    real_fit = model.fit

    def fit_then_act(*args: Any, **kwargs: Any) -> Any:
        report = real_fit(*args, **kwargs)
        action()
        return report

    monkeypatch.setattr(model, "fit", fit_then_act)


# --------------------------------------------------------------------------- a full round


def test_round_trains_evaluates_scores_and_writes_one_consistent_round(
    wk_context: WorkerContext,
    wk_session: Session,
    wk_digits: Callable[..., DigitsProject],
) -> None:
    project = wk_digits(pool=300, validation=200, retrain_every=10, queue_size=25)
    label_ids = add_labels(wk_session, project, balanced_pool_ids(project, per_class=6))
    round_id = queue_round(wk_session, project.project_id)

    outcome = _run(wk_context, round_id)

    assert outcome.status == "done", outcome
    rnd = round_row(wk_session, round_id)
    assert rnd is not None and rnd.status == RoundStatus.done
    assert rnd.attempts == 1 and rnd.started_at is not None and rnd.finished_at is not None
    assert rnd.label_watermark == max(label_ids) and rnd.labels_used == len(label_ids)
    unlabelled = set(project.pool_ids) - set(project.labelled)
    queue = _queue(wk_session, round_id)
    assert [entry.rank for entry in queue] == list(range(25))
    assert len({entry.item_id for entry in queue}) == 25
    assert {entry.item_id for entry in queue} <= unlabelled
    assert {entry.strategy for entry in queue} == {"bald"}
    predictions = _predictions(wk_session, round_id)
    assert set(predictions) == unlabelled
    some = next(iter(predictions.values()))
    assert some.predicted in [str(d) for d in range(10)]
    assert len(some.probabilities) == 10 and abs(sum(some.probabilities) - 1) < 1e-3
    assert some.confidence == pytest.approx(max(some.probabilities), abs=1e-5)
    # The queue is the top of the per-item score (top-k BALD), so `next` continues seamlessly.
    by_score = sorted(predictions.values(), key=lambda p: -p.score)
    assert [p.item_id for p in by_score[:25]] == [e.item_id for e in queue]
    metrics = rnd.metrics
    assert metrics["accuracy"] > 0.5, metrics  # 60 labels of real digits: far above 0.1
    assert metrics["nll"] is not None and metrics["nll"] < 2.3
    assert set(metrics["per_class_accuracy"]) == {str(d) for d in range(10)}
    # A quarter of the 200 validation items only steered early stopping; the rest report.
    stopping = metrics["early_stopping_items"]
    assert 30 < stopping < 70 and not metrics["early_stopping_items_shared"]
    assert metrics["validation_items"] == 200 - stopping and metrics["train_items"] == 60
    assert metrics["fit"]["stopped_on"] == "accuracy"
    assert metrics["classes_seen"] == [str(d) for d in range(10)]
    assert metrics["fit"]["steps"] > 0 and metrics["device"] in {"cpu", "cuda", "cuda:0", "mps"}
    assert metrics["note"] is None
    assert all(rnd.timings[phase] >= 0 for phase in PHASES)
    assert rnd.timings["embed"] is None  # pixels: nothing to embed
    assert rnd.timings["total"] >= rnd.timings["train"]


def test_round_seeds_are_reproducible_and_not_shared_between_project_seeds() -> None:
    assert round_seed(0, 5) == round_seed(0, 5)
    seeds = {round_seed(project, round_id) for project in range(-2, 6) for round_id in range(40)}
    assert len(seeds) == 8 * 40  # a sum would give (s, r + 1) the seed of (s + 1, r)
    assert all(0 <= seed < 2**63 for seed in seeds)


def test_labels_are_majority_voted_and_ties_go_to_the_latest() -> None:
    assert majority_label([(1, "cat"), (2, "dog"), (3, "cat")]) == "cat"
    assert majority_label([(1, "cat"), (2, "dog")]) == "dog"
    assert majority_label([(5, "cat"), (2, "dog")]) == "cat"
    assert majority_label([(1, "a"), (2, "b"), (3, "b"), (4, "a"), (5, "c")]) == "a"


def test_batchbald_picks_its_batch_and_powerbald_fills_the_queue_reproducibly(
    wk_context: WorkerContext, wk_session: Session, wk_digits: Callable[..., DigitsProject]
) -> None:
    project = wk_digits(pool=120, validation=0, strategy="batchbald", query_size=4, queue_size=9)
    add_labels(wk_session, project, balanced_pool_ids(project, per_class=2))
    first = queue_round(wk_session, project.project_id)
    assert _run(wk_context, first).status == "done"
    queue = _queue(wk_session, first)
    picks = [e.item_id for e in queue]
    assert [e.strategy for e in queue] == ["batchbald"] * 4 + ["powerbald"] * 5
    assert len(set(picks)) == 9 and set(picks) <= set(_unlabelled(project))
    # BatchBALD's first pick is the BALD argmax: the top per-item score.
    predictions = _predictions(wk_session, first)
    assert picks[0] == max(predictions.values(), key=lambda p: p.score).item_id
    assert round_row(wk_session, first).strategy == "batchbald"  # type: ignore[union-attr]
    # Same labels, same round id → same seed → the same queue when the round runs again.
    wk_session.execute(delete(QueueEntry).where(QueueEntry.round_id == first))
    wk_session.execute(delete(Prediction).where(Prediction.round_id == first))
    wk_session.execute(
        update(Round).where(Round.id == first).values(status=RoundStatus.queued, attempts=0)
    )
    wk_session.commit()
    assert _run(wk_context, first).status == "done"
    assert [e.item_id for e in _queue(wk_session, first)] == picks


# --------------------------------------------------------------------------- edge cases


def test_a_round_with_no_labels_queues_the_seeded_random_order(
    wk_context: WorkerContext, wk_session: Session, wk_digits: Callable[..., DigitsProject]
) -> None:
    project = wk_digits(pool=40, validation=10, retrain_every=5)
    round_id = queue_round(wk_session, project.project_id)

    assert _run(wk_context, round_id).status == "done"

    rnd = round_row(wk_session, round_id)
    assert rnd is not None and rnd.status == RoundStatus.done
    expected = wk_session.scalars(
        select(Item.id)
        .where(Item.project_id == project.project_id, Item.split == "pool")
        .order_by(Item.random_key, Item.id)
        .limit(10)
    ).all()
    assert [e.item_id for e in _queue(wk_session, round_id)] == list(expected)
    assert rnd.metrics["note"].startswith(NO_LABELS_NOTE)
    assert rnd.metrics["accuracy"] is None and rnd.metrics["train_items"] == 0
    assert rnd.strategy == "random" and _predictions(wk_session, round_id) == {}


def test_validation_items_split_stably_into_early_stopping_and_reporting() -> None:
    items = [ItemImage(item_id, f"key{item_id}") for item_id in range(1, 5_001)]
    stopping, reporting = split_validation(items)
    assert 900 < len(stopping) < 1_150  # about the paper's 1,024
    everything = {it.item_id for it in stopping} | {it.item_id for it in reporting}
    assert everything == set(range(1, 5_001))
    assert not {it.item_id for it in stopping} & {it.item_id for it in reporting}
    # A larger set only moves items from early stopping to reporting, never back.
    smaller_stopping, smaller_reporting = split_validation(items[:4_000])
    assert 900 < len(smaller_stopping) < 1_100  # a quarter
    old_ids = set(range(1, 4_001))
    assert {it.item_id for it in stopping} & old_ids <= {it.item_id for it in smaller_stopping}
    assert {it.item_id for it in smaller_reporting} <= {it.item_id for it in reporting}
    # Spread over the whole id range, not the first or last items uploaded.
    ids = sorted(it.item_id for it in stopping)
    assert ids[0] < 100 and ids[-1] > 4_900
    few = items[:150]
    assert split_validation(few) == (few, few)


def test_labels_for_only_some_classes_train_and_report_over_the_classes_seen(
    wk_context: WorkerContext, wk_session: Session, wk_digits: Callable[..., DigitsProject]
) -> None:
    project = wk_digits(pool=200, validation=120)
    seen = ["0", "1", "7"]
    add_labels(wk_session, project, balanced_pool_ids(project, per_class=5, classes=seen))
    round_id = queue_round(wk_session, project.project_id)

    assert _run(wk_context, round_id).status == "done"

    metrics = round_row(wk_session, round_id).metrics  # type: ignore[union-attr]
    in_seen = sum(project.truth[i] in seen for i in project.validation_ids)
    assert metrics["classes_seen"] == seen
    assert set(metrics["per_class_accuracy"]) <= set(seen)
    assert metrics["validation_items"] == in_seen
    assert metrics["validation_items_unseen_classes"] == 120 - in_seen
    assert metrics["accuracy"] > 0.6  # three easy digits apart; chance is a third
    assert "3 of 10 classes" in metrics["note"]
    assert len(_queue(wk_session, round_id)) == 20


def test_without_validation_items_the_metrics_say_so_and_use_no_training_labels(
    wk_context: WorkerContext, wk_session: Session, wk_digits: Callable[..., DigitsProject]
) -> None:
    project = wk_digits(pool=100, validation=0)
    add_labels(wk_session, project, balanced_pool_ids(project, per_class=2))
    round_id = queue_round(wk_session, project.project_id)

    assert _run(wk_context, round_id).status == "done"

    metrics = round_row(wk_session, round_id).metrics  # type: ignore[union-attr]
    assert metrics["accuracy"] is None and metrics["nll"] is None
    assert metrics["note"] == NO_VALIDATION_NOTE
    assert metrics["validation_items"] == 0 and metrics["per_class_accuracy"] == {}
    assert metrics["fit"]["best_validation_nll"] is None
    assert len(_queue(wk_session, round_id)) == 20


def test_a_used_up_pool_finishes_with_an_empty_queue_and_a_note(
    wk_context: WorkerContext, wk_session: Session, wk_digits: Callable[..., DigitsProject]
) -> None:
    project = wk_digits(pool=30, validation=20)
    add_labels(wk_session, project, list(project.pool_ids))
    round_id = queue_round(wk_session, project.project_id)

    assert _run(wk_context, round_id).status == "done"

    rnd = round_row(wk_session, round_id)
    assert rnd is not None and rnd.status == RoundStatus.done
    assert _queue(wk_session, round_id) == [] and _predictions(wk_session, round_id) == {}
    assert POOL_USED_UP_NOTE in rnd.metrics["note"]
    assert rnd.metrics["pool_items"] == 0 and rnd.metrics["accuracy"] is not None


def test_an_image_that_fails_to_decode_is_skipped_recorded_and_the_round_finishes(
    wk_context: WorkerContext,
    wk_session: Session,
    wk_store: LocalImageStore,
    wk_digits: Callable[..., DigitsProject],
) -> None:
    project = wk_digits(pool=60, validation=20)
    labelled = balanced_pool_ids(project, per_class=2)
    add_labels(wk_session, project, labelled)
    broken_pool, broken_labelled = _unlabelled(project)[0], labelled[0]
    for item_id, data in (
        (broken_pool, b"\x89PNG\r\n\x1a\n not really"),
        (broken_labelled, b"GIF"),
    ):
        wk_session.execute(
            update(Item).where(Item.id == item_id).values(file_key=wk_store.put(data))
        )
    missing = _unlabelled(project)[1]  # a file that vanished from storage fails the same way
    wk_session.execute(update(Item).where(Item.id == missing).values(file_key="0" * 64))
    wk_session.commit()
    round_id = queue_round(wk_session, project.project_id)

    assert _run(wk_context, round_id).status == "done"

    wk_session.expire_all()
    errors = dict(
        wk_session.execute(
            select(Item.id, Item.decode_error).where(Item.decode_error.is_not(None))
        ).all()
    )
    assert set(errors) == {broken_pool, broken_labelled, missing}
    assert all(errors.values())
    rnd = round_row(wk_session, round_id)
    assert rnd is not None and rnd.metrics["decode_failures"] == 3
    assert rnd.metrics["train_items"] == len(labelled) - 1
    scored = _predictions(wk_session, round_id)
    assert broken_pool not in scored and missing not in scored
    assert len(scored) == len(_unlabelled(project)) - 2
    # The next round doesn't even try them again.
    second = queue_round(wk_session, project.project_id)
    assert _run(wk_context, second).status == "done"
    assert round_row(wk_session, second).metrics["decode_failures"] == 0  # type: ignore[union-attr]


def _unlabelled(project: DigitsProject) -> list[int]:
    return [i for i in project.pool_ids if i not in set(project.labelled)]


# --------------------------------------------------------------------------- reliability


def test_deleting_the_project_mid_round_ends_the_round_cleanly(
    wk_context: WorkerContext,
    wk_session: Session,
    wk_digits: Callable[..., DigitsProject],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = wk_digits(pool=60, validation=20)
    add_labels(wk_session, project, balanced_pool_ids(project, per_class=2))
    round_id = queue_round(wk_session, project.project_id)

    def delete_project() -> None:
        with wk_context.session_factory() as other:
            other.execute(delete(Project).where(Project.id == project.project_id))
            other.commit()

    _during_fit(monkeypatch, delete_project)
    outcome = _run(wk_context, round_id)

    assert outcome.status == "skipped" and "deleted" in outcome.reason
    assert round_row(wk_session, round_id) is None
    assert wk_session.scalar(select(func.count()).select_from(QueueEntry)) == 0
    assert wk_session.scalar(select(func.count()).select_from(Prediction)) == 0


def test_a_round_taken_over_by_another_attempt_writes_nothing(
    wk_context: WorkerContext,
    wk_session: Session,
    wk_digits: Callable[..., DigitsProject],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = wk_digits(pool=60, validation=20)
    add_labels(wk_session, project, balanced_pool_ids(project, per_class=2))
    round_id = queue_round(wk_session, project.project_id)

    def another_worker_claims_it() -> None:
        with wk_context.session_factory() as other:
            other.execute(update(Round).where(Round.id == round_id).values(attempts=2))
            other.commit()

    _during_fit(monkeypatch, another_worker_claims_it)
    outcome = _run(wk_context, round_id)

    assert outcome.status == "skipped"
    rnd = round_row(wk_session, round_id)
    assert rnd is not None and rnd.status == RoundStatus.running and rnd.attempts == 2
    assert _queue(wk_session, round_id) == [] and _predictions(wk_session, round_id) == {}


def test_a_duplicate_delivery_of_a_finished_round_does_nothing(
    wk_context: WorkerContext, wk_session: Session, wk_digits: Callable[..., DigitsProject]
) -> None:
    project = wk_digits(pool=40, validation=0)
    round_id = queue_round(wk_session, project.project_id)
    assert _run(wk_context, round_id).status == "done"
    queue = [(e.item_id, e.rank) for e in _queue(wk_session, round_id)]

    again = _run(wk_context, round_id)

    assert again.status == "skipped" and again.reason == "already done"
    assert [(e.item_id, e.rank) for e in _queue(wk_session, round_id)] == queue
    assert round_row(wk_session, round_id).attempts == 1  # type: ignore[union-attr]


def _orphan(session: Session, round_id: int, *, attempts: int, worker: str) -> None:
    session.execute(
        update(Round)
        .where(Round.id == round_id)
        .values(
            status=RoundStatus.running,
            attempts=attempts,
            started_at=datetime.now(UTC),
            metrics={"worker": worker},
        )
    )
    session.commit()


def _dead_pid() -> int:
    pid = 2**22 - 7
    while rounds.pid_alive(pid):
        pid -= 1
    return pid


def test_a_redelivered_round_of_a_dead_worker_reruns_from_scratch(
    wk_context: WorkerContext, wk_session: Session, wk_digits: Callable[..., DigitsProject]
) -> None:
    project = wk_digits(pool=40, validation=0)
    round_id = queue_round(wk_session, project.project_id)
    host = wk_context.worker_id.rpartition(":")[0]
    _orphan(wk_session, round_id, attempts=1, worker=f"{host}:{_dead_pid()}")

    assert _run(wk_context, round_id).status == "done"
    rnd = round_row(wk_session, round_id)
    assert rnd is not None and rnd.attempts == 2 and len(_queue(wk_session, round_id)) == 20


def test_a_round_still_running_in_a_live_worker_is_not_run_twice(
    wk_context: WorkerContext, wk_session: Session, wk_digits: Callable[..., DigitsProject]
) -> None:
    project = wk_digits(pool=40, validation=0)
    round_id = queue_round(wk_session, project.project_id)
    host = wk_context.worker_id.rpartition(":")[0]
    _orphan(wk_session, round_id, attempts=1, worker=f"{host}:{os.getppid()}")

    outcome = _run(wk_context, round_id)

    assert outcome.status == "skipped" and "live worker" in outcome.reason
    assert round_row(wk_session, round_id).attempts == 1  # type: ignore[union-attr]


def test_a_round_whose_workers_keep_dying_fails_after_max_attempts(
    wk_context: WorkerContext, wk_session: Session, wk_digits: Callable[..., DigitsProject]
) -> None:
    project = wk_digits(pool=40, validation=0)
    round_id = queue_round(wk_session, project.project_id)
    _orphan(wk_session, round_id, attempts=MAX_ATTEMPTS, worker="elsewhere:1")
    wk_session.execute(
        update(Round)
        .where(Round.id == round_id)
        .values(started_at=datetime.now(UTC) - timedelta(hours=2))
    )
    wk_session.commit()

    outcome = _run(wk_context, round_id)

    assert outcome.status == "failed"
    rnd = round_row(wk_session, round_id)
    assert rnd is not None and rnd.status == RoundStatus.failed and "attempts" in (rnd.error or "")
    assert _queue(wk_session, round_id) == []
    # The project is not blocked: a new round can be queued and runs.
    assert _run(wk_context, queue_round(wk_session, project.project_id)).status == "done"


def test_an_error_in_a_phase_marks_the_round_failed_with_the_error(
    wk_context: WorkerContext,
    wk_session: Session,
    wk_digits: Callable[..., DigitsProject],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = wk_digits(pool=40, validation=10)
    add_labels(wk_session, project, balanced_pool_ids(project, per_class=1))
    round_id = queue_round(wk_session, project.project_id)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(model, "mc_log_probs", broken)
    outcome = _run(wk_context, round_id)

    assert outcome.status == "failed"
    rnd = round_row(wk_session, round_id)
    assert rnd is not None and rnd.status == RoundStatus.failed
    assert "CUDA out of memory" in (rnd.error or "") and rnd.finished_at is not None
    assert _queue(wk_session, round_id) == [] and _predictions(wk_session, round_id) == {}


def test_labels_made_during_a_round_count_toward_the_next_one_which_the_worker_queues(
    wk_context: WorkerContext,
    wk_session: Session,
    wk_digits: Callable[..., DigitsProject],
    wk_sent: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = wk_digits(pool=80, validation=0, retrain_every=5)
    add_labels(wk_session, project, balanced_pool_ids(project, per_class=1))
    round_id = queue_round(wk_session, project.project_id)
    during = _unlabelled(project)[:5]
    made: list[int] = []

    def annotators_keep_labelling() -> None:
        with wk_context.session_factory() as other:
            made.extend(add_labels(other, project, during))

    real_fit = model.fit
    _during_fit(monkeypatch, annotators_keep_labelling)
    outcome = _run(wk_context, round_id)

    assert outcome.status == "done" and outcome.next_round_id is not None
    rnd = round_row(wk_session, round_id)
    assert rnd is not None and rnd.label_watermark < min(made)
    assert rnd.labels_used == 10 and rnd.metrics["train_items"] == 10
    # They were unlabelled when the round loaded, so they were scored; `next` skips labelled
    # items, so a queue entry that got labelled meanwhile is simply passed over.
    assert set(during) <= set(_predictions(wk_session, round_id))
    follow_up = round_row(wk_session, outcome.next_round_id)
    assert follow_up is not None and follow_up.status == RoundStatus.queued
    assert wk_sent.ids == [outcome.next_round_id]
    # That round trains on all 15 labels; nothing arrived during it, so nothing follows.
    monkeypatch.setattr(model, "fit", real_fit)
    second = _run(wk_context, outcome.next_round_id)
    assert second.status == "done" and second.next_round_id is None
    assert round_row(wk_session, outcome.next_round_id).labels_used == 15  # type: ignore[union-attr]


def test_a_follow_up_round_is_not_queued_twice(
    wk_context: WorkerContext, wk_session: Session, wk_digits: Callable[..., DigitsProject]
) -> None:
    project = wk_digits(pool=40, validation=0, retrain_every=2)
    round_id = queue_round(wk_session, project.project_id)
    other = Round(project_id=project.project_id, status=RoundStatus.done, strategy="bald")
    wk_session.add(other)
    wk_session.commit()
    assert _run(wk_context, round_id).status == "done"
    add_labels(wk_session, project, _unlabelled(project)[:3])
    api_round = queue_round(wk_session, project.project_id)  # the API triggered it first

    assert (
        rounds.enqueue_follow_up(
            session_factory=wk_context.session_factory,
            project_id=project.project_id,
            send=wk_context.enqueue,
        )
        is None
    )
    active = wk_session.scalars(
        select(Round.id).where(Round.status.in_([RoundStatus.queued, RoundStatus.running]))
    ).all()
    assert list(active) == [api_round]


def test_recovery_requeues_orphans_resends_queued_rounds_and_triggers_pending_labels(
    wk_context: WorkerContext,
    wk_session: Session,
    wk_digits: Callable[..., DigitsProject],
    wk_sent: Any,
) -> None:
    host = wk_context.worker_id.rpartition(":")[0]
    orphaned = wk_digits(pool=20, validation=0)
    orphan_round = queue_round(wk_session, orphaned.project_id)
    _orphan(wk_session, orphan_round, attempts=1, worker=f"{host}:{_dead_pid()}")
    lost_message = wk_digits(pool=20, validation=0)
    queued_round = queue_round(wk_session, lost_message.project_id)
    live = wk_digits(pool=20, validation=0)
    live_round = queue_round(wk_session, live.project_id)
    _orphan(wk_session, live_round, attempts=1, worker=f"{host}:{os.getppid()}")
    hopeless = wk_digits(pool=20, validation=0)
    hopeless_round = queue_round(wk_session, hopeless.project_id)
    _orphan(wk_session, hopeless_round, attempts=MAX_ATTEMPTS, worker=f"{host}:{_dead_pid()}")
    pending = wk_digits(pool=20, validation=0, retrain_every=3)
    add_labels(wk_session, pending, pending.pool_ids[:3])

    sent = recover_rounds(wk_context)

    assert sent[:2] == [orphan_round, queued_round] and len(sent) == 3
    assert sent == wk_sent.ids
    assert round_row(wk_session, orphan_round).status == RoundStatus.queued  # type: ignore[union-attr]
    assert round_row(wk_session, live_round).status == RoundStatus.running  # type: ignore[union-attr]
    assert round_row(wk_session, hopeless_round).status == RoundStatus.failed  # type: ignore[union-attr]
    triggered = round_row(wk_session, sent[2])
    assert triggered is not None and triggered.project_id == pending.project_id
    assert _run(wk_context, orphan_round).status == "done"


def _age(session: Session, round_id: int, *, created: float, dispatched: float | None) -> None:
    """Backdate a round: created and (if not None) dispatched that many seconds ago."""
    now = datetime.now(UTC)
    sent = None if dispatched is None else now - timedelta(seconds=dispatched)
    session.execute(
        update(Round)
        .where(Round.id == round_id)
        .values(created_at=now - timedelta(seconds=created), dispatched_at=sent)
    )
    session.commit()


def test_the_sweep_sends_what_the_broker_never_took_and_what_an_idle_worker_never_got(
    wk_context: WorkerContext,
    wk_session: Session,
    wk_digits: Callable[..., DigitsProject],
    wk_sent: Any,
) -> None:
    def queued(*, created: float, dispatched: float | None) -> int:
        round_id = queue_round(wk_session, wk_digits(pool=5, validation=0).project_id)
        _age(wk_session, round_id, created=created, dispatched=dispatched)
        return round_id

    never_sent = queued(created=60, dispatched=None)
    just_queued = queued(created=0, dispatched=None)  # the API's own send is under way
    waiting = queued(created=60, dispatched=5)  # taken by the broker, a worker will get it
    lost = queued(created=600, dispatched=300)  # taken, then forgotten by the broker
    mine = queued(created=60, dispatched=50)
    _orphan(wk_session, mine, attempts=1, worker=wk_context.worker_id)  # running right here

    assert sweep_rounds(wk_context, running=mine) == [never_sent]
    assert sweep_rounds(wk_context, running=mine) == [never_sent]
    assert wk_sent.ids == [never_sent, never_sent]
    assert round_row(wk_session, mine).status == RoundStatus.running  # type: ignore[union-attr]
    assert {just_queued, waiting, lost}.isdisjoint(wk_sent.ids)

    # Idle: what the broker lost goes again, and a round marked running by this very
    # process (a previous life: the same host and pid after a container restart) is
    # requeued, not taken for a round in progress.
    assert sweep_rounds(wk_context, running=None) == [never_sent, lost, mine]
    requeued = round_row(wk_session, mine)
    assert requeued is not None and requeued.status == RoundStatus.queued
    assert requeued.dispatched_at is None


# --------------------------------------------------------------------------- images


def test_decoded_images_are_cached_in_memory_and_on_disk(
    wk_context: WorkerContext, wk_store: LocalImageStore, tmp_path: Any
) -> None:
    keys = [wk_store.put(data) for data, _ in digit_pngs(30)]
    items = [ItemImage(item_id=i + 1, file_key=key) for i, key in enumerate(keys)]
    spec = ImageSpec(size=28, channels=1)
    cache = ImageCache(tmp_path / "cache", max_pixels=10**6, threads=1)

    first = cache.load(project_id=1, items=items, spec=spec, store=wk_store)
    again = cache.load(project_id=1, items=items[::-1], spec=spec, store=wk_store)
    restarted = ImageCache(tmp_path / "cache", max_pixels=10**6, threads=1)
    from_disk = restarted.load(project_id=1, items=items, spec=spec, store=wk_store)
    rgb = restarted.load(project_id=1, items=items[:3], spec=ImageSpec(16, 3), store=wk_store)

    assert first.decoded == 30 and again.decoded == 0 and from_disk.decoded == 0
    assert first.pixels_N_C_H_W.shape == (30, 1, 28, 28)
    assert first.pixels_N_C_H_W.dtype == torch.uint8
    assert torch.equal(again.pixels_N_C_H_W, first.pixels_N_C_H_W.flip(0))
    assert torch.equal(from_disk.pixels_N_C_H_W, first.pixels_N_C_H_W)
    assert rgb.decoded == 3 and rgb.pixels_N_C_H_W.shape == (3, 3, 16, 16)
    expected = decode_image(wk_store.get(keys[0]), spec, max_pixels=10**6)
    assert np.array_equal(first.pixels_N_C_H_W[0].numpy(), expected)


def test_an_image_over_the_pixel_limit_is_a_decode_failure(
    wk_store: LocalImageStore, tmp_path: Any
) -> None:
    ((data, _),) = digit_pngs(1)
    cache = ImageCache(None, max_pixels=100, threads=1)
    result = cache.load(
        project_id=1,
        items=[ItemImage(7, wk_store.put(data))],
        spec=ImageSpec(28, 1),
        store=wk_store,
    )
    assert result.item_ids == [] and "limit" in result.failures[7]

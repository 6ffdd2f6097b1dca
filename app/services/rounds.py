"""Rounds: when to retrain, and handing a queued round to the worker.

The partial unique index `uq_rounds_one_active_per_project` allows one queued or running
round per project, so API processes racing to trigger one cannot both succeed: the loser's
INSERT fails and it simply carries on. A round is sent to the broker only after its row is
committed; if the broker refuses it, the round is marked failed rather than left queued
with nobody to run it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from celery import Celery
from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import (
    ACTIVE_ROUND_STATUSES,
    Item,
    Label,
    Project,
    QueueEntry,
    Round,
    RoundStatus,
    utcnow,
)
from app.schemas import QueueEntryPublic, RoundDetail, RoundPublic
from app.services import Conflict, NotFound, table_of
from app.services.items import image_url
from app.services.labels import is_current
from worker.celery_app import enqueue_round

logger = logging.getLogger(__name__)


_ACTIVE_ROUND = (
    select(Round)
    .where(Round.project_id == bindparam("project_id"), Round.status.in_(ACTIVE_ROUND_STATUSES))
    .order_by(Round.id.desc())
    .limit(1)
)


def active_round(*, session: Session, project_id: int) -> Round | None:
    """The queued or running round (checked after every label, hence prebuilt)."""
    return session.scalar(_ACTIVE_ROUND, {"project_id": project_id})


def latest_round(*, session: Session, project_id: int) -> Round | None:
    return session.scalar(
        select(Round).where(Round.project_id == project_id).order_by(Round.id.desc()).limit(1)
    )


def labels_since(
    *, session: Session, project_id: int, watermark: int, cap: int | None = None
) -> int:
    """Current labels in the project with id > watermark (walks ix_labels_project_id).

    `cap` stops counting there: the trigger only needs to know "at least retrain_every".
    """
    matching = select(Label.id).where(
        Label.project_id == project_id, Label.id > watermark, is_current()
    )
    if cap is not None:
        matching = matching.limit(cap)
    count = session.scalar(select(func.count()).select_from(matching.subquery()))
    return count or 0


def _label_watermark(*, session: Session, project_id: int) -> int:
    highest = session.scalar(select(func.max(Label.id)).where(Label.project_id == project_id))
    return highest or 0


_ROUNDS = table_of(Round)
_LABELS = table_of(Label)
_LATEST_WATERMARK = (
    select(_ROUNDS.c.label_watermark)
    .where(_ROUNDS.c.project_id == bindparam("project_id"))
    .order_by(_ROUNDS.c.id.desc())
    .limit(1)
    .scalar_subquery()
)
# Current labels past the latest round's watermark, counted up to `cap`, in one statement
# (it runs after every label): walks ix_labels_project_id from the watermark.
_NEW_LABELS = select(func.count()).select_from(
    select(_LABELS.c.id)
    .where(
        _LABELS.c.project_id == bindparam("project_id"),
        _LABELS.c.id > func.coalesce(_LATEST_WATERMARK, 0),
        is_current(),
    )
    .limit(bindparam("cap"))
    .subquery()
)


def labels_until_retrain(*, session: Session, project: Project) -> int:
    """Labels still to come before `retrain_every` have come since the latest round."""
    return _labels_until_retrain(
        session=session, project_id=project.id, retrain_every=project.retrain_every
    )


def _labels_until_retrain(*, session: Session, project_id: int, retrain_every: int) -> int:
    params = {"project_id": project_id, "cap": retrain_every}
    since = session.scalar(_NEW_LABELS, params) or 0
    return max(retrain_every - since, 0)


def trigger_round_if_due(
    *, session: Session, celery: Celery, project_id: int, retrain_every: int
) -> Round | None:
    """Queue a round if `retrain_every` labels came since the latest one: one statement
    unless it is due.

    For a caller that has just seen no round active (labelling reads that with the item).
    Checking again is not needed for correctness: if one became active since, the partial
    unique index refuses the second and `_start_round` returns None.
    """
    if _labels_until_retrain(session=session, project_id=project_id, retrain_every=retrain_every):
        return None
    # The round is written in a transaction of its own, whatever the caller's read ran in
    # (labelling reads in autocommit mode: `read_outside_transaction`).
    session.commit()
    project = session.get_one(Project, project_id)
    return _start_round(session=session, celery=celery, project=project, trigger="labels")


def request_round(*, session: Session, celery: Celery, project: Project) -> Round:
    """Retrain now (the manual trigger); Conflict if a round is already queued or running."""
    started = None
    if active_round(session=session, project_id=project.id) is None:
        started = _start_round(session=session, celery=celery, project=project, trigger="manual")
    if started is None:
        active = active_round(session=session, project_id=project.id)
        described = f"round {active.id} is {active.status}" if active else "a round is active"
        raise Conflict(f"Cannot start a round: {described}. Wait for it to finish, then try again.")
    return started


def _start_round(
    *, session: Session, celery: Celery, project: Project, trigger: str
) -> Round | None:
    watermark = _label_watermark(session=session, project_id=project.id)
    new_round = Round(
        project_id=project.id,
        status=RoundStatus.queued,
        trigger=trigger,
        strategy=project.strategy,
        labels_used=labels_since(session=session, project_id=project.id, watermark=0),
        label_watermark=watermark,
    )
    session.add(new_round)
    try:
        session.commit()
    except IntegrityError:
        # Another request or process queued one first: exactly what we wanted.
        session.rollback()
        return None
    logger.info(
        "round queued",
        extra={"round_id": new_round.id, "project_id": project.id, "trigger": trigger},
    )
    _send(session=session, celery=celery, queued=new_round)
    return new_round


def _send(*, session: Session, celery: Celery, queued: Round) -> None:
    try:
        enqueue_round(celery, queued.id)
    except Exception as exc:  # any broker failure: the round must not stay queued
        logger.exception("could not send round to the broker", extra={"round_id": queued.id})
        queued.status = RoundStatus.failed
        queued.error = f"Could not send the round to the task broker: {exc}"
        queued.finished_at = utcnow()
        session.commit()


def list_rounds(*, session: Session, project_id: int) -> Sequence[Round]:
    return session.scalars(
        select(Round).where(Round.project_id == project_id).order_by(Round.id.desc())
    ).all()


def get_round(*, session: Session, round_id: int, project_ids: set[int] | None) -> Round:
    found = session.get(Round, round_id)
    if found is None or (project_ids is not None and found.project_id not in project_ids):
        raise NotFound(f"Round {round_id} does not exist or is in a project you are not in.")
    return found


def round_detail(*, session: Session, found: Round) -> RoundDetail:
    rows = session.execute(
        select(QueueEntry, Item.filename, Item.label_count)
        .join(Item, Item.id == QueueEntry.item_id)
        .where(QueueEntry.round_id == found.id)
        .order_by(QueueEntry.rank)
    ).all()
    queue = [
        QueueEntryPublic(
            item_id=entry.item_id,
            rank=entry.rank,
            score=entry.score,
            strategy=entry.strategy,
            filename=filename,
            image_url=image_url(entry.item_id),
            labelled=label_count > 0,
        )
        for entry, filename, label_count in rows
    ]
    return RoundDetail(**RoundPublic.model_validate(found).model_dump(), queue=queue)

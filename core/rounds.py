"""The round lifecycle's shared half: when a round is due, which one is active, and opening
one. The API (a label, "retrain now") and the worker (a follow-up, the sweep) both open
rounds here and nowhere else.

The partial unique index `uq_rounds_one_active_per_project` allows one queued or running
round per project, so processes racing to open one cannot both succeed: the loser's INSERT
fails and it simply carries on. A round is handed to the broker only after its row is
committed (core.dispatch); claiming, fencing and recovery are the worker's
(worker.pipeline).
"""

from __future__ import annotations

import logging

from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db import table_of
from core.tables import ACTIVE_ROUND_STATUSES, Label, Project, Round, RoundStatus, is_current

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


def trigger_round_if_due(*, session: Session, project_id: int, retrain_every: int) -> Round | None:
    """Open a round if `retrain_every` labels came since the latest one: one statement
    unless it is due. The caller hands the round to the broker (app.services.dispatch).

    For a caller that has just seen no round active (labelling reads that with the item).
    Checking again is not needed for correctness: if one became active since, the partial
    unique index refuses the second and `open_round` returns None.
    """
    if _labels_until_retrain(session=session, project_id=project_id, retrain_every=retrain_every):
        return None
    # The round is written in a transaction of its own, whatever the caller's read ran in
    # (labelling reads in autocommit mode: `read_outside_transaction`).
    session.commit()
    project = session.get_one(Project, project_id)
    return open_round(session=session, project=project, trigger="labels")


def open_round(*, session: Session, project: Project, trigger: str) -> Round | None:
    """Commit a new queued round for `project`; None if one is already queued or running.

    The one place a round is created (the API's triggers and the worker's follow-up).
    Its label watermark is the project's highest label id, so "labels until retrain"
    counts from here while it waits.
    """
    new_round = Round(
        project_id=project.id,
        status=RoundStatus.queued,
        trigger=trigger,
        strategy=project.strategy,
        labels_used=labels_since(session=session, project_id=project.id, watermark=0),
        label_watermark=_label_watermark(session=session, project_id=project.id),
    )
    session.add(new_round)
    try:
        session.commit()
    except IntegrityError:
        # The partial unique index: another request or process queued one first.
        session.rollback()
        return None
    logger.info(
        "round queued",
        extra={"round_id": new_round.id, "project_id": project.id, "trigger": trigger},
    )
    return new_round

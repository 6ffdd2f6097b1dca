"""Rounds: when to retrain, and handing a queued round to the worker.

The partial unique index `uq_rounds_one_active_per_project` allows one queued or running
round per project, so API processes racing to trigger one cannot both succeed: the loser's
INSERT fails and it simply carries on. A round is sent to the broker only after its row is
committed, and off the request's path (app.services.dispatch): if the broker refuses it,
the round stays queued and the worker's sweep sends it once the broker is back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, timedelta

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
from app.services.dispatch import LOST_AFTER_SECONDS
from app.services.items import image_url
from app.services.labels import is_current

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


@dataclass(frozen=True)
class RoundRequest:
    """The round a "retrain now" stands for, and whether its message must be sent."""

    round: Round
    send: bool


def request_round(*, session: Session, project: Project) -> RoundRequest:
    """Retrain now (the manual trigger).

    A round already queued answers the request: it trains on every label there is when it
    runs. Its message is sent again unless the broker took it moments ago, so a round whose
    message was lost never blocks a retrain. Conflict only while a round is running.
    """
    opened = None
    if active_round(session=session, project_id=project.id) is None:
        opened = open_round(session=session, project=project, trigger="manual")
    if opened is not None:
        return RoundRequest(opened, send=True)
    active = active_round(session=session, project_id=project.id)
    if active is not None and active.status == RoundStatus.queued:
        return RoundRequest(active, send=_not_recently_dispatched(active))
    described = f"round {active.id} is {active.status}" if active else "a round is active"
    raise Conflict(f"Cannot start a round: {described}. Wait for it to finish, then try again.")


def _not_recently_dispatched(queued: Round) -> bool:
    sent = queued.dispatched_at
    if sent is None:
        return True
    if sent.tzinfo is None:  # SQLite hands back naive datetimes
        sent = sent.replace(tzinfo=UTC)
    return utcnow() - sent > timedelta(seconds=LOST_AFTER_SECONDS)


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

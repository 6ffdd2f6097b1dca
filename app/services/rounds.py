"""Rounds as the API shows them: "retrain now", the list, one round with its queue.

When a round is due and opening one live in core.rounds, shared with the worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.schemas import QueueEntryPublic, RoundDetail, RoundPublic
from app.services import Conflict, NotFound
from app.services.items import image_url
from core.dispatch import LOST_AFTER_SECONDS
from core.rounds import active_round, open_round
from core.tables import Item, Project, QueueEntry, Round, RoundStatus, utcnow


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

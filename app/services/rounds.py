"""Rounds as the API shows them: "retrain now", the list, one round with its queue.

When a round is due and opening one live in core.rounds, shared with the worker.

Round ids count across every project; people are shown a round's `number` within its
project (1, 2, 3…), computed here in the query from the ids (rounds are deleted only with
their project, so a number never changes).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, timedelta

from sqlalchemy import func, select
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


def list_rounds(*, session: Session, project_id: int) -> list[RoundPublic]:
    """The project's rounds, newest first, each with its number."""
    number = func.row_number().over(order_by=Round.id)
    rows = session.execute(
        select(Round, number).where(Round.project_id == project_id).order_by(Round.id.desc())
    ).all()
    return [round_public(found, number=n) for found, n in rows]


def round_numbers(*, session: Session, project_id: int) -> dict[int, int]:
    """Round id → its number within the project."""
    number = func.row_number().over(order_by=Round.id)
    rows = session.execute(select(Round.id, number).where(Round.project_id == project_id))
    return {round_id: n for round_id, n in rows}


def round_number(*, session: Session, found: Round) -> int:
    """One round's number within its project: how many of its rounds are not newer."""
    count = session.scalar(
        select(func.count()).where(Round.project_id == found.project_id, Round.id <= found.id)
    )
    return int(count or 0)


def round_public(found: Round, *, number: int) -> RoundPublic:
    fields = {name: getattr(found, name) for name in RoundPublic.model_fields if name != "number"}
    return RoundPublic.model_validate({**fields, "number": number})


def numbered(*, session: Session, found: Round) -> RoundPublic:
    return round_public(found, number=round_number(session=session, found=found))


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
    public = numbered(session=session, found=found)
    return RoundDetail(**public.model_dump(), queue=queue)

"""`next`: which items an annotator gets, in which order, each leased to them.

Order (docs/architecture.md, "How next chooses"):
0. the caller's own live leases, so reloading the page loses nothing;
1. the latest done round's QueueEntry rows by rank;
2. the rest of that round's pool by Prediction.score, best first;
3. the unlabelled pool in seeded random order (Item.random_key).
Every step skips labelled items, items leased to someone else and the caller's skips, and
every query walks an index in the order it returns rows: no sort, no scan of the pool.

`next` is the hottest endpoint, so its statements are built once, here, with bound
parameters: SQLAlchemy then reuses their compiled form instead of rebuilding them per call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Integer, bindparam, exists, select
from sqlalchemy.orm import Session

from app.models import (
    Item,
    Lease,
    Prediction,
    Project,
    QueueEntry,
    Round,
    RoundStatus,
    Skip,
    Split,
    utcnow,
)
from app.services import begin_write
from app.services.leases import grant_leases, lease_expiry

RANDOM = "random"
# Another process may lease an item between our read and our write (the upsert then
# refuses it); the caller tries again with fresh candidates.
_MAX_ATTEMPTS = 4


@dataclass(frozen=True)
class Pick:
    item: Item
    round_id: int | None
    rank: int | None
    score: float | None
    strategy: str

    @property
    def item_id(self) -> int:
        return self.item.id


@dataclass(frozen=True)
class Served:
    item: Item
    pick: Pick
    prediction: Prediction | None
    lease_expires_at: datetime


@dataclass(frozen=True)
class _Context:
    session: Session
    project_id: int
    annotator_id: int
    now: datetime
    done_round: Round | None

    def params(self, **more: Any) -> dict[str, Any]:
        return {"project_id": self.project_id, "me": self.annotator_id, "now": self.now, **more}


# --- statements -------------------------------------------------------------------------------

_NOW = bindparam("now", type_=DateTime(timezone=True))
_ME = bindparam("me", type_=Integer)
_LIMIT = bindparam("limit", type_=Integer)

# Unlabelled, not leased live by anyone, not skipped by the caller.
_AVAILABLE = (
    Item.label_count == 0,
    ~exists().where(Lease.item_id == Item.id, Lease.expires_at >= _NOW),
    ~exists().where(Skip.item_id == Item.id, Skip.annotator_id == _ME),
)
# PostgreSQL: lock the items a caller is about to lease and skip those another caller has
# locked (NO KEY UPDATE: labels referencing the item can still be inserted). SQLite
# ignores it; there the write transaction already makes the read exclusive.
_SKIP_LOCKED: dict[str, Any] = {"of": Item, "skip_locked": True, "key_share": True}

_LATEST_DONE = (
    select(Round)
    .where(Round.project_id == bindparam("project_id"), Round.status == RoundStatus.done)
    .order_by(Round.id.desc())
    .limit(1)
)
# Two index lookups rather than a join: the caller holds few live leases (re-serving them
# first keeps it at most the largest n asked), and a join lets a planner with stale
# statistics walk the whole pool instead (seen on PostgreSQL right after a bulk import).
_OWN_LEASES = (
    select(Lease.item_id, Lease.round_id)
    .where(Lease.annotator_id == _ME, Lease.expires_at >= _NOW)
    .order_by(Lease.expires_at, Lease.item_id)
)
_OPEN_ITEMS = select(Item).where(
    Item.id.in_(bindparam("ids", expanding=True)),
    Item.project_id == bindparam("project_id"),
    Item.label_count == 0,
)
_QUEUE = (
    select(Item, QueueEntry.rank, QueueEntry.score, QueueEntry.strategy)
    .join(QueueEntry, QueueEntry.item_id == Item.id)
    .where(QueueEntry.round_id == bindparam("round_id"), *_AVAILABLE)
    .order_by(QueueEntry.rank)
    .limit(_LIMIT)
    .with_for_update(**_SKIP_LOCKED)
)
_BY_SCORE = (
    select(Item, Prediction.score)
    .join(Prediction, Prediction.item_id == Item.id)
    .where(Prediction.round_id == bindparam("round_id"), *_AVAILABLE)
    .order_by(Prediction.score.desc())
    .limit(_LIMIT)
    .with_for_update(**_SKIP_LOCKED)
)
# Walks ix_items_pool_order (project_id, split, label_count, random_key).
_RANDOM = (
    select(Item)
    .where(Item.project_id == bindparam("project_id"), Item.split == Split.pool, *_AVAILABLE)
    .order_by(Item.random_key)
    .limit(_LIMIT)
    .with_for_update(**_SKIP_LOCKED)
)
_PREDICTIONS = select(Prediction).where(
    Prediction.round_id == bindparam("round_id"),
    Prediction.item_id.in_(bindparam("ids", expanding=True)),
)
_QUEUE_FACTS = select(
    QueueEntry.item_id, QueueEntry.rank, QueueEntry.score, QueueEntry.strategy
).where(
    QueueEntry.round_id == bindparam("round_id"),
    QueueEntry.item_id.in_(bindparam("ids", expanding=True)),
)


# --- the algorithm ----------------------------------------------------------------------------


def latest_done_round(*, session: Session, project_id: int) -> Round | None:
    return session.scalar(_LATEST_DONE, {"project_id": project_id})


def next_items(
    *, session: Session, project: Project, annotator_id: int, n: int, lease_seconds: int
) -> list[Served]:
    """Up to `n` items for the annotator, each leased to them for `lease_seconds`."""
    now = utcnow()
    expires_at = lease_expiry(now=now, lease_seconds=lease_seconds)
    context = _Context(
        session=session,
        project_id=project.id,
        annotator_id=annotator_id,
        now=now,
        done_round=latest_done_round(session=session, project_id=project.id),
    )
    granted: list[Pick] = []
    for _ in range(_MAX_ATTEMPTS):
        want = n - len(granted)
        if want <= 0:
            break
        # Read candidates inside the write transaction (SQLite: under the write lock;
        # PostgreSQL: rows locked, others' skipped), so concurrent callers do not all chase
        # the same front items and lose races.
        begin_write(session, annotator_id=annotator_id)
        taken = {pick.item_id for pick in granted}
        candidates = [
            pick for pick in _candidates(context, want + len(taken)) if pick.item_id not in taken
        ][:want]
        if not candidates:
            session.rollback()
            break
        granted += _grant(context, candidates, expires_at=expires_at)
    return _served(context, granted, expires_at=expires_at)


def _grant(context: _Context, candidates: list[Pick], *, expires_at: datetime) -> list[Pick]:
    """Lease the candidates and commit; returns the ones that are ours."""
    ids = grant_leases(
        session=context.session,
        annotator_id=context.annotator_id,
        grants=[(pick.item_id, pick.round_id) for pick in candidates],
        now=context.now,
        expires_at=expires_at,
    )
    context.session.commit()
    return [pick for pick in candidates if pick.item_id in ids]


def _candidates(context: _Context, limit: int) -> list[Pick]:
    picks: list[Pick] = []
    seen: set[int] = set()
    sources: list[Callable[[_Context, int], list[Pick]]] = [_own_leases]
    if context.done_round is not None:
        sources += [_queue_entries, _by_prediction_score]
    sources.append(_random_pool)
    for source in sources:
        if len(picks) >= limit:
            break
        # Ask for what is missing plus what may repeat from an earlier source.
        for pick in source(context, limit - len(picks) + len(seen)):
            if pick.item_id not in seen:
                seen.add(pick.item_id)
                picks.append(pick)
    return picks[:limit]


def _own_leases(context: _Context, limit: int) -> list[Pick]:
    leases = context.session.execute(_OWN_LEASES, context.params()).all()
    if not leases:
        return []
    ids = [item_id for item_id, _ in leases]
    items = {
        item.id: item for item in context.session.scalars(_OPEN_ITEMS, context.params(ids=ids))
    }
    picks = [
        Pick(items[item_id], round_id, None, None, RANDOM)
        for item_id, round_id in leases
        if item_id in items
    ]
    return _describe(context, picks[:limit])


def _queue_entries(context: _Context, limit: int) -> list[Pick]:
    assert context.done_round is not None
    round_id = context.done_round.id
    rows = context.session.execute(_QUEUE, context.params(round_id=round_id, limit=limit))
    return [Pick(item, round_id, rank, score, strategy) for item, rank, score, strategy in rows]


def _by_prediction_score(context: _Context, limit: int) -> list[Pick]:
    done = context.done_round
    assert done is not None
    rows = context.session.execute(_BY_SCORE, context.params(round_id=done.id, limit=limit))
    return [Pick(item, done.id, None, score, done.strategy) for item, score in rows]


def _random_pool(context: _Context, limit: int) -> list[Pick]:
    items = context.session.scalars(_RANDOM, context.params(limit=limit))
    return [Pick(item, None, None, None, RANDOM) for item in items]


def _describe(context: _Context, picks: list[Pick]) -> list[Pick]:
    """Rank, score and strategy of re-served leases, from the round that served them."""
    by_round: dict[int, list[Pick]] = {}
    for pick in picks:
        if pick.round_id is not None:
            by_round.setdefault(pick.round_id, []).append(pick)
    described: dict[int, Pick] = {}
    for round_id, round_picks in by_round.items():
        described.update(_round_facts(context.session, round_id, round_picks))
    return [described.get(pick.item_id, pick) for pick in picks]


def _round_facts(session: Session, round_id: int, picks: Sequence[Pick]) -> dict[int, Pick]:
    served_round = session.get(Round, round_id)
    strategy = served_round.strategy if served_round is not None else RANDOM
    params = {"round_id": round_id, "ids": [pick.item_id for pick in picks]}
    scores = {p.item_id: p.score for p in session.scalars(_PREDICTIONS, params)}
    entries = {row.item_id: row for row in session.execute(_QUEUE_FACTS, params)}
    facts: dict[int, Pick] = {}
    for pick in picks:
        entry = entries.get(pick.item_id)
        if entry is not None:
            facts[pick.item_id] = Pick(pick.item, round_id, entry.rank, entry.score, entry.strategy)
        else:
            score = scores.get(pick.item_id)
            facts[pick.item_id] = Pick(pick.item, round_id, None, score, strategy)
    return facts


def _served(context: _Context, picks: list[Pick], *, expires_at: datetime) -> list[Served]:
    predictions: dict[int, Prediction] = {}
    if picks and context.done_round is not None:
        params = {"round_id": context.done_round.id, "ids": [p.item_id for p in picks]}
        predictions = {p.item_id: p for p in context.session.scalars(_PREDICTIONS, params)}
    return [
        Served(
            item=pick.item,
            pick=pick,
            prediction=predictions.get(pick.item_id),
            lease_expires_at=expires_at,
        )
        for pick in picks
    ]

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
They are Core statements on the tables that read only the columns the answer shows: rows,
not ORM objects (building an ORM object costs more than the query on SQLite).

One piece because the steps are one transaction: each reads what the step before it leased,
and the statements share the availability filters and lock clauses built once below.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    bindparam,
    cast,
    exists,
    func,
    null,
    select,
)
from sqlalchemy.orm import Session

from app.services import annotator_lock, begin_write, is_postgresql
from app.services.items import ITEM_FIELD_NAMES, ItemFields
from app.services.leases import grant_leases, lease_expiry
from app.services.projects import project_not_visible
from core.catalog import COLD_START_ENTRIES, STRATEGY_ENTRIES
from core.db import table_of
from core.tables import (
    Annotator,
    Item,
    Lease,
    Prediction,
    Project,
    ProjectMember,
    QueueEntry,
    Role,
    Round,
    RoundStatus,
    Skip,
    Split,
    utcnow,
)

RANDOM = "random"
# Another process may lease an item between our read and our write (the upsert then
# refuses it); the caller tries again with fresh candidates.
_MAX_ATTEMPTS = 4


@dataclass(frozen=True)
class DoneRound:
    """What `next` needs of the latest done round."""

    id: int
    strategy: str


@dataclass(frozen=True)
class QueueProject:
    """A project as `next` sees it: its classes and the round whose queue it serves."""

    id: int
    classes: list[str]
    done_round: DoneRound | None
    show_filenames: bool = False
    # PostgreSQL: the read also began `next`'s write transaction (see visible_queue_project).
    write_begun: bool = False


@dataclass(frozen=True)
class Pick:
    item: ItemFields
    round_id: int | None
    rank: int | None
    score: float | None
    strategy: str
    # What chose the head of the round's queue (the round's strategy); None without a round.
    round_strategy: str | None = None

    @property
    def item_id(self) -> int:
        return self.item.id


@dataclass(frozen=True)
class Served:
    item: ItemFields
    pick: Pick
    prediction: PredictionFields | None
    lease_expires_at: datetime
    # Where the item's score falls among its round's scored pool, 0–100; None without one.
    score_percentile: float | None = None


@dataclass(frozen=True)
class _Context:
    session: Session
    project_id: int
    annotator_id: int
    now: datetime
    done_round: DoneRound | None

    def params(self, **more: Any) -> dict[str, Any]:
        return {"project_id": self.project_id, "me": self.annotator_id, "now": self.now, **more}


class PredictionFields(Protocol):
    """A prediction's columns the answer shows (a Core row has them as attributes)."""

    @property
    def round_id(self) -> int: ...
    @property
    def predicted(self) -> str: ...
    @property
    def confidence(self) -> float: ...
    @property
    def probabilities(self) -> list[float]: ...
    @property
    def score(self) -> float: ...


# --- statements -------------------------------------------------------------------------------

_NOW = bindparam("now", type_=DateTime(timezone=True))
_ME = bindparam("me", type_=Integer)
_LIMIT = bindparam("limit", type_=Integer)

_ITEMS = table_of(Item)
_PROJECTS = table_of(Project)
_MEMBERS = table_of(ProjectMember)
_ROUNDS = table_of(Round)
_QUEUE_ENTRIES = table_of(QueueEntry)
_PREDICTIONS_TABLE = table_of(Prediction)
_LEASES = table_of(Lease)
_SKIPS = table_of(Skip)
# The columns ItemPublic shows, in the shape of ItemFields.
_ITEM_FIELDS = tuple(_ITEMS.c[name] for name in ITEM_FIELD_NAMES)
# Unlabelled, not a skipped near duplicate, not leased live by anyone, not skipped by the
# caller.
_AVAILABLE = (
    _ITEMS.c.label_count == 0,
    _ITEMS.c.duplicate_skipped.is_(False),
    ~exists().where(_LEASES.c.item_id == _ITEMS.c.id, _LEASES.c.expires_at >= _NOW),
    ~exists().where(_SKIPS.c.item_id == _ITEMS.c.id, _SKIPS.c.annotator_id == _ME),
)
# PostgreSQL: lock the items a caller is about to lease and skip those another caller has
# locked (NO KEY UPDATE: labels referencing the item can still be inserted). SQLite
# ignores it; there the write transaction already makes the read exclusive.
_SKIP_LOCKED: dict[str, Any] = {"of": _ITEMS, "skip_locked": True, "key_share": True}

# Two index lookups rather than a join: the caller holds few live leases (re-serving them
# first keeps it at most the largest n asked), and a join lets a planner with stale
# statistics walk the whole pool instead (seen on PostgreSQL right after a bulk import).
_OWN_LEASES = (
    select(_LEASES.c.item_id, _LEASES.c.round_id)
    .where(_LEASES.c.annotator_id == _ME, _LEASES.c.expires_at >= _NOW)
    .order_by(_LEASES.c.expires_at, _LEASES.c.item_id)
)
_OPEN_ITEMS = select(*_ITEM_FIELDS).where(
    _ITEMS.c.id.in_(bindparam("ids", expanding=True)),
    _ITEMS.c.project_id == bindparam("project_id"),
    _ITEMS.c.label_count == 0,
)
_QUEUE = (
    select(*_ITEM_FIELDS, _QUEUE_ENTRIES.c.rank, _QUEUE_ENTRIES.c.score, _QUEUE_ENTRIES.c.strategy)
    .join(_QUEUE_ENTRIES, _QUEUE_ENTRIES.c.item_id == _ITEMS.c.id)
    .where(_QUEUE_ENTRIES.c.round_id == bindparam("round_id"), *_AVAILABLE)
    .order_by(_QUEUE_ENTRIES.c.rank)
    .limit(_LIMIT)
    .with_for_update(**_SKIP_LOCKED)
)
# Walks ix_predictions_round_score (round_id, score) backwards on SQLite, which keeps no
# statistics here; PostgreSQL runs `_BY_SCORE_WALK` instead.
_BY_SCORE = (
    select(*_ITEM_FIELDS, _PREDICTIONS_TABLE.c.score)
    .join(_PREDICTIONS_TABLE, _PREDICTIONS_TABLE.c.item_id == _ITEMS.c.id)
    .where(_PREDICTIONS_TABLE.c.round_id == bindparam("round_id"), *_AVAILABLE)
    .order_by(_PREDICTIONS_TABLE.c.score.desc())
    .limit(_LIMIT)
    .with_for_update(**_SKIP_LOCKED)
)
# PostgreSQL has no statistics on a round's predictions until autovacuum or ANALYZE gets to
# them (never, with autovacuum off), and without them guesses that `round_id = :round_id`
# matches 0.5% of the table, where a round is nearly all of it: the plan of `_BY_SCORE` was
# then to join every prediction of the round to its item and sort them all (2.7 s on 20k
# items on a busy server; 5 ms once analysed). Here the round is read in a subquery whose
# LIMIT is a subquery too, so the planner cannot know it (it is NULL: no limit) and plans
# for reading a tenth of the rows: for that fraction only the index walk is cheap, without
# statistics as with them. The outer query asks for the subquery's order, so nothing is
# sorted: walk, joins and lock go row by row and stop at `limit` items, as `_BY_SCORE`
# does on SQLite or with statistics.
_UNKNOWN_LIMIT = select(cast(null(), BigInteger)).scalar_subquery()
_ROUND_BY_SCORE = (
    select(_PREDICTIONS_TABLE.c.item_id, _PREDICTIONS_TABLE.c.score)
    .where(_PREDICTIONS_TABLE.c.round_id == bindparam("round_id"))
    .order_by(_PREDICTIONS_TABLE.c.score.desc())
    .limit(_UNKNOWN_LIMIT)
    .subquery("round_by_score")
)
_BY_SCORE_WALK = (
    select(*_ITEM_FIELDS, _ROUND_BY_SCORE.c.score)
    .join(_ROUND_BY_SCORE, _ROUND_BY_SCORE.c.item_id == _ITEMS.c.id)
    .where(*_AVAILABLE)
    .order_by(_ROUND_BY_SCORE.c.score.desc())
    .limit(_LIMIT)
    .with_for_update(**_SKIP_LOCKED)
)
# Walks ix_items_pool_order (project_id, split, label_count, random_key).
_RANDOM = (
    select(*_ITEM_FIELDS)
    .where(_ITEMS.c.project_id == bindparam("project_id"), _ITEMS.c.split == Split.pool)
    .where(*_AVAILABLE)
    .order_by(_ITEMS.c.random_key)
    .limit(_LIMIT)
    .with_for_update(**_SKIP_LOCKED)
)
_PREDICTIONS = select(
    _PREDICTIONS_TABLE.c.item_id,
    _PREDICTIONS_TABLE.c.round_id,
    _PREDICTIONS_TABLE.c.predicted,
    _PREDICTIONS_TABLE.c.confidence,
    _PREDICTIONS_TABLE.c.probabilities,
    _PREDICTIONS_TABLE.c.score,
).where(
    _PREDICTIONS_TABLE.c.round_id == bindparam("round_id"),
    _PREDICTIONS_TABLE.c.item_id.in_(bindparam("ids", expanding=True)),
)
# How an item's score in a round compares with the round's other scores: those above it, those
# equal (itself included) and all. "Above" walks ix_predictions_round_score from the top down
# to the item, short for the items `next` serves (the best first); the total is one count of
# the round's index range, uncorrelated, so it runs once per statement.
_OTHERS = _PREDICTIONS_TABLE.alias("others")


def _count_others(*conditions: Any) -> Any:
    return (
        select(func.count())
        .select_from(_OTHERS)
        .where(_OTHERS.c.round_id == bindparam("round_id"), *conditions)
        .scalar_subquery()
    )


_STANDING = select(
    _PREDICTIONS_TABLE.c.item_id,
    _count_others(_OTHERS.c.score > _PREDICTIONS_TABLE.c.score).label("above"),
    _count_others(_OTHERS.c.score == _PREDICTIONS_TABLE.c.score).label("ties"),
    _count_others().label("total"),
).where(
    _PREDICTIONS_TABLE.c.round_id == bindparam("round_id"),
    _PREDICTIONS_TABLE.c.item_id.in_(bindparam("ids", expanding=True)),
)
_QUEUE_FACTS = select(
    _QUEUE_ENTRIES.c.item_id,
    _QUEUE_ENTRIES.c.rank,
    _QUEUE_ENTRIES.c.score,
    _QUEUE_ENTRIES.c.strategy,
).where(
    _QUEUE_ENTRIES.c.round_id == bindparam("round_id"),
    _QUEUE_ENTRIES.c.item_id.in_(bindparam("ids", expanding=True)),
)


def _latest_done_subquery(column: Any) -> Any:
    return (
        select(column)
        .where(_ROUNDS.c.project_id == _PROJECTS.c.id, _ROUNDS.c.status == RoundStatus.done)
        .order_by(_ROUNDS.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )


# Visibility, classes and the latest done round in one indexed statement.
_QUEUE_PROJECT = select(
    _PROJECTS.c.id,
    _PROJECTS.c.classes,
    _PROJECTS.c.show_filenames,
    exists()
    .where(_MEMBERS.c.project_id == _PROJECTS.c.id, _MEMBERS.c.annotator_id == _ME)
    .label("is_member"),
    _latest_done_subquery(_ROUNDS.c.id).label("done_id"),
    _latest_done_subquery(_ROUNDS.c.strategy).label("done_strategy"),
).where(_PROJECTS.c.id == bindparam("project_id"))
_QUEUE_PROJECT_LOCKING = _QUEUE_PROJECT.add_columns(annotator_lock(_ME).label("locked"))


# --- the algorithm ----------------------------------------------------------------------------


def visible_queue_project(*, session: Session, user: Annotator, project_id: int) -> QueueProject:
    """`get_visible_project` for `next`, as one Core row; else NotFound.

    On PostgreSQL the same statement takes the caller's lock and so begins `next_items`'s
    first write transaction (`begin_write`), saving a round trip. On SQLite that would hold
    the database's one write lock for this read too: there `next_items` begins it after.
    """
    params = {"project_id": project_id, "me": user.id}
    locking = is_postgresql(session)
    row = session.execute(_QUEUE_PROJECT_LOCKING if locking else _QUEUE_PROJECT, params).first()
    if row is None or not (row.is_member or user.role == Role.admin):
        raise project_not_visible(project_id)
    done = DoneRound(row.done_id, row.done_strategy) if row.done_id is not None else None
    return QueueProject(
        row.id, row.classes, done, show_filenames=row.show_filenames, write_begun=locking
    )


def latest_done_round(*, session: Session, project_id: int) -> Round | None:
    return session.scalar(
        select(Round)
        .where(Round.project_id == project_id, Round.status == RoundStatus.done)
        .order_by(Round.id.desc())
        .limit(1)
    )


def next_items(
    *, session: Session, project: QueueProject, annotator_id: int, n: int, lease_seconds: int
) -> list[Served]:
    """Up to `n` items for the annotator, each leased to them for `lease_seconds`.

    Call it right after `visible_queue_project`, in the same session.
    """
    now = utcnow()
    expires_at = lease_expiry(now=now, lease_seconds=lease_seconds)
    context = _Context(
        session=session,
        project_id=project.id,
        annotator_id=annotator_id,
        now=now,
        done_round=project.done_round,
    )
    granted: list[Pick] = []
    for attempt in range(_MAX_ATTEMPTS):
        want = n - len(granted)
        if want <= 0:
            break
        # Read candidates inside the write transaction (SQLite: under the write lock;
        # PostgreSQL: rows locked, others' skipped), so concurrent callers do not all chase
        # the same front items and lose races.
        if attempt or not project.write_begun:
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
        item.id: item for item in context.session.execute(_OPEN_ITEMS, context.params(ids=ids))
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
    strategy = context.done_round.strategy
    return [Pick(row, round_id, row.rank, row.score, row.strategy, strategy) for row in rows]


def _by_prediction_score(context: _Context, limit: int) -> list[Pick]:
    done = context.done_round
    assert done is not None
    statement = _BY_SCORE_WALK if is_postgresql(context.session) else _BY_SCORE
    rows = context.session.execute(statement, context.params(round_id=done.id, limit=limit))
    return [Pick(row, done.id, None, row.score, done.strategy, done.strategy) for row in rows]


def _random_pool(context: _Context, limit: int) -> list[Pick]:
    rows = context.session.execute(_RANDOM, context.params(limit=limit))
    return [Pick(row, None, None, None, RANDOM) for row in rows]


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
    scores = {p.item_id: p.score for p in session.execute(_PREDICTIONS, params)}
    entries = {row.item_id: row for row in session.execute(_QUEUE_FACTS, params)}
    facts: dict[int, Pick] = {}
    for pick in picks:
        entry = entries.get(pick.item_id)
        if entry is not None:
            facts[pick.item_id] = Pick(
                pick.item, round_id, entry.rank, entry.score, entry.strategy, strategy
            )
        else:
            score = scores.get(pick.item_id)
            facts[pick.item_id] = Pick(pick.item, round_id, None, score, strategy, strategy)
    return facts


def _served(context: _Context, picks: list[Pick], *, expires_at: datetime) -> list[Served]:
    predictions: dict[int, PredictionFields] = {}
    if picks and context.done_round is not None:
        params = {"round_id": context.done_round.id, "ids": [p.item_id for p in picks]}
        predictions = {p.item_id: p for p in context.session.execute(_PREDICTIONS, params)}
    percentiles = _percentiles(context.session, picks)
    return [
        Served(
            item=pick.item,
            pick=pick,
            prediction=predictions.get(pick.item_id),
            lease_expires_at=expires_at,
            score_percentile=percentiles.get(pick.item_id),
        )
        for pick in picks
    ]


def _percentiles(session: Session, picks: list[Pick]) -> dict[int, float]:
    """Item id → percentile rank of its score among its round's scores: the share scoring
    lower, ties counted half, so it reads the same on every strategy's scale."""
    by_round: dict[int, list[int]] = {}
    for pick in picks:
        if pick.round_id is not None:
            by_round.setdefault(pick.round_id, []).append(pick.item_id)
    percentiles: dict[int, float] = {}
    for round_id, ids in by_round.items():
        for row in session.execute(_STANDING, {"round_id": round_id, "ids": ids}):
            below = row.total - row.above - row.ties
            percentiles[row.item_id] = 100.0 * (below + row.ties / 2) / row.total
    return percentiles


def reason(pick: Pick) -> str:
    """Why `next` served the item, in words an annotator reads beside it."""
    if pick.round_id is None:
        return (
            "No model has been trained yet, so images come in a fixed random order until "
            "the first round is done."
        )
    chosen_by = strategy_label(pick.strategy)
    if pick.rank is None:
        return (
            f"Round {pick.round_id}'s queue is used up or being labelled by others, so it "
            f"is the highest-scoring image left in that round ({chosen_by})."
        )
    place = f"#{pick.rank + 1} in round {pick.round_id}'s queue"
    head = pick.round_strategy
    if head is None or pick.strategy == head:
        return f"{chosen_by} put it {place}. {_description(pick.strategy)}"
    if pick.strategy == "powerbald" and head == "batchbald":
        return (
            f"PowerBALD, not BatchBALD, put it {place}. BatchBALD chose only the first batch: "
            "it weighs each pick against the others, which costs a pass over every image "
            "per pick and gains little beyond one batch. The rest of the queue, which you "
            "label while the next model trains, is drawn by PowerBALD: it favours images "
            "with high BALD scores and adds chance, so they do not all say the same thing."
        )
    return (
        f"{chosen_by}, not {strategy_label(head)}, put it {place}: {strategy_label(head)} "
        f"chose the first batch and {chosen_by} the rest. {_description(pick.strategy)}"
    )


# Cold starts name the picks of a round without a model (strategy "random" is in both).
_STRATEGIES = {entry.name: entry for entry in (*COLD_START_ENTRIES, *STRATEGY_ENTRIES)}


def strategy_label(name: str) -> str:
    entry = _STRATEGIES.get(name)
    return entry.label if entry else name


def _description(name: str) -> str:
    entry = _STRATEGIES.get(name)
    return entry.description if entry else ""

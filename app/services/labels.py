"""Labels, undo, skip and unskip. `Item.label_count` changes in the same transaction.

One piece because labelling, its Idempotency-Key replay and undo are one lifecycle of the
(item, annotator) row, written by the Core statements built once below (a quarter of the
module) and kept in step with `Item.label_count`; skip and unskip hand the lease back the
way undo does. Split, each part would import the others' statements.

Each (item, annotator) has at most one current label (a partial unique index). A new label
retires the old one (is_current=False, retired_at=now) and undo marks it undone; rows are
never deleted, so the history stays.

A label may carry the request's Idempotency-Key, unique per annotator (a partial unique
index): a retry with the same key returns the label the first request made and writes
nothing, even when both requests race (the loser's insert fails and it returns the winner's).

Labelling is the hottest write, so its statements are Core statements on the tables, built
once with bound parameters (no ORM bookkeeping, compiled form reused).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import (
    DateTime,
    Integer,
    String,
    bindparam,
    delete,
    false,
    insert,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.services import Invalid, NotFound, dialect_insert, is_postgresql
from app.services.leases import grant_leases, lease_expiry, release_lease
from core.db import table_of
from core.tables import Annotator, Item, Label, Lease, Project, Skip, is_current, utcnow


@dataclass(frozen=True)
class SavedLabel:
    """A label as stored: what LabelPublic shows."""

    id: int
    item_id: int
    annotator_id: int
    label: str
    created_at: datetime
    ms_spent: int | None
    round_id: int | None


@dataclass(frozen=True)
class LabelResult:
    label: SavedLabel
    replaced_previous: bool
    # True when an earlier request with the same Idempotency-Key made this label.
    replayed: bool = False


class ItemKey(Protocol):
    """Which item, in which project: an Item, or a lighter row (see `label_target`)."""

    @property
    def id(self) -> int: ...
    @property
    def project_id(self) -> int: ...


@dataclass(frozen=True)
class _LabelRequest:
    item: ItemKey
    annotator_id: int
    label: str
    key: str | None  # the Idempotency-Key header


# --- statements (bind names are prefixed: plain column names are reserved in SET clauses) ---

_LABELS = table_of(Label)
_ITEMS = table_of(Item)
_LEASES = table_of(Lease)
_P_ITEM = bindparam("p_item", type_=Integer)
_P_ME = bindparam("p_me", type_=Integer)
_P_NOW = bindparam("p_now", type_=DateTime(timezone=True))

_MINE_NOW = (_LABELS.c.item_id == _P_ITEM, _LABELS.c.annotator_id == _P_ME, is_current())
_RETIRE = (
    update(_LABELS)
    .where(*_MINE_NOW)
    .values(is_current=False, retired_at=_P_NOW)
    .returning(_LABELS.c.id)
)
_UNDO = (
    update(_LABELS)
    .where(*_MINE_NOW)
    .values(is_current=False, undone=True, retired_at=_P_NOW)
    .returning(
        _LABELS.c.id,
        _LABELS.c.label,
        _LABELS.c.created_at,
        _LABELS.c.ms_spent,
        _LABELS.c.round_id,
    )
)
_INSERT = insert(_LABELS).returning(_LABELS.c.id)
_P_DELTA = bindparam("p_delta", type_=Integer)
_COUNT = (
    update(_ITEMS).where(_ITEMS.c.id == _P_ITEM).values(label_count=_ITEMS.c.label_count + _P_DELTA)
)
_NEW_LABEL_COLUMNS = (
    "project_id",
    "item_id",
    "annotator_id",
    "label",
    "created_at",
    "ms_spent",
    "round_id",
    "is_current",
    "undone",
    "idempotency_key",
)
# PostgreSQL runs the lease release, the label's insert and the item's count as one
# statement; the label takes the round that served the item from the released lease.
_RELEASED = (
    delete(_LEASES)
    .where(_LEASES.c.item_id == _P_ITEM, _LEASES.c.annotator_id == _P_ME)
    .returning(_LEASES.c.round_id)
    .cte("released")
)
_COUNTED = (
    update(_ITEMS)
    .where(_ITEMS.c.id == _P_ITEM, _P_DELTA > 0)
    .values(label_count=_ITEMS.c.label_count + _P_DELTA)
    .cte("counted")
)
_INSERT_RELEASING_LEASE = (
    insert(_LABELS)
    .from_select(
        list(_NEW_LABEL_COLUMNS),
        select(
            bindparam("p_project", type_=Integer),
            _P_ITEM,
            _P_ME,
            bindparam("p_class", type_=String),
            _P_NOW,
            bindparam("p_ms_spent", type_=Integer),
            select(_RELEASED.c.round_id).scalar_subquery(),
            true(),
            false(),
            bindparam("p_idempotency_key", type_=String),
        ),
    )
    .add_cte(_RELEASED, _COUNTED)
    .returning(_LABELS.c.id, _LABELS.c.round_id)
)
_LOCK_ITEM = select(_ITEMS.c.id).where(_ITEMS.c.id == _P_ITEM).with_for_update()
# Walks the partial index uq_labels_idempotency_key (`key = ?` implies `key IS NOT NULL`).
_BY_KEY = select(
    _LABELS.c.id,
    _LABELS.c.item_id,
    _LABELS.c.label,
    _LABELS.c.created_at,
    _LABELS.c.ms_spent,
    _LABELS.c.round_id,
).where(
    _LABELS.c.annotator_id == _P_ME,
    _LABELS.c.idempotency_key == bindparam("p_key", type_=String),
)
# The label a new one replaced was retired in the same transaction, at its created_at.
_REPLACED_BY = (
    select(_LABELS.c.id)
    .where(
        _LABELS.c.item_id == _P_ITEM,
        _LABELS.c.annotator_id == _P_ME,
        _LABELS.c.id < bindparam("p_label", type_=Integer),
        _LABELS.c.retired_at == _P_NOW,
    )
    .limit(1)
)
_SKIPS = table_of(Skip)
_UNSKIP = (
    delete(_SKIPS)
    .where(_SKIPS.c.item_id == _P_ITEM, _SKIPS.c.annotator_id == _P_ME)
    .returning(_SKIPS.c.item_id)
)
_CLASSES = select(Project.classes).where(Project.id == bindparam("project_id"))


def create_label(
    *,
    session: Session,
    item: ItemKey,
    annotator: Annotator,
    label: str,
    ms_spent: int | None = None,
    classes: Sequence[str] | None = None,
    idempotency_key: str | None = None,
    item_locked: bool = False,
    may_replace: bool = True,
) -> LabelResult:
    """Record the annotator's label for the item, replacing their previous one.

    `classes` are the project's, when the caller already has them (saves a query);
    `item_locked`: this transaction already holds the item's row lock (saves another);
    `may_replace=False`: it read, under that lock, that the item has no labels at all, so
    there is no earlier label of the annotator's to retire (saves a third). With an
    `idempotency_key` the annotator already used for this item and label, nothing is written
    and the label that request made comes back (`replayed`); used for anything else: Invalid.
    """
    request = _LabelRequest(item=item, annotator_id=annotator.id, label=label, key=idempotency_key)
    replay = _replay(session=session, request=request)
    if replay is not None:
        return replay
    if classes is None:
        classes = session.scalar(_CLASSES, {"project_id": item.project_id}) or []
    if label not in classes:
        raise Invalid(f"{label!r} is not one of this project's classes: {', '.join(classes)}.")
    try:
        return _write_label(
            session=session,
            request=request,
            ms_spent=ms_spent,
            item_locked=item_locked,
            may_replace=may_replace,
        )
    except IntegrityError:
        # A concurrent request with the same key committed first: answer with its label.
        session.rollback()
        replay = _replay(session=session, request=request)
        if replay is None:
            raise
        return replay


def _write_label(
    *,
    session: Session,
    request: _LabelRequest,
    ms_spent: int | None,
    item_locked: bool,
    may_replace: bool,
) -> LabelResult:
    item, me = request.item, request.annotator_id
    now = utcnow()
    mine = {"p_item": item.id, "p_me": me, "p_now": now}
    if not item_locked:
        _lock_item(session=session, item_id=item.id)
    replaced = may_replace and session.scalar(_RETIRE, mine) is not None
    new_label = _NewLabel(
        project_id=item.project_id,
        item_id=item.id,
        annotator_id=me,
        label=request.label,
        created_at=now,
        ms_spent=ms_spent,
        idempotency_key=request.key,
        count_delta=0 if replaced else 1,
    )
    if is_postgresql(session):
        label_id, round_id = _insert_in_one_statement(session=session, new=new_label)
    else:
        label_id, round_id = _insert_statement_by_statement(session=session, new=new_label)
    session.commit()
    saved = SavedLabel(
        id=label_id,
        item_id=item.id,
        annotator_id=me,
        label=request.label,
        created_at=now,
        ms_spent=ms_spent,
        round_id=round_id,
    )
    return LabelResult(label=saved, replaced_previous=replaced)


@dataclass(frozen=True)
class _NewLabel:
    project_id: int
    item_id: int
    annotator_id: int
    label: str
    created_at: datetime
    ms_spent: int | None
    idempotency_key: str | None
    count_delta: int  # 1, or 0 when the label replaces the annotator's earlier one

    def row(self, *, round_id: int | None) -> dict[str, Any]:
        return {
            "project_id": self.project_id,
            "item_id": self.item_id,
            "annotator_id": self.annotator_id,
            "label": self.label,
            "created_at": self.created_at,
            "ms_spent": self.ms_spent,
            "round_id": round_id,
            "is_current": True,
            "undone": False,
            "idempotency_key": self.idempotency_key,
        }


def _insert_in_one_statement(*, session: Session, new: _NewLabel) -> tuple[int, int | None]:
    """PostgreSQL: release the lease, insert the label, count it: one round trip."""
    params = {
        "p_item": new.item_id,
        "p_me": new.annotator_id,
        "p_now": new.created_at,
        "p_delta": new.count_delta,
        "p_project": new.project_id,
        "p_class": new.label,
        "p_ms_spent": new.ms_spent,
        "p_idempotency_key": new.idempotency_key,
    }
    label_id, round_id = session.execute(_INSERT_RELEASING_LEASE, params).one()
    return label_id, round_id


def _insert_statement_by_statement(*, session: Session, new: _NewLabel) -> tuple[int, int | None]:
    """SQLite (no data-modifying CTEs, and no round trips to save): the same, in three."""
    round_id = release_lease(session=session, item_id=new.item_id, annotator_id=new.annotator_id)
    label_id = session.scalar(_INSERT, new.row(round_id=round_id))
    assert label_id is not None
    if new.count_delta:
        session.execute(_COUNT, {"p_item": new.item_id, "p_delta": new.count_delta})
    return label_id, round_id


def _replay(*, session: Session, request: _LabelRequest) -> LabelResult | None:
    """The label an earlier request with this Idempotency-Key made, if there was one."""
    if request.key is None:
        return None
    row = session.execute(_BY_KEY, {"p_me": request.annotator_id, "p_key": request.key}).first()
    if row is None:
        return None
    if (row.item_id, row.label) != (request.item.id, request.label):
        raise Invalid(
            f"The Idempotency-Key {request.key!r} was already used for the label "
            f"{row.label!r} on item {row.item_id}; send a new key with a new label."
        )
    replaced_params = {
        "p_item": row.item_id,
        "p_me": request.annotator_id,
        "p_label": row.id,
        "p_now": row.created_at,
    }
    saved = SavedLabel(
        id=row.id,
        item_id=row.item_id,
        annotator_id=request.annotator_id,
        label=row.label,
        created_at=row.created_at,
        ms_spent=row.ms_spent,
        round_id=row.round_id,
    )
    replaced = session.scalar(_REPLACED_BY, replaced_params) is not None
    return LabelResult(label=saved, replaced_previous=replaced, replayed=True)


def undo_label(
    *, session: Session, item: Item, annotator: Annotator, lease_seconds: int
) -> SavedLabel:
    """Undo the annotator's current label; the item is leased back to them to relabel."""
    now = utcnow()
    _lock_item(session=session, item_id=item.id)
    undone = session.execute(_UNDO, {"p_item": item.id, "p_me": annotator.id, "p_now": now})
    row = undone.one_or_none()
    if row is None:
        session.rollback()
        raise NotFound(f"You have no label on item {item.id} to undo.")
    session.execute(_COUNT, {"p_item": item.id, "p_delta": -1})
    grant_leases(
        session=session,
        annotator_id=annotator.id,
        grants=[(item.id, row.round_id)],
        now=now,
        expires_at=lease_expiry(now=now, lease_seconds=lease_seconds),
    )
    session.commit()
    return SavedLabel(
        id=row.id,
        item_id=item.id,
        annotator_id=annotator.id,
        label=row.label,
        created_at=row.created_at,
        ms_spent=row.ms_spent,
        round_id=row.round_id,
    )


def skip_item(*, session: Session, item: Item, annotator: Annotator) -> None:
    """Never serve the item to this annotator again; others still get it."""
    insert_skip = dialect_insert(session)
    session.execute(
        insert_skip(Skip)
        .values(item_id=item.id, annotator_id=annotator.id, created_at=utcnow())
        .on_conflict_do_nothing()
    )
    release_lease(session=session, item_id=item.id, annotator_id=annotator.id)
    session.commit()


def unskip_item(*, session: Session, item: Item, annotator: Annotator, lease_seconds: int) -> None:
    """Undo the annotator's skip (no-op without one); the item is leased back to them.

    As after undoing a label, the annotator is looking at the item again, so `next` keeps it
    from others (unless someone else leased it meanwhile) and serves it to them first.
    """
    unskipped = session.scalar(_UNSKIP, {"p_item": item.id, "p_me": annotator.id})
    if unskipped is not None:
        now = utcnow()
        grant_leases(
            session=session,
            annotator_id=annotator.id,
            grants=[(item.id, None)],
            now=now,
            expires_at=lease_expiry(now=now, lease_seconds=lease_seconds),
        )
    session.commit()


def my_labels(*, session: Session, annotator_id: int, item_ids: list[int]) -> dict[int, str]:
    """item id -> the annotator's current label, for the items that have one."""
    if not item_ids:
        return {}
    rows = session.execute(
        select(Label.item_id, Label.label).where(
            Label.item_id.in_(item_ids), Label.annotator_id == annotator_id, is_current()
        )
    )
    return {item_id: label for item_id, label in rows}


def _lock_item(*, session: Session, item_id: int) -> None:
    # PostgreSQL: serialises label changes per item, so two requests from one annotator
    # cannot both insert a "current" label. SQLite has no row locks; there the first write
    # that follows takes the database's single write lock, which serialises them instead.
    if is_postgresql(session):
        session.execute(_LOCK_ITEM, {"p_item": item_id})

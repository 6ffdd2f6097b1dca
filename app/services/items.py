"""Reading items: visibility, pages of a project's items, and their public shape."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import ColumnElement, bindparam, exists, select
from sqlalchemy.orm import Session

from app.schemas import ItemPage, ItemPublic, ItemStatus
from app.services import NotFound
from app.services.labels import my_labels
from core.db import table_of
from core.tables import (
    ACTIVE_ROUND_STATUSES,
    Annotator,
    Item,
    Project,
    ProjectMember,
    Role,
    Round,
    Split,
)


class ItemFields(Protocol):
    """The columns ItemPublic shows: an Item, or a Core row of ITEM_FIELD_NAMES (hot paths
    read rows; building ORM objects costs more than the query)."""

    @property
    def id(self) -> int: ...
    @property
    def project_id(self) -> int: ...
    @property
    def filename(self) -> str: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def split(self) -> Split: ...
    @property
    def known_label(self) -> str | None: ...
    @property
    def label_count(self) -> int: ...
    @property
    def decode_error(self) -> str | None: ...
    @property
    def near_duplicate_of(self) -> int | None: ...
    @property
    def near_duplicate_distance(self) -> float | None: ...
    @property
    def duplicate_skipped(self) -> bool: ...


ITEM_FIELD_NAMES = (
    "id",
    "project_id",
    "filename",
    "width",
    "height",
    "split",
    "known_label",
    "label_count",
    "decode_error",
    "near_duplicate_of",
    "near_duplicate_distance",
    "duplicate_skipped",
)


def image_url(item_id: int) -> str:
    return f"/api/v1/items/{item_id}/image"


# One indexed query answers "does the item exist, in which project, may this user see it,
# and is a round already queued or running" (labelling asks all four).
_VISIBLE_ITEM = select(
    Item,
    exists().where(
        ProjectMember.project_id == Item.project_id,
        ProjectMember.annotator_id == bindparam("me"),
    ),
).where(Item.id == bindparam("item_id"))


@dataclass(frozen=True)
class LabelTarget:
    """What labelling needs to know about an item, read as one Core row."""

    id: int
    project_id: int
    classes: list[str]
    retrain_every: int
    round_active: bool
    # Labels on the item from anyone, read under the item's lock: 0 means the caller has no
    # label to replace (see `create_label`'s `may_replace`).
    label_count: int


_ITEMS = table_of(Item)
_PROJECTS = table_of(Project)
_ROUNDS = table_of(Round)
_MEMBERS = table_of(ProjectMember)
_LABEL_TARGET = (
    select(
        _ITEMS.c.id,
        _ITEMS.c.project_id,
        _ITEMS.c.label_count,
        _PROJECTS.c.classes,
        _PROJECTS.c.retrain_every,
        exists()
        .where(
            _MEMBERS.c.project_id == _ITEMS.c.project_id,
            _MEMBERS.c.annotator_id == bindparam("me"),
        )
        .label("is_member"),
        exists()
        .where(
            _ROUNDS.c.project_id == _ITEMS.c.project_id,
            _ROUNDS.c.status.in_(ACTIVE_ROUND_STATUSES),
        )
        .label("round_active"),
    )
    .join(_PROJECTS, _PROJECTS.c.id == _ITEMS.c.project_id)
    .where(_ITEMS.c.id == bindparam("item_id"))
    # PostgreSQL: the row lock `create_label` needs, taken by this first read instead of a
    # statement of its own (SQLite has no row locks and renders nothing: there the caller
    # reads inside `begin_write`, under the write lock).
    .with_for_update(of=_ITEMS)
)


def label_target(*, session: Session, user: Annotator, item_id: int) -> LabelTarget:
    """`visible_item` for labelling, without loading ORM objects; else NotFound.

    Call it first in a `begin_write` transaction: it locks the item's row (PostgreSQL; on
    SQLite the write lock covers it) until the transaction ends, so pass `item_locked=True`
    to `create_label` in the same transaction, and what it read still holds when that writes.
    """
    row = session.execute(_LABEL_TARGET, {"item_id": item_id, "me": user.id}).one_or_none()
    if row is None or not (row.is_member or user.role == Role.admin):
        raise NotFound(f"Item {item_id} does not exist or is in a project you are not in.")
    return LabelTarget(
        id=row.id,
        project_id=row.project_id,
        classes=row.classes,
        retrain_every=row.retrain_every,
        round_active=bool(row.round_active),
        label_count=row.label_count,
    )


def get_visible_item(*, session: Session, user: Annotator, item_id: int) -> Item:
    """The item, if it is in a project the user belongs to (admins: any project); else
    NotFound."""
    row = session.execute(_VISIBLE_ITEM, {"item_id": item_id, "me": user.id}).one_or_none()
    if row is None or not (row[1] or user.role == Role.admin):
        raise NotFound(f"Item {item_id} does not exist or is in a project you are not in.")
    item: Item = row[0]
    return item


def to_public(
    *, session: Session, items: Sequence[ItemFields], annotator_id: int | None
) -> list[ItemPublic]:
    """Public shapes; `annotator_id` fills `my_label` (None: skip that query)."""
    mine: dict[int, str] = {}
    if annotator_id is not None:
        ids = [item.id for item in items]
        mine = my_labels(session=session, annotator_id=annotator_id, item_ids=ids)
    return [
        ItemPublic(
            id=item.id,
            project_id=item.project_id,
            filename=item.filename,
            width=item.width,
            height=item.height,
            split=item.split,
            known_label=item.known_label,
            label_count=item.label_count,
            decode_error=item.decode_error,
            near_duplicate_of=item.near_duplicate_of,
            near_duplicate_distance=item.near_duplicate_distance,
            duplicate_skipped=item.duplicate_skipped,
            image_url=image_url(item.id),
            my_label=mine.get(item.id),
        )
        for item in items
    ]


def _status_filter(status: ItemStatus | None) -> list[ColumnElement[bool]]:
    if status == "labelled":
        return [Item.label_count > 0]
    if status == "unlabelled":
        return [Item.split == Split.pool, Item.label_count == 0]
    if status == "validation":
        return [Item.split == Split.validation]
    if status == "near_duplicate":
        return [Item.near_duplicate_of.is_not(None)]
    return []


def list_items(
    *,
    session: Session,
    project_id: int,
    annotator_id: int,
    status: ItemStatus | None,
    limit: int,
    cursor: int | None,
) -> ItemPage:
    """One page in id order; `cursor` is the last id of the previous page (keyset paging)."""
    query = select(Item).where(Item.project_id == project_id, *_status_filter(status))
    if cursor is not None:
        query = query.where(Item.id > cursor)
    items = session.scalars(query.order_by(Item.id).limit(limit + 1)).all()
    page = list(items[:limit])
    return ItemPage(
        items=to_public(session=session, items=page, annotator_id=annotator_id),
        next_cursor=page[-1].id if len(items) > limit else None,
    )

"""Leases: which annotator is working on an item, until when.

A lease is one row per item, granted by an atomic upsert that only overwrites a lease that
has expired or already belongs to the caller. Two annotators asking at the same instant can
therefore never both get an item, on SQLite (one writer at a time) or PostgreSQL (the
conflicting row is locked and the WHERE re-checked against the committed version).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, bindparam, delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.services import is_postgresql
from core.db import table_of
from core.tables import Lease

# Core statements on the table (not the ORM entity): no ORM bookkeeping on the hot path.
_LEASES = table_of(Lease)


def _upsert(insert: Any) -> Any:
    statement = insert(_LEASES).values(
        item_id=bindparam("item_id"),
        annotator_id=bindparam("me"),
        expires_at=bindparam("expires_at", type_=DateTime(timezone=True)),
        round_id=bindparam("round_id"),
    )
    return statement.on_conflict_do_update(
        index_elements=[_LEASES.c.item_id],
        set_={
            "annotator_id": statement.excluded.annotator_id,
            "expires_at": statement.excluded.expires_at,
            "round_id": statement.excluded.round_id,
        },
        where=(_LEASES.c.expires_at < bindparam("now", type_=DateTime(timezone=True)))
        | (_LEASES.c.annotator_id == bindparam("me")),
    ).returning(_LEASES.c.item_id)


# Built once per dialect: `next` runs this for every item it hands out.
_UPSERT = {"sqlite": _upsert(sqlite_insert), "postgresql": _upsert(pg_insert)}


def lease_expiry(*, now: datetime, lease_seconds: int) -> datetime:
    return now + timedelta(seconds=lease_seconds)


def grant_leases(
    *,
    session: Session,
    annotator_id: int,
    grants: Sequence[tuple[int, int | None]],
    now: datetime,
    expires_at: datetime,
) -> set[int]:
    """Try to lease each (item_id, round_id) to the annotator; returns the item ids granted.

    Expiries are spaced 1 µs apart in the order given, so re-serving a caller's live leases
    by expiry hands them back in the order they were first served. Does not commit: the
    caller commits at once, so row locks are held for microseconds.
    """
    statement = _UPSERT["postgresql" if is_postgresql(session) else "sqlite"]
    expiries = {
        item_id: expires_at + timedelta(microseconds=position)
        for position, (item_id, _) in enumerate(grants)
    }
    granted: set[int] = set()
    # In item order, so that two PostgreSQL transactions lock rows in the same order.
    for item_id, round_id in sorted(dict(grants).items()):
        params = {
            "item_id": item_id,
            "me": annotator_id,
            "expires_at": expiries[item_id],
            "round_id": round_id,
            "now": now,
        }
        if session.scalar(statement, params) is not None:
            granted.add(item_id)
    return granted


_RELEASE = (
    delete(_LEASES)
    .where(_LEASES.c.item_id == bindparam("item_id"), _LEASES.c.annotator_id == bindparam("me"))
    .returning(_LEASES.c.round_id)
)


def release_lease(*, session: Session, item_id: int, annotator_id: int) -> int | None:
    """Drop the caller's lease on the item (no-op if someone else holds it); no commit.

    Returns the round that served the item, when the lease named one: the label copies it.
    """
    return session.scalar(_RELEASE, {"item_id": item_id, "me": annotator_id})


def hand_back(*, session: Session, item_id: int, annotator_id: int) -> None:
    """The caller no longer wants the item: drop their lease on it, if any, and commit.

    Someone else's lease is left alone, so `next` can serve the item to anyone at once.
    """
    release_lease(session=session, item_id=item_id, annotator_id=annotator_id)
    session.commit()

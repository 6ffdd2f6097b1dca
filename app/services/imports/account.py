"""The import account: the annotator that imported training labels are by.

Named "import", with a token hash no token can have, so it cannot log in; exports and the
dashboard show its labels as imported. The plan looks it up (an image already imported with
a label), and the write creates it on first use.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.services import Conflict, dialect_insert
from core.tables import Annotator, Role, utcnow

IMPORT_ANNOTATOR = "import"
# No token hashes to this (hashes are 64 hex digits): the import account cannot log in.
_IMPORT_TOKEN_HASH = "none: labels imported from files"


def import_annotator_id(*, session: Session) -> int | None:
    """The import account's id, or None before the first labelled import created it."""
    return session.scalar(select(Annotator.id).where(Annotator.token_hash == _IMPORT_TOKEN_HASH))


def import_annotator(*, session: Session) -> int:
    """The account imported training labels are by: named "import", with no token, so
    exports and the dashboard show those labels as imported. Created on first use."""
    found = import_annotator_id(session=session)
    if found is not None:
        return found
    insert = dialect_insert(session)
    session.execute(
        insert(Annotator)
        .values(
            name=IMPORT_ANNOTATOR,
            role=Role.annotator,
            token_hash=_IMPORT_TOKEN_HASH,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing()
    )
    session.commit()
    found = import_annotator_id(session=session)
    if found is None:
        raise Conflict(
            f"An annotator named {IMPORT_ANNOTATOR!r} exists: rename it so imported labels "
            "can be attributed to the import account."
        )
    return found

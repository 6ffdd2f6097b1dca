"""Path and query parameters shared by the routes, bounded to what the database stores.

An id is an Integer primary key: 1 up to 2**31 - 1 (PostgreSQL's int4). Beyond that the
database raises an error rather than finding nothing (a 500: PostgreSQL cannot compare
an int4 with a larger parameter, SQLite's driver cannot bind one over 64 bits), so these
types refuse such a value first with a 422 that names the parameter. Request bodies use
`app.schemas.StoredInt` for the same bound.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from core.tables import INT32_MAX

ProjectId = Annotated[int, Path(ge=1, le=INT32_MAX, description="A project's id.")]
ItemId = Annotated[int, Path(ge=1, le=INT32_MAX, description="An item's id.")]
AnnotatorId = Annotated[int, Path(ge=1, le=INT32_MAX, description="An annotator's id.")]
RoundId = Annotated[int, Path(ge=1, le=INT32_MAX, description="A round's id.")]

ItemCursor = Annotated[
    int | None,
    Query(ge=0, le=INT32_MAX, description="next_cursor of the previous page (an item id)."),
]

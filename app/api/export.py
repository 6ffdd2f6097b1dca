"""Streamed export of the current labels."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from app.api.params import ProjectId
from app.deps import API_PREFIX, AdminUser, SessionDep
from app.schemas import ExportFormat
from app.services.export import COLUMNS, MEDIA_TYPES, export_rows, render
from app.services.projects import get_visible_project

router = APIRouter(prefix=f"{API_PREFIX}/projects", tags=["export"])


@router.get(
    "/{project_id}/export",
    summary="Current labels, one row per item and annotator, streamed",
    response_class=StreamingResponse,
    responses={200: {"content": {media: {} for media in MEDIA_TYPES.values()}}},
    description="Columns: " + ", ".join(COLUMNS) + ".",
)
def export_labels(
    project_id: ProjectId,
    request: Request,
    session: SessionDep,
    admin: AdminUser,
    fmt: Annotated[ExportFormat, Query(alias="format")] = "csv",
) -> StreamingResponse:
    project = get_visible_project(session=session, user=admin, project_id=project_id)
    pages = export_rows(session_factory=request.app.state.session_factory, project_id=project.id)
    return StreamingResponse(
        render(pages, fmt=fmt),
        media_type=MEDIA_TYPES[fmt],
        headers={"Content-Disposition": attachment(f"{project.name}-labels.{fmt}")},
    )


# Kept in the quoted fallback: printable ASCII but for the quoted-string's specials (`"`,
# `\`), `%` (some browsers percent-decode `filename`) and `/` (a path, to some clients).
_FALLBACK_SAFE = frozenset(map(chr, range(0x20, 0x7F))) - set('"\\%/')
# RFC 5987 attr-char beyond letters and digits: everything else is percent-encoded.
_ATTR_CHARS = "!#$&+-.^_`|~"


def attachment(filename: str) -> str:
    """A Content-Disposition for a download named `filename`, whatever it holds (RFC 6266).

    Header values are bytes that HTTP only promises to carry when they are visible ASCII:
    a raw non-Latin-1 name cannot be encoded at all (500), and with a control character the
    header is malformed, so the server drops the connection instead of answering. So the
    name travels percent-encoded as UTF-8 in `filename*` (RFC 5987), which every current
    browser prefers, and as an ASCII approximation in the quoted `filename` for clients
    that know only that.
    """
    fallback = "".join(char if char in _FALLBACK_SAFE else "_" for char in filename)
    encoded = quote(filename, safe=_ATTR_CHARS, encoding="utf-8")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"

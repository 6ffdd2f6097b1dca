"""Streamed export of the current labels."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

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
    project_id: int,
    request: Request,
    session: SessionDep,
    admin: AdminUser,
    fmt: Annotated[ExportFormat, Query(alias="format")] = "csv",
) -> StreamingResponse:
    project = get_visible_project(session=session, user=admin, project_id=project_id)
    pages = export_rows(session_factory=request.app.state.session_factory, project_id=project.id)
    filename = f"{project.name}-labels.{fmt}".replace('"', "")
    return StreamingResponse(
        render(pages, fmt=fmt),
        media_type=MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )

"""Bring your own embeddings: upload a project's vectors, see what they cover."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, Response, UploadFile
from pydantic import Field

from app.api.errors import ValidationErrorMessage
from app.api.params import ProjectId
from app.api.responses import model_response
from app.deps import (
    API_PREFIX,
    AdminUser,
    DispatcherDep,
    EmbeddingsDep,
    SessionDep,
    SettingsDep,
)
from app.schemas import (
    EMBEDDING_LISTED,
    EmbeddingImportReport,
    EmbeddingProblem,
    EmbeddingSummary,
)
from app.services.embedding_import import (
    FORMATS_TEXT,
    EmbeddingsRefused,
    embedding_summary,
    import_embeddings,
)
from app.services.projects import get_visible_project

router = APIRouter(prefix=API_PREFIX, tags=["embeddings"])


class EmbeddingsRefusal(ValidationErrorMessage):
    """A 422 for a well-formed upload whose file has problems (`errors` stays empty, as for
    every request that is well-formed but not acceptable): nothing was written."""

    problems: list[EmbeddingProblem] = Field(
        default_factory=list,
        description=f"The first {EMBEDDING_LISTED} problems; `problem_count` counts all.",
    )
    problem_count: int = 0


@router.post(
    "/projects/{project_id}/embeddings",
    response_model=EmbeddingImportReport,
    summary="Import your own vectors for the project's images (dry_run checks first)",
    description=f"One file: {FORMATS_TEXT}. Each key names an item by its sha256 or by its "
    "file name exactly as imported (`cat/1.png`). A key naming no item or two, a key given "
    "twice, two keys for one item, a vector that is NaN or infinite, or a dimension other "
    "than the file's or the project's imported vectors' (unless `replace`) refuses the whole "
    "file with a 422 listing each problem, and nothing is written. Items left without a "
    "vector are no problem (import in parts): `coverage` counts and lists them. Into a "
    "project whose network is `embeddings`, an import queues a round.",
    responses={
        413: {"description": "Upload too large"},
        422: {"model": EmbeddingsRefusal, "description": "Problems: nothing was written"},
    },
)
def upload_embeddings(
    project_id: ProjectId,
    file: Annotated[UploadFile, File(description="An .npz, .npy or .parquet file.")],
    session: SessionDep,
    settings: SettingsDep,
    embeddings: EmbeddingsDep,
    dispatcher: DispatcherDep,
    admin: AdminUser,
    dry_run: Annotated[
        bool, Query(description="Check everything, answer what would happen, write nothing.")
    ] = False,
    replace: Annotated[
        bool,
        Query(description="Remove the project's imported vectors first (another dimension)."),
    ] = False,
) -> Response:
    project = get_visible_project(session=session, user=admin, project_id=project_id)
    try:
        report = import_embeddings(
            session=session,
            embeddings=embeddings,
            project=project,
            source=file.file,
            name=file.filename or "upload",
            max_bytes=settings.max_upload_bytes,
            dry_run=dry_run,
            replace=replace,
        )
    except EmbeddingsRefused as refused:
        return _refusal(refused)
    if report.round_queued is not None:
        dispatcher.send_soon(report.round_queued)
    return model_response(report)


def _refusal(refused: EmbeddingsRefused) -> Response:
    report = refused.report
    message = EmbeddingsRefusal(
        detail=str(refused), problems=report.problems, problem_count=report.problem_count
    )
    return model_response(message, status_code=422)


@router.get(
    "/projects/{project_id}/embeddings",
    summary="The project's imported vectors: dimension, count, and the items they cover",
)
def get_embeddings(
    project_id: ProjectId, session: SessionDep, embeddings: EmbeddingsDep, admin: AdminUser
) -> EmbeddingSummary:
    project = get_visible_project(session=session, user=admin, project_id=project_id)
    return embedding_summary(session=session, embeddings=embeddings, project=project)

"""Project metrics for the dashboard: counts, learning curve, queue freshness."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.params import ProjectId
from app.deps import API_PREFIX, CurrentUser, SessionDep
from app.schemas import ProjectMetrics
from app.services.metrics import project_metrics
from app.services.projects import get_visible_project

router = APIRouter(prefix=f"{API_PREFIX}/projects", tags=["metrics"])


@router.get("/{project_id}/metrics", summary="Label counts, learning curve, queue freshness")
def get_metrics(project_id: ProjectId, session: SessionDep, user: CurrentUser) -> ProjectMetrics:
    project = get_visible_project(session=session, user=user, project_id=project_id)
    return project_metrics(session=session, project=project)

"""Training rounds: list them, start one now, inspect one with its queue."""

from __future__ import annotations

from fastapi import APIRouter, status

from app.api.params import ProjectId, RoundId
from app.deps import API_PREFIX, CurrentUser, DispatcherDep, SessionDep
from app.schemas import RoundDetail, RoundPublic
from app.services import rounds as service
from app.services.projects import get_visible_project, member_project_ids

router = APIRouter(prefix=API_PREFIX, tags=["rounds"])


@router.get("/projects/{project_id}/rounds", summary="The project's rounds, newest first")
def list_rounds(project_id: ProjectId, session: SessionDep, user: CurrentUser) -> list[RoundPublic]:
    get_visible_project(session=session, user=user, project_id=project_id)
    return service.list_rounds(session=session, project_id=project_id)


@router.post(
    "/projects/{project_id}/rounds",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Retrain now: queue a round for the worker (or the round already queued)",
    description="Any member may ask. A round already queued is the answer (it trains on "
    "every label there is when it runs) and is sent to the worker again if its message "
    "may have been lost; one round at a time per project.",
    responses={409: {"description": "A round is running"}},
)
def start_round(
    project_id: ProjectId, session: SessionDep, dispatcher: DispatcherDep, user: CurrentUser
) -> RoundPublic:
    project = get_visible_project(session=session, user=user, project_id=project_id)
    requested = service.request_round(session=session, project=project)
    if requested.send:
        dispatcher.send_soon(requested.round.id)
    return service.numbered(session=session, found=requested.round)


@router.get("/rounds/{round_id}", summary="One round, with the queue it built")
def get_round(round_id: RoundId, session: SessionDep, user: CurrentUser) -> RoundDetail:
    project_ids = member_project_ids(session=session, user=user)
    found = service.get_round(session=session, round_id=round_id, project_ids=project_ids)
    return service.round_detail(session=session, found=found)

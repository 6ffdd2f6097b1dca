"""`next`: the items an annotator should label now, each leased to them; handing one back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from sqlalchemy.orm import Session

from app.api.health import instruments
from app.api.params import ItemId, ProjectId
from app.api.responses import next_items_response
from app.deps import API_PREFIX, CurrentUser, SessionDep, SettingsDep, run_with_session
from app.schemas import ErrorMessage, NextItem, PredictionPublic
from app.services import items as item_service
from app.services.leases import hand_back
from app.services.queue import QueueProject, Served, next_items, visible_queue_project

router = APIRouter(prefix=API_PREFIX, tags=["queue"])


@router.get(
    "/projects/{project_id}/next",
    response_model=list[NextItem],
    summary="Up to n items to label next, best first; each is leased to you",
)
async def get_next(
    project_id: ProjectId,
    request: Request,
    settings: SettingsDep,
    user: CurrentUser,
    n: Annotated[int, Query(ge=1, le=100, description="How many items.")] = 1,
) -> Response:
    def serve(session: Session) -> list[NextItem]:
        project = visible_queue_project(session=session, user=user, project_id=project_id)
        served = next_items(
            session=session,
            project=project,
            annotator_id=user.id,
            n=n,
            lease_seconds=settings.lease_seconds,
        )
        return _to_public(session=session, project=project, served=served)

    items = await run_with_session(request, serve)
    counter = instruments(request).next_served
    for entry in items:
        counter.labels(strategy=entry.strategy).inc()
    return next_items_response(items)


@router.delete(
    "/items/{item_id}/lease",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Hand an item back: drop your lease so `next` can serve it to others",
    description="No-op if you hold no lease on the item; someone else's is never touched.",
    responses={404: {"model": ErrorMessage, "description": "No such item visible to you"}},
)
def release_lease(item_id: ItemId, session: SessionDep, user: CurrentUser) -> Response:
    item = item_service.get_visible_item(session=session, user=user, item_id=item_id)
    hand_back(session=session, item_id=item.id, annotator_id=user.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _to_public(*, session: Session, project: QueueProject, served: list[Served]) -> list[NextItem]:
    # Served items are unlabelled, so there is no `my_label` to look up.
    items = item_service.to_public(
        session=session, items=[entry.item for entry in served], annotator_id=None
    )
    return [
        NextItem(
            item=item,
            rank=entry.pick.rank,
            score=entry.pick.score,
            strategy=entry.pick.strategy,
            round_id=entry.pick.round_id,
            prediction=_prediction(entry, project.classes),
            lease_expires_at=entry.lease_expires_at,
        )
        for item, entry in zip(items, served, strict=True)
    ]


def _prediction(entry: Served, classes: list[str]) -> PredictionPublic | None:
    if entry.prediction is None:
        return None
    return PredictionPublic(
        label=entry.prediction.predicted,
        confidence=entry.prediction.confidence,
        probabilities=dict(zip(classes, entry.prediction.probabilities, strict=False)),
        round_id=entry.prediction.round_id,
    )

"""`next`: the items an annotator should label now, each leased to them; handing one back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from sqlalchemy.orm import Session

from app.api.health import instruments
from app.api.params import ItemId, ProjectId
from app.api.responses import next_items_response
from app.deps import API_PREFIX, CurrentUser, SessionDep, SettingsDep, run_with_session
from app.schemas import ClassProbability, ErrorMessage, NextItem, PredictionPublic, ServedItem
from app.services import items as item_service
from app.services.leases import hand_back
from app.services.queue import QueueProject, Served, next_items, reason, visible_queue_project
from core.tables import Role

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
        filenames = project.show_filenames or user.role == Role.admin
        return _to_public(session=session, project=project, served=served, filenames=filenames)

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


def _to_public(
    *, session: Session, project: QueueProject, served: list[Served], filenames: bool
) -> list[NextItem]:
    """The answer; without `filenames` (an annotator, the project's show_filenames off) no
    item's file name is sent: the page must not show it, so no client gets it."""
    # Served items are unlabelled, so there is no `my_label` to look up.
    items = item_service.to_public(
        session=session, items=[entry.item for entry in served], annotator_id=None
    )
    hidden = None if filenames else {"filename": None}
    return [
        NextItem(
            item=ServedItem.model_validate(item.model_copy(update=hidden)),
            rank=entry.pick.rank,
            score=entry.pick.score,
            score_percentile=entry.score_percentile,
            strategy=entry.pick.strategy,
            reason=reason(entry.pick),
            round_id=entry.pick.round_id,
            prediction=_prediction(entry, project.classes),
            lease_expires_at=entry.lease_expires_at,
        )
        for item, entry in zip(items, served, strict=True)
    ]


def _prediction(entry: Served, classes: list[str]) -> PredictionPublic | None:
    if entry.prediction is None:
        return None
    probabilities = dict(zip(classes, entry.prediction.probabilities, strict=False))
    ranked = sorted(probabilities.items(), key=lambda pair: pair[1], reverse=True)
    return PredictionPublic(
        label=entry.prediction.predicted,
        confidence=entry.prediction.confidence,
        probabilities=probabilities,
        top=[ClassProbability(label=label, probability=p) for label, p in ranked[:2]],
        round_id=entry.prediction.round_id,
    )

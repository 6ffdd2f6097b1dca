"""Labelling: label an item (replacing your earlier label), undo it, or skip the item."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from app.api.health import instruments
from app.deps import API_PREFIX, CeleryDep, CurrentUser, SessionDep, SettingsDep
from app.schemas import LabelCreate, LabelPublic, SkipPublic
from app.services import labels as service
from app.services.items import get_visible_item, visible_item
from app.services.rounds import maybe_trigger_round

router = APIRouter(prefix=f"{API_PREFIX}/items", tags=["labels"])


@router.post(
    "/{item_id}/labels",
    status_code=status.HTTP_201_CREATED,
    summary="Label an item; a second label from you replaces the first",
)
def create_label(
    item_id: int,
    body: LabelCreate,
    request: Request,
    session: SessionDep,
    celery: CeleryDep,
    user: CurrentUser,
) -> LabelPublic:
    visible = visible_item(session=session, user=user, item_id=item_id)
    item = visible.item
    result = service.create_label(
        session=session,
        item=item,
        annotator=user,
        label=body.label,
        ms_spent=body.ms_spent,
        classes=visible.project.classes,
    )
    instruments(request).labels_created.inc()
    # After the label is committed: a failure here must not lose it. Skipped while a round
    # was active when the item was read; if the worker finished it since, the next label
    # triggers instead.
    triggered = None
    if not visible.round_active:
        triggered = maybe_trigger_round(session=session, celery=celery, project=visible.project)
    public = LabelPublic.model_validate(result.label)
    public.replaced_previous = result.replaced_previous
    public.round_enqueued = triggered.id if triggered is not None else None
    return public


@router.delete(
    "/{item_id}/labels/mine",
    summary="Undo your label on the item (kept in history); the item is leased back to you",
)
def undo_label(
    item_id: int, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> LabelPublic:
    item = get_visible_item(session=session, user=user, item_id=item_id)
    undone = service.undo_label(
        session=session, item=item, annotator=user, lease_seconds=settings.lease_seconds
    )
    return LabelPublic.model_validate(undone)


@router.post("/{item_id}/skip", summary="Do not show you this item again")
def skip_item(item_id: int, session: SessionDep, user: CurrentUser) -> SkipPublic:
    item = get_visible_item(session=session, user=user, item_id=item_id)
    service.skip_item(session=session, item=item, annotator=user)
    return SkipPublic(item_id=item.id)

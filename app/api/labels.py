"""Labelling: label an item (replacing your earlier label), undo it, skip the item, unskip it."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response, status

from app.api.health import instruments
from app.api.params import ItemId
from app.api.responses import model_response
from app.deps import (
    API_PREFIX,
    CurrentUser,
    DispatcherDep,
    SessionDep,
    SettingsDep,
    run_with_session,
)
from app.schemas import (
    ErrorMessage,
    IdempotencyKeyText,
    LabelCreate,
    LabelPublic,
    SkipPublic,
)
from app.services import labels as service
from app.services.items import get_visible_item
from app.services.labelling import label_item

router = APIRouter(prefix=f"{API_PREFIX}/items", tags=["labels"])

IdempotencyKey = Annotated[
    IdempotencyKeyText | None,
    Header(
        alias="Idempotency-Key",
        description="Any unique string per label, e.g. a UUID. A retry with the same key "
        "returns the label the first request made (same id, 201) and writes nothing.",
    ),
]
REPLAYED_HEADER = "Idempotent-Replayed"


@router.post(
    "/{item_id}/labels",
    status_code=status.HTTP_201_CREATED,
    response_model=LabelPublic,
    summary="Label an item; a second label from you replaces the first",
    responses={
        201: {
            "headers": {
                REPLAYED_HEADER: {
                    "description": "`true` when an earlier request with this Idempotency-Key "
                    "made the label returned.",
                    "schema": {"type": "string"},
                }
            }
        },
        422: {"description": "Not a class, or an Idempotency-Key used for another label"},
    },
)
async def create_label(
    item_id: ItemId,
    body: LabelCreate,
    request: Request,
    dispatcher: DispatcherDep,
    user: CurrentUser,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    labelled = await run_with_session(
        request,
        partial(
            label_item,
            user=user,
            item_id=item_id,
            label=body.label,
            ms_spent=body.ms_spent,
            idempotency_key=idempotency_key,
            enqueue=dispatcher.send_soon,
        ),
    )
    result = labelled.result
    if result.replayed:
        return _created(_public(result), headers={REPLAYED_HEADER: "true"})
    instruments(request).labels_created.inc()
    return _created(_public(result, round_enqueued=labelled.round_opened))


def _created(label: LabelPublic, *, headers: dict[str, str] | None = None) -> Response:
    return model_response(label, status_code=status.HTTP_201_CREATED, headers=headers)


def _public(result: service.LabelResult, *, round_enqueued: int | None = None) -> LabelPublic:
    public = LabelPublic.model_validate(result.label)
    public.replaced_previous = result.replaced_previous
    public.round_enqueued = round_enqueued
    return public


@router.delete(
    "/{item_id}/labels/mine",
    summary="Undo your label on the item (kept in history); the item is leased back to you",
)
def undo_label(
    item_id: ItemId, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> LabelPublic:
    item = get_visible_item(session=session, user=user, item_id=item_id)
    undone = service.undo_label(
        session=session, item=item, annotator=user, lease_seconds=settings.lease_seconds
    )
    return LabelPublic.model_validate(undone)


@router.post("/{item_id}/skip", summary="Do not show you this item again")
def skip_item(item_id: ItemId, session: SessionDep, user: CurrentUser) -> SkipPublic:
    item = get_visible_item(session=session, user=user, item_id=item_id)
    service.skip_item(session=session, item=item, annotator=user)
    return SkipPublic(item_id=item.id)


@router.delete(
    "/{item_id}/skip",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Undo your skip (no-op without one): the item is leased back to you",
    responses={404: {"model": ErrorMessage, "description": "No such item visible to you"}},
)
def unskip_item(
    item_id: ItemId, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> Response:
    item = get_visible_item(session=session, user=user, item_id=item_id)
    service.unskip_item(
        session=session, item=item, annotator=user, lease_seconds=settings.lease_seconds
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)

"""Labelling: label an item (replacing your earlier label), undo it, skip the item, unskip it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response, status
from sqlalchemy.orm import Session

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
from app.services import begin_write, read_outside_transaction
from app.services import labels as service
from app.services.items import get_visible_item, label_target
from core.rounds import trigger_round_if_due

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
    def label(session: Session) -> tuple[service.LabelResult, int | None]:
        # The item is read under the write lock (SQLite) or its row lock (PostgreSQL), so
        # what it says (no labels yet, no round active) still holds when the label is written.
        begin_write(session)
        target = label_target(session=session, user=user, item_id=item_id)
        result = service.create_label(
            session=session,
            item=target,
            annotator=user,
            label=body.label,
            ms_spent=body.ms_spent,
            classes=target.classes,
            idempotency_key=idempotency_key,
            item_locked=True,
            may_replace=target.label_count > 0,
        )
        if result.replayed or target.round_active:
            # Replayed: nothing was written, no round to trigger. A round active when the
            # item was read: skipped; if the worker finished it since, the next label
            # triggers instead.
            return result, None
        # After the label is committed: a failure here must not lose it.
        read_outside_transaction(session)
        triggered = trigger_round_if_due(
            session=session,
            project_id=target.project_id,
            retrain_every=target.retrain_every,
        )
        return result, triggered.id if triggered is not None else None

    result, round_enqueued = await run_with_session(request, label)
    if round_enqueued is not None:
        # Off the event loop and off this request: a broker that is down or slow to refuse
        # holds up neither the label nor anyone else's request (the round stays queued).
        dispatcher.send_soon(round_enqueued)
    if result.replayed:
        return _created(_public(result), headers={REPLAYED_HEADER: "true"})
    instruments(request).labels_created.inc()
    return _created(_public(result, round_enqueued=round_enqueued))


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

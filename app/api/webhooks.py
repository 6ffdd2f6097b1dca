"""Webhooks: URLs a project's events are POSTed to, signed; and what became of each delivery.
Admins only: a hook's URL and deliveries say what happens in a project.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from app.api.params import ProjectId
from app.deps import API_PREFIX, AdminUser, SessionDep
from app.schemas import WebhookCreate, WebhookCreated, WebhookDeliveryPublic, WebhookPublic
from app.services import webhooks as service
from app.services.projects import get_visible_project
from core.tables import INT32_MAX

router = APIRouter(prefix=API_PREFIX, tags=["webhooks"])

WebhookId = Annotated[int, Path(ge=1, le=INT32_MAX, description="A webhook's id.")]
DeliveryCursor = Annotated[
    int | None,
    Query(ge=1, le=INT32_MAX, description="The last delivery id of the previous page."),
]


@router.post(
    "/projects/{project_id}/webhooks",
    status_code=status.HTTP_201_CREATED,
    summary="Send the project's events to a URL; the reply holds its secret, shown only once",
)
def create_webhook(
    project_id: ProjectId, body: WebhookCreate, session: SessionDep, admin: AdminUser
) -> WebhookCreated:
    project = get_visible_project(session=session, user=admin, project_id=project_id)
    hook = service.create_webhook(session=session, project=project, data=body)
    return WebhookCreated(**WebhookPublic.model_validate(hook).model_dump(), secret=hook.secret)


@router.get("/projects/{project_id}/webhooks", summary="The project's webhooks (no secrets)")
def list_webhooks(
    project_id: ProjectId, session: SessionDep, admin: AdminUser
) -> list[WebhookPublic]:
    project = get_visible_project(session=session, user=admin, project_id=project_id)
    hooks = service.list_webhooks(session=session, project=project)
    return [WebhookPublic.model_validate(hook) for hook in hooks]


@router.delete(
    "/projects/{project_id}/webhooks/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Stop sending events to a webhook; its deliveries go with it",
)
def delete_webhook(
    project_id: ProjectId, webhook_id: WebhookId, session: SessionDep, admin: AdminUser
) -> Response:
    project = get_visible_project(session=session, user=admin, project_id=project_id)
    hook = service.get_webhook(session=session, webhook_id=webhook_id, project_id=project.id)
    service.delete_webhook(session=session, hook=hook)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    summary="A webhook's deliveries, newest first: status, attempts, the last answer or error",
)
def list_deliveries(
    webhook_id: WebhookId,
    session: SessionDep,
    _admin: AdminUser,
    before: DeliveryCursor = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[WebhookDeliveryPublic]:
    hook = service.get_webhook(session=session, webhook_id=webhook_id)
    deliveries = service.list_deliveries(session=session, hook=hook, before=before, limit=limit)
    return [WebhookDeliveryPublic.model_validate(delivery) for delivery in deliveries]

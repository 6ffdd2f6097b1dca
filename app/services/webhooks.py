"""Webhooks as admins manage them: register, list, delete, read the deliveries; and the
export's event. Events, signing and sending live in core.webhooks, shared with the worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.schemas import WebhookCreate
from app.services import Invalid, NotFound
from core.tables import Annotator, Project, Webhook, WebhookDelivery, WebhookEvent
from core.webhooks import emit, new_secret


def check_url(url: str) -> None:
    """What the request schema can't say about a URL: it names a host, and a valid port,
    and holds no credentials (they would be shown to every admin and in logs)."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port that is not a number from 0 to 65535
    except ValueError as exc:
        raise Invalid(f"The webhook URL is not valid: {exc}.") from None
    if not parts.hostname:
        raise Invalid("The webhook URL names no host: use http://host[:port]/path.")
    if port == 0:
        raise Invalid("The webhook URL's port must be from 1 to 65535.")
    if parts.username is not None or parts.password is not None:
        raise Invalid(
            "The webhook URL must not hold a user name or password: check the "
            "X-Nextlabel-Signature header instead."
        )


def create_webhook(*, session: Session, project: Project, data: WebhookCreate) -> Webhook:
    """Register a URL for the project's events; the returned hook's secret is shown once."""
    check_url(data.url)
    events = [event.value for event in WebhookEvent if event in data.events]
    hook = Webhook(project_id=project.id, url=data.url, events=events, secret=new_secret())
    session.add(hook)
    session.commit()
    return hook


def list_webhooks(*, session: Session, project: Project) -> Sequence[Webhook]:
    query = select(Webhook).where(Webhook.project_id == project.id).order_by(Webhook.id)
    return session.scalars(query).all()


def get_webhook(*, session: Session, webhook_id: int, project_id: int | None = None) -> Webhook:
    hook = session.get(Webhook, webhook_id)
    if hook is None or (project_id is not None and hook.project_id != project_id):
        where = "" if project_id is None else f" in project {project_id}"
        raise NotFound(f"Webhook {webhook_id} does not exist{where}.")
    return hook


def delete_webhook(*, session: Session, hook: Webhook) -> None:
    """Delete the hook and its deliveries; what is pending is never sent."""
    session.delete(hook)
    session.commit()


def list_deliveries(
    *, session: Session, hook: Webhook, before: int | None, limit: int
) -> Sequence[WebhookDelivery]:
    """The hook's deliveries, newest first; `before` is the last id of the previous page."""
    query = select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id)
    if before is not None:
        query = query.where(WebhookDelivery.id < before)
    return session.scalars(query.order_by(WebhookDelivery.id.desc()).limit(limit)).all()


def announce_export(*, session: Session, project: Project, fmt: str, admin: Annotator) -> None:
    """`labels.exported`: an admin asked for the project's labels in format `fmt` (committed
    before the download starts, so a hook hears of every export, finished or not). An export
    of predictions or of a model is not one of labels: nothing is sent."""
    if fmt in ("predictions", "model"):
        return
    data = {"format": fmt, "exported_by": {"id": admin.id, "name": admin.name}}
    if emit(session, project_id=project.id, event=WebhookEvent.labels_exported, data=data):
        session.commit()

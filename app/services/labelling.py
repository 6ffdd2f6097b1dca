"""The labelling use case: one label from an annotator, from the item's lock to the round it
may make due. The route calls `label_item` and only turns the outcome into HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.services import begin_write, read_outside_transaction
from app.services.items import label_target
from app.services.labels import LabelResult, create_label
from core.rounds import trigger_round_if_due
from core.tables import Annotator


@dataclass(frozen=True)
class Labelled:
    result: LabelResult
    round_opened: int | None  # a round this label made due, already handed to `enqueue`


def label_item(
    session: Session,
    *,
    user: Annotator,
    item_id: int,
    label: str,
    ms_spent: int | None,
    idempotency_key: str | None,
    enqueue: Callable[[int], object],
) -> Labelled:
    """Label the item (replacing the annotator's earlier label, releasing their lease), then
    open a round if this label made one due and hand it to `enqueue`.

    The item is read under the write lock (SQLite) or its row lock (PostgreSQL), so what it
    says (no labels yet, no round active) still holds when the label is written. The round
    is opened only after the label is committed: a failure there must not lose the label.
    `enqueue` must not block (the API's is RoundDispatcher.send_soon): this runs on the
    event loop on PostgreSQL.
    """
    begin_write(session)
    target = label_target(session=session, user=user, item_id=item_id)
    result = create_label(
        session=session,
        item=target,
        annotator=user,
        label=label,
        ms_spent=ms_spent,
        classes=target.classes,
        idempotency_key=idempotency_key,
        item_locked=True,
        may_replace=target.label_count > 0,
    )
    if result.replayed or target.round_active:
        # Replayed: nothing was written, no round to open. A round active when the item
        # was read: none opened; if the worker finished it since, the next label opens one.
        return Labelled(result, None)
    read_outside_transaction(session)
    opened = trigger_round_if_due(
        session=session, project_id=target.project_id, retrain_every=target.retrain_every
    )
    if opened is None:
        return Labelled(result, None)
    enqueue(opened.id)
    return Labelled(result, opened.id)

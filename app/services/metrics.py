"""Project metrics: label counts, the learning curve and how fresh the served queue is."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from app.schemas import (
    AnnotatorCount,
    CurvePoint,
    ProjectMetrics,
    QueueFreshness,
    ValidationSummary,
)
from app.services.projects import project_counts
from app.services.queue import latest_done_round
from app.services.rounds import round_number, round_numbers
from core.report import RoundMetrics
from core.rounds import active_round, labels_since, labels_until_retrain
from core.tables import (
    Annotator,
    Item,
    Label,
    Project,
    ProjectMember,
    QueueEntry,
    Round,
    RoundStatus,
    Split,
    is_current,
    utcnow,
)

NO_VALIDATION_NOTE = (
    "No validation items yet, so accuracy and NLL cannot be measured: upload a zip that "
    "includes a labels.csv (filename,label) to add validation items with known labels."
)
NO_KNOWN_LABELS_NOTE = (
    "The validation items have no known labels, so accuracy and NLL cannot be measured."
)


def project_metrics(*, session: Session, project: Project) -> ProjectMetrics:
    done_rounds = session.scalars(
        select(Round)
        .where(Round.project_id == project.id, Round.status == RoundStatus.done)
        .order_by(Round.id)
    ).all()
    numbers = round_numbers(session=session, project_id=project.id)
    return ProjectMetrics(
        project_id=project.id,
        totals=project_counts(session=session, project_id=project.id),
        label_counts=label_counts(session=session, project=project),
        annotators=annotator_counts(session=session, project_id=project.id),
        learning_curve=[curve_point(r, number=numbers[r.id]) for r in done_rounds],
        queue=queue_freshness(session=session, project=project),
        validation=validation_summary(
            session=session,
            project_id=project.id,
            latest_note=RoundMetrics.model_validate(done_rounds[-1].metrics or {}).note
            if done_rounds
            else None,
        ),
    )


def label_counts(*, session: Session, project: Project) -> dict[str, int]:
    counts = dict.fromkeys(project.classes, 0)
    rows = session.execute(
        select(Label.label, func.count())
        .where(Label.project_id == project.id, is_current())
        .group_by(Label.label)
    )
    for label, count in rows:
        counts[label] = count
    return counts


def annotator_counts(*, session: Session, project_id: int) -> list[AnnotatorCount]:
    today = datetime.combine(utcnow().date(), time.min, tzinfo=UTC)
    rows = session.execute(
        select(
            Label.annotator_id,
            func.count(),
            func.sum(case((Label.created_at >= today, 1), else_=0)),
        )
        .where(Label.project_id == project_id, is_current())
        .group_by(Label.annotator_id)
    ).all()
    counts = {annotator_id: (total, today_count or 0) for annotator_id, total, today_count in rows}
    members = set(
        session.scalars(
            select(ProjectMember.annotator_id).where(ProjectMember.project_id == project_id)
        )
    )
    ids = sorted(members | set(counts))
    names = dict(
        session.execute(select(Annotator.id, Annotator.name).where(Annotator.id.in_(ids))).all()
    )
    return [
        AnnotatorCount(
            annotator_id=annotator_id,
            name=names.get(annotator_id, f"annotator {annotator_id}"),
            labels=counts.get(annotator_id, (0, 0))[0],
            labels_today=counts.get(annotator_id, (0, 0))[1],
        )
        for annotator_id in ids
    ]


def curve_point(done: Round, *, number: int) -> CurvePoint:
    metrics = RoundMetrics.model_validate(done.metrics or {})
    return CurvePoint(
        round_id=done.id,
        round_number=number,
        labels_used=done.labels_used,
        accuracy=_number(metrics.accuracy),
        nll=_number(metrics.nll),
        finished_at=done.finished_at,
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def queue_freshness(*, session: Session, project: Project) -> QueueFreshness:
    done = latest_done_round(session=session, project_id=project.id)
    active = active_round(session=session, project_id=project.id)
    queue_remaining = 0
    if done is not None:
        queue_remaining = (
            session.scalar(
                select(func.count())
                .select_from(QueueEntry)
                .join(Item, Item.id == QueueEntry.item_id)
                .where(QueueEntry.round_id == done.id, Item.label_count == 0)
            )
            or 0
        )
    pool_remaining = (
        session.scalar(
            select(func.count())
            .select_from(Item)
            .where(Item.project_id == project.id, Item.split == Split.pool, Item.label_count == 0)
        )
        or 0
    )
    return QueueFreshness(
        round_id=done.id if done is not None else None,
        round_number=round_number(session=session, found=done) if done is not None else None,
        labels_since_round=labels_since(
            session=session,
            project_id=project.id,
            watermark=done.label_watermark if done is not None else 0,
        ),
        labels_until_retrain=labels_until_retrain(session=session, project=project),
        retrain_every=project.retrain_every,
        active_round_id=active.id if active is not None else None,
        active_round_number=round_number(session=session, found=active)
        if active is not None
        else None,
        active_round_status=active.status if active is not None else None,
        active_round_waiting_for_broker=active is not None
        and active.status == RoundStatus.queued
        and active.dispatched_at is None,
        queue_remaining=queue_remaining,
        pool_remaining=pool_remaining,
        pool_exhausted=pool_remaining == 0,
    )


def validation_summary(
    *, session: Session, project_id: int, latest_note: str | None
) -> ValidationSummary:
    items, with_known = session.execute(
        select(func.count(), func.count(Item.known_label)).where(
            Item.project_id == project_id, Item.split == Split.validation
        )
    ).one()
    note: str | None = None
    if items == 0:
        note = NO_VALIDATION_NOTE
    elif with_known == 0:
        note = NO_KNOWN_LABELS_NOTE
    elif latest_note:
        note = latest_note
    return ValidationSummary(items=items, with_known_label=with_known, note=note)

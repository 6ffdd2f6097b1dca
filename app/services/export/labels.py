"""The labels export: one row per current label (item, annotator), read in label-id pages
walking ix_labels_project_id, written as CSV, JSON or JSON Lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.schemas import ExportFormat
from app.services.export import common
from app.services.export.common import render_csv
from core.tables import Annotator, Item, Label, is_current

COLUMNS = (
    "item_id",
    "filename",
    "sha256",
    "label",
    "annotator",
    "created_at",
    "ms_spent",
    "round_id",
)

Row = tuple[Any, ...]


def export_rows(
    *, session_factory: sessionmaker[Session], project_id: int, page_size: int | None = None
) -> Iterator[list[Row]]:
    """Pages of current labels in label-id order, one row per (item, annotator)."""
    page_size = page_size or common.PAGE_SIZE  # read now, so tests can shrink it
    last_id = 0
    while True:
        with session_factory() as session:
            page = session.execute(_page_query(project_id, last_id, page_size)).all()
        if not page:
            return
        last_id = page[-1][0]
        yield [_row(values[1:]) for values in page]
        if len(page) < page_size:
            return


def _page_query(project_id: int, after_id: int, limit: int) -> Any:
    return (
        select(
            Label.id,
            Label.item_id,
            Item.filename,
            Item.sha256,
            Label.label,
            Annotator.name,
            Label.created_at,
            Label.ms_spent,
            Label.round_id,
        )
        .join(Item, Item.id == Label.item_id)
        .join(Annotator, Annotator.id == Label.annotator_id)
        .where(Label.project_id == project_id, Label.id > after_id, is_current())
        .order_by(Label.id)
        .limit(limit)
    )


def _row(values: tuple[Any, ...]) -> Row:
    item_id, filename, sha256, label, annotator, created_at, ms_spent, round_id = values
    return (item_id, filename, sha256, label, annotator, _iso(created_at), ms_spent, round_id)


def _iso(moment: datetime) -> str:
    # SQLite hands back naive datetimes; every timestamp nextlabel writes is UTC.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def render(pages: Iterator[list[Row]], *, fmt: ExportFormat) -> Iterator[str]:
    """Text chunks of the export, one per page (plus framing)."""
    if fmt == "csv":
        yield from render_csv(pages, header=COLUMNS)
    elif fmt == "jsonl":
        for page in pages:
            yield "".join(json.dumps(dict(zip(COLUMNS, row, strict=True))) + "\n" for row in page)
    else:
        yield from _render_json(pages)


def _render_json(pages: Iterator[list[Row]]) -> Iterator[str]:
    yield "["
    separator = "\n"
    for page in pages:
        body = ",\n".join(json.dumps(dict(zip(COLUMNS, row, strict=True))) for row in page)
        yield separator + body
        separator = ",\n"
    yield "\n]\n"

"""Which stream an export request gets: the one place the API and the CLI both ask, so a
format and its options are checked and opened the same way whichever way it arrives."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from app.services import Invalid
from app.services.export.common import MEDIA_TYPES, ExportKind
from app.services.export.imagefolder import imagefolder_zip, labelled_pages
from app.services.export.labels import export_rows, render
from app.services.export.model import model_zip, open_latest_model
from app.services.export.predictions import (
    PredictionsAs,
    PredictionsSummary,
    prediction_pages,
    predictions_summary,
    render_predictions,
)
from core.storage import ImageStore, ModelStore
from core.tables import Project


@dataclass(frozen=True)
class OpenedExport:
    """A stream ready to send: its chunks (bytes for a zip, text otherwise), its media type,
    the end of its file name, and for predictions or a model which round they come from."""

    chunks: Iterator[bytes] | Iterator[str]
    media_type: str
    file_suffix: str
    predictions: PredictionsSummary | None = None
    model_round_id: int | None = None


def open_export(
    *,
    kind: ExportKind,
    as_: PredictionsAs | None,
    project: Project,
    session: Session,
    session_factory: sessionmaker[Session],
    store: ImageStore,
    models: ModelStore,
) -> OpenedExport:
    """Check the request and open its stream; nothing is read until the chunks are (but a
    model's files, opened now so that the download survives their pruning).

    Raises:
        Invalid: `as_` with a format other than predictions.
        Conflict: predictions before any round has finished; a model before a finished
            round has saved one.
    """
    if as_ is not None and kind != "predictions":
        raise Invalid(f"`as` chooses how predictions are written; format={kind} has one form.")
    if kind == "imagefolder":
        pages = labelled_pages(session_factory=session_factory, project_id=project.id)
        return OpenedExport(
            imagefolder_zip(pages=pages, store=store, classes=project.classes),
            MEDIA_TYPES["imagefolder"],
            "imagefolder.zip",
        )
    if kind == "predictions":
        written = as_ or "csv"
        summary = predictions_summary(session=session, project_id=project.id)
        predicted = prediction_pages(
            session_factory=session_factory, project_id=project.id, round_id=summary.round_id
        )
        return OpenedExport(
            render_predictions(predicted, classes=project.classes, as_=written),
            MEDIA_TYPES[written],
            f"predictions-round{summary.round_id}.{written}",
            summary,
        )
    if kind == "model":
        model = open_latest_model(session=session, models=models, project_id=project.id)
        return OpenedExport(
            model_zip(model),
            MEDIA_TYPES["model"],
            f"model-round{model.round_id}.zip",
            model_round_id=model.round_id,
        )
    rows = export_rows(session_factory=session_factory, project_id=project.id)
    return OpenedExport(render(rows, fmt=kind), MEDIA_TYPES[kind], f"labels.{kind}")

"""Streamed exports of a project, one module per format: labels (its current labels as CSV,
JSON or JSON Lines), imagefolder (a zip of its labelled images), predictions (the latest
round's, for its pool) and model (the latest round's trained model and its card, a zip);
common holds what they share, and choose opens the one a request asks for (for the API and
the CLI alike). Callers import from here."""

from app.services.export.choose import OpenedExport, open_export
from app.services.export.common import MEDIA_TYPES, PAGE_SIZE, ExportKind
from app.services.export.imagefolder import (
    MANIFEST_COLUMNS,
    ExportedItem,
    imagefolder_zip,
    labelled_pages,
    path_segment,
    resolve_label,
)
from app.services.export.labels import COLUMNS, export_rows, render
from app.services.export.model import OpenedModel, model_zip, open_latest_model
from app.services.export.predictions import (
    PREDICTION_COLUMNS,
    PROBABILITY_PREFIX,
    PredictionRow,
    PredictionsAs,
    PredictionsSummary,
    prediction_pages,
    predictions_summary,
    predictive_entropy,
    render_predictions,
)

__all__ = [
    "COLUMNS",
    "MANIFEST_COLUMNS",
    "MEDIA_TYPES",
    "PAGE_SIZE",
    "PREDICTION_COLUMNS",
    "PROBABILITY_PREFIX",
    "ExportKind",
    "ExportedItem",
    "OpenedExport",
    "OpenedModel",
    "PredictionRow",
    "PredictionsAs",
    "PredictionsSummary",
    "export_rows",
    "imagefolder_zip",
    "labelled_pages",
    "model_zip",
    "open_export",
    "open_latest_model",
    "path_segment",
    "prediction_pages",
    "predictions_summary",
    "predictive_entropy",
    "render",
    "render_predictions",
    "resolve_label",
]

"""Streamed export: the current labels (csv, json, jsonl), an ImageFolder zip, predictions,
the latest trained model."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from app.api.params import ProjectId
from app.deps import API_PREFIX, AdminUser, SessionDep, SettingsDep, StoreDep
from app.services.export import (
    COLUMNS,
    MANIFEST_COLUMNS,
    MEDIA_TYPES,
    PREDICTION_COLUMNS,
    PROBABILITY_PREFIX,
    ExportKind,
    PredictionsAs,
    open_export,
)
from app.services.projects import get_visible_project
from app.services.webhooks import announce_export
from core.storage import MODEL_CARD_FILE, MODEL_FILE, ModelStore
from core.tables import Project

router = APIRouter(prefix=f"{API_PREFIX}/projects", tags=["export"])

# Headers of a predictions export: what its rows come from, counted when it starts.
ROUND_HEADER = "X-Predictions-Round"
POOL_HEADER = "X-Pool-Items"
WITHOUT_HEADER = "X-Items-Without-Prediction"
# Header of a model export: the round whose model it is.
MODEL_ROUND_HEADER = "X-Model-Round"
_INTEGER_HEADER = {"schema": {"type": "integer"}, "required": False}

_DESCRIPTION = f"""Everything streams; admins only.

- `format=csv|json|jsonl`: the current labels, one row per item and annotator. Columns:
  {", ".join(COLUMNS)}.
- `format=imagefolder`: a zip (`application/zip`) in the ImageFolder layout:
  `train/<class>/<file>` for labelled pool items (the majority of their current labels),
  `val/<class>/<file>` for validation items with a known label, and `manifest.csv`
  ({",".join(MANIFEST_COLUMNS)}; split is train or val) listing every image. Upload it to a
  project with the same classes and each image gets the same label and use. Items whose
  annotators are tied (and any whose image cannot be read) are left out and listed in
  `excluded.csv`. Names that are not safe as paths are percent-encoded; a file name already
  taken in its folder gets the item id in front.
- `format=predictions`: the latest done round's prediction for every pool item, as CSV
  (default) or JSON Lines (`as=jsonl`). Columns: {", ".join(PREDICTION_COLUMNS)}, then one
  `{PROBABILITY_PREFIX}<class>` column per class (in JSON Lines, `probabilities` maps class
  to probability). `entropy` is the predictive entropy in nats, `score` the round's
  acquisition score. Items the round did not score (uploaded after it, or labelled when it
  ran) have empty prediction columns; `{WITHOUT_HEADER}` counts them. 409 before any round
  has finished.
- `format=model`: a zip of the newest finished round's trained model, `{MODEL_FILE}` (a
  TorchScript module, `torch.jit.load` alone reads it: float images `[N, C, H, W]` in [0, 1]
  in, the mean predictive probabilities `[N, classes]` over the round's K MC-dropout masks
  out, as the round's predictions), and `{MODEL_CARD_FILE}` (classes in output order, the
  preprocessing step by step, K, the round's validation metrics, labels used, strategy, a
  usage snippet). `{MODEL_ROUND_HEADER}` names the round. 409 before a finished round has
  saved a model (rounds before the first label train none).
"""


@router.get(
    "/{project_id}/export",
    summary="Labels, an ImageFolder zip, the latest predictions or model, streamed",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The export, streamed (chunked).",
            "content": {media: {} for media in dict.fromkeys(MEDIA_TYPES.values())},
            "headers": {
                ROUND_HEADER: {
                    **_INTEGER_HEADER,
                    "description": "format=predictions: the round the predictions come from.",
                },
                POOL_HEADER: {
                    **_INTEGER_HEADER,
                    "description": "format=predictions: the pool items listed.",
                },
                WITHOUT_HEADER: {
                    **_INTEGER_HEADER,
                    "description": "format=predictions: listed pool items without a prediction.",
                },
                MODEL_ROUND_HEADER: {
                    **_INTEGER_HEADER,
                    "description": "format=model: the round whose model it is.",
                },
            },
        },
        409: {
            "description": "format=predictions: no round has finished yet; format=model: "
            "no finished round has a saved model"
        },
    },
    description=_DESCRIPTION,
)
def export_project(
    project_id: ProjectId,
    request: Request,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    admin: AdminUser,
    fmt: Annotated[
        ExportKind,
        Query(
            alias="format",
            description="csv, json, jsonl (labels), imagefolder, predictions, model.",
        ),
    ] = "csv",
    as_: Annotated[
        PredictionsAs | None,
        Query(alias="as", description="format=predictions only: csv (default) or jsonl."),
    ] = None,
) -> StreamingResponse:
    project = get_visible_project(session=session, user=admin, project_id=project_id)
    opened = open_export(
        kind=fmt,
        as_=as_,
        project=project,
        session=session,
        session_factory=request.app.state.session_factory,
        store=store,
        models=ModelStore(settings.model_dir),
    )
    announce_export(session=session, project=project, fmt=fmt, admin=admin)
    headers = _download(project, opened.file_suffix)
    if opened.predictions is not None:
        headers |= {
            ROUND_HEADER: str(opened.predictions.round_id),
            POOL_HEADER: str(opened.predictions.pool_items),
            WITHOUT_HEADER: str(opened.predictions.without_prediction),
        }
    if opened.model_round_id is not None:
        headers[MODEL_ROUND_HEADER] = str(opened.model_round_id)
    return StreamingResponse(opened.chunks, media_type=opened.media_type, headers=headers)


def _download(project: Project, suffix: str) -> dict[str, str]:
    return {"Content-Disposition": attachment(f"{project.name}-{suffix}")}


# Kept in the quoted fallback: printable ASCII but for the quoted-string's specials (`"`,
# `\`), `%` (some browsers percent-decode `filename`) and `/` (a path, to some clients).
_FALLBACK_SAFE = frozenset(map(chr, range(0x20, 0x7F))) - set('"\\%/')
# RFC 5987 attr-char beyond letters and digits: everything else is percent-encoded.
_ATTR_CHARS = "!#$&+-.^_`|~"


def attachment(filename: str) -> str:
    """A Content-Disposition for a download named `filename`, whatever it holds (RFC 6266).

    Header values are bytes that HTTP only promises to carry when they are visible ASCII:
    a raw non-Latin-1 name cannot be encoded at all (500), and with a control character the
    header is malformed, so the server drops the connection instead of answering. So the
    name travels percent-encoded as UTF-8 in `filename*` (RFC 5987), which every current
    browser prefers, and as an ASCII approximation in the quoted `filename` for clients
    that know only that.
    """
    fallback = "".join(char if char in _FALLBACK_SAFE else "_" for char in filename)
    encoded = quote(filename, safe=_ATTR_CHARS, encoding="utf-8")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"

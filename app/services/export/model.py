"""The model export: the newest done round's trained model as a zip of `model.pt` (a
TorchScript module: images in, the mean predictive probabilities out) and
`model_card.json` (classes, preprocessing, the round's metrics, how to call it).

The worker saves each round's model (worker.round.artifact) in core.storage.ModelStore; to
this side the files are bytes, so the API needs no torch to serve them.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.services import Conflict
from app.services.export.common import ZIP_CHUNK_BYTES, ZipSink, zip_time
from core.model_card import ModelCard
from core.storage import MODEL_CARD_FILE, MODEL_FILE, ModelStore
from core.tables import Round, RoundStatus

log = logging.getLogger(__name__)

NO_ROUND_DONE = "No round has finished yet, so there is no trained model to export."
NO_MODEL_SAVED = (
    "No finished round has a saved model: a round saves the model it trains once there are "
    "labels to train on (a round before the first label trains none; rounds that learn on "
    "a pretrained backbone's embeddings save none yet), and a round whose model could not "
    "be saved says why in its note."
)
# Bytes read from the model file at a time.
_READ_BYTES = 1024 * 1024


@dataclass(frozen=True)
class OpenedModel:
    """A round's saved model, opened: pruning it now cannot cut a download short (an open
    file outlives its name)."""

    round_id: int
    card: ModelCard
    card_bytes: bytes
    model: BinaryIO


def open_latest_model(*, session: Session, models: ModelStore, project_id: int) -> OpenedModel:
    """The model of the project's newest done round that saved one.

    Raises:
        Conflict: no round has finished, or none of those that did has a saved model.
    """
    saved = models.round_ids(project_id)
    done = (
        session.execute(
            select(Round.id, Round.started_at)
            .where(
                Round.project_id == project_id,
                Round.status == RoundStatus.done,
                Round.id.in_(saved),
            )
            .order_by(Round.id.desc())
        ).all()
        if saved
        else []
    )
    for round_id, started_at in done:
        opened = _open(models, project_id, round_id, started_at)
        if opened is not None:
            return opened
    raise Conflict(NO_MODEL_SAVED if _any_round_done(session, project_id) else NO_ROUND_DONE)


def _open(
    models: ModelStore, project_id: int, round_id: int, started_at: datetime | None
) -> OpenedModel | None:
    stored = models.get(project_id, round_id)
    if stored is None:
        return None
    try:
        model = stored.model_path.open("rb")
        card_bytes = stored.card_path.read_bytes()
    except FileNotFoundError:  # pruned since it was listed: an older one may do
        return None
    try:
        card = ModelCard.model_validate_json(card_bytes)
    except ValidationError:
        log.warning("unreadable model card %s: not served", stored.card_path, exc_info=True)
        model.close()
        return None
    if not card.describes(project_id=project_id, round_id=round_id, started_at=started_at):
        model.close()  # left by a deleted project whose ids were handed out again
        return None
    return OpenedModel(round_id, card, card_bytes, model)


def _any_round_done(session: Session, project_id: int) -> bool:
    count = session.scalar(
        select(func.count())
        .select_from(Round)
        .where(Round.project_id == project_id, Round.status == RoundStatus.done)
    )
    return bool(count)


def model_zip(opened: OpenedModel, *, chunk_bytes: int = ZIP_CHUNK_BYTES) -> Iterator[bytes]:
    """`model.pt` (stored: it is a zip already) and `model_card.json`, as byte chunks of
    about `chunk_bytes`; memory holds one chunk, never the whole model."""
    sink = ZipSink()
    moment = zip_time(opened.card.created_at)
    with opened.model, zipfile.ZipFile(sink, "w", allowZip64=True) as archive:
        size = os.fstat(opened.model.fileno()).st_size
        info = _entry(MODEL_FILE, moment, zipfile.ZIP_STORED)
        with archive.open(info, "w", force_zip64=size >= zipfile.ZIP64_LIMIT) as target:
            while data := opened.model.read(_READ_BYTES):
                target.write(data)
                if sink.size >= chunk_bytes:
                    yield sink.take()
        archive.writestr(_entry(MODEL_CARD_FILE, moment, zipfile.ZIP_DEFLATED), opened.card_bytes)
    yield sink.take()


def _entry(name: str, moment: tuple[int, int, int, int, int, int], method: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=moment)
    info.compress_type = method
    info.external_attr = 0o644 << 16
    return info

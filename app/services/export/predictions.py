"""The predictions export: every pool item with the latest done round's prediction (class,
confidence, entropy, score and each class's probability), as CSV or JSON Lines."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session, sessionmaker

from app.services import Conflict
from app.services.export import common
from app.services.export.common import render_csv
from core.tables import Item, Prediction, Round, RoundStatus, Split

PREDICTION_COLUMNS = (
    "item_id",
    "filename",
    "sha256",
    "label_count",
    "round_id",
    "predicted",
    "confidence",
    "entropy",
    "score",
)
# Each class's probability is a CSV column of its own, named with this prefix (no fixed
# column starts with it, so no class name can collide with one).
PROBABILITY_PREFIX = "p_"
PredictionsAs = Literal["csv", "jsonl"]


@dataclass(frozen=True)
class PredictionsSummary:
    """Which round the predictions come from, and how many pool items it left out."""

    round_id: int
    pool_items: int
    without_prediction: int


@dataclass(frozen=True)
class PredictionRow:
    item_id: int
    filename: str
    sha256: str
    label_count: int
    round_id: int | None  # None: the round made no prediction for this item
    predicted: str | None
    confidence: float | None
    probabilities: list[float] | None
    score: float | None

    @property
    def entropy(self) -> float | None:
        return None if self.probabilities is None else predictive_entropy(self.probabilities)


def predictive_entropy(probabilities: Iterable[float]) -> float:
    """H[p] = -sum_c p_c ln p_c in nats: 0 when certain, ln C when uniform over C classes.

    `probabilities` is the stored predictive distribution (the MC-dropout samples' mean), so
    this is the total uncertainty BALD splits into its epistemic and aleatoric parts.
    """
    return 0.0 - sum(p * math.log(p) for p in probabilities if p > 0)


def predictions_summary(*, session: Session, project_id: int) -> PredictionsSummary:
    """The latest done round and how many pool items it has no prediction for (items
    uploaded after it, and items that were labelled when it ran, which it does not score).

    Raises:
        Conflict: no round of the project has finished yet.
    """
    round_id = session.scalar(
        select(Round.id)
        .where(Round.project_id == project_id, Round.status == RoundStatus.done)
        .order_by(Round.id.desc())
        .limit(1)
    )
    if round_id is None:
        raise Conflict("No round has finished yet, so there are no predictions to export.")
    pool = (Item.project_id == project_id, Item.split == Split.pool)
    pool_items = session.scalar(select(func.count()).select_from(Item).where(*pool)) or 0
    predicted = session.scalar(
        select(func.count())
        .select_from(Prediction)
        .join(Item, Item.id == Prediction.item_id)
        .where(Prediction.round_id == round_id, *pool)
    )
    return PredictionsSummary(round_id, pool_items, pool_items - (predicted or 0))


def prediction_pages(
    *,
    session_factory: sessionmaker[Session],
    project_id: int,
    round_id: int,
    page_size: int | None = None,
) -> Iterator[list[PredictionRow]]:
    """Pages of every pool item in id order, each with round `round_id`'s prediction if any."""
    page_size = page_size or common.PAGE_SIZE  # read now, so tests can shrink it
    last_id = 0
    while True:
        with session_factory() as session:
            page = session.execute(
                select(
                    Item.id,
                    Item.filename,
                    Item.sha256,
                    Item.label_count,
                    Prediction.round_id,
                    Prediction.predicted,
                    Prediction.confidence,
                    Prediction.probabilities,
                    Prediction.score,
                )
                .outerjoin(
                    Prediction,
                    and_(Prediction.item_id == Item.id, Prediction.round_id == round_id),
                )
                .where(Item.project_id == project_id, Item.split == Split.pool, Item.id > last_id)
                .order_by(Item.id)
                .limit(page_size)
            ).all()
        if not page:
            return
        last_id = page[-1][0]
        yield [PredictionRow(*values) for values in page]
        if len(page) < page_size:
            return


def prediction_columns(classes: Sequence[str]) -> list[str]:
    """The CSV header: the fixed columns, then one probability column per class."""
    return [*PREDICTION_COLUMNS, *(PROBABILITY_PREFIX + name for name in classes)]


def render_predictions(
    pages: Iterator[list[PredictionRow]], *, classes: Sequence[str], as_: PredictionsAs
) -> Iterator[str]:
    """Text chunks, one per page: CSV with a column per class, or JSON Lines whose
    `probabilities` maps each class to its probability (null without a prediction)."""
    if as_ == "jsonl":
        for page in pages:
            yield "".join(json.dumps(_prediction_record(row, classes)) + "\n" for row in page)
        return
    cells = (
        [[*_fixed_cells(row), *_probability_cells(row, classes)] for row in page] for page in pages
    )
    yield from render_csv(cells, header=prediction_columns(classes))


def _fixed_cells(row: PredictionRow) -> list[Any]:
    return [
        row.item_id,
        row.filename,
        row.sha256,
        row.label_count,
        row.round_id,
        row.predicted,
        row.confidence,
        row.entropy,
        row.score,
    ]


def _probability_cells(row: PredictionRow, classes: Sequence[str]) -> list[float | None]:
    # A class added after the round has no probability from it: its cell stays empty.
    stored = row.probabilities or []
    return [stored[index] if index < len(stored) else None for index in range(len(classes))]


def _prediction_record(row: PredictionRow, classes: Sequence[str]) -> dict[str, Any]:
    record = dict(zip(PREDICTION_COLUMNS, _fixed_cells(row), strict=True))
    probabilities = None
    if row.probabilities is not None:
        probabilities = dict(zip(classes, _probability_cells(row, classes), strict=True))
    record["probabilities"] = probabilities
    return record

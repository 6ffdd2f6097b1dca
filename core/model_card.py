"""What a round's exported model is: the model_card.json saved beside its model.pt.

The worker writes the card when it saves a round's trained model (worker.round.artifact);
the API streams it inside the model export and reads back which round it describes, so a
model left behind by a deleted project is never served as another's (SQLite hands the ids
of the newest rows out again once they are deleted). Typed once, here, for both sides.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from core.report import RoundMetrics

ModelFormat = Literal["torchscript"]


class CardProject(BaseModel):
    id: int
    name: str


class CardRound(BaseModel):
    id: int = Field(description="The round's id (ids count across every project).")
    number: int = Field(description="The round's number within its project: 1, 2, 3…")
    started_at: datetime | None


class Preprocessing(BaseModel):
    """How an image file becomes the model's input: exactly what the worker does to it."""

    image_size: int = Field(description="Side of the square the image is resized to, in px.")
    channels: int = Field(description="1 (grey) or 3 (RGB).")
    mode: Literal["L", "RGB"] = Field(description="The Pillow mode the image is converted to.")
    resize: str
    scale: str
    input_layout: str
    steps: list[str] = Field(description="The whole recipe, in order.")


class Outputs(BaseModel):
    """What the model answers, and how it is computed from its K dropout samples."""

    layout: str
    mc_samples: int = Field(description="K: the consistent MC-dropout masks baked in.")
    mask_seed: int = Field(description="The seed the K masks were drawn from (the round's).")
    computed_as: str


class ReproductionCheck(BaseModel):
    """The saved model run on the round's first pool items, against the predictions the
    round stored for them (None: the round had no pool items left to compare with)."""

    items: int
    max_abs_difference: float | None
    device: str = Field(description="Where the round computed the stored predictions.")


class ModelCard(BaseModel):
    """A round's exported model: whose, which classes, how to feed it, how good it was."""

    format: ModelFormat = "torchscript"
    model_file: str
    project: CardProject
    round: CardRound
    classes: list[str] = Field(description="Class names in the order of the model's outputs.")
    network: str
    preprocessing: Preprocessing
    outputs: Outputs
    metrics: RoundMetrics = Field(
        description="What the round measured: validation accuracy, NLL and per-class "
        "accuracy, labels used and items trained on, the strategy that chose its queue."
    )
    check: ReproductionCheck
    created_at: datetime
    torch_version: str
    usage: str

    def describes(self, *, project_id: int, round_id: int, started_at: datetime | None) -> bool:
        """Whether the card is that round's: same ids, and made after the round started (an
        older card with the same ids belongs to a deleted project's round)."""
        if (self.project.id, self.round.id) != (project_id, round_id):
            return False
        return started_at is None or _utc(self.created_at) >= _utc(started_at)


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; nextlabel writes every time in UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment

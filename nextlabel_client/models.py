"""What the API answers, as typed models: the JSON contract of ``/api/v1``, read from outside.

These mirror the service's response schemas (its OpenAPI document) without importing them:
a client is a user of the public JSON, and must notice when that contract, not an internal
class, changes. Every model keeps fields it does not name (``extra="allow"``, readable in
``model_extra``), so a newer service never breaks an older client; where the API's shape is
large (a round's metrics), the model names the fields a client needs and keeps the rest.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

Role = Literal["admin", "annotator"]
Split = Literal["pool", "validation"]
RoundStatus = Literal["queued", "running", "done", "failed"]
WebhookEvent = Literal["round.done", "round.failed", "labels.exported"]
DeliveryStatus = Literal["pending", "delivered", "failed"]
ItemStatus = Literal["labelled", "unlabelled", "validation"]
LabelUse = Literal["training", "validation"]
ExportFormat = Literal["csv", "json", "jsonl", "imagefolder", "predictions", "model"]
PredictionsAs = Literal["csv", "jsonl"]


class Reply(BaseModel):
    """A JSON object the API answered with; fields this client does not name are kept."""

    model_config = ConfigDict(extra="allow")


# --- people ---------------------------------------------------------------------------------


class Annotator(Reply):
    id: int
    name: str
    role: Role
    created_at: datetime | None = None
    project_ids: list[int] = []


class AnnotatorCreated(Annotator):
    token: str
    """Shown once: store it, it cannot be read back."""


# --- catalog --------------------------------------------------------------------------------


class CatalogEntry(Reply):
    name: str
    label: str = ""
    description: str = ""


class Catalog(Reply):
    """Every strategy, network, cold start and round phase the service knows, in the
    service's order."""

    strategies: list[CatalogEntry]
    networks: list[CatalogEntry]
    cold_starts: list[CatalogEntry] = []
    phases: list[CatalogEntry]

    def names(self, kind: Literal["strategies", "networks", "cold_starts", "phases"]) -> list[str]:
        return [entry.name for entry in getattr(self, kind)]


# --- projects -------------------------------------------------------------------------------


class ProjectCounts(Reply):
    items: int
    pool: int
    validation: int
    labelled: int
    near_duplicates: int = 0
    duplicates_skipped: int = 0


class Project(Reply):
    id: int
    name: str
    classes: list[str]
    strategy: str
    query_size: int
    retrain_every: int
    queue_size: int | None = None
    effective_queue_size: int | None = None
    mc_samples: int
    image_size: int | None = None
    image_channels: int | None = None
    network: str | None = None
    seed: int
    hotkeys: dict[str, str] = {}
    effective_hotkeys: dict[str, str] = {}
    show_filenames: bool = False
    created_at: datetime | None = None
    counts: ProjectCounts | None = None


# --- items ----------------------------------------------------------------------------------


class Item(Reply):
    id: int
    project_id: int | None = None
    filename: str
    width: int | None = None
    height: int | None = None
    split: Split
    known_label: str | None = None
    label_count: int = 0
    decode_error: str | None = None
    image_url: str | None = None
    my_label: str | None = None


class ItemPage(Reply):
    items: list[Item]
    next_cursor: int | None = None
    """Pass as ``cursor`` for the next page; None at the end."""


class SkippedFile(Reply):
    name: str
    reason: str


class ImportReport(Reply):
    """What an upload found and did (with ``dry_run``: would do; nothing was written)."""

    created: list[int]
    skipped: list[SkippedFile]
    dry_run: bool = False
    images: int = 0
    new_items: int = 0
    training: dict[str, int] = {}
    validation: dict[str, int] = {}
    unlabelled: int = 0
    unchanged: int = 0
    problems: list[SkippedFile] = []
    notes: list[str] = []
    round_queued: int | None = None


class EmbeddingProblem(Reply):
    key: str | None = None
    """The key (file name or sha256) the problem is about; None for the file as a whole."""
    reason: str


class UncoveredItem(Reply):
    id: int
    filename: str


class EmbeddingCoverage(Reply):
    """Which of the project's items have an imported vector (rounds leave the rest out)."""

    items: int
    covered: int
    uncovered: int
    uncovered_items: list[UncoveredItem] = []


class EmbeddingImportReport(Reply):
    """What an embeddings import found and did (with ``dry_run``: would do)."""

    dry_run: bool = False
    vectors: int
    imported: int
    dimension: int | None = None
    replaced: int = 0
    coverage: EmbeddingCoverage
    problems: list[EmbeddingProblem] = []
    problem_count: int = 0
    notes: list[str] = []
    round_queued: int | None = None


class EmbeddingSummary(Reply):
    """A project's imported vectors and the items they cover."""

    dimension: int | None = None
    vectors: int
    coverage: EmbeddingCoverage


# --- the queue ------------------------------------------------------------------------------


class ServedItem(Item):
    # `next` sends annotators no file name unless the project shows them.
    filename: str | None = None  # type: ignore[assignment]


class ClassProbability(Reply):
    label: str
    probability: float


class Prediction(Reply):
    label: str
    confidence: float
    probabilities: dict[str, float]
    top: list[ClassProbability] = []
    round_id: int


class NextItem(Reply):
    item: ServedItem
    rank: int | None = None
    score: float | None = None
    score_percentile: float | None = None
    strategy: str
    reason: str = ""
    round_id: int | None = None
    prediction: Prediction | None = None
    lease_expires_at: datetime | None = None


# --- labels ---------------------------------------------------------------------------------


class Label(Reply):
    id: int
    item_id: int
    annotator_id: int | None = None
    label: str
    created_at: datetime | None = None
    ms_spent: int | None = None
    round_id: int | None = None
    replaced_previous: bool = False
    round_enqueued: int | None = None
    """Id of a round this label triggered."""


class Skip(Reply):
    item_id: int
    skipped: bool = True


# --- rounds ---------------------------------------------------------------------------------


class RoundMetrics(Reply):
    """What a round measured; the API sends more (training schedule, counts), kept as extra."""

    accuracy: float | None = None
    nll: float | None = None
    per_class_accuracy: dict[str, float] | None = None
    classes_seen: list[str] | None = None
    labels_used: int | None = None
    fit: dict[str, Any] | None = None


class PhaseTimings(Reply):
    """Seconds each phase of a round took."""

    load: float | None = None
    train: float | None = None
    evaluate: float | None = None
    infer: float | None = None
    select: float | None = None
    write: float | None = None
    total: float | None = None


class QueueEntry(Reply):
    item_id: int
    rank: int
    score: float
    strategy: str
    filename: str | None = None
    image_url: str | None = None
    labelled: bool = False


class Round(Reply):
    id: int
    project_id: int | None = None
    number: int | None = None
    """The round's number within its project (``id`` counts across every project)."""
    status: RoundStatus
    trigger: str | None = None
    strategy: str | None = None
    labels_used: int
    attempts: int = 0
    metrics: RoundMetrics = RoundMetrics()
    timings: PhaseTimings = PhaseTimings()
    error: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    dispatched_at: datetime | None = None


class RoundDetail(Round):
    queue: list[QueueEntry] = []


# --- metrics --------------------------------------------------------------------------------


class AnnotatorCount(Reply):
    annotator_id: int
    name: str
    labels: int
    labels_today: int


class CurvePoint(Reply):
    round_id: int
    round_number: int | None = None
    labels_used: int
    accuracy: float | None = None
    nll: float | None = None
    finished_at: datetime | None = None


class QueueFreshness(Reply):
    round_id: int | None = None
    round_number: int | None = None
    labels_since_round: int
    labels_until_retrain: int
    retrain_every: int
    active_round_id: int | None = None
    active_round_number: int | None = None
    active_round_status: RoundStatus | None = None
    active_round_waiting_for_broker: bool = False
    queue_remaining: int
    pool_remaining: int
    pool_exhausted: bool


class ValidationSummary(Reply):
    items: int
    with_known_label: int
    note: str | None = None


class ProjectMetrics(Reply):
    project_id: int | None = None
    totals: ProjectCounts | None = None
    label_counts: dict[str, int] = {}
    annotators: list[AnnotatorCount] = []
    learning_curve: list[CurvePoint]
    queue: QueueFreshness | None = None
    validation: ValidationSummary | None = None


# --- webhooks -------------------------------------------------------------------------------


class Webhook(Reply):
    id: int
    project_id: int
    url: str
    events: list[WebhookEvent]
    created_at: datetime | None = None


class WebhookCreated(Webhook):
    secret: str
    """Shown once: the key of each delivery's X-Nextlabel-Signature (sha256=HMAC-SHA256 of
    the body, in hex). Store it; it cannot be read back."""


class WebhookDelivery(Reply):
    id: int
    webhook_id: int
    event: WebhookEvent
    event_id: str
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None = None
    last_error: str | None = None
    created_at: datetime | None = None
    last_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None
    finished_at: datetime | None = None


# --- the service ----------------------------------------------------------------------------


class Health(Reply):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = {}

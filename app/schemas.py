"""Pydantic v2 request and response models: the JSON contract of /api/v1.

The browser UI, the simulator and integrations all speak exactly these shapes.

One module because it is one contract: the OpenAPI document is generated from it, and the
field types every body shares (names without control characters, 32-bit integers, JSON types
only) are defined once above the models that use them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from core.catalog import ColdStart, NearDuplicates, Network, Strategy
from core.report import PhaseTimings, RoundMetrics
from core.tables import (
    ANNOTATOR_NAME_LENGTH,
    IDEMPOTENCY_KEY_LENGTH,
    INT32_MAX,
    INT32_MIN,
    LABEL_LENGTH,
    PROJECT_NAME_LENGTH,
    WEBHOOK_URL_LENGTH,
    DeliveryStatus,
    Role,
    RoundStatus,
    Split,
    WebhookEvent,
)

ItemStatus = Literal["labelled", "unlabelled", "validation", "near_duplicate"]
ExportFormat = Literal["csv", "json", "jsonl"]


def _as_utc(moment: datetime) -> datetime:
    # SQLite returns naive datetimes; nextlabel only ever stores UTC, so say so in the JSON
    # (a browser would otherwise read a bare timestamp as local time). PostgreSQL answers in
    # its session time zone: shown in UTC too, so a value reads the same however it was got.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


# --- what a request may carry ---------------------------------------------------------------
# A value the database cannot store must be a 422 naming its field, never a database error
# (a 500): integers stay within StoredInt's bounds (tests/app/test_input_limits.py checks
# every one in the OpenAPI schema), and text has one of the types below.

StoredInt = Annotated[int, Field(ge=INT32_MIN, le=INT32_MAX)]
"""An integer stored in an Integer column: 32 bits (PostgreSQL's int4)."""

_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise PydanticCustomError("nul_character", "must not contain the NUL character (U+0000)")
    return text


def _no_control_characters(text: str) -> str:
    found = _CONTROL_CHARACTER.search(text)
    if found is not None:
        raise PydanticCustomError(
            "control_character",
            "must not contain control characters (found U+{code})",
            {"code": f"{ord(found.group()):04X}"},
        )
    return text


# Names people read and tools pass around (projects, annotators, classes, keys) are one
# line with no control characters (C0, DEL, C1): line breaks, tabs and escapes in a name
# break CSV cells, file names, HTTP headers and terminals, and NUL cannot be stored. The
# length comes first, so a name too long is reported as that.
_PLAIN = AfterValidator(_no_control_characters)
# The same rules as patterns in the OpenAPI schema, so clients (and fuzzers) know them; the
# validators above and below use Python's `re` on the same classes, so the two agree.
_PLAIN_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
_CLASS_PATTERN = r"^(?!\s)[^\x00-\x1f\x7f-\x9f]*(?<!\s)$"
_OUTER_SPACE = re.compile(r"^\s|\s$")


def _no_outer_spaces(text: str) -> str:
    if _OUTER_SPACE.search(text):
        raise PydanticCustomError("outer_space", "must not begin or end with a space")
    return text


_TRIMMED = AfterValidator(_no_outer_spaces)

StoredText = Annotated[str, AfterValidator(_no_nul)]
"""Any other text the API stores: PostgreSQL's text types cannot hold NUL (U+0000)."""

_PLAIN_SCHEMA = Field(json_schema_extra={"pattern": _PLAIN_PATTERN})
ProjectName = Annotated[
    str, StringConstraints(min_length=1, max_length=PROJECT_NAME_LENGTH), _PLAIN, _PLAIN_SCHEMA
]
AnnotatorName = Annotated[
    str, StringConstraints(min_length=1, max_length=ANNOTATOR_NAME_LENGTH), _PLAIN, _PLAIN_SCHEMA
]
ClassName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=LABEL_LENGTH),
    _PLAIN,
    _TRIMMED,
    Field(json_schema_extra={"pattern": _CLASS_PATTERN}),
]
"""A class: labels store its name, so it fits in one. Outer spaces are refused rather than
stripped, so that what the OpenAPI schema allows is exactly what the API takes."""
LabelName = Annotated[
    str, StringConstraints(min_length=1, max_length=LABEL_LENGTH), _PLAIN, _PLAIN_SCHEMA
]
"""A label as given: one of the project's class names."""
IdempotencyKeyText = Annotated[
    str, StringConstraints(min_length=1, max_length=IDEMPOTENCY_KEY_LENGTH), _PLAIN, _PLAIN_SCHEMA
]


class RequestModel(BaseModel):
    """A request body, taking exactly what its OpenAPI schema allows: pydantic's lax mode
    would read `false` as 0 and "5" as 5, which the schema (and JSON) call wrong types."""

    @field_validator("*", mode="before")
    @classmethod
    def _json_types_only(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields[info.field_name or ""]
        if _takes_bool(field.annotation):
            if value is None or isinstance(value, bool):
                return value
        elif not isinstance(value, bool) and not (
            isinstance(value, str) and not _takes_text(field.annotation)
        ):
            return value
        raise PydanticCustomError(
            "json_type", "must be {expected}, not {given}", _type_names(field, value)
        )


def _takes_text(annotation: Any) -> bool:
    if isinstance(annotation, type):
        return issubclass(annotation, str)
    if get_origin(annotation) is Literal:
        return any(isinstance(choice, str) for choice in get_args(annotation))
    return any(_takes_text(arg) for arg in get_args(annotation))


def _takes_bool(annotation: Any) -> bool:
    if annotation is bool:
        return True
    return get_origin(annotation) is not Literal and any(
        _takes_bool(arg) for arg in get_args(annotation)
    )


def _type_names(field: Any, value: Any) -> dict[str, str]:
    if _takes_bool(field.annotation):
        expected = "true or false"
    else:
        expected = "a string" if _takes_text(field.annotation) else "a number"
    if isinstance(value, bool):
        given = "true/false"
    else:
        given = "a string" if isinstance(value, str) else "a number"
    return {"expected": expected, "given": given}


class ORMModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# --- annotators ---------------------------------------------------------------------------


class AnnotatorCreate(RequestModel):
    name: AnnotatorName
    role: Role = Role.annotator


class AnnotatorPublic(ORMModel):
    id: int
    name: str
    role: Role
    created_at: UtcDatetime
    project_ids: list[int] = []


class AnnotatorCreated(AnnotatorPublic):
    token: str = Field(description="Shown once: store it, it cannot be read back.")


# --- projects -----------------------------------------------------------------------------


Hotkey = Annotated[
    str,
    StringConstraints(min_length=1, max_length=1),
    Field(description="One character, matched without case: 'A' and 'a' are one key."),
]
HotkeyMap = Annotated[
    dict[ClassName, Hotkey],
    Field(
        max_length=1000,
        json_schema_extra={
            "propertyNames": {
                "minLength": 1,
                "maxLength": LABEL_LENGTH,
                "pattern": _CLASS_PATTERN,
            }
        },
        description="Class name → the key that labels it on the labelling page. One "
        "character each, no two alike, not Space or 's' (skip). Classes left out get keys "
        "automatically; see `effective_hotkeys` in the project.",
    ),
]


_CUSTOM_BACKBONE = re.compile(r"^(torchvision|timm):[A-Za-z0-9_.\-]{1,100}$")


def _custom_backbone(name: str) -> str:
    if not _CUSTOM_BACKBONE.match(name):
        raise PydanticCustomError(
            "custom_backbone",
            "must name a model as 'torchvision:<model>' or 'timm:<model>', such as "
            "'torchvision:resnet50'",
        )
    return name


CustomBackbone = Annotated[
    str,
    StringConstraints(max_length=120),
    _PLAIN,  # first, so a control character is reported as that, as in every other field
    AfterValidator(_custom_backbone),
    Field(
        description="With network 'custom': the model, as 'torchvision:resnet50' or "
        "'timm:vit_small_patch14_dinov2'.",
        json_schema_extra={"pattern": _CUSTOM_BACKBONE.pattern},
    ),
]
WeightsPath = Annotated[
    str,
    StringConstraints(min_length=1, max_length=1000),
    _PLAIN,
    Field(
        description="With network 'custom': the weights file's path on the worker's disk.",
        json_schema_extra={"pattern": _PLAIN_PATTERN},
    ),
]
NearDuplicateDistance = Annotated[
    float,
    Field(
        ge=0.0,
        le=1.0,
        description="Cosine distance under which two images count as near duplicates; "
        "null: the engine's default.",
    ),
]


class ProjectSettings(RequestModel):
    # A field the API does not know is a 422 naming it, never accepted and ignored.
    model_config = ConfigDict(extra="forbid")

    strategy: Strategy = "batchbald"
    query_size: int = Field(10, ge=1, le=1000, description="Acquisition batch size b.")
    retrain_every: int = Field(10, ge=1, le=100_000, description="New labels per round.")
    queue_size: int | None = Field(
        None, ge=1, le=100_000, description="Items a round queues; default 2 × retrain_every."
    )
    mc_samples: int = Field(20, ge=1, le=1000, description="K stochastic forward passes.")
    image_size: int = Field(
        28, ge=8, le=512, description="Side in pixels images are resized to for the model."
    )
    image_channels: Literal[1, 3] = Field(1, description="1: greyscale, 3: RGB.")
    network: Network = "auto"
    custom_backbone: CustomBackbone | None = None
    custom_weights: WeightsPath | None = None
    cold_start: ColdStart = Field(
        "typiclust", description="What the queue holds before the first model, over embeddings."
    )
    near_duplicates: NearDuplicates = Field(
        "flag",
        description="An upload whose embedding is within near_duplicate_distance of an image "
        "already in the project: flag it (kept, marked), skip it (kept, never queued or "
        "trained on) or off.",
    )
    near_duplicate_distance: NearDuplicateDistance | None = None
    seed: StoredInt = 0
    hotkeys: HotkeyMap = {}
    show_filenames: bool = Field(
        False, description="Show annotators items' file names (they may give the answer away)."
    )


class ProjectCreate(ProjectSettings):
    name: ProjectName
    classes: list[ClassName] = Field(
        min_length=2,
        max_length=1000,
        json_schema_extra={"uniqueItems": True},
        description="Distinct class names.",
    )

    @field_validator("classes")
    @classmethod
    def _classes_are_distinct(cls, classes: list[str]) -> list[str]:
        if len(set(classes)) != len(classes):
            raise ValueError("class names must be distinct")
        return classes


class ProjectUpdate(RequestModel):
    """Changed settings apply from the next round; an unknown field is a 422."""

    model_config = ConfigDict(extra="forbid")

    name: ProjectName | None = None
    strategy: Strategy | None = None
    query_size: int | None = Field(None, ge=1, le=1000)
    retrain_every: int | None = Field(None, ge=1, le=100_000)
    queue_size: int | None = Field(None, ge=1, le=100_000)
    mc_samples: int | None = Field(None, ge=1, le=1000)
    image_size: int | None = Field(None, ge=8, le=512)
    image_channels: Literal[1, 3] | None = None
    network: Network | None = None
    custom_backbone: CustomBackbone | None = None
    custom_weights: WeightsPath | None = None
    cold_start: ColdStart | None = None
    near_duplicates: NearDuplicates | None = None
    near_duplicate_distance: NearDuplicateDistance | None = None
    hotkeys: HotkeyMap | None = Field(
        None, description="Replaces the keys an admin set; {} returns every class to automatic."
    )
    show_filenames: bool | None = None


class ProjectCounts(BaseModel):
    items: int
    pool: int
    validation: int
    labelled: int
    near_duplicates: int = Field(
        0, description="Items flagged as near duplicates of an earlier image (skipped or not)."
    )
    duplicates_skipped: int = Field(
        0, description="Of those, the ones the project skips: never queued or trained on."
    )


class EmbeddingProgressPublic(BaseModel):
    """How far embedding the project's images with its backbone has got."""

    state: Literal["embedding", "done", "failed"]
    space_key: str = Field(description="The backbone, weights and preprocessing.")
    total: int = Field(description="Distinct images the latest round reads.")
    done: int = Field(description="Of those, embedded (now or before) or failed to decode.")
    reused: int = Field(description="Found in the store: embedded before, by any project.")
    embedded: int
    failed: int
    images_per_second: float | None
    seconds_left: float | None
    error: str | None
    started_at: UtcDatetime
    finished_at: UtcDatetime | None


class ProjectPublic(ORMModel):
    id: int
    name: str
    classes: list[str]
    strategy: str
    query_size: int
    retrain_every: int
    queue_size: int | None
    effective_queue_size: int
    mc_samples: int
    image_size: int
    image_channels: int
    network: str
    custom_backbone: str | None
    custom_weights: str | None
    cold_start: str
    near_duplicates: str
    near_duplicate_distance: float | None
    seed: int
    hotkeys: dict[str, str] = Field(description="The keys an admin set, class → key.")
    effective_hotkeys: dict[str, str] = Field(
        description="Class → key for every class that has one: the admin's keys, then a "
        "one-character class name's own key, then 1–9, 0, a–z in class order."
    )
    show_filenames: bool
    created_at: UtcDatetime
    counts: ProjectCounts | None = None
    resolved_network: str | None = Field(
        None, description="The network rounds use: 'auto' resolved by the image settings."
    )
    embedding: EmbeddingProgressPublic | None = Field(
        None, description="Embedding progress, for networks on frozen features."
    )


# --- items --------------------------------------------------------------------------------


class ItemPublic(ORMModel):
    id: int
    project_id: int
    filename: str
    width: int
    height: int
    split: Split
    known_label: str | None
    label_count: int
    decode_error: str | None
    near_duplicate_of: int | None = Field(
        None, description="The earlier item this one's embedding nearly equals."
    )
    near_duplicate_distance: float | None = Field(None, description="Their cosine distance.")
    duplicate_skipped: bool = Field(
        False, description="A near duplicate the project skips: never queued or trained on."
    )
    image_url: str
    my_label: str | None = None


class ItemPage(BaseModel):
    items: list[ItemPublic]
    next_cursor: int | None = Field(
        description="Pass as ?cursor= for the next page; null at the end."
    )


class SkippedFile(BaseModel):
    name: str
    reason: str


class UploadReport(BaseModel):
    created: list[int]
    skipped: list[SkippedFile]


class ImportReport(UploadReport):
    """What an import found and did (with `dry_run`: would do, and nothing was written).

    `skipped`: files left out that carried no label (not images, duplicates), as always.
    `problems`: what would lose a label (an unknown class, a manifest row naming no file, a
    duplicate or conflicting row, a labelled file that is not an image): any of them and
    nothing is written, unless skip_problems was given; then they are what was skipped.
    """

    dry_run: bool = False
    images: int = Field(0, description="Images accepted (new ones and ones already here).")
    new_items: int = Field(0, description="Images not yet in the project.")
    training: dict[str, int] = Field(
        default_factory=dict, description="Training labels added, per class."
    )
    validation: dict[str, int] = Field(
        default_factory=dict, description="New validation items with their label, per class."
    )
    unlabelled: int = Field(0, description="New items without a label (the pool).")
    unchanged: int = Field(0, description="Images already here with the same label.")
    problems: list[SkippedFile] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    round_queued: int | None = Field(
        default=None,
        description="A round the imported labels made due, or (on frozen features) one that "
        "embeds the new images, already queued.",
    )


# Problems and uncovered items an embeddings report lists; the counts cover all of them.
EMBEDDING_LISTED = 100


class EmbeddingProblem(BaseModel):
    key: str | None = Field(
        description="The key (a file name or sha256) the problem is about; null for the file."
    )
    reason: str


class UncoveredItem(BaseModel):
    id: int
    filename: str


class EmbeddingCoverage(BaseModel):
    """Which of the project's items (pool and validation) have an imported vector."""

    items: int = Field(description="Items of the project.")
    covered: int = Field(description="Items with a vector.")
    uncovered: int = Field(description="Items without one: rounds leave them out.")
    uncovered_items: list[UncoveredItem] = Field(
        description=f"The first {EMBEDDING_LISTED} uncovered items, oldest first."
    )


class EmbeddingImportReport(BaseModel):
    """What an embeddings import found and did (with `dry_run`: would do; nothing written).

    Any problem (an unknown, duplicate or ambiguous key, a vector that is not finite, a
    dimension that differs) refuses the whole import: a 422, or with `dry_run` this report
    with `problems`. Items left without a vector are no problem (import in parts): they are
    counted and listed in `coverage`.
    """

    dry_run: bool = False
    vectors: int = Field(description="Rows in the file.")
    imported: int = Field(description="Vectors written (with dry_run: that would be).")
    dimension: int | None = Field(description="The vectors' dimension; null if undecided.")
    replaced: int = Field(0, description="Vectors removed first, with `replace`.")
    coverage: EmbeddingCoverage
    problems: list[EmbeddingProblem] = Field(
        default_factory=list,
        description=f"The first {EMBEDDING_LISTED} problems; `problem_count` counts all.",
    )
    problem_count: int = 0
    notes: list[str] = Field(default_factory=list)
    round_queued: int | None = Field(
        default=None, description="A round queued to learn on the new vectors."
    )


class EmbeddingSummary(BaseModel):
    """A project's imported vectors (the space rounds read with network "embeddings")."""

    dimension: int | None = Field(description="Null while none are imported.")
    vectors: int = Field(description="Vectors in the project's imported space.")
    coverage: EmbeddingCoverage


# --- the queue ----------------------------------------------------------------------------


class ServedItem(ItemPublic):
    filename: str | None = Field(  # type: ignore[assignment]
        description="Null for annotators unless the project's `show_filenames` is on: a file "
        "name can give the answer away. Admins always get it."
    )


class ClassProbability(BaseModel):
    label: str
    probability: float


class PredictionPublic(BaseModel):
    label: str
    confidence: float
    probabilities: dict[str, float]
    top: list[ClassProbability] = Field(
        description="The two most probable classes, most probable first."
    )
    round_id: int


class NextItem(BaseModel):
    item: ServedItem
    rank: int | None = Field(description="Position in the round's queue; null outside it.")
    score: float | None = Field(description="The round's acquisition score for this item.")
    score_percentile: float | None = Field(
        description="Where the item's score in its round (the per-item score that orders "
        "the pool) falls among every pool item that round scored, 0–100: 99 means higher "
        "than 99% of them. Null without a round."
    )
    strategy: str = Field(description="Why it was chosen: a strategy name, or 'random'.")
    reason: str = Field(description="Why it was chosen, in plain words.")
    round_id: int | None
    prediction: PredictionPublic | None
    lease_expires_at: UtcDatetime


# --- labels -------------------------------------------------------------------------------


class LabelCreate(RequestModel):
    label: LabelName
    ms_spent: int | None = Field(None, ge=0, le=86_400_000)


class LabelPublic(ORMModel):
    id: int
    item_id: int
    annotator_id: int
    label: str
    created_at: UtcDatetime
    ms_spent: int | None
    round_id: int | None
    replaced_previous: bool = False
    round_enqueued: int | None = Field(None, description="Id of a round this label triggered.")


class SkipPublic(BaseModel):
    item_id: int
    skipped: bool = True


# --- rounds -------------------------------------------------------------------------------


class QueueEntryPublic(ORMModel):
    item_id: int
    rank: int
    score: float
    strategy: str
    filename: str | None = None
    image_url: str | None = None
    labelled: bool = False


class RoundPublic(ORMModel):
    id: int
    project_id: int
    number: int = Field(
        description="The round's number within its project: 1, 2, 3… (`id` counts across "
        "every project). What people are shown."
    )
    status: RoundStatus
    trigger: str
    strategy: str
    labels_used: int
    attempts: int
    metrics: RoundMetrics
    timings: PhaseTimings
    error: str | None
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    dispatched_at: UtcDatetime | None = Field(
        None,
        description="When the task broker last accepted the round. Null while queued: the "
        "broker was unreachable, and the worker sends it again as soon as it is back.",
    )


class RoundDetail(RoundPublic):
    queue: list[QueueEntryPublic] = []


# --- metrics ------------------------------------------------------------------------------


class AnnotatorCount(BaseModel):
    annotator_id: int
    name: str
    labels: int
    labels_today: int


class CurvePoint(BaseModel):
    round_id: int
    round_number: int = Field(description="The round's number within its project.")
    labels_used: int
    accuracy: float | None
    nll: float | None
    finished_at: UtcDatetime | None


class QueueFreshness(BaseModel):
    round_id: int | None = Field(description="The completed round whose queue is served now.")
    round_number: int | None = Field(description="That round's number within the project.")
    labels_since_round: int = Field(description="Labels made since that round started.")
    labels_until_retrain: int
    retrain_every: int
    active_round_id: int | None
    active_round_number: int | None = Field(description="Its number within the project.")
    active_round_status: RoundStatus | None
    active_round_waiting_for_broker: bool = Field(
        False,
        description="The active round is queued and the task broker has not taken it yet "
        "(it was down): a worker sends it as soon as the broker is back.",
    )
    queue_remaining: int
    pool_remaining: int
    pool_exhausted: bool


class ValidationSummary(BaseModel):
    items: int
    with_known_label: int
    note: str | None = Field(description="Why validation metrics are missing, when they are.")


class ProjectMetrics(BaseModel):
    project_id: int
    totals: ProjectCounts
    label_counts: dict[str, int]
    annotators: list[AnnotatorCount]
    learning_curve: list[CurvePoint]
    queue: QueueFreshness
    validation: ValidationSummary


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = {}


class ErrorMessage(BaseModel):
    detail: str


# --- catalog ------------------------------------------------------------------------------


class CatalogEntry(BaseModel):
    name: str
    label: str = Field(description="The name as people read it.")
    description: str


class Catalog(BaseModel):
    """Every strategy, network, cold start and round phase the service knows (core.catalog)."""

    strategies: list[CatalogEntry]
    networks: list[CatalogEntry]
    cold_starts: list[CatalogEntry] = Field(
        description="What the queue holds before the first model (project setting cold_start)."
    )
    phases: list[CatalogEntry]


# --- webhooks -----------------------------------------------------------------------------

# http:// or https:// and then printable ASCII without spaces; the validator below says
# which of the two a URL broke, and the service checks the rest (a host, a valid port).
_WEBHOOK_URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[!-~]+$"
_HTTP_SCHEME = re.compile(r"^[Hh][Tt][Tt][Pp][Ss]?://")
_PRINTABLE_ASCII = re.compile(r"^[!-~]+$")


def _http_url(url: str) -> str:
    if not _HTTP_SCHEME.match(url):
        raise PydanticCustomError("url_scheme", "must be an http:// or https:// URL")
    if not _PRINTABLE_ASCII.match(url):
        raise PydanticCustomError(
            "url_characters",
            "must be printable ASCII without spaces: percent-encode other characters, and "
            "give an international host name in its xn-- form",
        )
    return url


WebhookUrl = Annotated[
    str,
    StringConstraints(max_length=WEBHOOK_URL_LENGTH),
    _PLAIN,  # first, so a control character is reported as that, as in every other field
    AfterValidator(_http_url),
    Field(json_schema_extra={"pattern": _WEBHOOK_URL_PATTERN}),
]


class WebhookCreate(RequestModel):
    url: WebhookUrl = Field(description="Where events are POSTed: an http:// or https:// URL.")
    events: list[WebhookEvent] = Field(
        default_factory=lambda: list(WebhookEvent),
        min_length=1,
        max_length=len(WebhookEvent),
        description="The events sent to this URL; all of them if left out.",
    )


class WebhookPublic(ORMModel):
    id: int
    project_id: int
    url: str
    events: list[WebhookEvent]
    created_at: UtcDatetime


class WebhookCreated(WebhookPublic):
    secret: str = Field(
        description="Shown once: the key of each delivery's X-Nextlabel-Signature "
        "(sha256=HMAC-SHA256 of the body, in hex). Store it; it cannot be read back."
    )


class WebhookDeliveryPublic(ORMModel):
    id: int
    webhook_id: int
    event: WebhookEvent
    event_id: str = Field(description="The body's `id`, the same for every hook it went to.")
    status: DeliveryStatus = Field(
        description="pending: not yet delivered, tried again later; delivered: a 2xx "
        "answer; failed: no 2xx after the last attempt."
    )
    attempts: int
    last_status_code: int | None = Field(description="The last attempt's HTTP status.")
    last_error: str | None = Field(description="Why the last attempt failed.")
    created_at: UtcDatetime
    last_attempt_at: UtcDatetime | None
    next_attempt_at: UtcDatetime | None = Field(description="When it is tried next, if pending.")
    finished_at: UtcDatetime | None

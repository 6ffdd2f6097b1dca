"""SQLAlchemy 2.0 tables. The database is the truth: workers and API processes share it.

Invariants the schema itself enforces (so no process memory is trusted with them):
- one current label per (item, annotator): a partial unique index on labels;
- one label per (annotator, Idempotency-Key): a partial unique index on labels;
- one lease per item: the lease's primary key is the item id;
- at most one queued or running round per project: a partial unique index on rounds;
- one copy of an image per project: unique (project_id, sha256);
- one delivery of an event per webhook: unique (webhook_id, event_id).

One module because the tables are one schema: their foreign keys refer to each other, and
Alembic compares one metadata with the database (`alembic check` in tests/app/test_migrate.py).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    literal_column,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.elements import ColumnElement

from core.catalog import EMBEDDING_NETWORKS, resolve_network
from core.hotkeys import effective_hotkeys

# What the columns hold, for the API to check before a write (so a bad value is a 422 that
# names the field, never a database error). An Integer column, ids included, is 32 bits
# on PostgreSQL; SQLite stores 64, but one bound keeps the two databases' answers alike.
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
# Longest names. A class name is what every label, known label and prediction stores, so
# a class is never longer than a label can be.
LABEL_LENGTH = 200
PROJECT_NAME_LENGTH = 200
ANNOTATOR_NAME_LENGTH = 120
IDEMPOTENCY_KEY_LENGTH = 100
WEBHOOK_URL_LENGTH = 2000


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        list[str]: JSON,
        list[float]: JSON,
    }


class Role(enum.StrEnum):
    admin = "admin"
    annotator = "annotator"


class Split(enum.StrEnum):
    pool = "pool"
    validation = "validation"


class RoundStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"


ACTIVE_ROUND_STATUSES = (RoundStatus.queued, RoundStatus.running)


class WebhookEvent(enum.StrEnum):
    round_done = "round.done"
    round_failed = "round.failed"
    labels_exported = "labels.exported"


class DeliveryStatus(enum.StrEnum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Plain VARCHAR + CHECK: identical on SQLite and PostgreSQL, no native enum types to migrate.
    return Enum(cls, name=name, native_enum=False, create_constraint=True, length=16)


class ProjectMember(Base):
    __tablename__ = "project_members"

    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    annotator_id: Mapped[int] = mapped_column(
        ForeignKey("annotators.id", ondelete="CASCADE"), primary_key=True
    )


class Annotator(Base):
    __tablename__ = "annotators"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(ANNOTATOR_NAME_LENGTH), unique=True)
    role: Mapped[Role] = mapped_column(_enum(Role, "role"))
    # sha256 of a 256-bit random token: tokens are high-entropy, so a fast hash is safe and
    # lets authentication be one indexed lookup.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    projects: Mapped[list[Project]] = relationship(
        secondary="project_members", back_populates="members", viewonly=True
    )


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(PROJECT_NAME_LENGTH), unique=True)
    classes: Mapped[list[str]] = mapped_column(JSON)
    strategy: Mapped[str] = mapped_column(String(32), default="batchbald")
    query_size: Mapped[int] = mapped_column(Integer, default=10)
    retrain_every: Mapped[int] = mapped_column(Integer, default=10)
    queue_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    mc_samples: Mapped[int] = mapped_column(Integer, default=20)
    image_size: Mapped[int] = mapped_column(Integer, default=28)
    image_channels: Mapped[int] = mapped_column(Integer, default=1)
    network: Mapped[str] = mapped_column(String(32), default="auto")
    seed: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Class name -> hotkey, as an admin set them; the rest are assigned automatically
    # (core.hotkeys.effective_hotkeys).
    hotkeys: Mapped[dict[str, str]] = mapped_column(JSON, default=dict, server_default=text("'{}'"))
    # Whether annotators see items' file names (which may give the answer away).
    show_filenames: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    # network "custom": a torchvision/timm model name ("torchvision:resnet50") and a weights
    # file on the worker's disk.
    custom_backbone: Mapped[str | None] = mapped_column(String(200), nullable=True)
    custom_weights: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    # What a round with no labels queues when embeddings exist (core.catalog.COLD_STARTS).
    cold_start: Mapped[str] = mapped_column(
        String(32), default="typiclust", server_default=text("'typiclust'")
    )
    # What happens to an upload whose embedding lies within near_duplicate_distance (cosine;
    # None: the engine's default) of an image already in the project: flag, skip or off.
    near_duplicates: Mapped[str] = mapped_column(
        String(16), default="flag", server_default=text("'flag'")
    )
    near_duplicate_distance: Mapped[float | None] = mapped_column(Float, nullable=True)

    members: Mapped[list[Annotator]] = relationship(
        secondary="project_members", back_populates="projects", viewonly=True
    )

    @property
    def effective_queue_size(self) -> int:
        """Twice the retrain interval by default, so annotators don't run dry mid-round."""
        return self.queue_size or 2 * self.retrain_every

    @property
    def resolved_network(self) -> str:
        """The network rounds use: "auto" resolved by the image settings (core.catalog)."""
        return resolve_network(self.network, channels=self.image_channels, size=self.image_size)

    @property
    def learns_on_embeddings(self) -> bool:
        """Whether rounds learn a head on cached embeddings rather than on pixels."""
        return self.resolved_network in EMBEDDING_NETWORKS

    @property
    def effective_hotkeys(self) -> dict[str, str]:
        """Class → key on the labelling page: the admin's keys, then automatic ones."""
        return effective_hotkeys(self.classes, self.hotkeys or {})


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("project_id", "sha256", name="uq_items_project_sha256"),
        # Serves the unlabelled pool in seeded random order without a sort.
        Index("ix_items_pool_order", "project_id", "split", "label_count", "random_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(500))
    file_key: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    split: Mapped[Split] = mapped_column(_enum(Split, "split"), default=Split.pool)
    known_label: Mapped[str | None] = mapped_column(String(LABEL_LENGTH), nullable=True)
    # Count of current labels, kept in the same transaction as every label change so the
    # queue can skip labelled items through an index instead of a join over labels.
    label_count: Mapped[int] = mapped_column(Integer, default=0)
    # A seeded pseudo-random sort key fixed at import: "seeded random order" for free.
    random_key: Mapped[int] = mapped_column(BigInteger)
    decode_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The earlier item whose embedding this one's lies within the project's near-duplicate
    # distance of, and that cosine distance; set by the worker after embedding.
    # (No foreign key: SQLite cannot add one to an existing table in place, and items go
    # only with their whole project.)
    near_duplicate_of: Mapped[int | None] = mapped_column(Integer, nullable=True)
    near_duplicate_distance: Mapped[float | None] = mapped_column(Float, nullable=True)
    # A near duplicate under the "skip" policy: kept and listed, never queued or trained on.
    duplicate_skipped: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EmbeddingProgress(Base):
    """How far the embedding of a project's images in its current space has got.

    One row per project, reset when the space (backbone, weights or preprocessing) changes;
    chunk tasks add to `embedded` only while the row's space is theirs.
    """

    __tablename__ = "embedding_progress"

    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    space_key: Mapped[str] = mapped_column(String(300))
    total: Mapped[int] = mapped_column(Integer, default=0)
    # Found in the store when the job started (embedded earlier, maybe by another project).
    reused: Mapped[int] = mapped_column(Integer, default=0)
    embedded: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), default="embedding")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Items up to this id were compared with the earlier ones for near duplicates (kept
    # across space changes: a flag once raised stays).
    duplicates_checked_through: Mapped[int] = mapped_column(Integer, default=0)


class Label(Base):
    __tablename__ = "labels"
    __table_args__ = (
        Index(
            "uq_labels_current",
            "item_id",
            "annotator_id",
            unique=True,
            sqlite_where=text("is_current"),
            postgresql_where=text("is_current"),
        ),
        Index("ix_labels_project_id", "project_id", "id"),
        # A client's retry of a label (same Idempotency-Key) finds the label it made; NULL
        # keys (requests without the header) never collide.
        Index(
            "uq_labels_idempotency_key",
            "annotator_id",
            "idempotency_key",
            unique=True,
            sqlite_where=text("idempotency_key IS NOT NULL"),
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(LABEL_LENGTH))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ms_spent: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Which round's queue served the item (None: served from the random pool order).
    round_id: Mapped[int | None] = mapped_column(
        ForeignKey("rounds.id", ondelete="SET NULL"), nullable=True
    )
    is_current: Mapped[bool] = mapped_column(Boolean, default=True)
    # Set when the label was replaced by a newer one or undone; history is never deleted.
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    undone: Mapped[bool] = mapped_column(Boolean, default=False)
    # The request's Idempotency-Key header, unique per annotator: a retry returns this row.
    idempotency_key: Mapped[str | None] = mapped_column(
        String(IDEMPOTENCY_KEY_LENGTH), nullable=True
    )


class Skip(Base):
    __tablename__ = "skips"

    item_id: Mapped[int] = mapped_column(
        ForeignKey("items.id", ondelete="CASCADE"), primary_key=True
    )
    annotator_id: Mapped[int] = mapped_column(
        ForeignKey("annotators.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Lease(Base):
    __tablename__ = "leases"
    # "My live leases" (re-served first by `next`) is a range scan, not a pass over all leases.
    __table_args__ = (Index("ix_leases_annotator_expires", "annotator_id", "expires_at"),)

    # One row per item: granting a lease is an atomic upsert guarded by expiry.
    item_id: Mapped[int] = mapped_column(
        ForeignKey("items.id", ondelete="CASCADE"), primary_key=True
    )
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id", ondelete="CASCADE"))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The round whose queue served the item, copied onto the label it leads to.
    round_id: Mapped[int | None] = mapped_column(
        ForeignKey("rounds.id", ondelete="SET NULL"), nullable=True
    )


class Round(Base):
    __tablename__ = "rounds"
    __table_args__ = (
        Index(
            "uq_rounds_one_active_per_project",
            "project_id",
            unique=True,
            sqlite_where=text("status IN ('queued', 'running')"),
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
        Index("ix_rounds_project_status", "project_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    status: Mapped[RoundStatus] = mapped_column(
        _enum(RoundStatus, "round_status"), default=RoundStatus.queued
    )
    trigger: Mapped[str] = mapped_column(String(16), default="labels")
    strategy: Mapped[str] = mapped_column(String(32))
    # Labels the round trained on: the count, and the highest label id it could see, so
    # "labels since this round started" is an indexed count.
    labels_used: Mapped[int] = mapped_column(Integer, default=0)
    label_watermark: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # When the broker last accepted this round's message. NULL while queued: never handed
    # over (the broker was down), so the worker's sweep sends it (app.services.dispatch).
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class QueueEntry(Base):
    __tablename__ = "queue_entries"
    __table_args__ = (
        UniqueConstraint("round_id", "item_id", name="uq_queue_round_item"),
        Index("ix_queue_round_rank", "round_id", "rank"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    rank: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)
    strategy: Mapped[str] = mapped_column(String(32))


class Prediction(Base):
    __tablename__ = "predictions"
    __table_args__ = (Index("ix_predictions_round_score", "round_id", "score"),)

    round_id: Mapped[int] = mapped_column(
        ForeignKey("rounds.id", ondelete="CASCADE"), primary_key=True
    )
    item_id: Mapped[int] = mapped_column(
        ForeignKey("items.id", ondelete="CASCADE"), primary_key=True
    )
    predicted: Mapped[str] = mapped_column(String(LABEL_LENGTH))
    confidence: Mapped[float] = mapped_column(Float)
    probabilities: Mapped[list[float]] = mapped_column(JSON)
    # The round's acquisition score for this item: orders the pool once the queue is used up.
    score: Mapped[float] = mapped_column(Float)


class Webhook(Base):
    """A URL that is sent a project's events (core.webhooks)."""

    __tablename__ = "webhooks"
    __table_args__ = (Index("ix_webhooks_project_id", "project_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(WEBHOOK_URL_LENGTH))
    # WebhookEvent values this hook is sent.
    events: Mapped[list[str]] = mapped_column(JSON)
    # Kept in the clear, unlike API tokens: the worker signs every delivery with it.
    secret: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebhookDelivery(Base):
    """One event for one webhook: the body as sent, and how sending it went so far.

    Written in the transaction of the event itself, so the row is the truth: the worker's
    sender finds pending rows whose `next_attempt_at` has come (core.webhooks).
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("webhook_id", "event_id", name="uq_webhook_deliveries_event"),
        Index("ix_webhook_deliveries_webhook_id", "webhook_id", "id"),
        # The sender's "what is due" walks only pending rows.
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event: Mapped[WebhookEvent] = mapped_column(
        # Stored as the value receivers see ("round.done"), not the member's name.
        Enum(
            WebhookEvent,
            name="webhook_event",
            native_enum=False,
            create_constraint=True,
            length=16,
            values_callable=lambda members: [member.value for member in members],
        )
    )
    # Shared by the deliveries of one event to every hook: receivers deduplicate on it.
    event_id: Mapped[str] = mapped_column(String(36))
    # The exact bytes signed and sent, every attempt alike (UTF-8 JSON).
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[DeliveryStatus] = mapped_column(
        _enum(DeliveryStatus, "delivery_status"), default=DeliveryStatus.pending
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When the next attempt is due; while an attempt is under way, when its claim lapses.
    # NULL once delivered or failed.
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


def is_current() -> ColumnElement[bool]:
    """`labels.is_current`, rendered bare.

    SQLite uses the partial index `uq_labels_current ... WHERE is_current` only when the
    query repeats that term exactly; SQLAlchemy would render `is_current = 1` and scan.
    """
    return literal_column("labels.is_current")

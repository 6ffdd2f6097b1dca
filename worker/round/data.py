"""What a round reads: the project, its labels, validation items and unlabelled pool in one
snapshot, and the images decoded once into the tensors the model phases use.

Validation items are split so that the accuracy a round reports never comes from the items
that chose its epoch (`split_validation`).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.catalog import EMBEDDING_NETWORKS, resolve_network
from core.rounds import Claim, RoundAbandoned, fenced
from core.storage import ImageStore
from core.tables import Item, Label, Project, Split, is_current
from worker.engine.images import ImageCache, ImageSpec, ItemImage

log = logging.getLogger(__name__)

NO_VALIDATION_NOTE = "no validation items"
NO_LABELS_NOTE = "no labels yet: the queue is the pool in seeded random order"
COLD_START_NOTE = (
    "no labels yet: the queue starts with the cold start's picks over the embeddings, then "
    "the pool in seeded random order"
)
POOL_USED_UP_NOTE = "pool used up: no unlabelled items left to queue"
# Validation items are split so that the accuracy a round reports never comes from the items
# that chose its epoch: one in STOPPING_SHARE (at most the paper's 1,024) only steers early
# stopping, the rest only measure. Smaller validation sets are used whole for both.
STOPPING_SHARE = 4
MAX_STOPPING_ITEMS = 1_024
MIN_VALIDATION_TO_SPLIT = 200


@dataclass(frozen=True)
class ProjectSnapshot:
    id: int
    classes: list[str]
    strategy: str
    query_size: int
    queue_size: int
    retrain_every: int
    mc_samples: int
    image_size: int
    image_channels: int
    network: str
    seed: int
    custom_backbone: str | None = None
    custom_weights: str | None = None
    cold_start: str = "typiclust"
    near_duplicates: str = "flag"
    near_duplicate_distance: float | None = None

    @property
    def resolved_network(self) -> str:
        """The concrete network ("auto" resolved by the image settings)."""
        return resolve_network(self.network, channels=self.image_channels, size=self.image_size)

    @property
    def learns_on_embeddings(self) -> bool:
        return self.resolved_network in EMBEDDING_NETWORKS

    @classmethod
    def of(cls, project: Project) -> ProjectSnapshot:
        return cls(
            id=project.id,
            classes=list(project.classes),
            strategy=project.strategy,
            query_size=project.query_size,
            queue_size=project.effective_queue_size,
            retrain_every=project.retrain_every,
            mc_samples=project.mc_samples,
            image_size=project.image_size,
            image_channels=project.image_channels,
            network=project.network,
            seed=project.seed,
            custom_backbone=project.custom_backbone,
            custom_weights=project.custom_weights,
            cold_start=project.cold_start,
            near_duplicates=project.near_duplicates,
            near_duplicate_distance=project.near_duplicate_distance,
        )


@dataclass
class RoundData:
    """Everything a round reads from the database, read in one snapshot."""

    project: ProjectSnapshot
    label_watermark: int
    labels_used: int
    train: list[tuple[ItemImage, int]]
    validation: list[tuple[ItemImage, int]]
    pool: list[ItemImage]
    validation_without_label: int = 0


@dataclass
class RoundTensors:
    """The round's inputs, decoded once and moved to the device once: images in [0, 1], or
    a frozen backbone's embeddings (worker.round.embed)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_stop: torch.Tensor
    y_stop: torch.Tensor
    x_pool: torch.Tensor
    pool_ids: list[int]
    decode_failures: int


def load_round_data(session_factory: sessionmaker[Session], claim: Claim) -> RoundData:
    """Read the project, its labels, validation items and unlabelled pool in one snapshot."""
    with session_factory() as session, session.begin():
        if session.get_bind().dialect.name == "postgresql":
            # One snapshot for every query below: the watermark and the labels must agree.
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        project = session.get(Project, claim.project_id)
        if project is None:
            raise RoundAbandoned("project deleted")
        snapshot = ProjectSnapshot.of(project)
        watermark = session.scalar(
            select(func.coalesce(func.max(Label.id), 0)).where(Label.project_id == project.id)
        )
        train, labels_used = _training_labels(session, snapshot, int(watermark or 0))
        validation, without_label = _validation_items(session, snapshot)
        pool = _unlabelled_pool(session, snapshot.id)
    return RoundData(
        project=snapshot,
        label_watermark=int(watermark or 0),
        labels_used=labels_used,
        train=train,
        validation=validation,
        pool=pool,
        validation_without_label=without_label,
    )


def _training_labels(
    session: Session, project: ProjectSnapshot, watermark: int
) -> tuple[list[tuple[ItemImage, int]], int]:
    rows = session.execute(
        select(Label.id, Label.item_id, Label.label, Item.file_key)
        .join(Item, Item.id == Label.item_id)
        .where(
            Label.project_id == project.id,
            is_current(),
            Label.id <= watermark,
            Item.split == Split.pool,
            Item.decode_error.is_(None),
        )
        .order_by(Label.item_id, Label.id)
    ).all()
    class_index = {name: i for i, name in enumerate(project.classes)}
    votes: dict[int, list[tuple[int, str]]] = defaultdict(list)
    file_keys: dict[int, str] = {}
    for label_id, item_id, name, file_key in rows:
        if name in class_index:  # a label outside the project's classes can't be trained on
            votes[item_id].append((label_id, name))
            file_keys[item_id] = file_key
    train = [
        (ItemImage(item_id, file_keys[item_id]), class_index[majority_label(item_votes)])
        for item_id, item_votes in votes.items()
    ]
    return train, len(rows)


def majority_label(votes: Sequence[tuple[int, str]]) -> str:
    """The most frequent label of an item; a tie goes to the label given most recently.

    Args:
        votes: (label id, class name) of the item's current labels, one per annotator.
    """
    counts = Counter(name for _, name in votes)
    latest = {name: label_id for label_id, name in sorted(votes)}
    return max(counts, key=lambda name: (counts[name], latest[name]))


def _validation_items(
    session: Session, project: ProjectSnapshot
) -> tuple[list[tuple[ItemImage, int]], int]:
    rows = session.execute(
        select(Item.id, Item.file_key, Item.known_label)
        .where(
            Item.project_id == project.id,
            Item.split == Split.validation,
            Item.decode_error.is_(None),
        )
        .order_by(Item.id)
    ).all()
    class_index = {name: i for i, name in enumerate(project.classes)}
    usable = [
        (ItemImage(item_id, key), class_index[known])
        for item_id, key, known in rows
        if known in class_index
    ]
    return usable, len(rows) - len(usable)


def _unlabelled_pool(session: Session, project_id: int) -> list[ItemImage]:
    rows = session.execute(
        select(Item.id, Item.file_key)
        .where(
            Item.project_id == project_id,
            Item.split == Split.pool,
            Item.label_count == 0,
            Item.decode_error.is_(None),
            Item.duplicate_skipped.is_(False),
        )
        .order_by(Item.random_key, Item.id)  # the seeded random order the API serves
    ).all()
    return [ItemImage(item_id, key) for item_id, key in rows]


def record_start(session_factory: sessionmaker[Session], claim: Claim, data: RoundData) -> None:
    """Store the watermark now: labels made from here on count toward the next round."""
    with session_factory() as session, session.begin():
        result = session.execute(
            fenced(claim).values(label_watermark=data.label_watermark, labels_used=data.labels_used)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise RoundAbandoned("round deleted or taken over before loading finished")


def load_tensors(
    session_factory: sessionmaker[Session],
    images: ImageCache,
    store: ImageStore,
    data: RoundData,
    device: torch.device,
) -> RoundTensors:
    """Decode (or fetch from the cache) every image once and move them to the device once."""
    project = data.project
    decoded = images.load(
        project_id=project.id,
        items=round_items(data),
        spec=ImageSpec(project.image_size, project.image_channels),
        store=store,
    )
    if decoded.failures:
        record_decode_errors(session_factory, decoded.failures)
    return assemble_tensors(
        data,
        decoded.item_ids,
        decoded.pixels_N_C_H_W.to(device),
        device,
        divide_by=255.0,
        decode_failures=len(decoded.failures),
    )


def round_items(data: RoundData) -> list[ItemImage]:
    """Every image the round reads: training, validation, then pool items."""
    return [it for it, _ in data.train] + [it for it, _ in data.validation] + data.pool


def assemble_tensors(
    data: RoundData,
    item_ids: Sequence[int],
    inputs_N: torch.Tensor,
    device: torch.device,
    *,
    divide_by: float | None = None,
    decode_failures: int = 0,
) -> RoundTensors:
    """Split one tensor of inputs (row i: item `item_ids[i]`) into the round's roles.

    Args:
        inputs_N: uint8 pixels or float embeddings, one row per item, on `device`.
        divide_by: divide the gathered rows by it as floats (pixels: 255); None: as they are.
        decode_failures: items left out because their image could not be decoded.
    """
    row_of = {item_id: row for row, item_id in enumerate(item_ids)}

    def gather(items: Sequence[ItemImage]) -> tuple[torch.Tensor, list[int]]:
        kept = [it.item_id for it in items if it.item_id in row_of]
        rows = torch.tensor([row_of[i] for i in kept], dtype=torch.long, device=device)
        chosen = inputs_N.index_select(0, rows).float()
        return (chosen.div_(divide_by) if divide_by is not None else chosen), kept

    train_class = {it.item_id: c for it, c in data.train}
    val_class = {it.item_id: c for it, c in data.validation}
    x_train, train_ids = gather([it for it, _ in data.train])
    stopping, reporting = split_validation([it for it, _ in data.validation])
    x_val, val_ids = gather(reporting)
    x_stop, stop_ids = gather(stopping)
    x_pool, pool_ids = gather(data.pool)

    def classes_of(ids: list[int], class_of: dict[int, int]) -> torch.Tensor:
        return torch.tensor([class_of[i] for i in ids], dtype=torch.long, device=device)

    return RoundTensors(
        x_train=x_train,
        y_train=classes_of(train_ids, train_class),
        x_val=x_val,
        y_val=classes_of(val_ids, val_class),
        x_stop=x_stop,
        y_stop=classes_of(stop_ids, val_class),
        x_pool=x_pool,
        pool_ids=pool_ids,
        decode_failures=decode_failures,
    )


def split_validation(items: Sequence[ItemImage]) -> tuple[list[ItemImage], list[ItemImage]]:
    """(early-stopping items, reporting items), chosen by a stable hash of each item id.

    An item's role depends on its own id and the size of the set alone, and adding items can
    only move one from early stopping to reporting, never back: a reported accuracy never
    comes from items that chose the same round's epoch.
    """
    if len(items) < MIN_VALIDATION_TO_SPLIT:
        return list(items), list(items)
    share = min(1 / STOPPING_SHARE, MAX_STOPPING_ITEMS / len(items))
    stopping: list[ItemImage] = []
    reporting: list[ItemImage] = []
    for item in items:
        (stopping if _unit_hash(item.item_id) < share else reporting).append(item)
    return stopping, reporting


def _unit_hash(item_id: int) -> float:
    """A uniform number in [0, 1) fixed by the id (Python's hash() is not spread out)."""
    digest = hashlib.blake2b(item_id.to_bytes(8, "little"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def record_decode_errors(session_factory: sessionmaker[Session], failures: dict[int, str]) -> None:
    # Its own transaction: the item is marked even if the round is later abandoned, so no
    # round ever tries the image again.
    with session_factory() as session, session.begin():
        for item_id, reason in failures.items():
            session.execute(update(Item).where(Item.id == item_id).values(decode_error=reason))
    log.warning("skipped %d images that failed to decode", len(failures))

"""The embed phase of a round on frozen features: every image the round reads gets its vector
from the embedding store (core.embeddings), and the ones not there yet are embedded now.

- **One space per round.** The space (backbone, weights, preprocessing) is fixed from the
  round's project snapshot before anything is read, and every vector comes from it: a
  settings change during the round never mixes old and new features.
- **Chunks shared between workers.** Missing images are cut into chunks of
  `Settings.embedding_chunk_items`; all but the last are offered to the broker (other idle
  workers take them, worker.tasks), and the round works through the chunks from the last
  backwards, skipping images someone else has stored meanwhile. The round never waits for
  another worker: with none, it embeds everything itself.
- **Progress** (core.embedding_progress) counts each chunk as it lands, for the dashboard.
- **Near duplicates** of earlier images are flagged (or skipped) once the vectors exist.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.embedding_progress import add_embedded, finish_embedding, start_embedding
from core.embeddings import EmbeddingSpace, EmbeddingStore, imported_space_key
from core.storage import ImageStore
from core.tables import EmbeddingProgress, Item, Project
from worker.engine.backbones import (
    DEFAULT_CUSTOM_INPUT_SIZE,
    DEFAULT_LITE0_INPUT_SIZE,
    Backbone,
    resolve_backbone,
)
from worker.engine.duplicates import DEFAULT_MAX_DISTANCE, near_duplicates
from worker.engine.images import ImageSpec, ItemImage, decode_image
from worker.engine.training import pick_device
from worker.round.data import (
    ProjectSnapshot,
    RoundData,
    RoundTensors,
    assemble_tensors,
    record_decode_errors,
    round_items,
)

log = logging.getLogger(__name__)

# Offers a chunk of items to other workers: (project id, space key, item ids).
ShareChunk = Callable[[int, str, list[int]], None] | None


@dataclass(frozen=True)
class EmbeddingSetup:
    """What a worker needs to embed: images, the vector store, and how to share chunks."""

    store: ImageStore
    embeddings: EmbeddingStore
    session_factory: sessionmaker[Session]
    chunk_items: int
    max_pixels: int
    share_chunk: ShareChunk = None


@dataclass(frozen=True)
class EmbeddedRound:
    """The round's inputs as embeddings, and what the phase did."""

    tensors: RoundTensors
    space_key: str
    feature_dim: int
    embedded_now: int
    without_vector: int
    # The backbone that made the vectors; None for imported ones.
    backbone: Backbone | None = None


def round_space(
    project: ProjectSnapshot, embeddings: EmbeddingStore
) -> tuple[EmbeddingSpace, Backbone | None]:
    """The project's space and the backbone that fills it (None: imported vectors only).

    Raises:
        BackboneError: the backbone or its weights cannot be loaded (the message says why).
    """
    if project.resolved_network == "embeddings":
        return embeddings.space(imported_space_key(project.id)), None
    backbone = resolve_backbone(
        project.resolved_network,
        custom_model=project.custom_backbone,
        custom_weights=project.custom_weights,
        input_size=backbone_input_size(project),
    )
    # Grey and RGB decodings of one file give different vectors: the mode is part of the space.
    mode = "L" if project.image_channels == 1 else "RGB"
    return embeddings.space(f"{backbone.space_key}/decoded-{mode}"), backbone


def backbone_input_size(project: ProjectSnapshot) -> int | None:
    """The side a backbone reads: its default (where its features are good at a CPU's
    cost), or the project's image size when that is larger. None: the default."""
    default = (
        DEFAULT_LITE0_INPUT_SIZE
        if project.resolved_network == "efficientnet_lite0"
        else DEFAULT_CUSTOM_INPUT_SIZE
    )
    return project.image_size if project.image_size > default else None


def embed_round(
    setup: EmbeddingSetup,
    data: RoundData,
    device: torch.device,
    notes: list[str],
) -> EmbeddedRound:
    """Every image of the round as a vector of the project's space, embedding what is missing.

    Items without a vector after the phase (an imported space that does not cover them, or
    an image that fails to decode) are left out of the round, and a note says how many.
    """
    project = data.project
    space, backbone = round_space(project, setup.embeddings)
    items = round_items(data)
    keys = [item.file_key for item in items]
    missing = set(space.missing(keys))
    unique = len(set(keys))
    start_embedding(
        setup.session_factory,
        project_id=project.id,
        space_key=space.space_key,
        total=unique,
        reused=unique - len(missing),
    )
    embedded_now = 0
    if missing and backbone is not None:
        to_embed = _unique_by_key([item for item in items if item.file_key in missing])
        try:
            embedded_now = embed_items(
                setup, project.id, space, backbone, to_embed, device, project.image_channels
            )
        except Exception as exc:  # the dashboard shows why; the round fails with it
            error = f"{type(exc).__name__}: {exc}"
            finish_embedding(
                setup.session_factory, project_id=project.id, space_key=space.space_key, error=error
            )
            raise
    finish_embedding(setup.session_factory, project_id=project.id, space_key=space.space_key)
    # One read of the round's vectors serves the near-duplicate check and the tensors.
    found = space.get([item.file_key for item in items])
    item_ids = [items[int(position)].item_id for position in found.found_positions]
    without = len(items) - len(item_ids)
    if without and backbone is None:
        notes.append(
            f"{without} images have no imported embedding and were left out: import "
            "embeddings for them"
        )
    flagged, skipped = flag_near_duplicates(
        setup.session_factory, project, item_ids, found.vectors_N_D
    )
    if flagged:
        kept = "skipped: never queued or trained on" if skipped else "flagged"
        notes.append(f"{flagged} new images are near duplicates of earlier ones ({kept})")
    if skipped:  # out of the pool; assemble_tensors gathers only the roles' items
        data = replace(data, pool=[item for item in data.pool if item.item_id not in skipped])
    vectors = torch.from_numpy(found.vectors_N_D).to(device)
    tensors = assemble_tensors(data, item_ids, vectors, device)
    return EmbeddedRound(
        tensors=tensors,
        space_key=space.space_key,
        feature_dim=space.dim or 0,
        embedded_now=embedded_now,
        without_vector=without,
        backbone=backbone,
    )


def _unique_by_key(items: Sequence[ItemImage]) -> list[ItemImage]:
    seen: set[str] = set()
    unique = []
    for item in items:
        if item.file_key not in seen:
            seen.add(item.file_key)
            unique.append(item)
    return unique


def embed_items(
    setup: EmbeddingSetup,
    project_id: int,
    space: EmbeddingSpace,
    backbone: Backbone,
    items: Sequence[ItemImage],
    device: torch.device,
    channels: int,
) -> int:
    """Embed `items` into `space` in chunks, offering all but the last chunk to other workers
    and working from the last chunk backwards; returns how many this process embedded."""
    size = setup.chunk_items
    chunks = [list(items[start : start + size]) for start in range(0, len(items), size)]
    if setup.share_chunk is not None:
        for chunk in chunks[:-1]:
            setup.share_chunk(project_id, space.space_key, [item.item_id for item in chunk])
    embedded = 0
    for chunk in reversed(chunks):
        embedded += embed_chunk(setup, project_id, space, backbone, chunk, device, channels)
    return embedded


def embed_chunk(
    setup: EmbeddingSetup,
    project_id: int,
    space: EmbeddingSpace,
    backbone: Backbone,
    items: Sequence[ItemImage],
    device: torch.device,
    channels: int,
) -> int:
    """Embed the items of one chunk that are still missing; count them toward the progress.

    Images that fail to decode are recorded on their items (and never asked for again).
    """
    still_missing = set(space.missing([item.file_key for item in items]))
    pending = [item for item in items if item.file_key in still_missing]
    if not pending:
        return 0
    spec = ImageSpec(backbone.preprocessing.input_size, channels)
    pixels: list[np.ndarray] = []
    kept: list[ItemImage] = []
    failures: dict[int, str] = {}
    for item in pending:
        try:
            data = setup.store.get(item.file_key)
            pixels.append(decode_image(data, spec, max_pixels=setup.max_pixels))
            kept.append(item)
        except Exception as exc:  # an unreadable image must not stop the others
            failures[item.item_id] = f"{type(exc).__name__}: {exc}"
    if failures:
        record_decode_errors(setup.session_factory, failures)
    if kept:
        vectors_N_D = backbone.embed(torch.from_numpy(np.stack(pixels)), device=device)
        space.put([item.file_key for item in kept], vectors_N_D.cpu().numpy())
    add_embedded(
        setup.session_factory,
        project_id=project_id,
        space_key=space.space_key,
        embedded=len(kept),
        failed=len(failures),
    )
    return len(kept)


def flag_near_duplicates(
    session_factory: sessionmaker[Session],
    project: ProjectSnapshot,
    item_ids: Sequence[int],
    vectors_N_D: np.ndarray,
) -> tuple[int, set[int]]:
    """Compare the items added since the last check with the earlier ones; flag each near
    duplicate with the item it resembles (and skip it, per the project's policy).

    Args:
        item_ids: the round's items that have a vector, row by row of `vectors_N_D`.

    Returns:
        How many were flagged, and the ids of the items now skipped.
    """
    if project.near_duplicates == "off" or not item_ids:
        return 0, set()
    with session_factory() as session:
        checked = session.scalar(
            select(EmbeddingProgress.duplicates_checked_through).where(
                EmbeddingProgress.project_id == project.id
            )
        )
    ids_N = np.asarray(item_ids)
    order_N = np.argsort(ids_N, kind="stable")  # a batch's earlier uploads come first
    is_new_N = ids_N[order_N] > (checked or 0)
    new_rows, old_rows = order_N[is_new_N], order_N[~is_new_N]
    if not len(new_rows):
        return 0, set()
    matches = near_duplicates(
        vectors_N_D[new_rows],
        vectors_N_D[old_rows],
        max_distance=project.near_duplicate_distance or DEFAULT_MAX_DISTANCE,
    )
    skip = project.near_duplicates == "skip"
    flagged: dict[int, tuple[int, float]] = {}
    for match in matches:
        twin_row = (new_rows if match.within_batch else old_rows)[match.match_row]
        flagged[int(ids_N[new_rows[match.new_row]])] = (int(ids_N[twin_row]), match.distance)
    with session_factory() as session, session.begin():
        for item_id, (twin_id, distance) in flagged.items():
            session.execute(
                update(Item)
                .where(Item.id == item_id)
                .values(
                    near_duplicate_of=twin_id,
                    near_duplicate_distance=round(distance, 6),
                    duplicate_skipped=(Item.label_count == 0) if skip else False,
                )
            )
        session.execute(
            update(EmbeddingProgress)
            .where(EmbeddingProgress.project_id == project.id)
            .values(duplicates_checked_through=int(ids_N[new_rows[-1]]))
        )
    if flagged:
        log.info("flagged %d near duplicates in project %s", len(flagged), project.id)
    return len(flagged), set(flagged) if skip else set()


def embed_shared_chunk(
    setup: EmbeddingSetup, project_id: int, space_key: str, item_ids: Sequence[int]
) -> int:
    """A chunk another worker's round offered (worker.tasks): embed what is still missing.

    Nothing happens when the project is gone or has moved to another space since: the
    round that offered the chunk embeds whatever it still needs itself.
    """
    with setup.session_factory() as session:
        project = session.get(Project, project_id)
        if project is None:
            return 0
        snapshot = ProjectSnapshot.of(project)
        rows = session.execute(
            select(Item.id, Item.file_key).where(
                Item.project_id == project_id, Item.id.in_(list(item_ids))
            )
        ).all()
    if not snapshot.learns_on_embeddings:
        return 0
    space, backbone = round_space(snapshot, setup.embeddings)
    if backbone is None or space.space_key != space_key:
        return 0
    items = [ItemImage(item_id, file_key) for item_id, file_key in rows]
    return embed_chunk(
        setup, project_id, space, backbone, items, pick_device(), snapshot.image_channels
    )

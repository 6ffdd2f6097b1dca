"""Rounds on frozen features (worker.round.embed): an RGB project on the shipped
EfficientNet-Lite0, in-process on SQLite with real images and real weights.

What the issue asks of them: the first round embeds, later rounds embed nothing new; a
settings change re-embeds in a new space; before any label the queue is a cold start over
the embeddings; near duplicates are flagged or skipped; a bad weights file fails the round
with a message a person understands while the previous queue stays served; chunks can be
shared with another worker.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import uuid
from dataclasses import dataclass, field

import numpy as np
import pytest
from PIL import Image, ImageDraw
from round_support import queue_round, round_row
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.embeddings import EmbeddingStore
from core.storage import LocalImageStore
from core.tables import (
    EmbeddingProgress,
    Item,
    Label,
    Project,
    QueueEntry,
    RoundStatus,
    Split,
)
from worker.round.embed import embed_shared_chunk
from worker.round.run import WorkerContext, run_round

SHAPES = ("circle", "square", "triangle")


def shape_png(shape: str, seed: int, size: int = 64, fmt: str = "PNG") -> bytes:
    """A coloured shape on a coloured background, placed and sized at random."""
    rng = np.random.default_rng(seed)
    background = tuple(int(v) for v in rng.integers(0, 120, 3))
    colour = tuple(int(v) for v in rng.integers(140, 256, 3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    half = int(rng.integers(size // 5, size // 3))
    cx, cy = (int(v) for v in rng.integers(half + 2, size - half - 2, 2))
    box = (cx - half, cy - half, cx + half, cy + half)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)], fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=90)
    return buffer.getvalue()


@dataclass
class ShapesProject:
    project_id: int
    truth: dict[int, str]
    pool_ids: list[int]
    annotator_id: int
    store: LocalImageStore
    labelled: list[int] = field(default_factory=list)


def insert_shapes_project(
    session: Session, store: LocalImageStore, *, pool: int, validation: int, **settings: object
) -> ShapesProject:
    from core.tables import Annotator, Role

    project = Project(
        name=f"shapes-{uuid.uuid4().hex[:8]}",
        classes=list(SHAPES),
        **{
            "strategy": "batchbald",
            "query_size": 5,
            "queue_size": 12,
            "mc_samples": 10,
            "image_size": 64,
            "image_channels": 3,
            "seed": 0,
            **settings,
        },
    )
    annotator = Annotator(
        name=f"annotator-{uuid.uuid4().hex[:8]}",
        role=Role.annotator,
        token_hash=hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
    )
    session.add_all([project, annotator])
    session.flush()
    truth: dict[int, str] = {}
    pool_ids: list[int] = []
    for n in range(pool + validation):
        shape = SHAPES[n % 3]
        split = Split.pool if n < pool else Split.validation
        item = add_item(session, store, project.id, shape_png(shape, n), split, shape, n)
        truth[item.id] = shape
        if split == Split.pool:
            pool_ids.append(item.id)
    session.commit()
    return ShapesProject(project.id, truth, pool_ids, annotator.id, store)


def add_item(
    session: Session,
    store: LocalImageStore,
    project_id: int,
    data: bytes,
    split: Split,
    shape: str,
    n: int,
) -> Item:
    item = Item(
        project_id=project_id,
        filename=f"{shape}-{n}.png",
        file_key=store.put(data),
        sha256=hashlib.sha256(data).hexdigest(),
        width=64,
        height=64,
        split=split,
        known_label=shape if split == Split.validation else None,
        label_count=0,
        random_key=n * 7919 % 1000,
    )
    session.add(item)
    session.flush()
    return item


def label(session: Session, project: ShapesProject, item_ids: list[int]) -> None:
    for item_id in item_ids:
        session.add(
            Label(
                project_id=project.project_id,
                item_id=item_id,
                annotator_id=project.annotator_id,
                label=project.truth[item_id],
                is_current=True,
                undone=False,
            )
        )
        session.execute(update(Item).where(Item.id == item_id).values(label_count=1))
        project.labelled.append(item_id)
    session.commit()


def run(context: WorkerContext, session: Session, project_id: int) -> dict[str, object]:
    round_id = queue_round(session, project_id)
    outcome = run_round(round_id, settings=context.settings, context=context)
    row = round_row(session, round_id)
    assert row is not None
    return {"outcome": outcome, "row": row, "id": round_id}


def queue_of(session: Session, round_id: int) -> list[QueueEntry]:
    session.expire_all()
    query = select(QueueEntry).where(QueueEntry.round_id == round_id).order_by(QueueEntry.rank)
    return list(session.scalars(query))


@pytest.fixture
def shapes(wk_session: Session, wk_context: WorkerContext) -> ShapesProject:
    store = LocalImageStore(wk_context.settings.image_dir)
    return insert_shapes_project(wk_session, store, pool=45, validation=24)


def test_an_rgb_project_embeds_once_cold_starts_then_learns_on_the_embeddings(
    wk_context: WorkerContext, wk_session: Session, shapes: ShapesProject
) -> None:
    first = run(wk_context, wk_session, shapes.project_id)

    assert first["outcome"].status == "done", first["outcome"]  # type: ignore[attr-defined]
    row = first["row"]
    metrics = row.metrics  # type: ignore[attr-defined]
    assert metrics["network"] == "efficientnet_lite0"
    assert metrics["embedding_space"].startswith("efficientnet_lite0/sha256:")
    assert metrics["strategy"] == "typiclust" and "cold start" in metrics["note"]
    assert "embed" in row.timings  # type: ignore[attr-defined]
    queue = queue_of(wk_session, first["id"])  # type: ignore[arg-type]
    assert len(queue) == 12 and {entry.strategy for entry in queue} == {"typiclust"}
    assert {entry.item_id for entry in queue} <= set(shapes.pool_ids)
    progress = wk_session.get(EmbeddingProgress, shapes.project_id)
    assert progress is not None and progress.state == "done"
    assert (progress.total, progress.embedded, progress.reused) == (69, 69, 0)

    label(wk_session, shapes, shapes.pool_ids[:15])
    second = run(wk_context, wk_session, shapes.project_id)

    assert second["outcome"].status == "done", second["outcome"]  # type: ignore[attr-defined]
    metrics = second["row"].metrics  # type: ignore[attr-defined]
    assert metrics["embedded_now"] == 0  # every vector came from the store
    assert metrics["strategy"] == "batchbald" and metrics["train_items"] == 15
    # Coloured shapes on frozen ImageNet features: five labels per class go a long way.
    assert metrics["accuracy"] >= 0.7, metrics
    queue = queue_of(wk_session, second["id"])  # type: ignore[arg-type]
    assert [entry.strategy for entry in queue[:5]] == ["batchbald"] * 5


def test_a_settings_change_embeds_in_a_new_space_and_never_mixes_the_two(
    wk_context: WorkerContext, wk_session: Session, shapes: ShapesProject
) -> None:
    first = run(wk_context, wk_session, shapes.project_id)["row"].metrics  # type: ignore[attr-defined]
    wk_session.execute(
        update(Project).where(Project.id == shapes.project_id).values(image_channels=1)
    )
    wk_session.commit()

    second = run(wk_context, wk_session, shapes.project_id)["row"].metrics  # type: ignore[attr-defined]

    assert second["embedding_space"] != first["embedding_space"]
    assert second["embedding_space"].endswith("decoded-L")
    assert second["embedded_now"] == 69
    store = EmbeddingStore(wk_context.settings.embedding_dir)
    assert len(store.space(first["embedding_space"])) == 69
    assert len(store.space(second["embedding_space"])) == 69


def photo_crop(name: str, top: int, left: int, *, side: int = 200, fmt: str = "PNG") -> bytes:
    """A crop of one of scikit-learn's sample photos, as PNG or JPEG."""
    from sklearn.datasets import load_sample_image

    image = Image.fromarray(load_sample_image(name)[top : top + side, left : left + side])
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=90)
    return buffer.getvalue()


def test_near_duplicates_are_flagged_and_under_skip_never_queued(
    wk_context: WorkerContext, wk_session: Session, shapes: ShapesProject
) -> None:
    run(wk_context, wk_session, shapes.project_id)
    wk_session.execute(
        update(Project).where(Project.id == shapes.project_id).values(near_duplicates="skip")
    )
    uploads = {
        "original": photo_crop("china.jpg", 100, 150),
        # The same photo re-encoded as JPEG: what a second export of it looks like.
        "copy": photo_crop("china.jpg", 100, 150, fmt="JPEG"),
        "other": photo_crop("flower.jpg", 100, 150),
    }
    added = {
        name: add_item(wk_session, shapes.store, shapes.project_id, data, Split.pool, name, n)
        for n, (name, data) in enumerate(uploads.items(), start=1000)
    }
    wk_session.commit()

    second = run(wk_context, wk_session, shapes.project_id)

    wk_session.expire_all()
    copy = wk_session.get_one(Item, added["copy"].id)
    assert copy.near_duplicate_of == added["original"].id
    assert copy.near_duplicate_distance is not None and copy.near_duplicate_distance < 0.03
    assert copy.duplicate_skipped
    for name in ("original", "other"):
        assert wk_session.get_one(Item, added[name].id).near_duplicate_of is None
    queued = {entry.item_id for entry in queue_of(wk_session, second["id"])}  # type: ignore[arg-type]
    assert added["copy"].id not in queued
    assert second["row"].metrics["pool_items"] == 45 + 2  # type: ignore[attr-defined]


def test_a_bad_weights_file_fails_the_round_with_a_clear_message_and_the_old_queue_stays(
    wk_context: WorkerContext, wk_session: Session, shapes: ShapesProject, tmp_path: object
) -> None:
    first = run(wk_context, wk_session, shapes.project_id)
    wk_session.execute(
        update(Project)
        .where(Project.id == shapes.project_id)
        .values(
            network="custom",
            custom_backbone="torchvision:resnet18",
            custom_weights="/nonexistent/team-weights.pt",
        )
    )
    wk_session.commit()

    failed = run(wk_context, wk_session, shapes.project_id)

    assert failed["row"].status == RoundStatus.failed  # type: ignore[attr-defined]
    error = failed["row"].error  # type: ignore[attr-defined]
    assert "/nonexistent/team-weights.pt" in error and "BackboneError" in error
    # The last done round, and so the queue `next` serves, is still the first one.
    assert len(queue_of(wk_session, first["id"])) == 12  # type: ignore[arg-type]


def test_chunks_offered_to_other_workers_are_embedded_by_them(
    wk_context: WorkerContext, wk_session: Session, shapes: ShapesProject
) -> None:
    offered: list[tuple[int, str, list[int]]] = []
    wk_context.settings.embedding_chunk_items = 20
    # Another worker takes the first chunk before the round gets to it (the round works
    # backwards from the last chunk): here, as soon as it is offered.
    # Another process: a store of its own over the same directory.
    helper_setup = dataclasses.replace(
        wk_context.embedding_setup(),
        embeddings=EmbeddingStore(wk_context.settings.embedding_dir),
    )
    taken: list[int] = []

    def offer_and_take(project_id: int, space: str, ids: list[int]) -> None:
        offered.append((project_id, space, ids))
        if not taken:
            taken.append(embed_shared_chunk(helper_setup, project_id, space, ids))

    wk_context.share_chunk = offer_and_take

    done = run(wk_context, wk_session, shapes.project_id)

    assert done["outcome"].status == "done"  # type: ignore[attr-defined]
    assert [len(ids) for _, _, ids in offered] == [20, 20, 20]  # 69 images: 3 offered, 9 kept
    assert taken == [20]
    assert done["row"].metrics["embedded_now"] == 69 - 20  # type: ignore[attr-defined]
    progress = wk_session.get_one(EmbeddingProgress, shapes.project_id)
    wk_session.refresh(progress)
    assert progress.embedded == 69 and progress.state == "done"


def test_a_settings_change_during_the_embed_phase_never_mixes_spaces_in_one_round(
    wk_context: WorkerContext,
    wk_session: Session,
    shapes: ShapesProject,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker.round import embed

    real_embed_items = embed.embed_items

    def change_settings_then_embed(*args: object, **kwargs: object) -> int:
        # Another admin switches the project to grey while this round embeds in RGB.
        with wk_context.session_factory() as session, session.begin():
            session.execute(
                update(Project).where(Project.id == shapes.project_id).values(image_channels=1)
            )
        return real_embed_items(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(embed, "embed_items", change_settings_then_embed)
    during = run(wk_context, wk_session, shapes.project_id)["row"].metrics  # type: ignore[attr-defined]
    monkeypatch.setattr(embed, "embed_items", real_embed_items)
    after = run(wk_context, wk_session, shapes.project_id)["row"].metrics  # type: ignore[attr-defined]

    assert during["embedding_space"].endswith("decoded-RGB") and during["embedded_now"] == 69
    assert after["embedding_space"].endswith("decoded-L") and after["embedded_now"] == 69
    store = EmbeddingStore(wk_context.settings.embedding_dir)
    assert len(store.space(during["embedding_space"])) == 69  # nothing grey landed in it


def test_the_exported_model_of_a_round_on_a_backbone_reads_images_and_reproduces_it(
    wk_context: WorkerContext, wk_session: Session, shapes: ShapesProject
) -> None:
    import json

    import torch

    from core.storage import ModelStore
    from core.tables import Prediction

    label(wk_session, shapes, shapes.pool_ids[:12])
    done = run(wk_context, wk_session, shapes.project_id)
    assert done["outcome"].status == "done", done["outcome"]  # type: ignore[attr-defined]

    stored = ModelStore(wk_context.settings.model_dir).get(shapes.project_id, done["id"])  # type: ignore[arg-type]
    assert stored is not None
    card = json.loads(stored.card_path.read_text())
    model = torch.jit.load(str(stored.model_path), map_location="cpu").eval()
    size, mode = card["preprocessing"]["image_size"], card["preprocessing"]["mode"]
    assert (card["network"], size, mode) == ("efficientnet_lite0", 160, "RGB")
    predictions = {
        row.item_id: row.probabilities
        for row in wk_session.scalars(select(Prediction).where(Prediction.round_id == done["id"]))
    }
    unlabelled = [i for i in shapes.pool_ids if i not in shapes.labelled][:20]
    images = []
    for item_id in unlabelled:
        item = wk_session.get_one(Item, item_id)
        image = Image.open(io.BytesIO(shapes.store.get(item.file_key))).convert(mode)
        image = image.resize((size, size), Image.Resampling.BILINEAR)
        images.append(np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255)
    with torch.no_grad():
        probs = model(torch.from_numpy(np.stack(images))).numpy()

    expected = np.array([predictions[item_id] for item_id in unlabelled])
    np.testing.assert_allclose(probs, expected, atol=1e-4)
    assert card["check"]["items"] == 20 and card["check"]["max_abs_difference"] < 1e-4

"""One active-learning round: claim → load → train → evaluate → infer → select → write.

`_execute` is the spine; each phase lives with its job: reading and decoding
(worker.round.data), the model (worker.round.model), the queue plan (worker.round.plan), the
trained model saved for export (worker.round.artifact) and the fenced write
(worker.round.write). Claiming, fencing, follow-ups and recovery are the round lifecycle's,
in core.rounds: the queue, predictions, metrics and status of a round land in one
transaction or not at all.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, make_session_factory
from core.embeddings import EmbeddingStore
from core.report import FitSummary, PhaseTimings, RoundMetrics, stored
from core.rounds import (
    Claim,
    RoundAbandoned,
    RoundOutcome,
    Send,
    claim_round,
    current_worker_id,
    enqueue_follow_up,
    ensure_still_ours,
)
from core.settings import Settings
from core.storage import ImageStore, LocalImageStore, ModelStore
from worker.engine.images import ImageCache
from worker.engine.training import TrainConfig, pick_device
from worker.round.artifact import ModelInput, backbone_input, pixel_input, save_round_model
from worker.round.data import (
    POOL_USED_UP_NOTE,
    RoundData,
    RoundTensors,
    load_round_data,
    load_tensors,
    record_start,
)
from worker.round.embed import EmbeddedRound, EmbeddingSetup, ShareChunk, embed_round
from worker.round.model import evaluate_model, infer_pool, train_model
from worker.round.plan import plan_cold_start, plan_queue
from worker.round.write import mark_failed, set_note, write_first_round, write_round

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    """What every round of one worker process shares: database, images, the way to enqueue."""

    settings: Settings
    session_factory: sessionmaker[Session]
    store: ImageStore
    images: ImageCache
    # Sends a queued round to the broker (a RoundDispatcher's `send` in a worker process).
    enqueue: Send = None
    worker_id: str = field(default_factory=current_worker_id)
    # The training schedule; each round replaces its seed. (Tests and benches shorten it.)
    train_config: TrainConfig = field(default_factory=TrainConfig)
    embeddings: EmbeddingStore | None = None
    # Offers embedding chunks to other workers (worker.tasks); None: embed them all here.
    share_chunk: ShareChunk = None

    def embedding_setup(self) -> EmbeddingSetup:
        return EmbeddingSetup(
            store=self.store,
            embeddings=self.embeddings or EmbeddingStore(self.settings.embedding_dir),
            session_factory=self.session_factory,
            chunk_items=self.settings.embedding_chunk_items,
            max_pixels=self.settings.max_image_pixels,
            share_chunk=self.share_chunk,
        )

    @classmethod
    def from_settings(cls, settings: Settings, *, enqueue: Send = None) -> WorkerContext:
        engine = make_engine(settings.resolved_database_url)
        return cls(
            settings=settings,
            session_factory=make_session_factory(engine),
            store=LocalImageStore(settings.image_dir),
            images=ImageCache(settings.cache_dir, max_pixels=settings.max_image_pixels),
            enqueue=enqueue,
            embeddings=EmbeddingStore(settings.embedding_dir),
        )


class PhaseTimer:
    """Seconds per phase, in the order they ran; a phase still open counts up to now."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self._open: tuple[str, float] | None = None

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        self._open = (name, started)
        try:
            yield
        finally:
            self._open = None
            self.seconds[name] = round(time.perf_counter() - started, 4)

    def as_dict(self) -> dict[str, float]:
        now = time.perf_counter()
        seconds = dict(self.seconds)
        if self._open is not None:
            seconds[self._open[0]] = round(now - self._open[1], 4)
        return {**seconds, "total": round(now - self.started, 4)}

    def stored(self) -> dict[str, object]:
        """The timings as the round's report stores them (core.report.PhaseTimings)."""
        return stored(PhaseTimings.model_validate(self.as_dict()))


# --------------------------------------------------------------------------- the round


def run_round(
    round_id: int, *, settings: Settings, context: WorkerContext | None = None
) -> RoundOutcome:
    """Run round `round_id` to done, failed or skipped; safe to call twice for one round.

    Args:
        round_id: the `Round` row to run.
        settings: where the database and images are (used when `context` is None).
        context: a worker process's shared resources (image cache, sessions, enqueue).
    """
    ctx = context or WorkerContext.from_settings(settings)
    claimed = claim_round(
        session_factory=ctx.session_factory, round_id=round_id, worker_id=ctx.worker_id
    )
    if isinstance(claimed, RoundOutcome):
        log.info("round %s not run: %s", round_id, claimed.reason)
        return claimed
    timer = PhaseTimer()
    try:
        _execute(ctx, claimed, timer)
    except RoundAbandoned as stop:
        log.info("round %s abandoned: %s", round_id, stop)
        return RoundOutcome(round_id, "skipped", str(stop))
    except Exception as exc:
        log.exception("round %s failed", round_id)
        error = f"{type(exc).__name__}: {exc}"
        mark_failed(ctx.session_factory, claimed, error, timer.stored())
        return RoundOutcome(round_id, "failed", str(exc))
    next_round = enqueue_follow_up(
        session_factory=ctx.session_factory, project_id=claimed.project_id, send=ctx.enqueue
    )
    return RoundOutcome(round_id, "done", next_round_id=next_round)


def round_seed(project_seed: int, round_id: int) -> int:
    """The seed of one round's network init, dropout masks, batches and selection noise.

    Hashed rather than ``project_seed + round_id``: with the sum, seed s's round r + 1 drew
    exactly what seed s + 1's round r drew, so a benchmark's "independent" seeds shared
    their random streams one round apart.
    """
    digest = hashlib.blake2b(f"{project_seed}/{round_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1  # 63 bits: every torch and numpy seed takes it


def _execute(ctx: WorkerContext, claim: Claim, timer: PhaseTimer) -> None:
    notes: list[str] = []
    with timer.phase("load"):
        data = load_round_data(ctx.session_factory, claim)
        record_start(ctx.session_factory, claim, data)
        device = pick_device()
        if not data.project.learns_on_embeddings:
            tensors = load_tensors(ctx.session_factory, ctx.images, ctx.store, data, device)
    project = data.project
    seed = round_seed(project.seed, claim.round_id)
    embedded: EmbeddedRound | None = None
    if project.learns_on_embeddings:
        with timer.phase("embed"):
            embedded = embed_round(ctx.embedding_setup(), data, device, notes)
        tensors = embedded.tensors
        ensure_still_ours(session_factory=ctx.session_factory, claim=claim)
    if len(tensors.y_train) == 0:
        _write_first_queue(ctx, claim, data, tensors, embedded, seed, device, timer)
        return
    with timer.phase("train"):
        model, fit_report = train_model(
            data,
            tensors,
            replace(ctx.train_config, seed=seed),
            device,
            feature_dim=embedded.feature_dim if embedded else None,
        )
    ensure_still_ours(session_factory=ctx.session_factory, claim=claim)
    with timer.phase("evaluate"):
        quality = evaluate_model(model, data, tensors, seed, device, notes)
    with timer.phase("infer"):
        log_probs_N_K_C = infer_pool(model, tensors, project, seed, device)
    ensure_still_ours(session_factory=ctx.session_factory, claim=claim)
    with timer.phase("select"):
        strategy, plan = plan_queue(project, log_probs_N_K_C, seed, notes)
    if not tensors.pool_ids:
        notes.append(POOL_USED_UP_NOTE)
    metrics = RoundMetrics(
        **quality,
        train_items=len(tensors.y_train),
        labels_used=data.labels_used,
        pool_items=len(tensors.pool_ids),
        queue_items=0 if plan is None else len(plan.indices),
        decode_failures=tensors.decode_failures,
        fit=FitSummary(
            epochs=fit_report.epochs,
            steps=fit_report.steps,
            early_stopped=fit_report.early_stopped,
            best_validation_nll=fit_report.best_validation_nll,
            best_validation_accuracy=fit_report.best_validation_accuracy,
            stopped_on=ctx.train_config.stop_on,
            seconds=round(fit_report.seconds, 3),
        ),
        mc_samples=project.mc_samples,
        network=project.resolved_network,
        embedding_space=embedded.space_key if embedded else None,
        embedded_now=embedded.embedded_now if embedded else None,
        strategy=strategy,
        device=str(device),
        attempt=claim.attempt,
        note="; ".join(notes) or None,
    )
    with timer.phase("write"):
        write_round(
            ctx.session_factory,
            ctx.worker_id,
            claim,
            data,
            strategy,
            tensors.pool_ids,
            log_probs_N_K_C,
            plan,
            metrics,
            timer.stored,
        )
    # After the write, so annotators get the new queue without waiting for the export
    # (tracing a backbone into TorchScript costs seconds); `next` serves it meanwhile, and
    # the model export serves the newest round whose model is saved.
    saved = save_round_model(
        store=ModelStore(ctx.settings.model_dir),
        session_factory=ctx.session_factory,
        claim=claim,
        data=data,
        tensors=tensors,
        model=model,
        seed=seed,
        log_probs_N_K_C=log_probs_N_K_C,
        metrics=metrics,
        model_input=_model_input(ctx, data, tensors, embedded),
    )
    if saved.note != metrics.note:
        set_note(ctx.session_factory, claim, saved.note)


def _write_first_queue(
    ctx: WorkerContext,
    claim: Claim,
    data: RoundData,
    tensors: RoundTensors,
    embedded: EmbeddedRound | None,
    seed: int,
    device: torch.device,
    timer: PhaseTimer,
) -> None:
    """No labels to train on: the cold start over the embeddings, or seeded random order."""
    cold_start = None
    if embedded is not None and tensors.pool_ids:
        with timer.phase("select"):
            cold_start = plan_cold_start(data.project, tensors.x_pool, seed)
    with timer.phase("write"):
        write_first_round(
            ctx.session_factory,
            ctx.worker_id,
            claim,
            data,
            tensors,
            timer.stored,
            device,
            cold_start=cold_start,
            embedding_space=embedded.space_key if embedded else None,
            embedded_now=embedded.embedded_now if embedded else None,
        )


def _model_input(
    ctx: WorkerContext, data: RoundData, tensors: RoundTensors, embedded: EmbeddedRound | None
) -> ModelInput | None:
    """What the exported model reads: the round's pixels, or images through its backbone
    (None: imported embeddings, which no exported model could compute)."""
    if embedded is None:
        return pixel_input(data, tensors)
    if embedded.backbone is None:
        return None
    return backbone_input(
        ctx.store, data, tensors, embedded.backbone, max_pixels=ctx.settings.max_image_pixels
    )

"""One active-learning round: claim → load → train → evaluate → infer → select → write.

The database row of the round is the truth and the only lock:
- claiming moves it queued → running (attempts + 1) with a conditional UPDATE, so two
  deliveries of one task cannot both run it;
- the attempt number is a fencing token: every later write is `WHERE status = 'running' AND
  attempts = <mine>`, so a worker that was given up on (or whose project was deleted) writes
  nothing, and the queue, predictions, metrics and status land in one transaction or not at all.

A killed worker leaves its round `running`; `recover_rounds` (run when a worker starts) and a
redelivered task both rerun it from scratch, and give up after MAX_ATTEMPTS.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import torch
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core.broker import VISIBILITY_TIMEOUT_SECONDS
from core.catalog import BAYESIAN_STRATEGIES
from core.db import make_engine, make_session_factory
from core.dispatch import due_for_dispatch
from core.report import FitSummary, PhaseTimings, RoundMetrics, stored
from core.rounds import labels_until_retrain, open_round
from core.settings import Settings
from core.storage import ImageStore, LocalImageStore
from core.tables import (
    ACTIVE_ROUND_STATUSES,
    Item,
    Label,
    Prediction,
    Project,
    QueueEntry,
    Round,
    RoundStatus,
    Split,
    is_current,
)
from worker.engine.acquisition import select as acquire
from worker.engine.images import ImageCache, ImageSpec, ItemImage
from worker.engine.networks import MCDropoutNetwork, NetworkSpec, build_network
from worker.engine.training import (
    FitReport,
    TrainConfig,
    evaluate,
    fit,
    mc_log_probs,
    pick_device,
)

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
# A running round whose worker can't be checked (another host) is presumed dead after this
# long: the broker's visibility timeout, after which Redis redelivers its message anyway.
STALE_RUNNING_SECONDS = VISIBILITY_TIMEOUT_SECONDS
NO_VALIDATION_NOTE = "no validation items"
NO_LABELS_NOTE = "no labels yet: the queue is the pool in seeded random order"
POOL_USED_UP_NOTE = "pool used up: no unlabelled items left to queue"
# Validation items are split so that the accuracy a round reports never comes from the items
# that chose its epoch: one in STOPPING_SHARE (at most the paper's 1,024) only steers early
# stopping, the rest only measure. Smaller validation sets are used whole for both.
STOPPING_SHARE = 4
MAX_STOPPING_ITEMS = 1_024
MIN_VALIDATION_TO_SPLIT = 200


# --------------------------------------------------------------------------- context


def current_worker_id() -> str:
    """`host:pid`, recorded on a running round so a restarted worker can tell it was orphaned."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class WorkerContext:
    """What every round of one worker process shares: database, images, the way to enqueue."""

    settings: Settings
    session_factory: sessionmaker[Session]
    store: ImageStore
    images: ImageCache
    # Sends a queued round to the broker (a RoundDispatcher's `send` in a worker process).
    enqueue: Callable[[int], object] | None = None
    worker_id: str = field(default_factory=current_worker_id)
    # The training schedule; each round replaces its seed. (Tests and benches shorten it.)
    train_config: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, enqueue: Callable[[int], object] | None = None
    ) -> WorkerContext:
        engine = make_engine(settings.resolved_database_url)
        return cls(
            settings=settings,
            session_factory=make_session_factory(engine),
            store=LocalImageStore(settings.image_dir),
            images=ImageCache(settings.cache_dir, max_pixels=settings.max_image_pixels),
            enqueue=enqueue,
        )


@dataclass(frozen=True)
class RoundOutcome:
    """What happened to a round: done, failed, or skipped (nothing written) and why."""

    round_id: int
    status: str
    reason: str = ""
    next_round_id: int | None = None


class RoundAbandoned(Exception):
    """The round row is gone (project deleted) or no longer ours: stop and write nothing."""


# --------------------------------------------------------------------------- snapshot


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
        )


@dataclass(frozen=True)
class _Claim:
    round_id: int
    project_id: int
    attempt: int


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
class _Tensors:
    """The round's inputs, decoded once and moved to the device once."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_stop: torch.Tensor
    y_stop: torch.Tensor
    x_pool: torch.Tensor
    pool_ids: list[int]
    decode_failures: int


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
    claimed = claim_round(ctx, round_id)
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
        _mark_failed(ctx, claimed, f"{type(exc).__name__}: {exc}", timer)
        return RoundOutcome(round_id, "failed", str(exc))
    next_round = enqueue_follow_up(ctx, claimed.project_id)
    return RoundOutcome(round_id, "done", next_round_id=next_round)


def round_seed(project_seed: int, round_id: int) -> int:
    """The seed of one round's network init, dropout masks, batches and selection noise.

    Hashed rather than ``project_seed + round_id``: with the sum, seed s's round r + 1 drew
    exactly what seed s + 1's round r drew, so a benchmark's "independent" seeds shared
    their random streams one round apart.
    """
    digest = hashlib.blake2b(f"{project_seed}/{round_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1  # 63 bits: every torch and numpy seed takes it


def _execute(ctx: WorkerContext, claim: _Claim, timer: PhaseTimer) -> None:
    with timer.phase("load"):
        data = load_round_data(ctx, claim)
        _record_start(ctx, claim, data)
        device = pick_device()
        tensors = _load_tensors(ctx, data, device)
    project = data.project
    seed = round_seed(project.seed, claim.round_id)
    notes: list[str] = []
    if len(tensors.y_train) == 0:
        _write_random_round(ctx, claim, data, tensors, timer, device)
        return
    with timer.phase("train"):
        model, fit_report = _train(data, tensors, replace(ctx.train_config, seed=seed), device)
    _ensure_still_ours(ctx, claim)
    with timer.phase("evaluate"):
        quality = _evaluate(model, data, tensors, seed, device, notes)
    with timer.phase("infer"):
        log_probs_N_K_C = _infer(model, tensors, project, seed, device)
    _ensure_still_ours(ctx, claim)
    with timer.phase("select"):
        strategy, plan = _select(project, log_probs_N_K_C, seed, notes)
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
        strategy=strategy,
        device=str(device),
        attempt=claim.attempt,
        note="; ".join(notes) or None,
    )
    with timer.phase("write"):
        _write_round(
            ctx, claim, data, strategy, tensors.pool_ids, log_probs_N_K_C, plan, metrics, timer
        )


# --------------------------------------------------------------------------- claim


def claim_round(ctx: WorkerContext, round_id: int) -> _Claim | RoundOutcome:
    """Move the round to running (attempts + 1) in its own transaction, or say why not."""
    now = datetime.now(UTC)
    with ctx.session_factory() as session, session.begin():
        rnd = session.get(Round, round_id)
        if rnd is None:
            return RoundOutcome(round_id, "skipped", "round no longer exists")
        if rnd.status in (RoundStatus.done, RoundStatus.failed):
            return RoundOutcome(round_id, "skipped", f"already {rnd.status.value}")
        if rnd.status == RoundStatus.running and not owner_is_dead(rnd, now, ctx.worker_id):
            owner = _owner(rnd)
            return RoundOutcome(round_id, "skipped", f"running in live worker {owner}")
        if rnd.attempts >= MAX_ATTEMPTS:
            error = f"gave up after {rnd.attempts} attempts (worker lost each time)"
            _finish_conditionally(session, rnd, RoundStatus.failed, error=error, now=now)
            return RoundOutcome(round_id, "failed", error)
        attempt = rnd.attempts + 1
        claimed = session.execute(
            update(Round)
            .where(
                Round.id == round_id,
                Round.status == rnd.status,
                Round.attempts == rnd.attempts,
            )
            .values(
                status=RoundStatus.running,
                attempts=attempt,
                started_at=now,
                finished_at=None,
                error=None,
                metrics=stored(RoundMetrics(worker=ctx.worker_id)),
                timings={},
            )
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            return RoundOutcome(round_id, "skipped", "claimed by another worker")
        return _Claim(round_id, rnd.project_id, attempt)


def _finish_conditionally(
    session: Session, rnd: Round, status: RoundStatus, *, error: str, now: datetime
) -> None:
    session.execute(
        update(Round)
        .where(Round.id == rnd.id, Round.status == rnd.status, Round.attempts == rnd.attempts)
        .values(status=status, error=error, finished_at=now)
        .execution_options(synchronize_session=False)
    )


def owner_is_dead(rnd: Round, now: datetime, me: str) -> bool:
    """Whether the worker that marked `rnd` running is gone.

    Same host: the recorded pid is this process (so a previous life of it) or no longer runs.
    Another host: it can't be asked, so it is presumed dead once STALE_RUNNING_SECONDS have
    passed since the round started.
    """
    owner = _owner(rnd) or ""
    host, _, pid_text = owner.rpartition(":")
    my_host, _, my_pid = me.rpartition(":")
    if host and host == my_host and pid_text.isdigit():
        return pid_text == my_pid or not pid_alive(int(pid_text))
    started = rnd.started_at
    if started is None:
        return True
    if started.tzinfo is None:  # SQLite hands back naive datetimes
        started = started.replace(tzinfo=UTC)
    return now - started > timedelta(seconds=STALE_RUNNING_SECONDS)


def _owner(rnd: Round) -> str | None:
    """`host:pid` of the worker that claimed the round, from its report."""
    return RoundMetrics.model_validate(rnd.metrics or {}).worker


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) still answers kill(0)
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _ensure_still_ours(ctx: WorkerContext, claim: _Claim) -> None:
    """Stop early when the project was deleted or the round handed to another attempt."""
    with ctx.session_factory() as session:
        row = session.execute(
            select(Round.status, Round.attempts).where(Round.id == claim.round_id)
        ).one_or_none()
    if row is None:
        raise RoundAbandoned("round deleted (its project was deleted)")
    if row.status != RoundStatus.running or row.attempts != claim.attempt:
        raise RoundAbandoned(f"round is {row.status.value}, attempt {row.attempts}: not ours")


# --------------------------------------------------------------------------- load


def load_round_data(ctx: WorkerContext, claim: _Claim) -> RoundData:
    """Read the project, its labels, validation items and unlabelled pool in one snapshot."""
    with ctx.session_factory() as session, session.begin():
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
        )
        .order_by(Item.random_key, Item.id)  # the seeded random order the API serves
    ).all()
    return [ItemImage(item_id, key) for item_id, key in rows]


def _record_start(ctx: WorkerContext, claim: _Claim, data: RoundData) -> None:
    """Store the watermark now: labels made from here on count toward the next round."""
    with ctx.session_factory() as session, session.begin():
        result = session.execute(
            _fenced(claim).values(
                label_watermark=data.label_watermark, labels_used=data.labels_used
            )
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise RoundAbandoned("round deleted or taken over before loading finished")


def _fenced(claim: _Claim) -> Any:
    return update(Round).where(
        Round.id == claim.round_id,
        Round.status == RoundStatus.running,
        Round.attempts == claim.attempt,
    )


def _load_tensors(ctx: WorkerContext, data: RoundData, device: torch.device) -> _Tensors:
    """Decode (or fetch from the cache) every image once and move them to the device once."""
    project = data.project
    wanted = [it for it, _ in data.train] + [it for it, _ in data.validation] + data.pool
    decoded = ctx.images.load(
        project_id=project.id,
        items=wanted,
        spec=ImageSpec(project.image_size, project.image_channels),
        store=ctx.store,
    )
    if decoded.failures:
        _record_decode_errors(ctx, decoded.failures)
    row_of = {item_id: row for row, item_id in enumerate(decoded.item_ids)}
    pixels = decoded.pixels_N_C_H_W.to(device)

    def gather(items: Sequence[ItemImage]) -> tuple[torch.Tensor, list[int]]:
        kept = [it.item_id for it in items if it.item_id in row_of]
        rows = torch.tensor([row_of[i] for i in kept], dtype=torch.long, device=device)
        return pixels.index_select(0, rows).float().div_(255.0), kept

    train_items = [it for it, _ in data.train]
    train_class = {it.item_id: c for it, c in data.train}
    val_class = {it.item_id: c for it, c in data.validation}
    x_train, train_ids = gather(train_items)
    stopping, reporting = split_validation([it for it, _ in data.validation])
    x_val, val_ids = gather(reporting)
    x_stop, stop_ids = gather(stopping)
    x_pool, pool_ids = gather(data.pool)

    def classes_of(ids: list[int], class_of: dict[int, int]) -> torch.Tensor:
        return torch.tensor([class_of[i] for i in ids], dtype=torch.long, device=device)

    return _Tensors(
        x_train=x_train,
        y_train=classes_of(train_ids, train_class),
        x_val=x_val,
        y_val=classes_of(val_ids, val_class),
        x_stop=x_stop,
        y_stop=classes_of(stop_ids, val_class),
        x_pool=x_pool,
        pool_ids=pool_ids,
        decode_failures=len(decoded.failures),
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


def _record_decode_errors(ctx: WorkerContext, failures: dict[int, str]) -> None:
    # Its own transaction: the item is marked even if the round is later abandoned, so no
    # round ever tries the image again.
    with ctx.session_factory() as session, session.begin():
        for item_id, reason in failures.items():
            session.execute(update(Item).where(Item.id == item_id).values(decode_error=reason))
    log.warning("skipped %d images that failed to decode", len(failures))


# --------------------------------------------------------------------------- model phases


def _train(
    data: RoundData, tensors: _Tensors, config: TrainConfig, device: torch.device
) -> tuple[MCDropoutNetwork, FitReport]:
    project = data.project
    spec = NetworkSpec(
        num_classes=len(project.classes),
        in_channels=project.image_channels,
        image_size=project.image_size,
        name=project.network,
    )
    # A fresh network every round (no weights carried over), initialised from the round's seed.
    model = build_network(spec, seed=config.seed).to(device)
    # Early stopping watches its own share of the validation items (see split_validation).
    x_val, y_val = _seen_class_subset(tensors.x_stop, tensors.y_stop, tensors.y_train)
    report = fit(
        model,
        tensors.x_train,
        tensors.y_train,
        config=config,
        x_val=x_val if len(y_val) else None,
        y_val=y_val if len(y_val) else None,
        device=device,
    )
    return model, report


def _seen_class_subset(
    x: torch.Tensor, y: torch.Tensor, y_train: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    keep = torch.isin(y, torch.unique(y_train))
    return x[keep], y[keep]


def _evaluate(
    model: MCDropoutNetwork,
    data: RoundData,
    tensors: _Tensors,
    seed: int,
    device: torch.device,
    notes: list[str],
) -> dict[str, Any]:
    """Validation metrics over the classes seen in training; never on training labels."""
    classes = data.project.classes
    seen = sorted(int(c) for c in torch.unique(tensors.y_train).tolist())
    quality: dict[str, Any] = {
        "classes_seen": [classes[c] for c in seen],
        "metrics_over": "validation items of the classes seen in training",
        "validation_items": 0,
        "validation_items_unseen_classes": 0,
        "validation_items_without_label": data.validation_without_label,
        # Items that only steered early stopping; equal to the reporting set when too few.
        "early_stopping_items": len(tensors.y_stop),
        "early_stopping_items_shared": len(data.validation) < MIN_VALIDATION_TO_SPLIT,
    }
    if len(tensors.y_val) == 0:
        notes.append(NO_VALIDATION_NOTE)
        return {**quality, "accuracy": None, "nll": None, "per_class_accuracy": {}}
    result = evaluate(
        model,
        tensors.x_val,
        # Labels on the CPU: `classes` is turned into a CPU tensor to filter them with, and a
        # CPU mask indexes the images on any device.
        tensors.y_val.cpu(),
        mc_samples=data.project.mc_samples,
        seed=seed,
        classes=seen,
        device=device,
    )
    unseen = len(tensors.y_val) - result.count
    if result.count == 0:
        notes.append("no validation items of the classes seen in training")
    elif unseen:
        notes.append(f"accuracy over {len(seen)} of {len(classes)} classes (those labelled)")
    return {
        **quality,
        "accuracy": _finite_or_none(result.accuracy) if result.count else None,
        "nll": _finite_or_none(result.nll) if result.count else None,
        "per_class_accuracy": {
            classes[c]: round(acc, 6) for c, acc in sorted(result.per_class_accuracy.items())
        },
        "validation_items": result.count,
        "validation_items_unseen_classes": unseen,
    }


def _finite_or_none(value: float) -> float | None:
    return round(float(value), 6) if math.isfinite(value) else None


def _infer(
    model: MCDropoutNetwork,
    tensors: _Tensors,
    project: ProjectSnapshot,
    seed: int,
    device: torch.device,
) -> torch.Tensor | None:
    if not tensors.pool_ids:
        return None
    return mc_log_probs(
        model, tensors.x_pool, mc_samples=project.mc_samples, seed=seed, device=device
    )


@dataclass(frozen=True)
class QueuePlan:
    """The round's queue: pool positions in rank order, why each was picked, and item scores.

    Attributes:
        indices: ``[q]`` pool positions, rank 0 first.
        pick_scores: ``[q]`` each pick's score when it was made (BatchBALD: its gain).
        pick_strategies: the strategy that picked each entry.
        scores: ``[N]`` per-item score that orders the pool after the queue.
    """

    indices: torch.Tensor
    pick_scores: torch.Tensor
    pick_strategies: list[str]
    scores: torch.Tensor


def _select(
    project: ProjectSnapshot,
    log_probs_N_K_C: torch.Tensor | None,
    seed: int,
    notes: list[str],
) -> tuple[str, QueuePlan | None]:
    """Fill the queue (queue_size items) with the project's strategy, b = query_size at a time.

    No model is retrained between the batches of one queue, so for every strategy but
    BatchBALD, batch after batch on the remaining pool is exactly one call with
    b = queue_size: top-k strategies take the same top scores, and random and PowerBALD draw
    without replacement either way. One call it is.

    BatchBALD picks its batch of query_size greedily, as the project asks. The rest of the
    queue is the buffer annotators label while the next round trains; it is drawn by
    PowerBALD from the remaining pool. Continuing the greedy BatchBALD run instead would cost
    a joint-entropy pass over the pool per extra pick, for gains that vanish: with K MC
    samples the joint estimate saturates near log K nats, so late picks are noise. PowerBALD
    keeps the buffer diverse at the cost of a sort (Kirsch et al., "Stochastic Batch
    Acquisition", TMLR 2023, find it on par with BatchBALD).
    """
    strategy = project.strategy
    if log_probs_N_K_C is None:
        return strategy, None
    if strategy in BAYESIAN_STRATEGIES and log_probs_N_K_C.shape[1] < 2:
        notes.append(f"{strategy} needs at least 2 MC samples: used entropy")
        strategy = "entropy"
    generator = torch.Generator().manual_seed(seed)
    N = log_probs_N_K_C.shape[0]
    size = min(project.queue_size, N)
    first = min(size, project.query_size) if strategy == "batchbald" else size
    head = acquire(strategy, log_probs_N_K_C, first, generator=generator)
    plan = QueuePlan(head.indices, head.batch_scores, [strategy] * first, head.scores)
    if first == size:
        return strategy, plan
    return strategy, _fill_with_powerbald(plan, log_probs_N_K_C, size - first, generator)


def _fill_with_powerbald(
    plan: QueuePlan, log_probs_N_K_C: torch.Tensor, count: int, generator: torch.Generator
) -> QueuePlan:
    remaining_N = torch.ones(log_probs_N_K_C.shape[0], dtype=torch.bool)
    remaining_N[plan.indices] = False
    positions = remaining_N.nonzero().squeeze(1)
    tail = acquire("powerbald", log_probs_N_K_C[positions], count, generator=generator)
    return QueuePlan(
        indices=torch.cat([plan.indices, positions[tail.indices]]),
        pick_scores=torch.cat([plan.pick_scores, tail.batch_scores]),
        pick_strategies=plan.pick_strategies + ["powerbald"] * count,
        scores=plan.scores,
    )


# --------------------------------------------------------------------------- write


def _write_round(
    ctx: WorkerContext,
    claim: _Claim,
    data: RoundData,
    strategy: str,
    pool_ids: list[int],
    log_probs_N_K_C: torch.Tensor | None,
    plan: QueuePlan | None,
    metrics: RoundMetrics,
    timer: PhaseTimer,
) -> None:
    """Queue, predictions, metrics, timings and status: one transaction, fenced."""
    queue_rows, prediction_rows = _rows(
        claim.round_id, data.project.classes, pool_ids, log_probs_N_K_C, plan
    )
    _commit_round(ctx, claim, strategy, queue_rows, prediction_rows, metrics, timer)


def _rows(
    round_id: int,
    classes: list[str],
    pool_ids: list[int],
    log_probs_N_K_C: torch.Tensor | None,
    plan: QueuePlan | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if log_probs_N_K_C is None or plan is None:
        return [], []
    K = log_probs_N_K_C.shape[1]
    probs_N_C = (torch.logsumexp(log_probs_N_K_C.double(), dim=1) - math.log(K)).exp()
    confidence_N, predicted_N = probs_N_C.max(dim=1)
    scores_N = torch.nan_to_num(plan.scores.double(), nan=0.0, posinf=1e30, neginf=-1e30)
    picks = zip(plan.indices.tolist(), plan.pick_scores.tolist(), plan.pick_strategies, strict=True)
    queue_rows = [
        {
            "round_id": round_id,
            "item_id": pool_ids[index],
            "rank": rank,
            "score": float(score) if math.isfinite(score) else 0.0,
            "strategy": strategy,
        }
        for rank, (index, score, strategy) in enumerate(picks)
    ]
    probabilities = probs_N_C.round(decimals=6).tolist()
    prediction_rows = [
        {
            "round_id": round_id,
            "item_id": item_id,
            "predicted": classes[int(predicted_N[n])],
            "confidence": float(confidence_N[n]),
            "probabilities": probabilities[n],
            "score": float(scores_N[n]),
        }
        for n, item_id in enumerate(pool_ids)
    ]
    return queue_rows, prediction_rows


def _commit_round(
    ctx: WorkerContext,
    claim: _Claim,
    strategy: str,
    queue_rows: list[dict[str, Any]],
    prediction_rows: list[dict[str, Any]],
    metrics: RoundMetrics,
    timer: PhaseTimer,
) -> None:
    with ctx.session_factory() as session:
        try:
            with session.begin():
                # The fenced status change goes first: it locks the round row (PostgreSQL), so
                # a concurrent project delete waits for this commit, and an abandoned round
                # rolls back before inserting anything.
                finished = session.execute(
                    _fenced(claim).values(
                        status=RoundStatus.done,
                        strategy=strategy,
                        finished_at=datetime.now(UTC),
                        metrics=stored(metrics.model_copy(update={"worker": ctx.worker_id})),
                        timings=timer.stored(),
                    )
                )
                if finished.rowcount != 1:  # type: ignore[attr-defined]
                    raise RoundAbandoned("round deleted or taken over before writing")
                if queue_rows:
                    session.execute(insert(QueueEntry), queue_rows)
                if prediction_rows:
                    session.execute(insert(Prediction), prediction_rows)
                # The timings must include the write itself: refresh them just before commit.
                session.execute(_done_row(claim).values(timings=timer.stored()))
        except IntegrityError as exc:
            # Items or the project vanished under us: if the round is gone, that's a delete.
            _ensure_still_ours(ctx, claim)
            raise RuntimeError(f"could not write the round: {exc.orig}") from exc


def _done_row(claim: _Claim) -> Any:
    return update(Round).where(
        Round.id == claim.round_id,
        Round.status == RoundStatus.done,
        Round.attempts == claim.attempt,
    )


def _write_random_round(
    ctx: WorkerContext,
    claim: _Claim,
    data: RoundData,
    tensors: _Tensors,
    timer: PhaseTimer,
    device: torch.device,
) -> None:
    """No labels to train on: queue the pool in its seeded random order, write no model."""
    notes = [NO_LABELS_NOTE]
    if not tensors.pool_ids:
        notes.append(POOL_USED_UP_NOTE)
    if len(tensors.y_val) == 0:
        notes.append(NO_VALIDATION_NOTE)
    queue_ids = tensors.pool_ids[: data.project.queue_size]
    queue_rows = [
        {
            "round_id": claim.round_id,
            "item_id": item_id,
            "rank": rank,
            "score": 0.0,
            "strategy": "random",
        }
        for rank, item_id in enumerate(queue_ids)
    ]
    metrics = RoundMetrics(
        per_class_accuracy={},
        classes_seen=[],
        validation_items=0,
        train_items=0,
        labels_used=data.labels_used,
        pool_items=len(tensors.pool_ids),
        queue_items=len(queue_rows),
        decode_failures=tensors.decode_failures,
        strategy="random",
        device=str(device),
        attempt=claim.attempt,
        note="; ".join(notes),
    )
    with timer.phase("write"):
        _commit_round(ctx, claim, "random", queue_rows, [], metrics, timer)


def _mark_failed(ctx: WorkerContext, claim: _Claim, error: str, timer: PhaseTimer) -> None:
    with ctx.session_factory() as session, session.begin():
        session.execute(
            _fenced(claim).values(
                status=RoundStatus.failed,
                error=error[:4000],
                finished_at=datetime.now(UTC),
                timings=timer.stored(),
            )
        )


# --------------------------------------------------------------------------- triggers


def enqueue_follow_up(ctx: WorkerContext, project_id: int) -> int | None:
    """Queue the next round when enough labels arrived while this one ran.

    The API triggers rounds as labels arrive, but a label made while a round runs can't
    (one active round per project), so the worker looks once its round is done. "Enough"
    is the API's own rule (`labels_until_retrain`: current labels past the latest round's
    watermark), so the two never disagree.
    """
    with ctx.session_factory() as session:
        project = session.get(Project, project_id)
        if project is None or labels_until_retrain(session=session, project=project) > 0:
            return None
        return _insert_and_enqueue(ctx, session, project, trigger="labels")


def _insert_and_enqueue(
    ctx: WorkerContext, session: Session, project: Project, *, trigger: str
) -> int | None:
    rnd = open_round(session=session, project=project, trigger=trigger)
    if rnd is None:
        return None
    log.info("queued round %s for project %s (%s)", rnd.id, project.id, trigger)
    _send(ctx, rnd.id)  # if the broker refuses it, the sweep sends it later
    return rnd.id


# --------------------------------------------------------------------------- recovery


def recover_rounds(ctx: WorkerContext) -> list[int]:
    """Make sure no project is blocked by a round nobody will run; returns the rounds sent.

    Run when a worker starts. Rounds left `running` by a dead worker (a previous life of
    this process included) are put back to queued, or failed after MAX_ATTEMPTS; every
    queued round is sent again, because its message may be gone (the SQLite broker never
    redelivers, and a broker restart forgets). A duplicate message is harmless: the round's
    row decides what runs.
    """
    return _sweep(ctx, at_start=True, running=None)


def sweep_rounds(ctx: WorkerContext, *, running: int | None) -> list[int]:
    """The periodic form of `recover_rounds`, run every few seconds beside the rounds.

    Sends the queued rounds the broker never accepted, and, while this worker runs no round
    (`running` is None), those it accepted long ago (lost: an idle worker would have
    received them); requeues rounds whose worker died, a previous life of this process
    included (only `running` is really ours); queues rounds that came due with none active.
    So a broker outage delays a round by one sweep after the broker is back, and never
    strands it. Returns the rounds the broker accepted.
    """
    return _sweep(ctx, at_start=False, running=running)


def _sweep(ctx: WorkerContext, *, at_start: bool, running: int | None) -> list[int]:
    now = datetime.now(UTC)
    with ctx.session_factory() as session, session.begin():
        in_progress = session.scalars(
            select(Round).where(Round.status == RoundStatus.running).order_by(Round.id)
        ).all()
        orphans = [
            rnd.id
            for rnd in in_progress
            if rnd.id != running and _requeue_if_orphaned(session, rnd, now, ctx)
        ]
        if at_start:
            queued = session.scalars(
                select(Round.id).where(Round.status == RoundStatus.queued)
            ).all()
        else:
            queued = due_for_dispatch(session, now=now, include_lost=running is None)
    sent = [round_id for round_id in sorted({*orphans, *queued}) if _send(ctx, round_id)]
    sent += _trigger_pending(ctx)
    if sent:
        log.info("recovery sent rounds %s", sent)
    return sent


def _send(ctx: WorkerContext, round_id: int) -> bool:
    """Hand the round to the broker; False if it refused (the next sweep tries again)."""
    return ctx.enqueue is None or ctx.enqueue(round_id) is not False


def _requeue_if_orphaned(session: Session, rnd: Round, now: datetime, ctx: WorkerContext) -> bool:
    """Put a running round whose worker died back to queued; True if it was."""
    if not owner_is_dead(rnd, now, ctx.worker_id):
        return False
    owner = _owner(rnd)
    if rnd.attempts >= MAX_ATTEMPTS:
        error = f"gave up after {rnd.attempts} attempts; last worker {owner} died"
        _finish_conditionally(session, rnd, RoundStatus.failed, error=error, now=now)
        return False
    session.execute(
        update(Round)
        .where(Round.id == rnd.id, Round.status == rnd.status, Round.attempts == rnd.attempts)
        .values(
            status=RoundStatus.queued,
            metrics=stored(RoundMetrics(requeued=f"worker {owner} died")),
            # Not handed over since: any worker's sweep sends it, not only an idle one's.
            dispatched_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    return True


def _trigger_pending(ctx: WorkerContext) -> list[int]:
    """Queue a round for projects whose labels reached retrain_every with no round active."""
    sent: list[int] = []
    with ctx.session_factory() as session:
        active = select(Round.project_id).where(Round.status.in_(ACTIVE_ROUND_STATUSES))
        projects = session.scalars(select(Project).where(Project.id.not_in(active))).all()
        for project in projects:
            if labels_until_retrain(session=session, project=project) == 0:
                round_id = _insert_and_enqueue(ctx, session, project, trigger="labels")
                if round_id is not None:
                    sent.append(round_id)
    return sent

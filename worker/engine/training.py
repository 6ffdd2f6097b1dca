"""Fit, evaluate and MC inference for the MC-dropout networks.

The same code runs on CUDA (TF32, optional bf16 autocast) and on the CPU. All randomness comes
from ``torch.Generator`` objects seeded from the caller's seed: batch order, class-balanced
sampling and dropout masks. The global RNG is never consulted, so a round is reproducible
whatever else the process did before.

One piece because fit, evaluate and MC inference share one contract: the same network, the
same consistent-mask MC passes, the same device and autocast rules and the same checks of
inputs; apart, each would restate them.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torch.nn import functional as F

from worker.engine.networks import MCDropoutNetwork

logger = logging.getLogger(__name__)

# Without a usable validation set, train for this many passes over the labels (or min_steps,
# whichever is more): the budget grows with the labelled set, since more labels beat more
# epochs on a fixed set.
BUDGET_EPOCHS = 20
# Early stopping only needs a stable estimate; more validation items cost time each epoch.
MAX_VALIDATION_ITEMS = 2_048
EVAL_BATCH = 512
_EARLY_STOP_MIN_DELTA = 1e-4
EarlyStopMetric = Literal["accuracy", "nll"]


@dataclass(frozen=True)
class TrainConfig:
    """How to fit one round's fresh network.

    Attributes:
        seed: seeds batch sampling and training dropout.
        learning_rate: Adam's step size.
        batch_size: items per step.
        epoch_steps: optimiser steps between two early-stopping checks (at least one pass
            over the labels). The BatchBALD reference uses 5,056 sampled items = 79 steps of
            64: with 20 labels a single pass is one step, far too little signal per check.
        max_epochs: hard limit on early-stopping epochs.
        patience: epochs without a better validation score before stopping.
        stop_on: the validation score early stopping watches. Accuracy, as the reference
            does: validation NLL bottoms out early (the network grows over-confident on the
            items it gets wrong) while accuracy is still rising.
        min_validation_for_early_stopping: below this many validation items, train for the
            step budget instead.
        balanced_below: sample class-balanced batches while fewer labels than this.
        min_steps: the smallest step budget; it grows with the labelled set.
        bf16: bfloat16 autocast on CUDA (ignored on the CPU, where it is slower).
    """

    seed: int = 0
    learning_rate: float = 1e-3
    batch_size: int = 64
    epoch_steps: int = 79
    max_epochs: int = 30
    patience: int = 3
    stop_on: EarlyStopMetric = "accuracy"
    min_validation_for_early_stopping: int = 50
    balanced_below: int = 200
    min_steps: int = 500
    bf16: bool = False


@dataclass(frozen=True)
class FitReport:
    """What a fit did: epochs (passes-equivalent for the step budget), optimiser steps,
    whether early stopping ended it, the validation accuracy and NLL of the weights kept
    (None without validation) and the wall time."""

    epochs: int
    steps: int
    early_stopped: bool
    best_validation_nll: float | None
    seconds: float
    best_validation_accuracy: float | None = None
    # The validation score after each early-stopping epoch, in order.
    history: tuple[ValidationScore, ...] = ()


@dataclass(frozen=True)
class Evaluation:
    """MC-averaged predictive quality over the evaluated items.

    ``accuracy`` and ``nll`` are NaN when ``count`` is 0; ``per_class_accuracy`` has an entry
    per class present among the evaluated items, listed in ``classes_evaluated``.
    """

    accuracy: float
    nll: float
    per_class_accuracy: dict[int, float]
    classes_evaluated: list[int]
    count: int


def pick_device() -> torch.device:
    """CUDA when available (with TF32 matmuls and convolutions), else the CPU."""
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return torch.device("cuda")
    return torch.device("cpu")


# --------------------------------------------------------------------------- fit


def fit(
    model: MCDropoutNetwork,
    x_train: Tensor,
    y_train: Tensor,
    *,
    config: TrainConfig,
    x_val: Tensor | None = None,
    y_val: Tensor | None = None,
    device: torch.device | None = None,
) -> FitReport:
    """Trains a freshly built network in place with Adam and keeps its best weights.

    With at least ``config.min_validation_for_early_stopping`` validation items, trains in
    epochs of ``config.epoch_steps`` steps and stops after ``patience`` epochs without a
    better validation score (``config.stop_on``), restoring the best weights (as in the
    BatchBALD paper). Otherwise trains for a step budget that grows
    with the number of labels. Batches are class-balanced while the labelled set is small, so
    a class with two labels is not drowned out.

    Args:
        model: a fresh network (the caller builds one per round).
        x_train: ``[n, channels, H, W]`` float images in [0, 1].
        y_train: ``[n]`` long class indices.
        config: the schedule and the seed.
        x_val: validation images for early stopping, or None.
        y_val: their labels.
        device: where to train; default :func:`pick_device`.

    Raises:
        ValueError: empty or mismatched training data, or labels outside the network's classes.
    """
    started = time.perf_counter()
    device = device or pick_device()
    _check_xy(model, x_train, y_train, "train")
    model.to(device)
    x_train, y_train = x_train.to(device), y_train.to(device)
    val = _validation_subset(model, x_val, y_val, config, device)
    batches = _batch_indices(y_train, config)
    dropout_generator = torch.Generator(device=device).manual_seed(config.seed + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)

    def train_steps(count: int) -> None:
        model.train()
        for _ in range(count):
            rows = next(batches).to(device)
            with _autocast(device, config.bf16):
                logits = model(x_train[rows], dropout_generator)
            loss = F.cross_entropy(logits.float(), y_train[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    best: ValidationScore | None
    history: list[ValidationScore] = []
    if val is not None and len(val[1]) >= config.min_validation_for_early_stopping:
        epochs, steps, stopped, best = _fit_early_stopping(
            model, train_steps, val, y_train, config, history
        )
    else:
        steps = step_budget(len(y_train), config)
        train_steps(steps)
        epochs = max(1, steps * config.batch_size // len(y_train))
        stopped = False
        best = validation_score(model, *val, config) if val is not None and len(val[1]) else None
    model.eval()
    report = FitReport(
        epochs,
        steps,
        stopped,
        best.nll if best else None,
        time.perf_counter() - started,
        best.accuracy if best else None,
        tuple(history),
    )
    logger.info(
        "fit %d labels: %d epochs, %d steps, early_stopped=%s, val=%s, %.2f s",
        len(y_train),
        report.epochs,
        report.steps,
        report.early_stopped,
        best,
        report.seconds,
    )
    return report


def step_budget(num_labels: int, config: TrainConfig) -> int:
    """Optimiser steps without early stopping: ``max(min_steps, BUDGET_EPOCHS passes)``."""
    return max(config.min_steps, math.ceil(BUDGET_EPOCHS * num_labels / config.batch_size))


def _fit_early_stopping(
    model: MCDropoutNetwork,
    train_steps: Callable[[int], None],
    val: tuple[Tensor, Tensor],
    y_train: Tensor,
    config: TrainConfig,
    history: list[ValidationScore],
) -> tuple[int, int, bool, ValidationScore]:
    per_epoch = max(config.epoch_steps, math.ceil(len(y_train) / config.batch_size))
    best: ValidationScore | None = None
    best_state, bad_epochs, epoch, stopped = None, 0, 0, False
    while epoch < config.max_epochs:
        epoch += 1
        train_steps(per_epoch)
        score = validation_score(model, *val, config)
        history.append(score)
        if best is None or score.better_than(best, config.stop_on):
            best, bad_epochs = score, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
            if bad_epochs >= config.patience:
                stopped = True
                break
    assert best is not None and best_state is not None  # max_epochs >= 1
    model.load_state_dict(best_state)
    return epoch, epoch * per_epoch, stopped, best


def _batch_indices(y_train: Tensor, config: TrainConfig) -> Iterator[Tensor]:
    """Endless batches of row indices, drawn on the CPU from the config's seed.

    Class-balanced (each class equally likely, with replacement) while the labelled set is
    smaller than ``balanced_below``; shuffled epochs after that.
    """
    generator = torch.Generator().manual_seed(config.seed)
    labels = y_train.cpu()
    n = len(labels)
    if n < config.balanced_below:
        counts = torch.bincount(labels).double()
        weights = (1.0 / counts)[labels]
        while True:
            yield torch.multinomial(weights, config.batch_size, True, generator=generator)
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - config.batch_size + 1, config.batch_size):
            yield order[start : start + config.batch_size]
        if n < config.batch_size:
            yield order


def _validation_subset(
    model: MCDropoutNetwork,
    x_val: Tensor | None,
    y_val: Tensor | None,
    config: TrainConfig,
    device: torch.device,
) -> tuple[Tensor, Tensor] | None:
    if x_val is None or y_val is None or len(y_val) == 0:
        return None
    _check_xy(model, x_val, y_val, "validation")
    if len(y_val) > MAX_VALIDATION_ITEMS:
        generator = torch.Generator().manual_seed(config.seed + 2)
        rows = torch.randperm(len(y_val), generator=generator)[:MAX_VALIDATION_ITEMS]
        x_val, y_val = x_val[rows], y_val[rows]
    return x_val.to(device), y_val.to(device)


@dataclass(frozen=True)
class ValidationScore:
    """Accuracy and mean NLL of the deterministic (dropout-off) prediction."""

    accuracy: float
    nll: float

    def better_than(self, other: ValidationScore, metric: EarlyStopMetric) -> bool:
        # A plateau is no improvement: patience runs out on it, as in the reference.
        if metric == "accuracy":
            return self.accuracy > other.accuracy
        return self.nll < other.nll - _EARLY_STOP_MIN_DELTA

    def __str__(self) -> str:
        return f"acc {self.accuracy:.4f} nll {self.nll:.4f}"


@torch.inference_mode()
def validation_score(
    model: MCDropoutNetwork, x_val: Tensor, y_val: Tensor, config: TrainConfig
) -> ValidationScore:
    """Scores the dropout-off prediction: one cheap, stable pass per epoch."""
    model.eval()
    nll_sum, correct = 0.0, 0
    for start in range(0, len(y_val), EVAL_BATCH):
        with _autocast(x_val.device, config.bf16):
            logits = model(x_val[start : start + EVAL_BATCH]).float()
        rows = y_val[start : start + EVAL_BATCH]
        nll_sum += float(F.cross_entropy(logits, rows, reduction="sum"))
        correct += int((logits.argmax(dim=1) == rows).sum())
    return ValidationScore(correct / len(y_val), nll_sum / len(y_val))


def _autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager[object]:
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _check_xy(model: MCDropoutNetwork, x: Tensor, y: Tensor, what: str) -> None:
    if x.ndim != model.input_ndim:
        raise ValueError(
            f"{what} inputs must have {model.input_ndim} dimensions, got {tuple(x.shape)}"
        )
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(
            f"{what} labels must be [N] matching {len(x)} images, got {tuple(y.shape)}"
        )
    if len(y) == 0:
        raise ValueError(f"no {what} items")
    if y.dtype != torch.long:
        raise ValueError(f"{what} labels must be long class indices, got {y.dtype}")
    if int(y.min()) < 0 or int(y.max()) >= model.num_classes:
        raise ValueError(f"{what} labels must lie in [0, {model.num_classes}), got {int(y.max())}")


# --------------------------------------------------------------------------- inference


@torch.inference_mode()
def mc_log_probs(
    model: MCDropoutNetwork,
    x_pool: Tensor,
    *,
    mc_samples: int,
    seed: int,
    chunk_size: int = 1024,
    trunk_once: bool | None = None,
    device: torch.device | None = None,
    storage_dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``[N, K, C]`` log-softmax outputs under K consistent MC-dropout masks, on the CPU.

    The K masks are drawn once from ``seed`` and shared by every pool item, so the scores of
    an item do not depend on its chunk, and BatchBALD's joint over items is meaningful. The
    pool streams through the device in chunks; memory is bounded by the chunk, not the pool.

    Args:
        model: a trained network.
        x_pool: ``[N, channels, H, W]`` float images in [0, 1] (CPU or device).
        mc_samples: K >= 1.
        seed: seeds the K masks.
        chunk_size: forward rows per pass: items for the trunk, items x K for stacked parts.
        trunk_once: compute the deterministic trunk once per item (default: yes).
        device: where to run; default :func:`pick_device`.
        storage_dtype: dtype of the returned tensor (float16 halves its memory).

    Raises:
        ValueError: ``mc_samples < 1``, ``chunk_size < 1`` or images of the wrong rank.
    """
    if mc_samples < 1 or chunk_size < 1:
        raise ValueError(f"mc_samples and chunk_size must be >= 1, got {mc_samples}, {chunk_size}")
    if x_pool.ndim != model.input_ndim:
        raise ValueError(f"pool inputs must be {model.input_layout}, got {tuple(x_pool.shape)}")
    device = device or pick_device()
    trunk_once = True if trunk_once is None else trunk_once
    model.to(device).eval()
    masks = model.sample_masks(mc_samples, torch.Generator().manual_seed(seed), device)
    N, K, C = x_pool.shape[0], mc_samples, model.num_classes
    out_N_K_C = torch.empty(N, K, C, dtype=storage_dtype, pin_memory=device.type == "cuda")
    step = chunk_size if trunk_once and model.light_head else max(1, chunk_size // K)
    started = time.perf_counter()
    for start in range(0, N, step):
        x = x_pool[start : start + step].to(device, non_blocking=True)
        logits_K_n_C = model.forward_mc(x, masks, trunk_once=trunk_once)
        log_probs_n_K_C = F.log_softmax(logits_K_n_C.float(), dim=-1).transpose(0, 1)
        out_N_K_C[start : start + step].copy_(log_probs_n_K_C, non_blocking=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    logger.info(
        "mc inference: %d items x %d samples in %.2f s (trunk_once=%s)",
        N,
        K,
        time.perf_counter() - started,
        trunk_once,
    )
    return out_N_K_C


def evaluate(
    model: MCDropoutNetwork,
    x: Tensor,
    y: Tensor,
    *,
    mc_samples: int,
    seed: int,
    classes: Sequence[int] | None = None,
    device: torch.device | None = None,
) -> Evaluation:
    """Accuracy and NLL of the MC-averaged predictive ``mean_k p(y | x, w_k)``.

    Args:
        model: a trained network.
        x: ``[N, channels, H, W]`` images.
        y: ``[N]`` true classes.
        mc_samples: K consistent MC-dropout samples.
        seed: seeds the masks.
        classes: when given, only items whose true class is in it count (the classes seen in
            training: accuracy on a class the model never saw says nothing about it).
        device: where to run.
    """
    if len(y) != len(x):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    if classes is not None:
        keep = torch.isin(y, torch.as_tensor(list(classes), dtype=y.dtype))
        x, y = x[keep], y[keep]
    if len(y) == 0:
        return Evaluation(math.nan, math.nan, {}, [], 0)
    log_probs_N_K_C = mc_log_probs(model, x, mc_samples=mc_samples, seed=seed, device=device)
    mean_log_probs_N_C = torch.logsumexp(log_probs_N_K_C, dim=1) - math.log(mc_samples)
    y = y.cpu()
    correct_N = mean_log_probs_N_C.argmax(dim=1) == y
    nll = -mean_log_probs_N_C.gather(1, y[:, None]).mean()
    present = sorted(int(c) for c in torch.unique(y).tolist())
    per_class = {c: float(correct_N[y == c].float().mean()) for c in present}
    return Evaluation(float(correct_N.float().mean()), float(nll), per_class, present, len(y))

"""Batch selection: which pool items to label next, for every strategy of the catalog.

:func:`select` dispatches a strategy (core.catalog.STRATEGIES, the one list) to its
implementation: top-k of a per-item score (worker.engine.scores), seeded random, PowerBALD,
or BatchBALD (worker.engine.batchbald). Each returns a :class:`Selection`.

Large pools (more than :attr:`Prefilter.above` items) take another road: the log-probs are
checked and scored a chunk at a time (the same scores, bit for bit), so a pool of 1M items x
K=20 x C=10 never has its float32 copy (800 MB) and probabilities (800 MB more) in memory at
once, and BatchBALD searches only the :attr:`Prefilter.keep` candidates of highest BALD.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from core.catalog import BAYESIAN_STRATEGIES, STRATEGIES
from worker.engine.batchbald import DEFAULT_EXACT_BUDGET, DEFAULT_NUM_SAMPLES, checked_batchbald
from worker.engine.scores import (
    CHECKED_SCORERS,
    TINY,
    Checked,
    Selection,
    check_batch_size,
    check_bayesian,
    check_log_probs,
    checked_bald_scores,
    top_k,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prefilter:
    """How :func:`select` treats pools too large to hold or to search whole.

    BatchBALD's gain for an item, ``I(y_i; w | y_chosen)``, never exceeds its BALD
    ``I(y_i; w)`` (conditioning on other labels can only reduce what y_i tells about w), so an
    item whose BALD is below the gain of every pick cannot have changed a pick (up to the
    sampling noise of the joint, once it is sampled): the candidates dropped are those
    BatchBALD would have reached last. Whether that held is logged. It rarely holds for a whole
    batch: with K posterior samples the joint saturates near ``ln K`` nats, so the last gains
    are tiny; bench/bench_scale.py measures what the prefilter then costs (nothing on its
    pools: the same picks at 20k items). Searching the most uncertain candidates only is how
    batch selection is run at scale elsewhere too (Citovsky et al.).

    Attributes:
        above: pools of more items than this take the chunked road. Up to 20k items the
            search is whole and exact: memory is no concern there (the float32 copies are
            ~50 MB at K=20, C=10) and a 10-item BatchBALD batch took 43 s at 20k on two
            loaded cores, against 9 s on 5,000 prefiltered candidates (bench/bench_scale.py).
        keep: BatchBALD's candidates: the items of highest BALD, at least the batch size.
            5,000 is five times the largest query size (1,000); BatchBALD's cost per pick
            grows with it. A 1M-item round (K=20, C=10, float16) then took 19-27 s, half of
            it the BALD pass over the pool, with a peak RSS 165 MB above the pool's own.
        chunk_elements: log-prob elements checked and scored at a time (16 MB of float32).

    References:
        Kirsch, van Amersfoort & Gal, "BatchBALD: Efficient and Diverse Batch Acquisition for
        Deep Bayesian Active Learning", NeurIPS 2019 (the submodularity that bounds each
        gain by the item's BALD); Citovsky et al., "Batch Active Learning at Scale", NeurIPS 2021
        (uncertainty pre-selection, then diversity among the candidates, at millions of
        items).
    """

    above: int = 20_000
    keep: int = 5_000
    chunk_elements: int = 1 << 22

    def __post_init__(self) -> None:
        if self.above < 0 or self.keep < 1 or self.chunk_elements < 1:
            raise ValueError(f"prefilter needs above >= 0, keep >= 1, chunk_elements >= 1: {self}")


DEFAULT_PREFILTER = Prefilter()

# --------------------------------------------------------------------------- batch selection


def random_select(pool_size: int, batch_size: int, *, generator: torch.Generator) -> Selection:
    """Uniformly random batch: the baseline every other strategy must beat.

    Needs no model, so the service can call it before the first round. ``batch_size > N``
    returns the whole pool.

    Args:
        pool_size: N, the number of pool items.
        batch_size: b >= 1.
        generator: the source of the noise (CPU generator).

    Returns:
        The b items with the highest uniform noise; ``scores`` is that noise.

    Raises:
        ValueError: if ``pool_size < 1`` or ``batch_size < 1``.

    References:
        Kirsch et al., "Stochastic Batch Acquisition: A Simple Baseline for Deep Active
        Learning", TMLR 2023 (uniform sampling as a strong baseline).
    """
    check_batch_size(batch_size)
    if pool_size < 1:
        raise ValueError(f"pool_size must be >= 1, got {pool_size}")
    noise_N = torch.rand(pool_size, generator=generator, dtype=torch.float32)
    return top_k(noise_N, batch_size)


def powerbald_select(
    log_probs_N_K_C: torch.Tensor,
    batch_size: int,
    *,
    generator: torch.Generator,
    beta: float = 1.0,
) -> Selection:
    """PowerBALD: sample the batch without replacement with probability ∝ BALD^β.

    Uses the Gumbel-top-k trick: ``argtopk(β log BALD + Gumbel)`` draws a sample without
    replacement from the power distribution at the cost of a sort. Diversity comes from the
    noise instead of a joint computation, so it costs the same as top-k BALD.

    Args:
        log_probs_N_K_C: log-softmax outputs, K >= 2 consistent MC-dropout samples.
        batch_size: b >= 1; ``b > N`` returns the whole pool.
        generator: source of the Gumbel noise (on the device of the log-probs).
        beta: inverse temperature; larger values approach top-k BALD.

    Returns:
        Selection with BALD as ``scores`` and the BALD of each pick as ``batch_scores``.

    Raises:
        ValueError: malformed log-probs, K < 2, ``batch_size < 1`` or ``beta < 0``.

    References:
        Kirsch, Farquhar, Atighehchian, Jesson, Branchaud-Charron & Gal, "Stochastic Batch
        Acquisition: A Simple Baseline for Deep Active Learning", TMLR 2023.
    """
    check_batch_size(batch_size)
    return _powerbald(check_log_probs(log_probs_N_K_C), batch_size, generator, beta)


def _powerbald(
    checked: Checked, batch_size: int, generator: torch.Generator, beta: float
) -> Selection:
    if not beta >= 0.0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    return _powerbald_of(checked_bald_scores(checked), batch_size, generator, beta)


def _powerbald_of(
    bald_N: torch.Tensor, batch_size: int, generator: torch.Generator, beta: float
) -> Selection:
    # BALD can be 0 (or -1e-7 from rounding); clamping keeps log finite so such items are
    # still reachable, just last.
    log_weight_N = beta * bald_N.clamp_min(TINY).log()
    exponential_N = torch.empty_like(bald_N).exponential_(generator=generator)
    gumbel_N = -exponential_N.clamp_min(TINY).log()  # -log(Exp(1)) is Gumbel(0, 1)
    keys_N = log_weight_N + gumbel_N
    indices_b = torch.sort(keys_N, descending=True, stable=True).indices[:batch_size]
    return Selection(
        indices=indices_b, scores=bald_N.float(), batch_scores=bald_N[indices_b].float()
    )


# --------------------------------------------------------------------------- dispatch


def select(
    strategy: str,
    log_probs_N_K_C: torch.Tensor,
    batch_size: int,
    *,
    generator: torch.Generator,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    exact_budget: int = DEFAULT_EXACT_BUDGET,
    prefilter: Prefilter | None = DEFAULT_PREFILTER,
) -> Selection:
    """Scores the pool with ``strategy`` and picks the next batch.

    Pools up to ``prefilter.above`` items are scored whole. Larger ones are checked and
    scored in chunks, which changes nothing but the memory for every strategy but BatchBALD;
    BatchBALD then searches only the ``prefilter.keep`` items of highest BALD (see
    :class:`Prefilter`).

    Args:
        strategy: one of :data:`STRATEGIES`.
        log_probs_N_K_C: log-softmax outputs ``[N, K, C]``; strategies in
            :data:`BAYESIAN_STRATEGIES` need K >= 2.
        batch_size: b >= 1. ``batch_size > N`` is not an error: the whole pool comes back, in
            the strategy's order.
        generator: randomness for random, powerbald and sampled batchbald.
        num_samples: M sampled joint configurations (batchbald).
        exact_budget: batchbald keeps its joint exact while ``C^n * K`` is at most this.
        prefilter: the large-pool road; None scores every pool whole, however large.

    Returns:
        The :class:`Selection`; ``scores`` always covers the whole pool.

    Raises:
        ValueError: unknown strategy, malformed log-probs, ``batch_size < 1`` or K < 2 with a
            Bayesian strategy.

    References:
        See the individual score functions.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    check_batch_size(batch_size)
    started = time.perf_counter()
    if prefilter is not None and _is_large(log_probs_N_K_C, prefilter):
        selection = _select_large(
            strategy, log_probs_N_K_C, batch_size, generator, num_samples, exact_budget, prefilter
        )
    else:
        selection = _select_whole(
            strategy,
            check_log_probs(log_probs_N_K_C),
            batch_size,
            generator,
            num_samples,
            exact_budget,
        )
    logger.info(
        "selected %d of %d items with %s in %.3f s",
        selection.indices.shape[0],
        selection.scores.shape[0],
        strategy,
        time.perf_counter() - started,
    )
    return selection


def _select_whole(
    strategy: str,
    checked: Checked,
    batch_size: int,
    generator: torch.Generator,
    num_samples: int,
    exact_budget: int,
) -> Selection:
    if strategy in BAYESIAN_STRATEGIES:
        check_bayesian(checked.K, strategy)
    N = checked.log_probs_N_K_C.shape[0]
    if strategy == "random":
        selection = random_select(N, batch_size, generator=generator)
    elif strategy == "batchbald":
        selection = checked_batchbald(checked, batch_size, generator, num_samples, exact_budget)
    elif strategy == "powerbald":
        selection = _powerbald(checked, batch_size, generator, beta=1.0)
    else:
        selection = top_k(CHECKED_SCORERS[strategy](checked), batch_size)
    return selection


# --------------------------------------------------------------------------- large pools


def _is_large(log_probs_N_K_C: torch.Tensor, prefilter: Prefilter) -> bool:
    """A well-formed tensor of more than ``prefilter.above`` items (anything else goes the
    whole-pool road, whose checks name what is wrong)."""
    return (
        isinstance(log_probs_N_K_C, torch.Tensor)
        and log_probs_N_K_C.ndim == 3
        and log_probs_N_K_C.shape[0] > prefilter.above
    )


def _select_large(
    strategy: str,
    log_probs_N_K_C: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    num_samples: int,
    exact_budget: int,
    prefilter: Prefilter,
) -> Selection:
    """:func:`select` on a pool checked and scored a chunk at a time."""
    N, K, _ = log_probs_N_K_C.shape
    if strategy in BAYESIAN_STRATEGIES:
        check_bayesian(K, strategy)
    if strategy == "random":
        _scores_in_chunks(log_probs_N_K_C, _nothing, prefilter.chunk_elements)  # checks only
        return random_select(N, batch_size, generator=generator)
    if strategy in ("batchbald", "powerbald"):
        bald_N = _scores_in_chunks(log_probs_N_K_C, checked_bald_scores, prefilter.chunk_elements)
        if strategy == "powerbald":
            return _powerbald_of(bald_N, batch_size, generator, beta=1.0)
        return _prefiltered_batchbald(
            log_probs_N_K_C, bald_N, batch_size, generator, num_samples, exact_budget, prefilter
        )
    scorer = CHECKED_SCORERS[strategy]
    return top_k(_scores_in_chunks(log_probs_N_K_C, scorer, prefilter.chunk_elements), batch_size)


def _nothing(checked: Checked) -> torch.Tensor:
    return checked.log_probs_N_K_C.new_empty(0)


def _scores_in_chunks(
    log_probs_N_K_C: torch.Tensor, scorer: Callable[[Checked], torch.Tensor], chunk_elements: int
) -> torch.Tensor:
    """``scorer`` over the pool, checking and exponentiating ``chunk_elements`` at a time.

    Every score is a function of its own item's ``[K, C]`` rows, so chunks change nothing.
    """
    N, K, C = log_probs_N_K_C.shape
    rows = max(1, chunk_elements // (K * C))
    return torch.cat(
        [
            scorer(check_log_probs(log_probs_N_K_C[start : start + rows]))
            for start in range(0, N, rows)
        ]
    )


def _prefiltered_batchbald(
    log_probs_N_K_C: torch.Tensor,
    bald_N: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    num_samples: int,
    exact_budget: int,
    prefilter: Prefilter,
) -> Selection:
    """BatchBALD on the ``keep`` items of highest BALD (ties to the lower index), in pool order.

    Kept in pool order so that with ``keep >= N`` the search is the whole pool's, pick for pick.
    """
    N = bald_N.shape[0]
    keep = min(N, max(prefilter.keep, batch_size))
    by_bald_N = torch.sort(bald_N, descending=True, stable=True).indices
    candidates_M = by_bald_N[:keep].sort().values
    inner = checked_batchbald(
        check_log_probs(log_probs_N_K_C[candidates_M]),
        batch_size,
        generator,
        num_samples,
        exact_budget,
    )
    if keep < N:
        dropped = float(bald_N[by_bald_N[keep]])
        least_gain = float(inner.batch_scores.min())
        logger.info(
            "batchbald prefilter: %d of %d candidates; smallest gain %.4g %s largest BALD "
            "dropped %.4g (%s)",
            keep,
            N,
            least_gain,
            ">=" if least_gain >= dropped else "<",
            dropped,
            "no dropped item could have been picked"
            if least_gain >= dropped
            else "a dropped item might have been picked",
        )
    return Selection(
        indices=candidates_M[inner.indices],
        scores=bald_N.float(),
        batch_scores=inner.batch_scores,
    )


# What :func:`select` implements: exactly the catalog (tests/worker/test_acquisition.py).
IMPLEMENTED: frozenset[str] = frozenset({"random", "batchbald", "powerbald", *CHECKED_SCORERS})

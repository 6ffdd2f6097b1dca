"""Batch selection: which pool items to label next, for every strategy of the catalog.

:func:`select` dispatches a strategy (core.catalog.STRATEGIES, the one list) to its
implementation: top-k of a per-item score (worker.engine.scores), seeded random, PowerBALD,
or BatchBALD (worker.engine.batchbald). Each returns a :class:`Selection`.
"""

from __future__ import annotations

import logging
import time

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
    bald_N = checked_bald_scores(checked)
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
) -> Selection:
    """Scores the pool with ``strategy`` and picks the next batch.

    Args:
        strategy: one of :data:`STRATEGIES`.
        log_probs_N_K_C: log-softmax outputs ``[N, K, C]``; strategies in
            :data:`BAYESIAN_STRATEGIES` need K >= 2.
        batch_size: b >= 1. ``batch_size > N`` is not an error: the whole pool comes back, in
            the strategy's order.
        generator: randomness for random, powerbald and sampled batchbald.
        num_samples: M sampled joint configurations (batchbald).
        exact_budget: batchbald keeps its joint exact while ``C^n * K`` is at most this.

    Returns:
        The :class:`Selection`.

    Raises:
        ValueError: unknown strategy, malformed log-probs, ``batch_size < 1`` or K < 2 with a
            Bayesian strategy.

    References:
        See the individual score functions.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    check_batch_size(batch_size)
    checked = check_log_probs(log_probs_N_K_C)
    if strategy in BAYESIAN_STRATEGIES:
        check_bayesian(checked.K, strategy)
    started = time.perf_counter()
    N = checked.log_probs_N_K_C.shape[0]
    if strategy == "random":
        selection = random_select(N, batch_size, generator=generator)
    elif strategy == "batchbald":
        selection = checked_batchbald(checked, batch_size, generator, num_samples, exact_budget)
    elif strategy == "powerbald":
        selection = _powerbald(checked, batch_size, generator, beta=1.0)
    else:
        selection = top_k(CHECKED_SCORERS[strategy](checked), batch_size)
    logger.info(
        "selected %d of %d items with %s in %.3f s",
        selection.indices.shape[0],
        N,
        strategy,
        time.perf_counter() - started,
    )
    return selection


# What :func:`select` implements: exactly the catalog (tests/worker/test_acquisition.py).
IMPLEMENTED: frozenset[str] = frozenset({"random", "batchbald", "powerbald", *CHECKED_SCORERS})

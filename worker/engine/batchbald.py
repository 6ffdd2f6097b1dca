"""BatchBALD: the batch with the most joint mutual information, picked greedily.

One piece because every part serves one greedy loop over one data layout: the joint of the
chosen labels (``_Joint``, exact then sampled), the BALD-sorted pool laid out for chunked
products (``_Pool``), the grouped upper bound that prunes candidates and the float64 tie-break
all read and write the same ``[M, K]`` / ``[n*C, K]`` tensors; split, each would need the
others' shapes to be read.

BatchBALD keeps the joint distribution of the labels already chosen as one ``[M, K]`` matrix
and scores every candidate of a chunk with a single ``[M, K] x [K, n*C]`` matrix product.

References:
    Kirsch, van Amersfoort & Gal, "BatchBALD: Efficient and Diverse Batch Acquisition for
    Deep Bayesian Active Learning", NeurIPS 2019.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from worker.engine.scores import (
    TINY,
    Checked,
    Selection,
    check_batch_size,
    check_bayesian,
    check_log_probs,
    conditional_entropy_N,
    entropy_N,
    mean_probs_N_C,
)

logger = logging.getLogger(__name__)

DEFAULT_NUM_SAMPLES = 10_000
# Exact joint while C^n * K <= this: 200,000 = 10,000 configurations at K=20, the same point at
# which batchbald_redux with M=10,000 switches to sampling.
DEFAULT_EXACT_BUDGET = 200_000
# Elements of each [n*C, U] working matrix per chunk: 1 Mi float32 = 4 MiB, so the log, the
# products and the sum that follow the matmul run from cache (a quarter less CPU time than
# 16 MiB at N=10k and 60k on 2 cores with 2 MiB L2 each), and memory is bounded at any N.
_CHUNK_ELEMENTS = 1 << 20
# The pruning bound merges the U configurations into U / 32 groups (at least min(U/8, 128),
# which prunes a 60k pool at U=1,000): it costs 1/32 of scoring every candidate, and leaves
# 0.1-2% of a 10k pool to score exactly (bench/, 2026-12).
_ROWS_PER_GROUP = 32
# Fewer groups bound too loosely to prune, and a step that small is cheap to score in full.
_MIN_GROUPS = 16
_KMEANS_ITERATIONS = 4
_FIT_ROWS_PER_GROUP = 8
# Gains within float32 rounding of the best are ordered again in float64, at most this many.
_TIE_BREAK_LIMIT = 256


@dataclass
class _Joint:
    """The joint distribution of the chosen labels, one row per configuration.

    ``cond_M_K[m, k] = p(config_m | w_k) / p(config_m)``: each row has mean 1 over K, which
    keeps long products from underflowing. Exact regime: all ``C^n`` configurations with
    ``weights_M = p(config_m)``. Sampled regime: M configurations drawn from ``p(config)`` (each
    from the posterior sample ``source_M[m]``), so the weights are uniform; ``labels_M_n`` holds
    the drawn labels, which lets repeated configurations be merged before scoring.
    """

    cond_M_K: torch.Tensor
    weights_M: torch.Tensor
    source_M: torch.Tensor | None = None
    labels_M_n: torch.Tensor | None = None

    @property
    def sampled(self) -> bool:
        return self.source_M is not None


def _empty_joint(K: int, like: torch.Tensor) -> _Joint:
    return _Joint(
        cond_M_K=torch.ones(1, K, dtype=like.dtype, device=like.device),
        weights_M=torch.ones(1, dtype=like.dtype, device=like.device),
    )


def _extend_exact(joint: _Joint, probs_K_C: torch.Tensor) -> _Joint:
    """Adds one label to an exact joint: every configuration splits into C."""
    K = probs_K_C.shape[0]
    next_M_C = joint.cond_M_K @ probs_K_C / K  # p(y_new = c | config_m)
    cond_M_C_K = joint.cond_M_K[:, None, :] * probs_K_C.t()[None, :, :]
    cond_M_C_K = cond_M_C_K / next_M_C.clamp_min(TINY)[:, :, None]
    weights_MC = (joint.weights_M[:, None] * next_M_C).reshape(-1)
    keep = weights_MC > 0  # impossible configurations add nothing and would divide by 0
    return _Joint(cond_M_C_K.reshape(-1, K)[keep], weights_MC[keep])


def _extend_sampled(joint: _Joint, probs_K_C: torch.Tensor, generator: torch.Generator) -> _Joint:
    """Adds one label to each sampled configuration, drawn from the configuration's own w_k.

    Extending instead of resampling everything keeps each configuration distributed as
    ``k ~ U(K), y_1..n ~ p(. | w_k)`` (the proposal of the paper, whose importance weights
    are uniform) and costs O(M K) per pick.
    """
    assert joint.source_M is not None and joint.labels_M_n is not None
    labels_M = torch.multinomial(probs_K_C[joint.source_M], 1, generator=generator).squeeze(1)
    cond_M_K = joint.cond_M_K * probs_K_C[:, labels_M].t()
    cond_M_K = cond_M_K / cond_M_K.mean(dim=1, keepdim=True).clamp_min(TINY)
    labels_M_n = torch.cat([joint.labels_M_n, labels_M[:, None]], dim=1)
    return _Joint(cond_M_K, joint.weights_M, joint.source_M, labels_M_n)


def _sample_joint(
    chosen_probs: list[torch.Tensor], num_samples: int, generator: torch.Generator
) -> _Joint:
    """Draws M = (num_samples // K) * K configurations of the chosen labels, M/K per w_k."""
    like = chosen_probs[0]
    K = like.shape[0]
    source_M = torch.arange(K, device=like.device).repeat_interleave(max(1, num_samples // K))
    M = source_M.shape[0]
    joint = _Joint(
        cond_M_K=torch.ones(M, K, dtype=like.dtype, device=like.device),
        weights_M=torch.full((M,), 1.0 / M, dtype=like.dtype, device=like.device),
        source_M=source_M,
        labels_M_n=torch.empty(M, 0, dtype=torch.long, device=like.device),
    )
    for probs_K_C in chosen_probs:
        joint = _extend_sampled(joint, probs_K_C, generator)
    return joint


def _configuration_ids(labels_M_n: torch.Tensor) -> torch.Tensor:
    """Each row's index among the distinct rows, numbered in lexicographic order."""
    n = labels_M_n.shape[1]
    base = int(labels_M_n.max()) + 1
    if n * math.log2(max(base, 2)) >= 62:
        return torch.unique(labels_M_n, dim=0, return_inverse=True)[1]
    # A row read as a base-`base` number keeps the lexicographic order, and a 1-D unique of
    # those numbers costs a tenth of unique(dim=0).
    powers_n = base ** torch.arange(n - 1, -1, -1, device=labels_M_n.device)
    return torch.unique((labels_M_n * powers_n).sum(dim=1), return_inverse=True)[1]


def _scoring_rows(joint: _Joint) -> tuple[torch.Tensor, torch.Tensor]:
    """``(posterior_K_U, weights_U)`` with repeated sampled configurations merged.

    ``posterior_K_U[k, u] = p(w_k | config_u)`` (``cond / K``), K-major for the products.
    Identical configurations have bit-identical rows, so summing their weights changes nothing
    but the cost; a confident model draws the same few configurations over and over.
    """
    K = joint.cond_M_K.shape[1]
    if joint.labels_M_n is None:
        return (joint.cond_M_K / K).t().contiguous(), joint.weights_M
    inverse_M = _configuration_ids(joint.labels_M_n)
    U = int(inverse_M.max()) + 1
    M = inverse_M.shape[0]
    first_U = torch.empty(U, dtype=torch.long, device=inverse_M.device)
    first_U.scatter_(0, inverse_M, torch.arange(M, device=inverse_M.device))
    counts_U = torch.bincount(inverse_M, minlength=U).to(joint.weights_M.dtype)
    return (joint.cond_M_K[first_U] / K).t().contiguous(), counts_U / M


def _conditional_entropies_n(
    probs_nC_K: torch.Tensor,
    posterior_K_U: torch.Tensor,
    weights_U: torch.Tensor,
    C: int,
    workspace_2_E: torch.Tensor,
) -> torch.Tensor:
    """``H[y_i | y_chosen]`` for a chunk of candidates, from one ``[n*C,K] x [K,U]`` product.

    Candidate-major, so that each entropy is a reduction along one row: a candidate's value is
    then the same to the last bit in whichever chunk, at whichever place, it is scored (a
    ``weights_U @ nats_U_nC`` reduction down the columns is not, with MKL), and pruning cannot
    change a pick. The probabilities were clamped away from 0 and every configuration has a
    positive posterior, so the log needs no clamp of its own. Results land in a reused
    workspace: fresh 16 MB tensors per chunk make the allocator hold on to hundreds of MB.
    """
    nC, U = probs_nC_K.shape[0], posterior_K_U.shape[1]
    next_nC_U = workspace_2_E[0, : nC * U].view(nC, U)
    nats_nC_U = workspace_2_E[1, : nC * U].view(nC, U)
    torch.mm(probs_nC_K, posterior_K_U, out=next_nC_U)  # p(y_i = c | config_u)
    torch.log(next_nC_U, out=nats_nC_U).mul_(next_nC_U).mul_(weights_U)
    return -nats_nC_U.sum(dim=1).view(-1, C).sum(dim=1)


@dataclass(frozen=True)
class _Pool:
    """The candidates in BALD-descending order, laid out for the chunked products."""

    order_N: torch.Tensor
    probs_N_C_K: torch.Tensor  # sorted, clamped; a chunk of candidates is a block of rows
    bald_N: torch.Tensor  # in pool order
    bald_sorted_N: torch.Tensor
    cond_entropy_sorted_N: torch.Tensor

    @staticmethod
    def sorted_by_bald(checked: Checked) -> _Pool:
        cond_entropy_N = conditional_entropy_N(checked)
        bald_N = entropy_N(mean_probs_N_C(checked)) - cond_entropy_N  # as bald_N_of, sharing
        order_N = torch.sort(bald_N, descending=True, stable=True).indices
        # Clamping keeps every later log finite without a clamp pass per chunk.
        probs_N_C_K = checked.probs_N_K_C[order_N].clamp_min_(TINY).transpose(1, 2)
        return _Pool(
            order_N,
            probs_N_C_K.contiguous(),
            bald_N,
            bald_N[order_N],
            cond_entropy_N[order_N],
        )

    def probs_K_C(self, position: int) -> torch.Tensor:
        return self.probs_N_C_K[position].t().contiguous()

    def rows(self, positions_n: torch.Tensor) -> torch.Tensor:
        """``[n*C, K]`` probabilities of the candidates at these sorted positions."""
        return self.probs_N_C_K[positions_n].flatten(0, 1)


def _gains_N(
    posterior_K_U: torch.Tensor,
    weights_U: torch.Tensor,
    pool: _Pool,
    workspace_2_E: torch.Tensor,
) -> torch.Tensor:
    """``H[y_i | rows] - E_w H[y_i | w]`` of every candidate, in BALD-sorted order, chunked."""
    N, C, K = pool.probs_N_C_K.shape
    U = posterior_K_U.shape[1]
    chunk = max(1, _CHUNK_ELEMENTS // (U * C))
    probs_NC_K = pool.probs_N_C_K.view(N * C, K)
    entropies = [
        _conditional_entropies_n(
            probs_NC_K[start * C : (start + chunk) * C], posterior_K_U, weights_U, C, workspace_2_E
        )
        for start in range(0, N, chunk)
    ]
    return torch.cat(entropies) - pool.cond_entropy_sorted_N


def _group_configurations(
    posterior_K_U: torch.Tensor, weights_U: torch.Tensor, groups: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merges configurations with similar posteriors over w: ``(posterior_K_G, weights_G)``.

    Weighted k-means: Lloyd steps from evenly spaced rows, fitted on an evenly spaced sample
    of the rows (fitting on all of them costs more than the bound saves at N=2k), then one
    assignment of every row. Any grouping gives a valid bound; a good one, a tight bound.
    """
    rows_U_K = posterior_K_U.t()
    U = rows_U_K.shape[0]
    stride = max(1, U // (_FIT_ROWS_PER_GROUP * groups))
    centres_G_K = rows_U_K[torch.linspace(0, U - 1, groups, device=rows_U_K.device).long()]
    for _ in range(_KMEANS_ITERATIONS):
        centres_G_K, _ = _lloyd_step(rows_U_K[::stride], weights_U[::stride], centres_G_K)
    centres_G_K, mass_G = _lloyd_step(rows_U_K, weights_U, centres_G_K)
    filled_G = mass_G > 0
    return centres_G_K[filled_G].t().contiguous(), mass_G[filled_G]


def _lloyd_step(
    rows_R_K: torch.Tensor, weights_R: torch.Tensor, centres_G_K: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Assigns each row to its nearest centre: ``(weighted mean of each group, its mass)``.

    An emptied group keeps its old centre (and mass 0).
    """
    G, K = centres_G_K.shape
    # argmin |x - c|^2 = argmax 2 x.c - |c|^2, in one [R, K] x [K, G] product.
    nearness_R_G = torch.addmm(
        (centres_G_K**2).sum(dim=1), rows_R_K, centres_G_K.t(), beta=-1, alpha=2
    )
    group_R = nearness_R_G.argmax(dim=1)
    mass_G = weights_R.new_zeros(G).index_add_(0, group_R, weights_R)
    sums_G_K = rows_R_K.new_zeros(G, K).index_add_(0, group_R, rows_R_K * weights_R[:, None])
    means_G_K = sums_G_K / mass_G.clamp_min(TINY)[:, None]
    return torch.where(mass_G[:, None] > 0, means_G_K, centres_G_K), mass_G


def _rounding_noise(dtype: torch.dtype, K: int, U: int, C: int) -> float:
    """A bound on the rounding error of one computed gain (or bound), in nats.

    The entropy is a sum of terms of one sign, so its relative error stays below
    ``(K + log2(U*C) + 4) eps`` (the product over K, the log, the cascade sum), and it is at
    most ``ln C``. Measured at float32, N=10k, U=10k: 1.7e-7, a hundredth of this.
    """
    return (K + math.log2(U * C) + 4) * torch.finfo(dtype).eps * (1 + math.log(C))


def _best_candidate(
    joint: _Joint, pool: _Pool, taken_N: torch.Tensor, prune: bool, workspace_2_E: torch.Tensor
) -> tuple[int, float, int, int]:
    """The candidate with the largest gain ``I(y_i; w | y_chosen)``, by BALD-sorted position.

    Returns:
        (sorted position, gain, distinct configurations, number of candidates scored).
    """
    posterior_K_U, weights_U = _scoring_rows(joint)
    (N, C, K), U = pool.probs_N_C_K.shape, posterior_K_U.shape[1]
    noise = _rounding_noise(posterior_K_U.dtype, K, U, C)
    if prune and U >= _ROWS_PER_GROUP * _MIN_GROUPS:
        positions_s, gains_s = _scored_by_group_bound(
            posterior_K_U, weights_U, pool, taken_N, noise, workspace_2_E
        )
    else:
        gains_s = _gains_N(posterior_K_U, weights_U, pool, workspace_2_E)
        positions_s = torch.arange(N, device=gains_s.device)
        gains_s.masked_fill_(taken_N, -math.inf)
    position, gain = _pick(
        positions_s,
        gains_s,
        noise,
        lambda positions_b: _gains_float64(
            posterior_K_U, weights_U, pool, positions_b, workspace_2_E
        ),
    )
    return position, gain, U, positions_s.shape[0]


def _scored_by_group_bound(
    posterior_K_U: torch.Tensor,
    weights_U: torch.Tensor,
    pool: _Pool,
    taken_N: torch.Tensor,
    noise: float,
    workspace_2_E: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lazy greedy on a bound from grouped configurations: scores few candidates exactly.

    Entropy is concave, so merging configurations into groups (their weighted mean) can only
    raise ``H[y_i | y_chosen]``: the gains from U/32 groups bound every candidate's gain from
    above at 1/32 of the cost. Candidates are scored exactly in descending bound order until
    no later one can come within ``2 * noise`` of the best gain found (Minoux 1978), so every
    candidate that :func:`_pick` could consider is scored. BALD is this bound with a single
    group: far too loose after the first few picks.

    Returns:
        ``(positions_s, gains_s)``: the BALD-sorted positions scored and their gains.
    """
    (N, C, _), U = pool.probs_N_C_K.shape, posterior_K_U.shape[1]
    bound_K_G, bound_weights_G = _group_configurations(
        posterior_K_U, weights_U, max(U // _ROWS_PER_GROUP, min(U // 8, 128))
    )
    upper_N = _gains_N(bound_K_G, bound_weights_G, pool, workspace_2_E)
    upper_sorted_N, candidates_N = torch.sort(
        upper_N.masked_fill_(taken_N, -math.inf), descending=True, stable=True
    )
    chunk = max(1, _CHUNK_ELEMENTS // (U * C))
    best, scored = -math.inf, []
    for start in range(0, N, chunk):
        # computed gain <= computed bound + 2 noise, and _pick looks 2 noise below the best
        if float(upper_sorted_N[start]) + 4 * noise < best:
            break
        positions_n = candidates_N[start : start + chunk]
        entropies_n = _conditional_entropies_n(
            pool.rows(positions_n), posterior_K_U, weights_U, C, workspace_2_E
        )
        gains_n = entropies_n - pool.cond_entropy_sorted_N[positions_n]
        scored.append((positions_n, gains_n.masked_fill_(taken_N[positions_n], -math.inf)))
        best = max(best, float(gains_n.max()))
    return torch.cat([p for p, _ in scored]), torch.cat([g for _, g in scored])


def _pick(
    positions_s: torch.Tensor,
    gains_s: torch.Tensor,
    noise: float,
    rescore: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[int, float]:
    """The best scored candidate; ties go to the lower BALD-sorted position.

    Gains within rounding of the best cannot be ordered in float32 (late in a batch, or with a
    confident model, they are all ~1e-7, and a copy of a chosen item scores as well as a new
    item): the top few of them are scored again in float64 to decide.
    """
    near_s = gains_s >= gains_s.max() - 2 * noise
    positions_b, gains_b = positions_s[near_s], gains_s[near_s]
    if positions_b.shape[0] > 1 and gains_b.dtype != torch.float64:
        by_position_b = positions_b.argsort()  # for a stable order whatever was scored first
        positions_b, gains_b = positions_b[by_position_b], gains_b[by_position_b]
        top_b = torch.sort(gains_b, descending=True, stable=True).indices[:_TIE_BREAK_LIMIT]
        positions_b = positions_b[top_b]
        gains_b = rescore(positions_b)
    gain = gains_b.max()
    return int(positions_b[gains_b == gain].min()), float(gain)


def _gains_float64(
    posterior_K_U: torch.Tensor,
    weights_U: torch.Tensor,
    pool: _Pool,
    positions_b: torch.Tensor,
    workspace_2_E: torch.Tensor,
) -> torch.Tensor:
    """The gains of a few candidates in float64, in the float32 workspace reinterpreted."""
    C, U = pool.probs_N_C_K.shape[1], posterior_K_U.shape[1]
    posterior_K_U, weights_U = posterior_K_U.double(), weights_U.double()
    probs_b_C_K = pool.probs_N_C_K[positions_b].double()
    workspace_2_F = workspace_2_E.view(torch.float64)
    chunk = max(1, workspace_2_F.shape[1] // (U * C))
    entropies_b = torch.cat(
        [
            _conditional_entropies_n(
                probs_b_C_K[start : start + chunk].flatten(0, 1),
                posterior_K_U,
                weights_U,
                C,
                workspace_2_F,
            )
            for start in range(0, probs_b_C_K.shape[0], chunk)
        ]
    )
    cond_entropy_b = -(probs_b_C_K * probs_b_C_K.log()).sum(dim=(1, 2)) / probs_b_C_K.shape[2]
    return entropies_b - cond_entropy_b


def _add_label(
    joint: _Joint,
    chosen_probs: list[torch.Tensor],
    probs_K_C: torch.Tensor,
    num_samples: int,
    exact_budget: int,
    generator: torch.Generator,
) -> _Joint:
    """Extends the joint by one chosen label, switching from exact to sampled when too big."""
    chosen_probs.append(probs_K_C)
    K, C = probs_K_C.shape
    if joint.sampled:
        return _extend_sampled(joint, probs_K_C, generator)
    if C ** len(chosen_probs) * K <= exact_budget:
        return _extend_exact(joint, probs_K_C)
    return _sample_joint(chosen_probs, num_samples, generator)


def batchbald_select(
    log_probs_N_K_C: torch.Tensor,
    batch_size: int,
    *,
    generator: torch.Generator,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    exact_budget: int = DEFAULT_EXACT_BUDGET,
    prune: bool = True,
) -> Selection:
    """BatchBALD: greedily grow the batch maximising the joint mutual information.

    ``a({x_1..x_b}) = I(y_1, ..., y_b; w | x_1..x_b, D)`` is submodular, so adding at each step
    the item with the largest gain ``I(y_i; w | y_chosen) = H[y_i | y_chosen] - E_w H[y_i | w]``
    is within ``1 - 1/e`` of the best batch. The joint of the chosen labels is exact (all
    ``C^n`` configurations) while ``C^n * K <= exact_budget``; after that M configurations are
    importance-sampled as in the paper (M/K from each posterior sample w_k).

    A copy of a chosen image only gains ``I(y'; w | y)``, which is near zero when each posterior
    sample is confident about the image, so BatchBALD does not fill a batch with copies the
    way top-k BALD does. ``batch_size > N`` returns the whole pool
    in greedy order.

    Args:
        log_probs_N_K_C: log-softmax outputs, K >= 2 *consistent* MC-dropout samples (the same
            K masks for every item; otherwise the joint is meaningless).
        batch_size: b >= 1.
        generator: source of the sampled configurations (on the device of the log-probs).
        num_samples: M, the number of sampled joint configurations.
        exact_budget: keep the joint exact while ``C^n * K`` is at most this.
        prune: skip candidates whose BALD (an upper bound of their gain) cannot beat the best
            gain found; changes nothing but the run time.

    Returns:
        Selection with the picks, BALD as ``scores`` and the gain of each pick as
        ``batch_scores`` (the first pick is the BALD argmax, its gain its BALD).

    Raises:
        ValueError: malformed log-probs, K < 2, ``batch_size < 1`` or ``num_samples < 1``.

    References:
        Kirsch, van Amersfoort & Gal, "BatchBALD: Efficient and Diverse Batch Acquisition for
        Deep Bayesian Active Learning", NeurIPS 2019.
    """
    check_batch_size(batch_size)
    return checked_batchbald(
        check_log_probs(log_probs_N_K_C),
        batch_size,
        generator,
        num_samples,
        exact_budget,
        prune=prune,
    )


def checked_batchbald(
    checked: Checked,
    batch_size: int,
    generator: torch.Generator,
    num_samples: int,
    exact_budget: int,
    *,
    prune: bool = True,
) -> Selection:
    check_bayesian(checked.K, "batchbald")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    N, K, C = checked.probs_N_K_C.shape
    pool = _Pool.sorted_by_bald(checked)
    bald_sorted_N = pool.bald_sorted_N
    taken_N = torch.zeros(N, dtype=torch.bool, device=bald_sorted_N.device)
    positions, gains = [0], [float(bald_sorted_N[0])]  # the first pick is the BALD argmax
    taken_N[0] = True
    joint = _empty_joint(K, pool.probs_N_C_K)
    chosen_probs: list[torch.Tensor] = []
    workspace_2_E = pool.probs_N_C_K.new_empty(2, _CHUNK_ELEMENTS)
    for step in range(1, min(batch_size, N)):
        started = time.perf_counter()
        joint = _add_label(
            joint,
            chosen_probs,
            pool.probs_K_C(positions[-1]),
            num_samples,
            exact_budget,
            generator,
        )
        rows = 2 * joint.cond_M_K.shape[0] * C  # U * C, twice for a float64 view
        if workspace_2_E.shape[1] < rows:  # only when one candidate's C rows exceed it
            workspace_2_E = workspace_2_E.new_empty(2, rows)
        position, gain, distinct, scored = _best_candidate(
            joint, pool, taken_N, prune, workspace_2_E
        )
        positions.append(position)
        gains.append(gain)
        taken_N[position] = True
        logger.debug(
            "batchbald step %d: %d configurations (%d distinct, %s), %d candidates scored, "
            "gain %.4g, %.3f s",
            step,
            joint.cond_M_K.shape[0],
            distinct,
            "sampled" if joint.sampled else "exact",
            scored,
            gain,
            time.perf_counter() - started,
        )
    indices_b = pool.order_N[torch.tensor(positions, device=pool.order_N.device)]
    return Selection(
        indices=indices_b,
        scores=pool.bald_N.float(),
        batch_scores=torch.tensor(gains, dtype=torch.float32),
    )

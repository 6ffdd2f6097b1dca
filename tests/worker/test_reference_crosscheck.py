"""Cross-checks of the acquisition engine (worker.engine) against independent implementations.

Baal's heuristics take *probabilities* shaped ``[N, C, K]`` (iterations last) and rank
ascending or descending per heuristic; batchbald_redux takes log-probs ``[N, K, C]`` like we
do. Both are test dependencies (pyproject ``[test]`` extra), so in CI these tests run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.engine.acquisition import select
from worker.engine.batchbald import batchbald_select
from worker.engine.scores import bald_scores, entropy_scores, least_confidence_scores, margin_scores

heuristics = pytest.importorskip(
    "baal.active.heuristics", reason="Baal is a [test] dependency used as the BALD reference"
)
redux = pytest.importorskip(
    "batchbald_redux.batchbald",
    reason="batchbald-redux is a [test] dependency used as the BatchBALD reference",
)

torch.set_num_threads(min(2, torch.get_num_threads()))


def make_log_probs(N: int, K: int, C: int, *, seed: int, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(N, 1, C, generator=g) + 2 * torch.randn(N, K, C, generator=g)
    return torch.log_softmax(logits.double(), dim=-1).to(dtype)


def to_baal(log_probs_N_K_C: torch.Tensor) -> np.ndarray:
    """Baal's layout: probabilities [N, C, K]."""
    return log_probs_N_K_C.double().exp().permute(0, 2, 1).numpy()


@pytest.mark.parametrize(
    ("dtype", "atol"), [(torch.float64, 1e-9), (torch.float32, 1e-6)], ids=["f64", "f32"]
)
@pytest.mark.parametrize("seed", range(3))
def test_scores_match_baal(seed: int, dtype: torch.dtype, atol: float) -> None:
    log_probs = make_log_probs(500, 20, 10, seed=seed, dtype=dtype)
    probs_N_C_K = to_baal(log_probs)

    baal_bald = heuristics.BALD().get_uncertainties(probs_N_C_K)
    np.testing.assert_allclose(bald_scores(log_probs).double().numpy(), baal_bald, atol=atol)

    baal_entropy = heuristics.Entropy().get_uncertainties(probs_N_C_K)
    np.testing.assert_allclose(entropy_scores(log_probs).double().numpy(), baal_entropy, atol=atol)

    # Baal's Margin is the raw p_(1) - p_(2) of the mean prediction, ranked ascending; ours is
    # 1 - that margin, ranked descending. Same quantity, so compare 1 - ours with Baal's.
    baal_margin = heuristics.Margin().get_uncertainties(probs_N_C_K)
    ours_margin = 1 - margin_scores(log_probs).double().numpy()
    np.testing.assert_allclose(ours_margin, baal_margin, atol=atol)

    # Baal's Certainty is max_c of the mean prediction; least confidence is 1 - that.
    baal_certainty = heuristics.Certainty().get_uncertainties(probs_N_C_K)
    ours = 1 - least_confidence_scores(log_probs).double().numpy()
    np.testing.assert_allclose(ours, baal_certainty, atol=atol)


@pytest.mark.parametrize(
    ("strategy", "heuristic"),
    [("bald", "BALD"), ("entropy", "Entropy"), ("margin", "Margin")],
)
def test_topk_batches_match_baal_ranking(strategy: str, heuristic: str) -> None:
    log_probs = make_log_probs(1_000, 20, 10, seed=4, dtype=torch.float64)
    ranks = getattr(heuristics, heuristic)().get_ranks(to_baal(log_probs))[0]
    ours = select(strategy, log_probs, 10, generator=torch.Generator().manual_seed(0))
    assert ours.indices.tolist() == [int(i) for i in ranks[:10]]


@pytest.mark.parametrize("seed", range(3))
def test_entropies_and_bald_batch_match_batchbald_redux(seed: int) -> None:
    log_probs = make_log_probs(800, 20, 10, seed=seed, dtype=torch.float64)
    conditional = redux.compute_conditional_entropy(log_probs)
    entropy = redux.compute_entropy(log_probs)
    torch.testing.assert_close(entropy_scores(log_probs), entropy, atol=1e-9, rtol=0)
    torch.testing.assert_close(bald_scores(log_probs), entropy - conditional, atol=1e-9, rtol=0)
    reference = redux.get_bald_batch(log_probs, 10)
    ours = select("bald", log_probs, 10, generator=torch.Generator().manual_seed(0))
    assert ours.indices.tolist() == list(reference.indices)


@pytest.mark.parametrize("seed", range(3))
def test_batchbald_picks_match_batchbald_redux_while_the_joint_is_exact(seed: int) -> None:
    # redux keeps the joint exact while C^n <= M; C=4, M=1,000 -> exact for the first 5 picks.
    # Our equivalent switch is C^n * K <= exact_budget, so exact_budget = M * K.
    N, K, C, M, b = 400, 10, 4, 1_000, 5
    log_probs = make_log_probs(N, K, C, seed=seed, dtype=torch.float64)
    reference = redux.get_batchbald_batch(log_probs, b, M, dtype=torch.float64)
    for dtype in (torch.float64, torch.float32):
        ours = batchbald_select(
            log_probs.to(dtype),
            b,
            generator=torch.Generator().manual_seed(0),
            num_samples=M,
            exact_budget=M * K,
        )
        assert ours.indices.tolist() == list(reference.indices), dtype
        # redux reports the joint MI of the batch so far; ours, each pick's marginal gain.
        np.testing.assert_allclose(
            torch.cumsum(ours.batch_scores.double(), 0).numpy(), reference.scores, atol=1e-5
        )

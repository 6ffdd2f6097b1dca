"""Known values, brute-force checks, properties and errors of the acquisition engine
(worker.engine.scores, .batchbald, .acquisition)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from core.catalog import BAYESIAN_STRATEGIES, STRATEGIES
from worker.engine.acquisition import (
    DEFAULT_PREFILTER,
    IMPLEMENTED,
    Prefilter,
    powerbald_select,
    random_select,
    select,
)
from worker.engine.batchbald import (
    _conditional_entropies_n,
    _group_configurations,
    batchbald_select,
)
from worker.engine.scores import (
    Selection,
    bald_scores,
    entropy_scores,
    least_confidence_scores,
    margin_scores,
    validate_log_probs,
    variation_ratio_scores,
)

torch.set_num_threads(min(2, torch.get_num_threads()))


def make_log_probs(
    N: int, K: int, C: int, *, seed: int, sample_scale: float = 2.0, item_scale: float = 2.0
) -> torch.Tensor:
    """Synthetic MC-dropout output: a per-item mean logit plus per-sample disagreement."""
    g = torch.Generator().manual_seed(seed)
    logits = item_scale * torch.randn(N, 1, C, generator=g) + sample_scale * torch.randn(
        N, K, C, generator=g
    )
    return torch.log_softmax(logits, dim=-1)


def exact_joint_mi(log_probs_N_K_C: torch.Tensor, indices: list[int]) -> float:
    """I(y_1..y_n; w) by enumerating all C^n label configurations, in float64."""
    probs_n_K_C = log_probs_N_K_C[indices].double().exp()
    _, K, _ = probs_n_K_C.shape
    joint_K_M = torch.ones(K, 1, dtype=torch.float64)
    for probs_K_C in probs_n_K_C:
        joint_K_M = (joint_K_M[:, :, None] * probs_K_C[:, None, :]).reshape(K, -1)
    marginal_M = joint_K_M.mean(dim=0)
    joint_entropy = -torch.xlogy(marginal_M, marginal_M).sum()
    conditional = -torch.xlogy(probs_n_K_C, probs_n_K_C).sum() / K
    return float(joint_entropy - conditional)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- known values


@pytest.mark.parametrize("C", [2, 4, 10])
def test_uniform_predictions_have_max_entropy_and_zero_bald(C: int) -> None:
    log_probs = torch.full((5, 8, C), -math.log(C))
    torch.testing.assert_close(entropy_scores(log_probs), torch.full((5,), math.log(C)))
    torch.testing.assert_close(bald_scores(log_probs), torch.zeros(5), atol=1e-6, rtol=0)
    torch.testing.assert_close(least_confidence_scores(log_probs), torch.full((5,), 1 - 1 / C))
    torch.testing.assert_close(margin_scores(log_probs), torch.ones(5))


def test_confident_disagreeing_samples_have_bald_ln2() -> None:
    # Half the samples say class 0, half class 1, each with certainty: one full bit of MI.
    probs = torch.zeros(1, 4, 3)
    probs[0, :2, 0] = 1.0
    probs[0, 2:, 1] = 1.0
    log_probs = torch.log_softmax(torch.log(probs.clamp_min(1e-12)), dim=-1)
    assert bald_scores(log_probs).item() == pytest.approx(math.log(2), abs=1e-5)
    assert variation_ratio_scores(log_probs).item() == pytest.approx(0.5)


def test_margin_scores_rank_smaller_margins_higher() -> None:
    probs_N_C = torch.tensor([[0.9, 0.05, 0.05], [0.5, 0.4, 0.1], [0.34, 0.33, 0.33]])
    log_probs = probs_N_C.log()[:, None, :].expand(3, 2, 3)
    scores = margin_scores(log_probs)
    torch.testing.assert_close(scores, torch.tensor([1 - 0.85, 1 - 0.1, 1 - 0.01]))
    assert select("margin", log_probs, 1, generator=gen()).indices.tolist() == [2]


def test_variation_ratio_counts_votes() -> None:
    votes = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 2], [1, 2, 1, 2]])
    log_probs = torch.log_softmax(10 * torch.nn.functional.one_hot(votes, 3).float(), dim=-1)
    torch.testing.assert_close(variation_ratio_scores(log_probs), torch.tensor([0.0, 0.5, 0.5]))


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "random"])
def test_topk_strategies_pick_the_highest_scores(strategy: str) -> None:
    log_probs = make_log_probs(200, 10, 5, seed=1)
    selection = select(strategy, log_probs, 10, generator=gen())
    assert isinstance(selection, Selection)
    assert selection.indices.dtype == torch.long
    assert selection.scores.shape == (200,) and selection.scores.dtype == torch.float32
    assert selection.batch_scores.shape == (10,)
    assert len(set(selection.indices.tolist())) == 10
    if strategy in {"entropy", "least_confidence", "margin", "bald", "variation_ratios"}:
        expected = torch.sort(selection.scores, descending=True, stable=True).indices[:10]
        assert selection.indices.tolist() == expected.tolist()
        torch.testing.assert_close(selection.batch_scores, selection.scores[selection.indices])


# --------------------------------------------------------------------------- BatchBALD


@pytest.mark.parametrize("seed", range(5))
def test_batchbald_first_pick_is_bald_argmax(seed: int) -> None:
    log_probs = make_log_probs(500, 20, 10, seed=seed)
    selection = batchbald_select(log_probs, 5, generator=gen())
    assert selection.indices[0].item() == int(bald_scores(log_probs).argmax())
    assert selection.batch_scores[0].item() == pytest.approx(bald_scores(log_probs).max().item())


def duplicated_pool(seed: int, copies: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """A pool where each of the 8 most informative items appears `copies` times.

    Each posterior sample is confident (large sample_scale), like a trained network on a
    repeated image, so a second copy of a labelled image teaches the model next to nothing.
    """
    base = make_log_probs(60, 20, 10, seed=seed, sample_scale=6.0, item_scale=1.0)
    top = bald_scores(base).argsort(descending=True)[:8]
    rows = torch.cat([torch.arange(60), top.repeat_interleave(copies - 1)])
    perm = torch.randperm(rows.shape[0], generator=gen(seed))
    return base[rows[perm]], rows[perm]  # pool, and which base item each pool row copies


@pytest.mark.parametrize("seed", range(3))
def test_batchbald_never_picks_two_copies_while_topk_bald_does(seed: int) -> None:
    pool, source = duplicated_pool(seed)
    bald_pick = select("bald", pool, 10, generator=gen()).indices
    batchbald_pick = select("batchbald", pool, 10, generator=gen()).indices
    assert len(set(source[bald_pick].tolist())) < 10  # top-k BALD takes copies
    assert len(set(source[batchbald_pick].tolist())) == 10


@pytest.mark.parametrize(("seed", "b"), [(s, b) for s in range(4) for b in (2, 3, 4)])
def test_batchbald_batch_has_at_least_the_joint_mi_of_topk_bald(seed: int, b: int) -> None:
    log_probs = make_log_probs(40, 8, 3, seed=seed)
    greedy = batchbald_select(log_probs, b, generator=gen()).indices.tolist()
    top_k = select("bald", log_probs, b, generator=gen()).indices.tolist()
    assert exact_joint_mi(log_probs, greedy) >= exact_joint_mi(log_probs, top_k) - 1e-6


@pytest.mark.parametrize("seed", range(3))
def test_batchbald_exact_gains_match_brute_force_greedy(seed: int) -> None:
    log_probs = make_log_probs(25, 6, 3, seed=seed, sample_scale=3.0)
    selection = batchbald_select(log_probs, 4, generator=gen())
    chosen: list[int] = []
    for pick, gain in zip(selection.indices.tolist(), selection.batch_scores.tolist(), strict=True):
        base = exact_joint_mi(log_probs, chosen) if chosen else 0.0
        gains = {
            i: exact_joint_mi(log_probs, [*chosen, i]) - base for i in range(25) if i not in chosen
        }
        best = max(gains, key=gains.__getitem__)
        assert gains[pick] == pytest.approx(gains[best], abs=1e-5)  # greedy optimum
        assert gain == pytest.approx(gains[pick], abs=1e-5)  # reported marginal gain
        chosen.append(pick)


def test_batchbald_sampled_joint_estimates_the_exact_joint_mi() -> None:
    log_probs = make_log_probs(30, 10, 3, seed=7)
    # exact_budget=1 forces sampling from the second pick on; C^5 = 243 keeps brute force cheap.
    selection = batchbald_select(log_probs, 5, generator=gen(3), num_samples=20_000, exact_budget=1)
    estimate = float(selection.batch_scores.sum())
    assert estimate == pytest.approx(
        exact_joint_mi(log_probs, selection.indices.tolist()), abs=0.02
    )


def test_batchbald_switches_to_sampling_and_stays_sensible_for_large_batches() -> None:
    log_probs = make_log_probs(300, 20, 10, seed=2)
    selection = batchbald_select(log_probs, 12, generator=gen(), num_samples=2_000)
    assert len(set(selection.indices.tolist())) == 12
    gains = selection.batch_scores
    assert bool(torch.isfinite(gains).all()) and bool((gains > -1e-3).all())
    # Joint MI cannot exceed H(w) = ln K for K equally likely posterior samples.
    assert float(gains.sum()) <= math.log(20) + 0.05


def test_batchbald_pruning_changes_nothing_but_time() -> None:
    log_probs = make_log_probs(2_000, 20, 10, seed=4)
    pruned = batchbald_select(log_probs, 8, generator=gen(1), num_samples=2_000, prune=True)
    full = batchbald_select(log_probs, 8, generator=gen(1), num_samples=2_000, prune=False)
    assert pruned.indices.tolist() == full.indices.tolist()
    torch.testing.assert_close(pruned.batch_scores, full.batch_scores)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batchbald_gains_do_not_depend_on_the_chunk_they_are_scored_in(dtype: torch.dtype) -> None:
    # Pruning scores candidates in bound order and in other chunks than the full pass; its
    # picks equal the unpruned ones only if each gain is the same to the last bit.
    N, K, C, U = 300, 20, 10, 1_000
    probs_N_C_K = make_log_probs(N, K, C, seed=6).to(dtype).exp().transpose(1, 2).contiguous()
    posterior_K_U = torch.softmax(3 * torch.randn(K, U, generator=gen(6), dtype=dtype), dim=0)
    weights_U = torch.rand(U, generator=gen(7), dtype=dtype)
    workspace = torch.empty(2, N * C * U, dtype=dtype)
    whole_N = _conditional_entropies_n(
        probs_N_C_K.flatten(0, 1), posterior_K_U, weights_U, C, workspace
    )
    order_N = torch.randperm(N, generator=gen(8))
    for width in (1, 7, 64):
        for start in range(0, N, width):
            positions_n = order_N[start : start + width]
            part_n = _conditional_entropies_n(
                probs_N_C_K[positions_n].flatten(0, 1), posterior_K_U, weights_U, C, workspace
            )
            assert torch.equal(part_n, whole_N[positions_n])


def test_grouped_configurations_bound_the_conditional_entropy_from_above() -> None:
    N, K, C, U = 200, 20, 10, 2_000
    probs_N_C_K = make_log_probs(N, K, C, seed=9).exp().transpose(1, 2).contiguous()
    posterior_K_U = torch.softmax(3 * torch.randn(K, U, generator=gen(9)), dim=0)
    weights_U = torch.rand(U, generator=gen(10))
    weights_U /= weights_U.sum()
    workspace = torch.empty(2, N * C * U)
    rows_NC_K = probs_N_C_K.flatten(0, 1)
    exact_N = _conditional_entropies_n(rows_NC_K, posterior_K_U, weights_U, C, workspace)
    for groups in (1, 16, 250):
        posterior_K_G, weights_G = _group_configurations(posterior_K_U, weights_U, groups)
        assert posterior_K_G.shape[1] <= groups
        torch.testing.assert_close(weights_G.sum(), torch.tensor(1.0))
        bound_N = _conditional_entropies_n(rows_NC_K, posterior_K_G, weights_G, C, workspace)
        assert bool((bound_N >= exact_N - 1e-5).all())
    assert float((bound_N - exact_N).mean()) < 0.05  # 250 groups: a tight bound


def test_batchbald_is_deterministic_under_a_seed() -> None:
    log_probs = make_log_probs(500, 20, 10, seed=5)
    first = batchbald_select(log_probs, 10, generator=gen(9), num_samples=1_000)
    second = batchbald_select(log_probs, 10, generator=gen(9), num_samples=1_000)
    assert first.indices.tolist() == second.indices.tolist()


# --------------------------------------------------------------------------- random, power


def test_random_select_is_seeded_noise() -> None:
    first = random_select(100, 10, generator=gen(3))
    again = random_select(100, 10, generator=gen(3))
    other = random_select(100, 10, generator=gen(4))
    assert first.indices.tolist() == again.indices.tolist() != other.indices.tolist()
    assert first.indices.tolist() == first.scores.argsort(descending=True)[:10].tolist()
    assert float(first.scores.min()) >= 0.0 and float(first.scores.max()) < 1.0


def test_powerbald_samples_proportionally_to_bald() -> None:
    # The first pick's frequency over many seeds must follow BALD / sum(BALD).
    log_probs = make_log_probs(3, 8, 4, seed=11, item_scale=0.0)
    bald = bald_scores(log_probs).double()
    counts = torch.zeros(3)
    for seed in range(3_000):
        counts[powerbald_select(log_probs, 1, generator=gen(seed)).indices[0]] += 1
    torch.testing.assert_close(
        counts / counts.sum(), (bald / bald.sum()).float(), atol=0.03, rtol=0
    )


def test_powerbald_with_large_beta_is_topk_bald() -> None:
    log_probs = make_log_probs(300, 10, 5, seed=12)
    power = powerbald_select(log_probs, 5, generator=gen(), beta=1e4)
    assert power.indices.tolist() == bald_scores(log_probs).argsort(descending=True)[:5].tolist()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_batch_larger_than_pool_returns_whole_pool_in_order(strategy: str) -> None:
    log_probs = make_log_probs(7, 5, 3, seed=13)
    selection = select(strategy, log_probs, 50, generator=gen())
    assert sorted(selection.indices.tolist()) == list(range(7))
    if strategy not in {"batchbald", "powerbald", "random"}:
        assert (selection.batch_scores[:-1] >= selection.batch_scores[1:]).all()


# --------------------------------------------------------------------------- errors


def test_nan_log_probs_raise() -> None:
    log_probs = make_log_probs(4, 3, 2, seed=0)
    log_probs[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        select("entropy", log_probs, 1, generator=gen())


def test_infinite_log_probs_raise() -> None:
    log_probs = make_log_probs(4, 3, 2, seed=0)
    log_probs[0, 0, 1] = -float("inf")
    with pytest.raises(ValueError, match="infinite"):
        bald_scores(log_probs)


@pytest.mark.parametrize("bad", ["logits", "probs", "shifted"])
def test_unnormalised_log_probs_raise(bad: str) -> None:
    log_probs = make_log_probs(4, 3, 5, seed=0)
    wrong = {
        "logits": log_probs * 3 + 1,
        "probs": log_probs.exp(),
        "shifted": log_probs + 2e-3,
    }[bad]
    with pytest.raises(ValueError, match="normalise"):
        select("bald", wrong, 1, generator=gen())


def test_half_precision_storage_is_accepted() -> None:
    log_probs = make_log_probs(50, 10, 10, seed=0)
    from_half = bald_scores(log_probs.half())
    torch.testing.assert_close(from_half, bald_scores(log_probs), atol=5e-3, rtol=0)


@pytest.mark.parametrize("shape", [(10, 3), (2, 10, 3, 1), (10,)])
def test_wrong_ndim_raises(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="3 dimensions"):
        select("entropy", torch.zeros(shape), 1, generator=gen())


def test_integer_and_empty_inputs_raise() -> None:
    with pytest.raises(ValueError, match="floating point"):
        entropy_scores(torch.zeros(3, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        entropy_scores(torch.zeros(0, 2, 2))
    with pytest.raises(ValueError, match=r"torch\.Tensor"):
        validate_log_probs([[[0.0]]])  # type: ignore[arg-type]


@pytest.mark.parametrize("batch_size", [0, -3])
def test_batch_size_below_one_raises(batch_size: int) -> None:
    log_probs = make_log_probs(5, 3, 2, seed=0)
    for strategy in STRATEGIES:
        with pytest.raises(ValueError, match="batch_size"):
            select(strategy, log_probs, batch_size, generator=gen())


@pytest.mark.parametrize("strategy", sorted(BAYESIAN_STRATEGIES))
def test_single_mc_sample_with_bayesian_strategy_raises(strategy: str) -> None:
    log_probs = make_log_probs(5, 1, 3, seed=0)
    with pytest.raises(ValueError, match="K >= 2"):
        select(strategy, log_probs, 2, generator=gen())


@pytest.mark.parametrize("strategy", sorted(set(STRATEGIES) - BAYESIAN_STRATEGIES))
def test_single_mc_sample_works_for_non_bayesian_strategy(strategy: str) -> None:
    log_probs = make_log_probs(5, 1, 3, seed=0)
    assert select(strategy, log_probs, 2, generator=gen()).indices.shape == (2,)


def test_unknown_strategy_raises() -> None:
    with pytest.raises(ValueError, match="unknown strategy 'coreset'"):
        select("coreset", make_log_probs(5, 3, 2, seed=0), 1, generator=gen())


def test_bad_batchbald_and_powerbald_parameters_raise() -> None:
    log_probs = make_log_probs(5, 3, 2, seed=0)
    with pytest.raises(ValueError, match="num_samples"):
        batchbald_select(log_probs, 2, generator=gen(), num_samples=0)
    with pytest.raises(ValueError, match="beta"):
        powerbald_select(log_probs, 2, generator=gen(), beta=-1.0)
    with pytest.raises(ValueError, match="C=2"):
        margin_scores(make_log_probs(5, 3, 1, seed=0))


# --------------------------------------------------------------------------- properties

SCORE_FUNCTIONS = {
    "entropy": entropy_scores,
    "least_confidence": least_confidence_scores,
    "margin": margin_scores,
    "variation_ratios": variation_ratio_scores,
    "bald": bald_scores,
}


@st.composite
def log_prob_arrays(draw: st.DrawFn) -> torch.Tensor:
    N = draw(st.integers(1, 12))
    K = draw(st.integers(2, 6))
    C = draw(st.integers(2, 5))
    logits = draw(
        arrays(
            dtype="float32",
            shape=(N, K, C),
            elements=st.floats(-30, 30, allow_nan=False, width=32),
        )
    )
    return torch.log_softmax(torch.from_numpy(logits), dim=-1)


PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(log_probs=log_prob_arrays())
def test_scores_are_finite_and_bald_non_negative(log_probs: torch.Tensor) -> None:
    for name, score in SCORE_FUNCTIONS.items():
        scores = score(log_probs)
        assert scores.shape == (log_probs.shape[0],)
        assert bool(torch.isfinite(scores).all()), name
    C = log_probs.shape[2]
    assert bool((bald_scores(log_probs) >= -1e-5).all())
    assert bool((entropy_scores(log_probs) <= math.log(C) + 1e-5).all())
    assert bool((bald_scores(log_probs) <= entropy_scores(log_probs) + 1e-5).all())


@PROPERTY_SETTINGS
@given(log_probs=log_prob_arrays(), data=st.data())
def test_scores_are_permutation_invariant(log_probs: torch.Tensor, data: st.DataObject) -> None:
    N = log_probs.shape[0]
    perm = torch.tensor(data.draw(st.permutations(range(N))), dtype=torch.long)
    for name, score in SCORE_FUNCTIONS.items():
        torch.testing.assert_close(score(log_probs[perm]), score(log_probs)[perm], msg=name)


@PROPERTY_SETTINGS
@given(
    seed=st.integers(0, 2**16),
    N=st.integers(2, 40),
    C=st.integers(2, 4),
    b=st.integers(1, 5),
    strategy=st.sampled_from(["entropy", "least_confidence", "margin", "bald", "batchbald"]),
    data=st.data(),
)
def test_selections_are_permutation_invariant(
    seed: int, N: int, C: int, b: int, strategy: str, data: st.DataObject
) -> None:
    log_probs = make_log_probs(N, 6, C, seed=seed)
    scores = SCORE_FUNCTIONS["bald" if strategy == "batchbald" else strategy](log_probs)
    # Ties (up to float rounding) may go either way; require a clear order at the top.
    top = scores.sort(descending=True).values[: min(N, b + 1)]
    assume(top.numel() < 2 or bool((top[:-1] - top[1:]).min() > 1e-4))
    perm = torch.tensor(data.draw(st.permutations(range(N))), dtype=torch.long)
    original = select(strategy, log_probs, b, generator=gen())
    permuted = select(strategy, log_probs[perm], b, generator=gen())
    mapped_back = perm[permuted.indices]
    if strategy == "batchbald":
        gains = exact_brute_force_gains(log_probs, original.indices.tolist())
        assume(gains > 1e-4)
        assert mapped_back.tolist() == original.indices.tolist()
    else:
        assert sorted(mapped_back.tolist()) == sorted(original.indices.tolist())
    torch.testing.assert_close(permuted.scores, original.scores[perm])


def exact_brute_force_gains(log_probs: torch.Tensor, picks: list[int]) -> float:
    """The smallest margin between the greedy pick and the runner-up over all steps."""
    smallest = math.inf
    for step in range(1, len(picks)):
        chosen = picks[:step]
        values = sorted(
            (
                exact_joint_mi(log_probs, [*chosen, i])
                for i in range(log_probs.shape[0])
                if i not in chosen
            ),
            reverse=True,
        )
        if len(values) > 1:
            smallest = min(smallest, values[0] - values[1])
    return smallest


def test_exact_joint_mi_helper_agrees_with_bald_for_one_item() -> None:
    # The brute-force helper that the tests above trust is itself checked against BALD.
    log_probs = make_log_probs(6, 5, 3, seed=0)
    bald = bald_scores(log_probs.double())
    for i in range(6):
        assert exact_joint_mi(log_probs, [i]) == pytest.approx(float(bald[i]), abs=1e-9)


def test_the_engine_implements_exactly_the_catalogs_strategies() -> None:
    # The API serves core.catalog (no torch there); select must implement each name in it.
    assert set(STRATEGIES) == IMPLEMENTED


# --------------------------------------------------------------------------- large pools


def chunked_road(keep: int) -> Prefilter:
    """The large-pool road on a small pool: chunks of 37 items of [20, 10], ``keep`` kept."""
    return Prefilter(above=0, keep=keep, chunk_elements=37 * 20 * 10)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("keep", [600, 10_000])
def test_the_large_pool_road_keeping_every_item_changes_nothing(strategy: str, keep: int) -> None:
    log_probs = make_log_probs(600, 20, 10, seed=21)
    whole = select(strategy, log_probs, 12, generator=gen(3), num_samples=2_000, prefilter=None)
    chunked = select(
        strategy, log_probs, 12, generator=gen(3), num_samples=2_000, prefilter=chunked_road(keep)
    )
    assert chunked.indices.tolist() == whole.indices.tolist()
    torch.testing.assert_close(chunked.scores, whole.scores, atol=0, rtol=0)
    torch.testing.assert_close(chunked.batch_scores, whole.batch_scores, atol=0, rtol=0)


def test_the_default_prefilter_leaves_pools_up_to_20k_whole() -> None:
    assert DEFAULT_PREFILTER.above >= 20_000
    log_probs = make_log_probs(300, 20, 10, seed=23)
    default = select("batchbald", log_probs, 6, generator=gen())
    assert (
        default.indices.tolist() == batchbald_select(log_probs, 6, generator=gen()).indices.tolist()
    )


@pytest.mark.parametrize("seed", range(3))
def test_the_batchbald_prefilter_searches_the_top_m_by_bald(seed: int) -> None:
    log_probs = make_log_probs(800, 20, 10, seed=seed)
    selection = select("batchbald", log_probs, 10, generator=gen(), prefilter=chunked_road(50))
    bald = bald_scores(log_probs)
    top_50 = torch.sort(bald, descending=True, stable=True).indices[:50]
    assert set(selection.indices.tolist()) <= set(top_50.tolist())
    # It is BatchBALD on those candidates, and the whole pool's BALD orders the rest.
    candidates = top_50.sort().values
    inner = batchbald_select(log_probs[candidates], 10, generator=gen())
    assert selection.indices.tolist() == candidates[inner.indices].tolist()
    torch.testing.assert_close(selection.batch_scores, inner.batch_scores)
    torch.testing.assert_close(selection.scores, bald, atol=0, rtol=0)


@pytest.mark.parametrize("seed", range(4))
def test_a_prefilter_whose_picks_all_gain_more_than_the_dropped_bald_changes_no_pick(
    seed: int,
) -> None:
    # BALD bounds every gain: when each pick gains more than the best BALD dropped, no dropped
    # item could have been picked, and the whole-pool search agrees pick for pick. A few items
    # the model disagrees on, among many it is nearly sure of:
    disputed = make_log_probs(30, 20, 10, seed=seed, sample_scale=3.0)
    settled = make_log_probs(970, 20, 10, seed=seed + 100, sample_scale=0.3)
    log_probs = torch.cat([disputed, settled])[torch.randperm(1_000, generator=gen(seed))]
    prefiltered = select("batchbald", log_probs, 4, generator=gen(), prefilter=chunked_road(50))
    dropped = float(torch.sort(bald_scores(log_probs), descending=True).values[50])
    assert float(prefiltered.batch_scores.min()) > dropped
    whole = select("batchbald", log_probs, 4, generator=gen(), prefilter=None)
    assert prefiltered.indices.tolist() == whole.indices.tolist()


def test_the_prefilter_keeps_at_least_the_batch_size() -> None:
    log_probs = make_log_probs(200, 20, 10, seed=24)
    selection = select("batchbald", log_probs, 8, generator=gen(), prefilter=chunked_road(3))
    assert len(set(selection.indices.tolist())) == 8


def test_the_large_pool_road_checks_every_chunk() -> None:
    log_probs = make_log_probs(400, 20, 10, seed=25)
    log_probs[350, 4, 2] = float("nan")  # in the tenth chunk of 37
    with pytest.raises(ValueError, match="NaN"):
        select("entropy", log_probs, 3, generator=gen(), prefilter=chunked_road(400))
    with pytest.raises(ValueError, match="K >= 2"):
        select("batchbald", log_probs[:, :1], 3, generator=gen(), prefilter=chunked_road(400))
    with pytest.raises(ValueError, match="3 dimensions"):
        select("bald", log_probs[:, 0], 3, generator=gen(), prefilter=chunked_road(400))
    with pytest.raises(ValueError, match="keep"):
        Prefilter(keep=0)

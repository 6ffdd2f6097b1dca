"""Cold-start selection (worker.engine.coldstart): coverage of unequal clusters against random,
steering by labels, determinism, edge sizes, and the pieces against brute force / sklearn."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import numpy as np
import pytest
from numpy.typing import NDArray
from sklearn.neighbors import radius_neighbors_graph

from worker.engine.coldstart import (
    ColdStartSelection,
    ball_graph,
    kmeans_labels,
    normalised,
    probcover,
    purity_radius,
    typicality,
    typiclust,
)

# One cluster holds half the pool, three hold 1-3%: random picks miss the small ones.
FRACTIONS = (0.50, 0.20, 0.10, 0.08, 0.06, 0.03, 0.02, 0.01)
Method = Callable[..., ColdStartSelection]
METHODS: dict[str, Method] = {"typiclust": typiclust, "probcover": probcover}


def unequal_clusters(
    seed: int, N: int = 2_000, D: int = 32
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Well-separated Gaussian clusters of very unequal sizes: ``(features_N_D, cluster_N)``."""
    rng = np.random.default_rng(seed)
    sizes = [round(f * N) for f in FRACTIONS]
    cluster_N = np.repeat(np.arange(len(sizes)), sizes)
    centres_G_D = 10.0 * rng.standard_normal((len(sizes), D))
    features_N_D = centres_G_D[cluster_N] + rng.standard_normal((cluster_N.shape[0], D))
    order_N = rng.permutation(cluster_N.shape[0])  # clusters must not sit in index order
    return features_N_D[order_N].astype(np.float32), cluster_N[order_N]


def clusters_hit(picks: NDArray[np.int64], cluster_N: NDArray[np.int64]) -> int:
    return len(set(cluster_N[picks].tolist()))


# --------------------------------------------------------------------------- coverage


@pytest.mark.parametrize("name", sorted(METHODS))
def test_first_eight_picks_cover_the_clusters_that_random_order_misses(name: str) -> None:
    method_hits, random_hits = [], []
    for seed in range(5):
        features_N_D, cluster_N = unequal_clusters(seed)
        selection = METHODS[name](features_N_D, 8, seed=seed)
        assert selection.indices.shape == (8,)
        method_hits.append(clusters_hit(selection.indices, cluster_N))
        random_order = np.random.default_rng(seed).permutation(cluster_N.shape[0])[:8]
        random_hits.append(clusters_hit(random_order, cluster_N))
    assert min(method_hits) >= 7, method_hits
    assert statistics.median(method_hits) == 8
    # 8 uniform picks reach ~3.7 of these clusters on average.
    assert statistics.median(random_hits) <= 5, random_hits


@pytest.mark.parametrize("name", sorted(METHODS))
def test_labelled_points_steer_picks_to_the_clusters_they_leave_uncovered(name: str) -> None:
    features_N_D, cluster_N = unequal_clusters(seed=3)
    labelled_N = np.zeros(cluster_N.shape[0], dtype=bool)
    for cluster in range(4):  # one label in each of the four largest clusters
        labelled_N[np.flatnonzero(cluster_N == cluster)[0]] = True
    selection = METHODS[name](features_N_D, 4, labelled_N=labelled_N, seed=3)
    assert not labelled_N[selection.indices].any()
    assert sorted(cluster_N[selection.indices].tolist()) == [4, 5, 6, 7]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_picks_are_deterministic_under_a_seed(name: str) -> None:
    features_N_D, _ = unequal_clusters(seed=1)
    first = METHODS[name](features_N_D, 12, seed=7)
    again = METHODS[name](features_N_D.copy(), 12, seed=7)
    np.testing.assert_array_equal(first.indices, again.indices)
    np.testing.assert_array_equal(first.scores, again.scores)
    assert first.reasons == again.reasons
    assert len(first.reasons) == first.indices.shape[0]


def test_typiclust_picks_the_densest_point_of_a_single_blob() -> None:
    rng = np.random.default_rng(0)
    # A tight core and a loose halo around one direction: the pick must come from the core.
    core_N_D = np.array([10.0, 0.0, 0.0]) + 0.05 * rng.standard_normal((40, 3))
    halo_N_D = np.array([10.0, 0.0, 0.0]) + 3.0 * rng.standard_normal((40, 3))
    features_N_D = np.concatenate([core_N_D, halo_N_D])
    selection = typiclust(features_N_D, 1, seed=0)
    assert selection.indices[0] < 40
    assert selection.scores[0] == typicality(normalised(features_N_D), 20).max()


def brute_force_cover(
    unit_N_D: NDArray[np.float32], radius: float, budget: int
) -> tuple[list[int], list[int]]:
    """Max-coverage greedy from the full distance matrix: ``(picks, newly covered counts)``."""
    distance_N_N = np.sqrt(np.clip(2 - 2 * unit_N_D.astype(np.float64) @ unit_N_D.T, 0, None))
    inside_N_N = distance_N_N <= radius
    covered_N = np.zeros(unit_N_D.shape[0], dtype=bool)
    picks: list[int] = []
    gains: list[int] = []
    for _ in range(budget):
        gain_N = (inside_N_N & ~covered_N[None, :]).sum(axis=1)
        gain_N[picks] = -1
        pick = int(np.argmax(gain_N))
        if gain_N[pick] <= 0:
            break
        picks.append(pick)
        gains.append(int(gain_N[pick]))
        covered_N |= inside_N_N[pick]
    return picks, gains


@pytest.mark.parametrize("radius", [0.2, 0.5, 0.9])
def test_probcover_picks_and_scores_match_a_brute_force_greedy(radius: float) -> None:
    features_N_D, _ = unequal_clusters(seed=2, N=600)
    selection = probcover(features_N_D, 10, radius=radius, seed=2)
    picks, gains = brute_force_cover(normalised(features_N_D), radius, 10)
    assert selection.indices.tolist() == picks
    assert selection.scores.tolist() == gains
    assert np.all(np.diff(selection.scores) <= 0)  # the greedy's gains never grow


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("name", sorted(METHODS))
def test_budget_larger_than_the_pool_returns_unlabelled_items_once(name: str) -> None:
    features_N_D, _ = unequal_clusters(seed=0, N=60)
    labelled_N = np.zeros(features_N_D.shape[0], dtype=bool)
    labelled_N[:5] = True
    selection = METHODS[name](features_N_D, 500, labelled_N=labelled_N, seed=0)
    picks = selection.indices.tolist()
    assert len(set(picks)) == len(picks)
    assert not labelled_N[picks].any()
    if name == "typiclust":
        assert sorted(picks) == list(range(5, features_N_D.shape[0]))
    else:  # ProbCover stops once every point is covered
        assert 1 <= len(picks) <= features_N_D.shape[0] - 5


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("N", [1, 2, 3, 7])
def test_tiny_pools_below_the_neighbour_count(name: str, N: int) -> None:
    features_N_D = np.random.default_rng(N).standard_normal((N, 16)).astype(np.float32)
    selection = METHODS[name](features_N_D, 3, seed=0)
    picks = selection.indices.tolist()
    assert 1 <= len(picks) <= min(3, N)
    assert len(set(picks)) == len(picks) and all(0 <= p < N for p in picks)
    assert np.isfinite(selection.scores).all()
    if name == "typiclust":
        assert len(picks) == min(3, N)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_exact_duplicates_and_zero_rows_are_handled(name: str) -> None:
    features_N_D = np.zeros((30, 8), dtype=np.float32)
    features_N_D[10:, 0] = 1.0  # 20 copies of one vector, 10 zero rows
    selection = METHODS[name](features_N_D, 4, seed=0)
    assert np.isfinite(selection.scores).all()
    assert len(set(selection.indices.tolist())) == selection.indices.shape[0] >= 1


@pytest.mark.parametrize("name", sorted(METHODS))
def test_everything_labelled_returns_no_picks(name: str) -> None:
    features_N_D, _ = unequal_clusters(seed=0, N=40)
    labelled_N = np.ones(features_N_D.shape[0], dtype=bool)
    selection = METHODS[name](features_N_D, 5, labelled_N=labelled_N, seed=0)
    assert selection.indices.shape == (0,) and selection.reasons == []


# --------------------------------------------------------------------------- the pieces


def test_ball_graph_matches_sklearn_radius_neighbors_graph() -> None:
    features_N_D, _ = unequal_clusters(seed=4, N=500)
    unit_N_D = normalised(features_N_D)
    for radius in (0.05, 0.3, 0.8):
        ours = ball_graph(unit_N_D, radius)
        theirs = radius_neighbors_graph(unit_N_D.astype(np.float64), radius, include_self=True)
        # Pairs within float32 rounding of the radius may fall either way.
        distance_N_N = np.linalg.norm(
            unit_N_D[:, None, :].astype(np.float64) - unit_N_D[None, :, :], axis=2
        )
        borderline = np.abs(distance_N_N - radius) < 1e-5
        differ = (ours.toarray() > 0) != (theirs.toarray() > 0)
        assert not (differ & ~borderline).any()
        assert (ours != ours.T).nnz == 0


def test_purity_radius_leaves_ninety_five_percent_of_balls_pure() -> None:
    features_N_D, _ = unequal_clusters(seed=5, N=1_500)
    unit_N_D = normalised(features_N_D)
    radius = purity_radius(unit_N_D, 12, seed=0)  # more clusters than blobs: balls must shrink
    labels_N = kmeans_labels(unit_N_D, 12, 0)
    distance_N_N = np.sqrt(np.clip(2 - 2 * unit_N_D @ unit_N_D.T, 0, None))
    impure_N = ((distance_N_N <= radius) & (labels_N[:, None] != labels_N[None, :])).any(axis=1)
    assert 0.94 <= 1 - impure_N.mean() <= 0.96
    assert 0 < radius < 2


def test_typicality_is_the_inverse_mean_distance_to_the_k_nearest_others() -> None:
    points_n_D = np.random.default_rng(0).standard_normal((25, 4)).astype(np.float32)
    distance_n_n = np.linalg.norm(points_n_D[:, None] - points_n_D[None], axis=2)
    nearest_n_k = np.sort(distance_n_n, axis=1)[:, 1:6]
    expected_n = 1 / (nearest_n_k.mean(axis=1) + 1e-5)
    np.testing.assert_allclose(typicality(points_n_D, 5), expected_n, rtol=1e-5)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", sorted(METHODS))
def test_bad_inputs_raise(name: str) -> None:
    features_N_D, _ = unequal_clusters(seed=0, N=20)
    method = METHODS[name]
    with pytest.raises(ValueError, match="budget"):
        method(features_N_D, 0)
    with pytest.raises(ValueError, match="NaN"):
        method(np.full((4, 3), np.nan), 1)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        method(np.zeros(5), 1)
    with pytest.raises(ValueError, match="labelled_N"):
        method(features_N_D, 1, labelled_N=np.zeros(3, dtype=bool))
    if name == "probcover":
        with pytest.raises(ValueError, match="radius"):
            probcover(features_N_D, 1, radius=2.5)

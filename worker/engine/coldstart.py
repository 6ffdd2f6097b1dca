"""Cold start: the first labels, chosen from frozen embeddings before any model exists.

With no model there is no uncertainty to read, and with few labels uncertainty would be the
wrong thing to read anyway: in the low-budget regime the best first labels are *typical* and
*diverse* ones (Hacohen et al., 2022). Both methods here work on the pretrained embedding of
every pool item, ``features_N_D``:

- :func:`typiclust`: the most typical point (densest neighbourhood) of each of (labelled +
  budget) k-means clusters, largest uncovered cluster first.
- :func:`probcover`: a greedy max-coverage of the pool by balls of radius delta, delta chosen
  so that 95% of balls are pure under k-means pseudo-labels.

Features are L2-normalised first in both: a pooled CNN feature's norm follows the image's
contrast and activation strength more than its content, and the self-supervised embeddings
both papers cluster live on the unit sphere. On the sphere Euclidean distance is a monotone
function of the cosine (``|a - b|^2 = 2 - 2 cos``), so k-means, nearest neighbours and balls
all rank pairs the way cosine similarity does, and every distance lies in [0, 2], which lets
one radius heuristic serve any backbone.

Both return picks in order: ``indices`` are pool rows, unlabelled, best first; the caller
fills the rest of a queue in seeded random order. numpy, scipy and scikit-learn only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

logger = logging.getLogger(__name__)

# TypiClust's constants, from the authors' code (avihu111/TypiClust, pycls/al/typiclust.py):
# typicality from the 20 nearest neighbours; clusters of at most 5 points are outliers,
# visited only once every larger cluster is exhausted (the paper drops them); at most 500
# clusters, and full k-means up to 50 of them, MiniBatchKMeans (batches of 5,000) above.
TYPICALITY_NEIGHBOURS = 20
MIN_CLUSTER_SIZE = 5
MAX_CLUSTERS = 500
FULL_KMEANS_MAX_CLUSTERS = 50
MINIBATCH_SIZE = 5_000
# k-means++ from one start split a large cluster and merged two small ones in 3 of 30 of
# tests/worker/test_coldstart.py's pools; the best of 3 starts, in none.
KMEANS_RESTARTS = 3
# k-means runs on this many principal components (see kmeans_labels).
KMEANS_DIMENSIONS = 128
# Rows the principal components are fitted on: plenty for a 1,280 x 1,280 covariance.
PCA_SAMPLE = 20_000
# Full k-means over more rows than this costs minutes on two cores at D=1280; MiniBatchKMeans
# finds clusters of the same quality in seconds at this scale (Sculley, 2010).
FULL_KMEANS_MAX_ROWS = 50_000
# A cluster larger than this has its typicality computed on a seeded sample of this many of
# its points: an exact k-NN over a 100k-point cluster is O(n^2 D), ~10 min at D=1280.
TYPICALITY_MAX_POINTS = 20_000
# Keeps 1 / mean distance finite for exact duplicates (the authors' value).
TYPICALITY_EPSILON = 1e-5

# ProbCover: the radius is the largest at which this fraction of balls is pure (the paper's
# alpha = 0.95), estimated on a seeded sample of this many ball centres.
PURITY = 0.95
PURITY_SAMPLE = 5_000
# Elements of each [rows, N] similarity block: 16 Mi float32 = 64 MiB, whatever N.
CHUNK_ELEMENTS = 1 << 24
# The ball graph is held as int32 neighbour lists: 4 bytes an edge, so 100 M edges = 400 MB.
MAX_EDGES = 100_000_000
# float32 dot products of unit vectors are within ~1e-6 of the exact cosine.
_COSINE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class ColdStartSelection:
    """The first picks of a cold start.

    Attributes:
        indices: ``[b]`` int64 pool rows in pick order, all unlabelled, rank 0 first.
        scores: ``[b]`` float64 each pick's score when it was made: typicality (TypiClust)
            or the number of points it newly covered (ProbCover).
        reasons: one line per pick saying why, for the labelling page.
    """

    indices: NDArray[np.int64]
    scores: NDArray[np.float64]
    reasons: list[str]


# --------------------------------------------------------------------------- shared pieces


def normalised(features_N_D: NDArray[np.floating]) -> NDArray[np.float32]:
    """Rows scaled to unit L2 norm, float32; a zero row stays zero."""
    features_N_D = np.asarray(features_N_D, dtype=np.float32)
    if features_N_D.ndim != 2 or features_N_D.shape[0] < 1 or features_N_D.shape[1] < 1:
        raise ValueError(f"features must be a non-empty [N, D] array, got {features_N_D.shape}")
    if not np.isfinite(features_N_D).all():
        raise ValueError("features contain NaN or infinite values")
    norms_N = np.linalg.norm(features_N_D, axis=1, keepdims=True)
    return features_N_D / np.maximum(norms_N, np.finfo(np.float32).tiny)


def _labelled_mask(labelled_N: NDArray[np.bool_] | None, N: int) -> NDArray[np.bool_]:
    if labelled_N is None:
        return np.zeros(N, dtype=bool)
    labelled_N = np.asarray(labelled_N, dtype=bool)
    if labelled_N.shape != (N,):
        raise ValueError(f"labelled_N must have shape ({N},), got {labelled_N.shape}")
    return labelled_N


def _check_budget(budget: int) -> None:
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be an integer >= 1, got {budget!r}")


def kmeans_labels(features_N_D: NDArray[np.float32], clusters: int, seed: int) -> NDArray[np.int64]:
    """Seeded k-means cluster of each row: full k-means while small, MiniBatchKMeans beyond.

    Clustered in the top :data:`KMEANS_DIMENSIONS` principal components, in float64:
    scikit-learn's k-means++ seeding computes float32 distances through a float64 upcast in
    small blocks, 8x slower than float64 input (66 s against 8 s for 100 centres over 5,000
    rows of D=1280 here). The projection costs the clusters little: the subspace that k
    centroids span is close to that of the first k - 1 principal components (Ding & He,
    "K-means clustering via principal component analysis", ICML 2004), exactly covered up to
    129 clusters and approximately beyond; the float64 copy is 1 KB a row.

    ``clusters`` is capped at the number of distinct rows, since k-means cannot place more
    centres than that.
    """
    N = features_N_D.shape[0]
    distinct = np.unique(features_N_D, axis=0).shape[0] if N <= MINIBATCH_SIZE else N
    clusters = max(1, min(clusters, distinct))
    if clusters == 1:
        return np.zeros(N, dtype=np.int64)
    view_N_P = _clustering_view(features_N_D, seed)
    if clusters <= FULL_KMEANS_MAX_CLUSTERS and N <= FULL_KMEANS_MAX_ROWS:
        model: KMeans | MiniBatchKMeans = KMeans(
            n_clusters=clusters, n_init=KMEANS_RESTARTS, random_state=seed
        )
    else:
        model = MiniBatchKMeans(
            n_clusters=clusters,
            batch_size=MINIBATCH_SIZE,
            n_init=KMEANS_RESTARTS,
            random_state=seed,
        )
    return np.asarray(model.fit_predict(view_N_P), dtype=np.int64)


def _clustering_view(features_N_D: NDArray[np.float32], seed: int) -> NDArray[np.float64]:
    """The rows in float64, projected on their top principal components when D is larger.

    The components come from the D x D covariance of a seeded sample of rows (exact, and
    cheaper than a randomized SVD at these shapes: 4.0 s against 7.2 s at 5,000 x 1,280 on
    two loaded cores).
    """
    N, D = features_N_D.shape
    if D <= KMEANS_DIMENSIONS or N <= KMEANS_DIMENSIONS:
        return features_N_D.astype(np.float64)
    sample_S = np.random.default_rng(seed).permutation(N)[:PCA_SAMPLE]
    pca = PCA(n_components=KMEANS_DIMENSIONS, svd_solver="covariance_eigh")
    pca.fit(features_N_D[np.sort(sample_S)])
    return np.asarray(pca.transform(features_N_D), dtype=np.float64)


# --------------------------------------------------------------------------- TypiClust


def typiclust(
    features_N_D: NDArray[np.floating],
    budget: int,
    *,
    labelled_N: NDArray[np.bool_] | None = None,
    seed: int = 0,
) -> ColdStartSelection:
    """TypiClust: the most typical point of the largest cluster with the fewest labels.

    The pool is cut into ``labelled + budget`` k-means clusters (at most 500), so that every
    label can have a region of its own. Each pick goes to the cluster with the fewest labels
    (labelled points and earlier picks), the largest first, and takes that cluster's most
    typical remaining point: ``typicality(x) = 1 / mean distance to its k nearest
    neighbours`` among the cluster's remaining points, ``k = min(20, size // 2)``. Clusters
    of at most 5 points are outliers and come last.

    Args:
        features_N_D: one embedding per pool item, ``[N, D]``.
        budget: b >= 1 picks; more than the unlabelled items returns all of them.
        labelled_N: ``[N]`` bool, True for items already labelled (may be all False).
        seed: seeds k-means and the typicality sample of very large clusters.

    Returns:
        ``min(b, unlabelled)`` picks with their typicality.

    Raises:
        ValueError: malformed features or mask, or ``budget < 1``.

    References:
        Hacohen, Dekel & Weinshall, "Active Learning on a Budget: Opposite Strategies Suit
        High and Low Budgets", ICML 2022.
    """
    _check_budget(budget)
    unit_N_D = normalised(features_N_D)
    N = unit_N_D.shape[0]
    labelled_N = _labelled_mask(labelled_N, N)
    picks = min(budget, int((~labelled_N).sum()))
    clusters_N = kmeans_labels(unit_N_D, min(int(labelled_N.sum()) + budget, MAX_CLUSTERS), seed)
    G = int(clusters_N.max()) + 1
    sizes_G = np.bincount(clusters_N, minlength=G)
    counts_G = np.bincount(clusters_N[labelled_N], minlength=G)
    available_N = ~labelled_N
    rng = np.random.default_rng(seed)
    indices, scores, reasons = [], [], []
    for _ in range(picks):
        cluster = _next_cluster(
            sizes_G, counts_G, np.bincount(clusters_N[available_N], minlength=G)
        )
        members_n = np.flatnonzero(available_N & (clusters_N == cluster))
        row, typicality = _most_typical(unit_N_D, members_n, rng)
        reasons.append(
            f"typiclust: most typical of cluster {cluster} ({sizes_G[cluster]} items, "
            f"{counts_G[cluster]} labelled or picked before)"
        )
        indices.append(row)
        scores.append(typicality)
        counts_G[cluster] += 1
        available_N[row] = False
    return ColdStartSelection(
        np.asarray(indices, dtype=np.int64), np.asarray(scores, dtype=np.float64), reasons
    )


def _next_cluster(
    sizes_G: NDArray[np.int64], counts_G: NDArray[np.int64], available_G: NDArray[np.int64]
) -> int:
    """Fewest labels first, then the largest; outlier clusters after all others."""
    outlier_G = sizes_G <= MIN_CLUSTER_SIZE
    # lexsort sorts by the last key first; the cluster id breaks any remaining tie.
    order_G = np.lexsort((np.arange(sizes_G.shape[0]), -sizes_G, counts_G, outlier_G))
    return int(next(g for g in order_G if available_G[g] > 0))


def _most_typical(
    unit_N_D: NDArray[np.float32], members_n: NDArray[np.int64], rng: np.random.Generator
) -> tuple[int, float]:
    """The member of highest typicality, ``(pool row, typicality)``; ties to the lowest row."""
    if members_n.shape[0] > TYPICALITY_MAX_POINTS:
        members_n = np.sort(rng.choice(members_n, TYPICALITY_MAX_POINTS, replace=False))
    n = members_n.shape[0]
    if n == 1:
        return int(members_n[0]), 0.0  # no neighbours to measure a density against
    typicality_n = typicality(unit_N_D[members_n], min(TYPICALITY_NEIGHBOURS, n // 2))
    best = int(np.argmax(typicality_n))
    return int(members_n[best]), float(typicality_n[best])


def typicality(features_n_D: NDArray[np.float32], neighbours: int) -> NDArray[np.float64]:
    """``1 / (mean Euclidean distance to the k nearest other points + 1e-5)`` of each row."""
    search = NearestNeighbors(n_neighbors=neighbours + 1).fit(features_n_D)
    distances_n_k, _ = search.kneighbors(features_n_D)
    # Column 0 is the point itself (or an exact copy of it: the same distance, 0).
    return 1.0 / (distances_n_k[:, 1:].mean(axis=1) + TYPICALITY_EPSILON)


# --------------------------------------------------------------------------- ProbCover


def probcover(
    features_N_D: NDArray[np.floating],
    budget: int,
    *,
    labelled_N: NDArray[np.bool_] | None = None,
    radius: float | None = None,
    num_classes: int | None = None,
    seed: int = 0,
) -> ColdStartSelection:
    """ProbCover: greedily pick the point whose ball covers the most uncovered points.

    Each point covers the ball of radius delta around it (Euclidean, on unit vectors);
    labelled points cover theirs from the start. Each pick is the unlabelled point whose ball
    holds the most points not yet covered, and stops early once every point is covered (the
    caller fills the queue). Without ``radius``, delta is chosen by :func:`purity_radius`.

    Memory is the ball graph: 4 bytes per (point, neighbour) pair, built in 64 MiB blocks
    of the similarity matrix; with pure balls that is a few MB at N=100k.

    Args:
        features_N_D: one embedding per pool item, ``[N, D]``.
        budget: b >= 1 picks at most.
        labelled_N: ``[N]`` bool, True for items already labelled (may be all False).
        radius: delta in [0, 2] on unit vectors; None chooses it from the data.
        num_classes: the project's number of classes, for the pseudo-labels that choose the
            radius (the paper's choice); None uses labelled + budget clusters, as TypiClust.
        seed: seeds the k-means pseudo-labels and the purity sample.

    Returns:
        At most ``min(b, unlabelled)`` picks, each scored by the points it newly covered.

    Raises:
        ValueError: malformed features or mask, ``budget < 1``, a radius outside [0, 2], or
            a ball graph above :data:`MAX_EDGES` edges (pass a smaller radius).

    References:
        Yehuda, Dekel, Hacohen & Weinshall, "Active Learning Through a Covering Lens",
        NeurIPS 2022.
    """
    _check_budget(budget)
    unit_N_D = normalised(features_N_D)
    N = unit_N_D.shape[0]
    labelled_N = _labelled_mask(labelled_N, N)
    if radius is None:
        classes = num_classes or min(int(labelled_N.sum()) + budget, MAX_CLUSTERS)
        radius = purity_radius(unit_N_D, classes, seed=seed)
    if not 0.0 <= radius <= 2.0:
        raise ValueError(f"radius must lie in [0, 2] for unit vectors, got {radius}")
    graph = ball_graph(unit_N_D, radius)
    logger.info(
        "probcover: radius %.4f, %d edges, %.1f neighbours a point on average",
        radius,
        graph.nnz,
        graph.nnz / N,
    )
    return _greedy_cover(graph, labelled_N, budget, radius)


def purity_radius(
    unit_N_D: NDArray[np.float32], classes: int, *, seed: int = 0, purity: float = PURITY
) -> float:
    """The largest radius at which a ``purity`` fraction of balls is pure under k-means labels.

    A ball around x is pure when every point in it shares x's pseudo-label, that is when
    delta is below ``d_other(x)``, x's distance to the nearest point of another cluster. The
    fraction of pure balls at delta is therefore ``P(d_other > delta)``, and the paper's
    largest delta with purity >= alpha is the (1 - alpha) quantile of ``d_other``: found
    exactly from the distances instead of by the paper's search over a grid of radii.
    ``d_other`` is measured for a seeded sample of centres against the whole pool.
    """
    N = unit_N_D.shape[0]
    labels_N = kmeans_labels(unit_N_D, classes, seed)
    if int(labels_N.max()) == 0:
        return 2.0  # one cluster: every ball is pure, whatever its size
    rng = np.random.default_rng(seed)
    sample_S = np.sort(rng.choice(N, min(N, PURITY_SAMPLE), replace=False))
    nearest_other_S = _nearest_other_distance(unit_N_D, labels_N, sample_S)
    return float(np.quantile(nearest_other_S, 1.0 - purity))


def _nearest_other_distance(
    unit_N_D: NDArray[np.float32], labels_N: NDArray[np.int64], centres_S: NDArray[np.int64]
) -> NDArray[np.float64]:
    """Distance from each centre to the nearest point with another label, in blocks."""
    N = unit_N_D.shape[0]
    rows = max(1, CHUNK_ELEMENTS // N)
    nearest = []
    for start in range(0, centres_S.shape[0], rows):
        centres_s = centres_S[start : start + rows]
        cosine_s_N = unit_N_D[centres_s] @ unit_N_D.T
        cosine_s_N[labels_N[centres_s][:, None] == labels_N[None, :]] = -np.inf
        nearest.append(cosine_s_N.max(axis=1))
    cosine_S = np.clip(np.concatenate(nearest).astype(np.float64), -1.0, 1.0)
    return np.sqrt(2.0 - 2.0 * cosine_S)


def ball_graph(unit_N_D: NDArray[np.float32], radius: float) -> sparse.csr_matrix:
    """``[N, N]`` CSR: row x holds every point within ``radius`` of x, x itself included.

    Symmetric, since distance is. Built from blocks of the cosine matrix so that memory is
    one block plus the edges; indices are int32 (4 bytes an edge, a fifth of what
    ``sklearn.neighbors.radius_neighbors_graph`` keeps).
    """
    N = unit_N_D.shape[0]
    # |a - b| <= r  <=>  cos(a, b) >= 1 - r^2 / 2 for unit vectors.
    threshold = 1.0 - radius * radius / 2.0 - _COSINE_TOLERANCE
    rows = max(1, CHUNK_ELEMENTS // N)
    counts, neighbours, edges = [], [], 0
    for start in range(0, N, rows):
        inside_r_N = unit_N_D[start : start + rows] @ unit_N_D.T >= threshold
        r = inside_r_N.shape[0]
        inside_r_N[np.arange(r), start + np.arange(r)] = True  # a zero row covers itself too
        row_r, column_e = np.nonzero(inside_r_N)
        edges += column_e.shape[0]
        if edges > MAX_EDGES:
            raise ValueError(
                f"radius {radius:.4f} puts more than {MAX_EDGES:,} edges in the ball graph of "
                f"{N:,} points; pass a smaller radius"
            )
        counts.append(np.bincount(row_r, minlength=r))
        neighbours.append(column_e.astype(np.int32))
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))]).astype(np.int64)
    indices = np.concatenate(neighbours)
    data = np.ones(indices.shape[0], dtype=np.int8)
    return sparse.csr_matrix((data, indices, indptr), shape=(N, N))


def _greedy_cover(
    graph: sparse.csr_matrix, labelled_N: NDArray[np.bool_], budget: int, radius: float
) -> ColdStartSelection:
    """Max-coverage greedy, keeping each point's count of uncovered neighbours up to date.

    When points become covered, every ball that holds them (their own neighbours, the graph
    being symmetric) loses one uncovered point each, so all updates together cost one pass
    over the edges.
    """
    N = graph.shape[0]
    uncovered_N = np.diff(graph.indptr).astype(np.int64)  # every point starts uncovered
    covered_N = np.zeros(N, dtype=bool)
    candidate_N = ~labelled_N

    def cover(rows_n: NDArray[np.int64]) -> None:
        covered_N[rows_n] = True
        uncovered_N[:] -= np.bincount(graph[rows_n].indices, minlength=N)

    cover(np.unique(graph[np.flatnonzero(labelled_N)].indices))
    indices, scores, reasons = [], [], []
    for _ in range(min(budget, int(candidate_N.sum()))):
        row = int(np.argmax(np.where(candidate_N, uncovered_N, -1)))
        gained = int(uncovered_N[row])
        if gained <= 0:
            break  # every point is covered: the caller fills the queue
        ball_n = graph.indices[graph.indptr[row] : graph.indptr[row + 1]]
        cover(ball_n[~covered_N[ball_n]].astype(np.int64))
        candidate_N[row] = False
        indices.append(row)
        scores.append(float(gained))
        reasons.append(f"probcover: covers {gained} uncovered items within radius {radius:.3f}")
    return ColdStartSelection(
        np.asarray(indices, dtype=np.int64), np.asarray(scores, dtype=np.float64), reasons
    )

"""Near-duplicate search: which newly uploaded images are (almost) copies of one already held.

A resized, recompressed or re-encoded copy of a photo has nearly the same pretrained
embedding, so the cosine distance ``1 - cos`` between embeddings finds copies that a byte
hash misses. Each new row is compared with every existing row and with the rows uploaded
before it in the same batch, so two copies sent together are caught too. The work is one
matrix product of unit vectors in blocks, so memory stays bounded whatever the sizes (the
existing rows may be a memory map of the embedding store, read block by block).
numpy only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

# Default threshold on 1 - cos, measured through the worker's pretrained backbone
# (EfficientNet-Lite0 at 160 px; the figures are in tests/worker/test_duplicates.py's
# docstring). Copies of a photo re-encoded (JPEG quality 40-90) or downscaled (0.5-0.8x) lie
# at <= 0.024 from full-size files, <= 0.01 once squashed to 96 px as small projects store
# them; different photos lie >= 0.65 apart, different quarters of one photo >= 0.12. Tiny
# grey images are the hard case: of scikit-learn's 1,797 8x8 digits (no two pixel-identical)
# 24 have another digit within 0.03, 6 within 0.025, 168 within 0.05. 0.03 catches every copy
# measured and flags ~1% of such digits, where 0.05 would flag 9%.
DEFAULT_MAX_DISTANCE = 0.03
# Rows of each block on either side: a 4,096 x 4,096 float32 block of cosines is 64 MiB.
DEFAULT_CHUNK = 4_096


@dataclass(frozen=True)
class NearDuplicate:
    """A new row and the closest earlier row within the threshold.

    Attributes:
        new_row: row of the new batch.
        match_row: row of the existing features, or of the new batch when ``within_batch``
            (always an earlier row than ``new_row`` then).
        distance: ``1 - cos`` between the two embeddings, in [0, 2].
        within_batch: the match is another image of the same upload.
    """

    new_row: int
    match_row: int
    distance: float
    within_batch: bool


@dataclass
class _Best:
    """The highest cosine seen so far for each new row, and the row it came from."""

    cosine_M: NDArray[np.float32]
    row_M: NDArray[np.int64]

    @staticmethod
    def empty(M: int) -> _Best:
        return _Best(np.full(M, -np.inf, dtype=np.float32), np.full(M, -1, dtype=np.int64))

    def distance_M(self) -> NDArray[np.float64]:
        """``1 - cos`` of each row's best match, inf where it has none."""
        # Cosines of unit vectors may round past 1 in float32; a distance below 0 means 0.
        distance_M = np.clip(1.0 - self.cosine_M.astype(np.float64), 0.0, 2.0)
        return np.where(self.row_M >= 0, distance_M, np.inf)

    def update(self, rows_m: slice, cosine_m_n: NDArray[np.float32], first_column: int) -> None:
        # Strictly greater: on ties the lower row, seen first, stays.
        column_m = cosine_m_n.argmax(axis=1)
        cosine_m = cosine_m_n[np.arange(cosine_m_n.shape[0]), column_m]
        better_m = cosine_m > self.cosine_M[rows_m]
        self.cosine_M[rows_m] = np.where(better_m, cosine_m, self.cosine_M[rows_m])
        self.row_M[rows_m] = np.where(better_m, column_m + first_column, self.row_M[rows_m])


def near_duplicates(
    new_features_M_D: NDArray[np.floating],
    existing_features_N_D: NDArray[np.floating],
    *,
    max_distance: float = DEFAULT_MAX_DISTANCE,
    chunk: int = DEFAULT_CHUNK,
) -> list[NearDuplicate]:
    """Every new row whose nearest earlier row lies within ``max_distance`` (``1 - cos``).

    "Earlier" means any existing row, or a new row before it in the batch. Each new row is
    reported once, with its nearest match; on equal distances an existing row wins over a
    row of the batch (the copy already held is the original), and a lower row over a higher.
    Zero vectors have no direction: their cosine with anything is taken as 0 (distance 1).

    Args:
        new_features_M_D: embeddings of the new images, ``[M, D]``.
        existing_features_N_D: embeddings already held, ``[N, D]``; N may be 0.
        max_distance: threshold on ``1 - cos``, in [0, 2].
        chunk: rows per block on either side; memory is about ``chunk^2 * 4`` bytes plus two
            ``[chunk, D]`` blocks.

    Returns:
        Near duplicates in new-row order.

    Raises:
        ValueError: arrays that are not 2-D with the same D, non-finite values, a threshold
            outside [0, 2] or ``chunk < 1``.

    References:
        Near-duplicate detection by the cosine of global image descriptors: Douze et al.,
        "Evaluation of GIST descriptors for web-scale image search", CIVR 2009; with CNN
        embeddings, Pizzi et al., "A Self-Supervised Descriptor for Image Copy Detection",
        CVPR 2022.
    """
    M = _check(new_features_M_D, existing_features_N_D, max_distance, chunk)
    existing = _Best.empty(M)
    for start, existing_n_D in _unit_blocks(existing_features_N_D, chunk):
        for new_start, new_m_D in _unit_blocks(new_features_M_D, chunk):
            rows_m = slice(new_start, new_start + new_m_D.shape[0])
            existing.update(rows_m, new_m_D @ existing_n_D.T, start)
    within = _Best.empty(M)
    for start, earlier_n_D in _unit_blocks(new_features_M_D, chunk):
        for new_start, new_m_D in _unit_blocks(new_features_M_D, chunk, first=start):
            cosine_m_n = new_m_D @ earlier_n_D.T
            positions_m = new_start + np.arange(new_m_D.shape[0])
            later_m_n = start + np.arange(earlier_n_D.shape[0])[None, :] >= positions_m[:, None]
            cosine_m_n[later_m_n] = -np.inf  # only rows uploaded before count
            within.update(slice(new_start, new_start + new_m_D.shape[0]), cosine_m_n, start)
    return _matches(existing, within, max_distance)


def _check(
    new_M_D: NDArray[np.floating],
    existing_N_D: NDArray[np.floating],
    max_distance: float,
    chunk: int,
) -> int:
    """The number of new rows, once the inputs are known to be usable."""
    if new_M_D.ndim != 2 or existing_N_D.ndim != 2 or new_M_D.shape[1] != existing_N_D.shape[1]:
        raise ValueError(
            f"features must be [M, D] and [N, D] with the same D, got {new_M_D.shape} and "
            f"{existing_N_D.shape}"
        )
    if not 0.0 <= max_distance <= 2.0:
        raise ValueError(f"max_distance is a cosine distance in [0, 2], got {max_distance}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an integer >= 1, got {chunk!r}")
    return int(new_M_D.shape[0])


def _unit_blocks(
    features_N_D: NDArray[np.floating], chunk: int, first: int = 0
) -> Iterator[tuple[int, NDArray[np.float32]]]:
    """``(first row, block of rows scaled to unit norm)`` from row ``first`` on, in float32."""
    for start in range(first, features_N_D.shape[0], chunk):
        block_n_D = np.asarray(features_N_D[start : start + chunk], dtype=np.float32)
        if not np.isfinite(block_n_D).all():
            raise ValueError("features contain NaN or infinite values")
        norms_n = np.linalg.norm(block_n_D, axis=1, keepdims=True)
        yield start, block_n_D / np.maximum(norms_n, np.finfo(np.float32).tiny)


def _matches(existing: _Best, within: _Best, max_distance: float) -> list[NearDuplicate]:
    existing_M, within_M = existing.distance_M(), within.distance_M()
    found = []
    for row in np.flatnonzero(np.minimum(existing_M, within_M) <= max_distance):
        from_batch = bool(within_M[row] < existing_M[row])
        match = within if from_batch else existing
        distance = within_M[row] if from_batch else existing_M[row]
        found.append(NearDuplicate(int(row), int(match.row_M[row]), float(distance), from_batch))
    return found

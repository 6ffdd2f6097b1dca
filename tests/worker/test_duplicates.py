"""Near-duplicate search (worker.engine.duplicates): brute-force agreement at any chunk size,
copies within one upload, tie rules, edge sizes, and real photos through the pretrained
backbone.

The default threshold was set from these photos (scikit-learn's china and flower, matplotlib's
grace_hopper, two photos of one circuit board) through EfficientNet-Lite0 at 160 px, measured
both on the full files and on files first squashed to 96 px (2026-12):

- JPEG re-encodes at quality 90/70/40 and 0.8x or 0.5x downscales: 1 - cos <= 0.024 (full
  files), <= 0.0093 (squashed to 96 px first);
- mirror images: 0.023-0.047; the two photos of one board: 0.034-0.047;
- 2% border crops: 0.016-0.085; 20% border crops: 0.15-0.32;
- different quarters of one photo: >= 0.12; different photos: >= 0.65;
- scikit-learn's 1,797 8x8 digits (none pixel-identical), each's nearest other digit: 2 within
  0.02, 6 within 0.025, 24 within 0.03, 66 within 0.04, 168 within 0.05 (nearly all the same
  digit).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import sklearn.datasets
import torch
from numpy.typing import NDArray
from PIL import Image

from worker.engine.backbones import resolve_backbone
from worker.engine.duplicates import DEFAULT_MAX_DISTANCE, NearDuplicate, near_duplicates


def brute_force(
    new_M_D: NDArray[np.float32], existing_N_D: NDArray[np.float32], max_distance: float
) -> list[NearDuplicate]:
    """The same search from full float64 cosine matrices."""

    def unit(x: NDArray[np.float32]) -> NDArray[np.float64]:
        x64 = x.astype(np.float64)
        return x64 / np.maximum(np.linalg.norm(x64, axis=1, keepdims=True), 1e-300)

    existing_M_N = 1 - unit(new_M_D) @ unit(existing_N_D).T
    within_M_M = 1 - unit(new_M_D) @ unit(new_M_D).T
    found = []
    for row in range(new_M_D.shape[0]):
        candidates = [(float(d), 0, j) for j, d in enumerate(existing_M_N[row])]
        candidates += [(float(within_M_M[row, j]), 1, j) for j in range(row)]
        if not candidates:
            continue
        distance, from_batch, match = min(candidates)
        if distance <= max_distance:
            found.append(NearDuplicate(row, match, max(distance, 0.0), bool(from_batch)))
    return found


def planted_pool(seed: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Random existing rows; new rows that are fresh, noisy copies of existing rows, or
    noisy copies of earlier new rows."""
    rng = np.random.default_rng(seed)
    existing_N_D = rng.standard_normal((300, 24)).astype(np.float32)
    new = list(rng.standard_normal((40, 24)))
    for row in rng.choice(300, 15, replace=False):
        new.append(existing_N_D[row] + 0.05 * rng.standard_normal(24))
    for row in range(10):
        new.append(new[row] * 3.0 + 0.05 * rng.standard_normal(24))  # scale must not matter
    new_M_D = np.asarray(new, dtype=np.float32)[rng.permutation(len(new))]
    return new_M_D, existing_N_D


@pytest.mark.parametrize("chunk", [1, 7, 64, 4_096])
@pytest.mark.parametrize("seed", range(3))
def test_agrees_with_brute_force_at_any_chunk_size(chunk: int, seed: int) -> None:
    new_M_D, existing_N_D = planted_pool(seed)
    found = near_duplicates(new_M_D, existing_N_D, max_distance=0.01, chunk=chunk)
    expected = brute_force(new_M_D, existing_N_D, 0.01)
    assert [(d.new_row, d.match_row, d.within_batch) for d in found] == [
        (d.new_row, d.match_row, d.within_batch) for d in expected
    ]
    np.testing.assert_allclose(
        [d.distance for d in found], [d.distance for d in expected], atol=1e-6
    )
    # 15 copies of existing rows and, depending on where the permutation put them, up to 10
    # copies of earlier new rows (an original uploaded after its copy flags the original).
    assert sum(not d.within_batch for d in found) == 15
    assert sum(d.within_batch for d in found) == 10


def test_two_copies_in_one_upload_flag_the_second_against_the_first() -> None:
    rng = np.random.default_rng(0)
    photo_D = rng.standard_normal(16).astype(np.float32)
    new_M_D = np.stack([rng.standard_normal(16), photo_D, rng.standard_normal(16), photo_D])
    found = near_duplicates(new_M_D.astype(np.float32), np.zeros((0, 16), dtype=np.float32))
    assert found == [NearDuplicate(3, 1, 0.0, True)]


def test_the_nearest_match_is_reported_and_an_existing_row_wins_a_tie() -> None:
    base_D = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)
    near_D = np.array([1.0, 0.01, 0.0, 0.0], dtype=np.float32)
    nearer_D = np.array([1.0, 0.001, 0.0, 0.0], dtype=np.float32)
    existing_N_D = np.stack([near_D, nearer_D, nearer_D])
    found = near_duplicates(base_D[None], existing_N_D, max_distance=0.01)
    assert [(d.match_row, d.within_batch) for d in found] == [(1, False)]  # nearest, lowest row
    # The second new row is as close to existing row 0 as to new row 0: the existing row wins.
    found = near_duplicates(np.stack([near_D, near_D]), near_D[None], max_distance=0.01)
    assert [(d.new_row, d.match_row, d.within_batch) for d in found] == [
        (0, 0, False),
        (1, 0, False),
    ]


def test_distant_rows_zero_rows_and_empty_inputs_are_not_duplicates() -> None:
    rng = np.random.default_rng(1)
    new_M_D = rng.standard_normal((20, 32)).astype(np.float32)
    existing_N_D = rng.standard_normal((50, 32)).astype(np.float32)
    assert near_duplicates(new_M_D, existing_N_D) == []
    zeros_M_D = np.zeros((3, 32), dtype=np.float32)
    assert near_duplicates(zeros_M_D, zeros_M_D) == []  # no direction: distance 1
    assert near_duplicates(np.zeros((0, 32)), existing_N_D) == []
    assert near_duplicates(new_M_D[:1], np.zeros((0, 32))) == []
    # Everything is within distance 2 of everything, but a row with nothing before it has
    # no match at all.
    assert near_duplicates(new_M_D[:1], np.zeros((0, 32)), max_distance=2.0) == []


def test_bad_inputs_raise() -> None:
    ok_M_D = np.ones((2, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="same D"):
        near_duplicates(ok_M_D, np.ones((2, 5)))
    with pytest.raises(ValueError, match="same D"):
        near_duplicates(np.ones(4), ok_M_D)
    with pytest.raises(ValueError, match="max_distance"):
        near_duplicates(ok_M_D, ok_M_D, max_distance=-0.1)
    with pytest.raises(ValueError, match="chunk"):
        near_duplicates(ok_M_D, ok_M_D, chunk=0)
    with pytest.raises(ValueError, match="NaN"):
        near_duplicates(ok_M_D, np.full((2, 4), np.nan))


# --------------------------------------------------------------------------- real photos


def jpeg_copy(image: Image.Image, scale: float, quality: int) -> Image.Image:
    """The photo downscaled and saved again as a JPEG, as a re-upload would be."""
    width, height = image.size
    smaller = image.resize((round(width * scale), round(height * scale)), Image.Resampling.LANCZOS)
    encoded = io.BytesIO()
    smaller.save(encoded, "JPEG", quality=quality)
    return Image.open(io.BytesIO(encoded.getvalue())).convert("RGB")


def embed(images: list[Image.Image]) -> NDArray[np.float32]:
    backbone = resolve_backbone("efficientnet_lite0")
    vectors = [
        backbone.embed(
            torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None], device="cpu"
        )
        for image in images
    ]
    return torch.cat(vectors).numpy()


def test_a_resized_jpeg_copy_is_a_near_duplicate_and_another_photo_is_not() -> None:
    folder = Path(sklearn.datasets.__file__).parent / "images"
    china = Image.open(folder / "china.jpg").convert("RGB")
    flower = Image.open(folder / "flower.jpg").convert("RGB")
    copies = [jpeg_copy(china, 0.8, 85), jpeg_copy(china, 0.7, 75)]
    existing_N_D = embed([china])
    new_M_D = embed([flower, *copies])
    found = near_duplicates(new_M_D, existing_N_D)
    # Both copies are flagged; the second may match the first copy rather than the original.
    assert [d.new_row for d in found] == [1, 2]
    for row in (1, 2):  # each copy alone against the original
        alone = near_duplicates(new_M_D[row : row + 1], existing_N_D)
        assert len(alone) == 1 and alone[0].distance < DEFAULT_MAX_DISTANCE / 2
    assert near_duplicates(new_M_D[:1], existing_N_D, max_distance=10 * DEFAULT_MAX_DISTANCE) == []

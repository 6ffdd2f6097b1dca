"""Unit tests of the simulator's pieces that need no running service."""

from __future__ import annotations

import csv
import io
import math
import zipfile

import numpy as np
import pytest
import typer
from PIL import Image

from simulate.cli import format_seeds, parse_seeds
from simulate.datasets import (
    CLASSES,
    NOISE_STD,
    add_repeats,
    balanced_initial,
    load_dataset,
    png_bytes,
)
from simulate.report import (
    group_curves,
    labels_to_reach,
    markdown_table,
    mean_accuracy,
    mean_band,
    percentile,
    threshold_table,
)
from simulate.service import parse_token
from simulate.upload import build_zip

# --- datasets -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist5k")


def test_mnist5k_split_sizes_stratified_and_fixed(mnist) -> None:
    assert mnist.pool.images.shape == (4000, 28, 28)
    assert mnist.test.images.shape == (1000, 28, 28)
    assert mnist.pool.images.dtype == np.uint8
    assert np.bincount(mnist.pool.labels).tolist() == [400] * 10
    assert np.bincount(mnist.test.labels).tolist() == [100] * 10
    again = load_dataset("mnist5k")
    assert np.array_equal(again.test.images, mnist.test.images)
    assert len(set(mnist.pool.filenames) | set(mnist.test.filenames)) == 5000


def test_pool_and_test_are_disjoint(mnist) -> None:
    pool = {image.tobytes() for image in mnist.pool.images}
    assert not any(image.tobytes() in pool for image in mnist.test.images)


def test_repeated_mnist_is_three_noisy_copies(mnist) -> None:
    repeated = load_dataset("repeated-mnist")
    assert repeated.pool.images.shape == (12000, 28, 28)
    assert np.array_equal(repeated.test.images, mnist.test.images)
    assert np.array_equal(repeated.pool.labels, np.tile(mnist.pool.labels, 3))
    copies = repeated.pool.images.reshape(3, 4000, 28, 28).astype(float) / 255
    clean = mnist.pool.images.astype(float) / 255
    for copy in copies:
        residual = copy - clean
        # Noise of std ~0.031 where clipping can't bite; most pixels are background, where
        # clipping at 0 keeps only the positive half, so the residual's std is smaller.
        assert 0.5 * NOISE_STD < residual.std() < NOISE_STD
        assert np.abs(residual).max() <= 1.0
    assert not np.array_equal(copies[0], copies[1])
    # Near-duplicates, not duplicates: every copy differs from the others somewhere.
    assert len({image.tobytes() for image in repeated.pool.images}) == 12000


def test_repeated_mnist_noise_is_the_papers_in_normalised_units() -> None:
    # N(0, 0.1) added after Normalize((0.1307,), (0.3081,)), as the reference code does.
    assert pytest.approx(0.1 * 0.3081) == NOISE_STD


def test_add_repeats_noise_statistics() -> None:
    grey = np.full((200, 28, 28), 128, dtype=np.uint8)
    noisy = add_repeats(grey, repeats=3, std=0.1, seed=1).astype(float) / 255
    assert noisy.shape == (600, 28, 28)
    assert noisy.std() == pytest.approx(0.1, abs=0.005)
    assert noisy.mean() == pytest.approx(128 / 255, abs=0.005)


def test_digits_small_for_ci() -> None:
    digits = load_dataset("digits")
    assert digits.pool.images.shape == (1200, 28, 28)
    assert digits.test.images.shape == (400, 28, 28)
    assert digits.classes == CLASSES
    assert digits.pool.images.max() > 200  # upscaled to the full 0..255 range


def test_unknown_dataset() -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("cifar")


def test_balanced_initial_two_per_class_seeded() -> None:
    labels = np.repeat(np.arange(10), 50)
    chosen = balanced_initial(labels, 2, seed=3)
    assert len(chosen) == 20 == len(set(chosen))
    assert np.bincount(labels[chosen]).tolist() == [2] * 10
    assert chosen == balanced_initial(labels, 2, seed=3)
    assert chosen != balanced_initial(labels, 2, seed=4)


def test_balanced_initial_refuses_a_rare_class() -> None:
    with pytest.raises(ValueError, match="fewer than"):
        balanced_initial(np.array([0, 0, 1]), 2, seed=0)


def test_png_roundtrip() -> None:
    image = np.arange(784, dtype=np.uint8).reshape(28, 28)
    decoded = np.asarray(Image.open(io.BytesIO(png_bytes(image))))
    assert np.array_equal(decoded, image)


def test_zip_with_labels_csv(mnist) -> None:
    data = build_zip(mnist.test, range(5), CLASSES, labelled=True)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        rows = list(csv.reader(io.StringIO(archive.read("labels.csv").decode())))
    assert names[:5] == list(mnist.test.filenames[:5])
    assert rows[0] == ["filename", "label"]
    assert rows[1:] == [[mnist.test.filenames[i], str(mnist.test.labels[i])] for i in range(5)]
    unlabelled = build_zip(mnist.pool, range(3), CLASSES, labelled=False)
    assert "labels.csv" not in zipfile.ZipFile(io.BytesIO(unlabelled)).namelist()


# --- report -------------------------------------------------------------------------------


def test_labels_to_reach_first_crossing() -> None:
    curve = [(20, 0.5), (30, 0.91), (40, 0.89), (50, 0.96)]
    assert labels_to_reach(curve, 0.90) == 30
    assert labels_to_reach(curve, 0.95) == 50
    assert math.isinf(labels_to_reach(curve, 0.99))


def test_mean_accuracy_is_the_normalised_trapezoid_area() -> None:
    curve = [(20, 0.5), (30, 0.7), (60, 0.9), (80, 0.95)]
    # (10 * 0.6 + 30 * 0.8) / 40 over [20, 60]
    assert mean_accuracy(curve, 20, 60) == pytest.approx(0.75)
    assert mean_accuracy(curve, 20, 80) == pytest.approx((6 + 24 + 20 * 0.925) / 60)
    with pytest.raises(ValueError, match="no points"):
        mean_accuracy(curve, 20, 70)
    with pytest.raises(ValueError, match="no points"):
        mean_accuracy(curve, 60, 60)


def test_percentile_matches_numpy_when_finite() -> None:
    values = [70.0, 90.0, 110.0, 120.0, 80.0, 100.0]
    for q in (25, 50, 75):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_percentile_treats_unreached_as_above_budget() -> None:
    values = [100.0, 120.0, math.inf]
    assert percentile(values, 25) == pytest.approx(110.0)
    assert percentile(values, 50) == 120.0
    assert math.isinf(percentile(values, 75))


def _rows(strategy: str, curves: dict[int, list[tuple[int, float]]]) -> list[dict]:
    return [
        {
            "dataset": "d",
            "strategy": strategy,
            "batch_size": 10,
            "mc_samples": 20,
            "mode": "sync",
            "seed": seed,
            "labels": labels,
            "accuracy": accuracy,
            "status": "done",
        }
        for seed, curve in curves.items()
        for labels, accuracy in curve
    ]


def test_threshold_table_and_markdown() -> None:
    rows = _rows(
        "batchbald",
        {
            0: [(20, 0.6), (30, 0.91), (40, 0.96)],
            1: [(20, 0.6), (30, 0.85), (40, 0.92)],
            2: [(20, 0.6), (30, 0.80), (40, 0.90)],
        },
    ) + _rows("random", {0: [(20, 0.5), (30, 0.7), (40, 0.8)]})
    rows.append({**rows[0], "status": "failed", "accuracy": None})
    table = threshold_table(group_curves(rows))
    assert [row.key[1] for row in table] == ["batchbald", "random"]
    batchbald = table[0]
    assert batchbald.seeds == 3
    assert batchbald.reached[0.90] == (pytest.approx(35.0), 40.0, 40.0)
    assert batchbald.reached[0.95][1] == math.inf
    text = markdown_table(table)
    assert "| d | batchbald | 10 | 20 | sync | 3 | 35 / 40 / 40 | >40 / >40 / >40 |" in text
    assert "| d | random | 10 | 20 | sync | 1 | >40 / >40 / >40 |" in text


def test_mean_band_over_seeds() -> None:
    grid, mean, half = mean_band([[(20, 0.5), (30, 0.7)], [(20, 0.7), (30, 0.9)]])
    assert grid.tolist() == [20, 30]
    assert mean == pytest.approx([0.6, 0.8])
    # Two seeds: t(0.975, 1) = 12.706, sem = 0.1 / sqrt(2) * sqrt(2) = 0.1.
    assert half == pytest.approx([1.2706, 1.2706], rel=1e-3)


def test_mean_band_single_seed_and_ragged_grids() -> None:
    grid, mean, half = mean_band([[(20, 0.5), (40, 0.9)], [(25, 0.6), (35, 0.8)]])
    assert grid.tolist() == [20, 25, 35, 40]
    assert mean[0] == pytest.approx(0.5)  # only the first run covers 20
    assert mean[1] == pytest.approx((0.6 + 0.6) / 2)
    assert half[0] == 0.0


# --- cli and service helpers --------------------------------------------------------------


def test_parse_seeds() -> None:
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("0,4, 7") == [0, 4, 7]
    assert parse_seeds("4,") == [4]
    for bad in ("0", "", "a,b"):
        with pytest.raises(typer.BadParameter):
            parse_seeds(bad)


@pytest.mark.parametrize("seeds", [[0], [0, 1, 2], [3], [1, 2], [0, 2]])
def test_format_seeds_round_trips(seeds: list[int]) -> None:
    assert parse_seeds(format_seeds(seeds)) == seeds


def test_parse_token() -> None:
    token = "nl_3f9a0c1b2d4e5f60718293a4b5c6d7e8"
    assert parse_token(f"created admin 'sim' (id 1)\ntoken: {token}\n") == token
    with pytest.raises(RuntimeError):
        parse_token("nothing here")

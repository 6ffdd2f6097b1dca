"""Fashion-MNIST from Debian's package, and a simulated run on frozen pretrained features.

Tests that need the package's files skip with the reason where it is absent, except under
CI=true, where .ci/run installs it and its absence is a failure.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from simulate import datasets
from simulate.datasets import (
    FASHION_CLASSES,
    Dataset,
    DatasetUnavailable,
    fashion_mnist,
    load_dataset,
    read_idx,
)
from simulate.experiment import RUNS_JSONL, run_experiment
from simulate.records import RunConfig

REPO = Path(__file__).resolve().parents[2]
INSTALL = "apt-get install dataset-fashion-mnist"


def _or_skip(load: Callable[[], Dataset]) -> Dataset:
    try:
        return load()
    except DatasetUnavailable as missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI installs dataset-fashion-mnist (.ci/run): {missing}")
        pytest.skip(str(missing))


@pytest.fixture(scope="module")
def fashion() -> Dataset:
    return _or_skip(lambda: load_dataset("fashion-mnist"))


def test_fashion_mnist_has_the_mnist5k_shape_of_task(fashion: Dataset) -> None:
    assert fashion.name == "fashion-mnist"
    assert fashion.classes == FASHION_CLASSES and len(FASHION_CLASSES) == 10
    assert fashion.pool.images.shape == (4000, 28, 28)
    assert fashion.test.images.shape == (1000, 28, 28)
    assert fashion.pool.images.dtype == np.uint8
    assert np.bincount(fashion.pool.labels).tolist() == [400] * 10
    assert np.bincount(fashion.test.labels).tolist() == [100] * 10
    assert len(set(fashion.pool.filenames) | set(fashion.test.filenames)) == 5000
    # Garments, not blank or clipped arrays: dark backgrounds, bright pixels.
    assert fashion.pool.images.max() == 255
    assert 0.2 < (fashion.pool.images > 0).mean() < 0.8


def test_fashion_mnist_is_the_same_every_time(fashion: Dataset) -> None:
    again = load_dataset("fashion-mnist")
    assert np.array_equal(again.pool.images, fashion.pool.images)
    assert np.array_equal(again.test.labels, fashion.test.labels)


def test_pool_from_the_training_file_and_test_from_the_test_file(fashion: Dataset) -> None:
    test_file = {
        image.tobytes()
        for image in read_idx(datasets.FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz")
    }
    assert len(test_file) > 9_900
    assert all(image.tobytes() in test_file for image in fashion.test.images)
    # Fashion-MNIST's two files share a few identical images, no more.
    assert sum(image.tobytes() in test_file for image in fashion.pool.images) <= 5


def test_without_the_package_the_dataset_names_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailable, match=INSTALL):
        fashion_mnist(root=tmp_path)


def test_simulate_without_the_package_says_what_to_install(tmp_path: Path) -> None:
    # In a subprocess: the command sets up logging and a SIGTERM handler for its process.
    code = (
        "import sys; from pathlib import Path; import simulate.datasets as datasets; "
        f"datasets.FASHION_MNIST_DIR = Path({str(tmp_path)!r}); "
        "from simulate.cli import main; "
        f"main(['--dataset', 'fashion-mnist', '--out', {str(tmp_path / 'out')!r}])"
    )
    # Wide enough that the error box does not wrap the message.
    env = {**os.environ, "COLUMNS": "1000"}
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    assert completed.returncode == 2, completed.stderr
    assert INSTALL in completed.stderr


# Three rounds (20, 30, 40 labels) on 100 pool + 50 test images: the worker embeds the 150
# once (about half a minute on 2 loaded cores), then each round trains a head in seconds.
BUDGET, B = 40, 10


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_pretrained_run_trains_heads_on_the_embeddings_of_the_upload(tmp_path: Path) -> None:
    tiny = _or_skip(lambda: fashion_mnist(pool_size=100, test_size=50))
    config = RunConfig(
        dataset="fashion-mnist",
        strategy="batchbald",
        batch_size=B,
        seed=0,
        budget=BUDGET,
        mc_samples=5,
        network="efficientnet_lite0",
    )
    out = tmp_path / "sim"
    failures = run_experiment(config, ["batchbald"], [0], out, dataset=tiny)

    (run,) = [json.loads(line) for line in (out / RUNS_JSONL).read_text().splitlines()]
    assert failures == 0, run
    with (out / "rounds.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    # The upload's embedding rounds come before the protocol, which starts at 20 labels.
    assert [int(row["labels"]) for row in rows] == list(range(20, BUDGET + 1, B))
    assert all(row["status"] == "done" for row in rows)
    assert {row["network"] for row in rows} == {"efficientnet_lite0"}
    metrics = [json.loads(row["metrics_json"]) for row in rows]
    assert {m["network"] for m in metrics} == {"efficientnet_lite0"}
    # Every image was embedded while the upload's rounds ran; the protocol's rounds reuse it.
    assert [m["embedded_now"] for m in metrics] == [0] * len(rows)
    assert run["upload_rounds_s"] > 0
    assert all(0.0 <= float(row["accuracy"]) <= 1.0 for row in rows)
    assert [int(row["served_from_queue"]) for row in rows[:-1]] == [B] * (len(rows) - 1)

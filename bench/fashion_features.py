"""Fashion-MNIST's pool and test images as the worker embeds them, computed once and cached.

The engine-level benchmarks of the representation layer (bench_cold_start.py,
bench_head_posterior.py) need the EfficientNet-Lite0 vectors of the 4,000-image pool and the
1,000 test images that `nextlabel simulate --dataset fashion-mnist` uses. They are made the
way a round makes them (worker.round.embed): each image as PNG bytes, decoded by
worker.engine.images.decode_image at the backbone's input side in the project's mode (grey),
then Backbone.embed; and cached under bench/results/cache/ keyed by the backbone's space key,
so a second benchmark reuses them.

    python bench/fashion_features.py   # embeds (about a minute or two on 2 cores) and prints
"""

from __future__ import annotations

import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.embeddings import space_dir_name  # noqa: E402
from simulate.datasets import fashion_mnist  # noqa: E402
from worker.engine.backbones import resolve_backbone  # noqa: E402
from worker.engine.images import ImageSpec, decode_image  # noqa: E402

CACHE = REPO / "bench" / "results" / "cache"


@dataclass(frozen=True)
class Features:
    """Embeddings of Fashion-MNIST's pool and test split, with their labels and classes."""

    pool_N_D: np.ndarray
    pool_y: np.ndarray
    test_M_D: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]
    space_key: str


def fashion_features(backbone_name: str = "efficientnet_lite0") -> Features:
    """The cached vectors, embedding them first if this backbone has none yet."""
    backbone = resolve_backbone(backbone_name)
    dataset = fashion_mnist()
    space_key = f"{backbone.space_key}/decoded-L"
    path = CACHE / f"fashion-{space_dir_name(space_key)}.npz"
    if not path.exists():
        spec = ImageSpec(backbone.preprocessing.input_size, 1)
        started = time.perf_counter()
        pool = _embed(backbone, dataset.pool.images, spec)
        test = _embed(backbone, dataset.test.images, spec)
        seconds = time.perf_counter() - started
        count = len(pool) + len(test)
        print(f"embedded {count} images in {seconds:.1f} s ({count / seconds:.1f} images/s)")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, pool=pool, test=test)
    arrays = np.load(path)
    return Features(
        arrays["pool"],
        np.asarray(dataset.pool.labels),
        arrays["test"],
        np.asarray(dataset.test.labels),
        tuple(dataset.classes),
        space_key,
    )


def _embed(backbone: object, images_N_H_W: np.ndarray, spec: ImageSpec) -> np.ndarray:
    pixels = np.stack([decode_image(_png(image), spec, max_pixels=10**8) for image in images_N_H_W])
    vectors = backbone.embed(torch.from_numpy(pixels))  # type: ignore[attr-defined]
    return np.asarray(vectors.numpy(), dtype=np.float32)


def _png(image_H_W: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image_H_W, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


if __name__ == "__main__":
    features = fashion_features()
    print(f"{features.space_key}: pool {features.pool_N_D.shape}, test {features.test_M_D.shape}")

"""Embedding throughput of the frozen backbones: images per second at each input side.

EfficientNet-Lite0 (worker.engine.backbones) embeds a few hundred real images at each input
side, on the CPU always and on CUDA when present: the images go through `Backbone.embed` as
a round would send them (uint8, 28x28 grey, upscaled and repeated to RGB inside). Each
figure is the median of --repeats timed runs after one warm-up chunk, in wall time and in
this process's CPU time (all threads; a busy machine stretches it far less than the wall
clock). Beside the speed, a linear probe (5-fold cross-validated logistic regression on the
same embeddings) shows what each side buys in feature quality. The torch threads and the
load average before and after are printed: on a shared machine the figures move with the
load. Never run as a test.

    python bench/bench_embedding.py                      # Fashion-MNIST if present, 300 images
    python bench/bench_embedding.py --sizes 112,160,224 --n 500 --batch-size 64 --threads 2
    python bench/bench_embedding.py --dataset digits     # scikit-learn's 8x8 digits

Fashion-MNIST is read from Debian's dataset-fashion-mnist package
(/usr/share/datasets/fashion-mnist, the original gzipped IDX files); without it the script
falls back to scikit-learn's digits.
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from worker.engine.backbones import Backbone, resolve_backbone

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DIGITS_UPSCALE = 4  # 8x8 digits → 32x32, near the size of the images projects send


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format: big-endian dims after a magic number), gzipped."""
    with gzip.open(path, "rb") as file:
        data = file.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_images(dataset: str, n: int) -> tuple[torch.Tensor, np.ndarray, str]:
    """``[n, 1, H, W]`` uint8 images, their labels and a description; stratified by order."""
    if dataset == "fashion-mnist" and FASHION_MNIST.is_dir():
        images = read_idx(FASHION_MNIST / "t10k-images-idx3-ubyte.gz")[:n]
        labels = read_idx(FASHION_MNIST / "t10k-labels-idx1-ubyte.gz")[:n]
        name = "Fashion-MNIST test (28x28 grey)"
    else:
        digits = load_digits()
        scaled = digits.images[:n] * (255 / 16)  # digits are 0..16
        images = np.kron(scaled, np.ones((DIGITS_UPSCALE, DIGITS_UPSCALE))).astype(np.uint8)
        labels = digits.target[:n]
        name = f"scikit-learn digits ({8 * DIGITS_UPSCALE}x{8 * DIGITS_UPSCALE} grey)"
    return torch.from_numpy(np.array(images))[:, None], labels, name


@dataclass(frozen=True)
class Timing:
    """Medians over the timed runs: wall seconds, and CPU seconds of this process (all
    threads), which a busy machine stretches far less than the wall clock."""

    wall: float
    cpu: float


def time_embedding(
    backbone: Backbone,
    pixels: torch.Tensor,
    *,
    device: torch.device,
    batch_size: int,
    repeats: int,
) -> tuple[Timing, torch.Tensor]:
    """Median times of ``repeats`` embeddings of all ``pixels``, and the embeddings."""
    backbone.embed(pixels[:batch_size], chunk_size=batch_size, device=device)  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started, started_cpu = time.perf_counter(), time.process_time()
        vectors = backbone.embed(pixels, chunk_size=batch_size, device=device)
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return Timing(statistics.median(wall), statistics.median(cpu)), vectors


def probe_accuracy(vectors: torch.Tensor, labels: np.ndarray) -> float:
    """Mean 5-fold accuracy of a logistic regression on the embeddings."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    return float(cross_val_score(probe, vectors.numpy(), labels, cv=5).mean())


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="112,160,224", help="input sides to measure")
    parser.add_argument("--n", type=int, default=300, help="images per run")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the median counts")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--dataset", choices=["fashion-mnist", "digits"], default="fashion-mnist")
    parser.add_argument("--no-probe", action="store_true", help="skip the linear probe")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pixels, labels, described = load_images(args.dataset, args.n)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} torch threads on "
        f"{os.cpu_count()} CPUs, load average {load_average()}"
    )
    print(
        f"{len(pixels)} images: {described}; batch size {args.batch_size}, "
        f"median of {args.repeats} runs"
    )
    print(
        f"{'backbone':<20}{'side':>6}{'device':>8}{'images/s':>11}{'ms/image':>10}"
        f"{'CPU ms/image':>14}{'60k images':>12}{'probe acc':>11}"
    )
    for device in devices:
        for side in (int(s) for s in args.sizes.split(",")):
            backbone = resolve_backbone("efficientnet_lite0", input_size=side)
            timing, vectors = time_embedding(
                backbone, pixels, device=device, batch_size=args.batch_size, repeats=args.repeats
            )
            rate = len(pixels) / timing.wall
            cpu_ms = 1000 * timing.cpu / len(pixels)
            probe = "" if args.no_probe else f"{probe_accuracy(vectors, labels):.3f}"
            print(
                f"{backbone.name:<20}{side:>6}{device.type:>8}{rate:>11.1f}"
                f"{1000 / rate:>10.1f}{cpu_ms:>14.1f}{60_000 / rate / 60:>10.1f} m{probe:>11}"
            )
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()

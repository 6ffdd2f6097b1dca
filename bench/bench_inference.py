"""MC-dropout inference throughput: images x samples per second, trunk-once vs full.

The paper CNN at 28x28 (its trunk is only conv1: everything after sits behind dropout, so
trunk-once saves little) and the ResNet-18 MC-dropout head (dropout only in the head, so
trunk-once saves nearly all of it) on a smaller pool. CPU always, CUDA when present. Random
pixels: the cost does not depend on the content. Prints a table; never run as a test.

    python bench/bench_inference.py     # CNN: 60k trunk-once, 5k stacked; ResNet-18: 500
    python bench/bench_inference.py --cnn-n 5000 --cnn-full-n 1000 --resnet-n 200

The "60k" column extrapolates the measured rate to a 60,000-image pool.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from worker.engine.networks import NetworkSpec, build_network
from worker.engine.training import mc_log_probs


def measure(
    name: str,
    size: int,
    channels: int,
    n: int,
    k: int,
    device: torch.device,
    trunk_once: bool,
    chunk_size: int,
) -> None:
    network = build_network(NetworkSpec(10, channels, size, name=name), seed=0)
    pool = torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(0))
    warm = pool[: min(n, 32)]
    mc_log_probs(network, warm, mc_samples=k, seed=0, trunk_once=trunk_once, device=device)
    started = time.perf_counter()
    out = mc_log_probs(
        network,
        pool,
        mc_samples=k,
        seed=0,
        trunk_once=trunk_once,
        chunk_size=chunk_size,
        device=device,
    )
    seconds = time.perf_counter() - started
    rate = n * k / seconds
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{name:<10}{size:>4}px {device.type:<5}{n:>7,} x K={k:<3} trunk_once={trunk_once!s:<6}"
        f"{seconds:>9.2f} s {rate:>12,.0f} img*samples/s  60k: {60_000 * k / rate:>7.1f} s"
        f"  peak RSS {peak:,.0f} MB  out {tuple(out.shape)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cnn-n", type=int, default=60_000, help="paper CNN pool, trunk-once")
    parser.add_argument(
        "--cnn-full-n", type=int, default=5_000, help="paper CNN pool for the slow stacked path"
    )
    parser.add_argument("--resnet-n", type=int, default=500, help="pool size for ResNet-18")
    parser.add_argument("--resnet-size", type=int, default=32, help="ResNet-18 image side")
    parser.add_argument("-k", "--samples", type=int, default=20, help="MC samples K")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--chunk-size", type=int, default=1024, help="rows per forward pass")
    parser.add_argument("--skip-full", action="store_true", help="only the trunk-once path")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        devices.append(torch.device("cuda"))
    print(f"torch {torch.__version__}, {args.threads} CPU threads, devices {devices}")
    modes = [True] if args.skip_full else [True, False]
    for device in devices:
        for trunk_once in modes:
            n = args.cnn_n if trunk_once or device.type == "cuda" else args.cnn_full_n
            measure("mnist_cnn", 28, 1, n, args.samples, device, trunk_once, args.chunk_size)
        for trunk_once in modes:
            measure(
                "resnet18",
                args.resnet_size,
                3,
                args.resnet_n,
                args.samples,
                device,
                trunk_once,
                args.chunk_size,
            )


if __name__ == "__main__":
    main()

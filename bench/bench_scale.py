"""A BatchBALD round on a pool of 1M items: time and memory with the prefilter, and its cost.

The pool is synthetic but shaped like a round on embeddings: features_N_D (D=64) drawn
around C=10 class centres, and a random MC-dropout "head" (one linear layer under K=20
consistent dropout masks) turning them into log_probs_N_K_C, generated a chunk at a time and
stored in float16 (1M x 20 x 10 x 2 bytes = 400 MB), as a worker would hold them.

Part 1 runs ``select("batchbald", ...)`` with the default :class:`Prefilter` (BALD over the
pool in chunks, BatchBALD on the top 5,000) --repeats times and prints the median round time,
the BALD pass alone, and the peak RSS (ru_maxrss) above the RSS with the pool in memory.

Part 2, on pools small enough to search whole (--compare-n, default 20k), runs BatchBALD with
and without the prefilter and prints the picks in common and the joint mutual information
``I(y_1..y_b; w)`` of each batch. Both batches are measured by one estimator: BatchBALD run on
the batch's own items, whose gains sum to the joint MI by the chain rule (exact for the first
4 labels, sampled with M=10,000 after), averaged over 3 sampling seeds. Prints a table; never
run as a test.

    python bench/bench_scale.py                       # 1M pool, 3 runs; 20k comparison
    python bench/bench_scale.py --n 200000 --compare-n 5000,20000 --batch-sizes 10,100
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker.engine.acquisition import DEFAULT_PREFILTER, Prefilter, _scores_in_chunks, select
from worker.engine.batchbald import batchbald_select
from worker.engine.scores import checked_bald_scores

GENERATION_CHUNK = 10_000  # items per generated chunk: [10k, 20, 64] float32 = 51 MB


@dataclass(frozen=True)
class Head:
    """A random linear MC-dropout head: K consistent masks over D features, C classes."""

    centres_C_D: torch.Tensor
    weights_D_C: torch.Tensor
    masks_K_D: torch.Tensor


def make_head(D: int, K: int, C: int, seed: int) -> Head:
    g = torch.Generator().manual_seed(seed)
    centres_C_D = torch.randn(C, D, generator=g)
    # Roughly aligned with the class centres, so items near a centre are predicted confidently
    # and items between centres are disputed, as after a few labelled rounds.
    weights_D_C = 0.15 * centres_C_D.t() + 0.05 * torch.randn(D, C, generator=g)
    masks_K_D = (torch.rand(K, D, generator=g) < 0.5).float() / 0.5  # p=0.5 dropout
    return Head(centres_C_D, weights_D_C, masks_K_D)


def make_pool(N: int, head: Head, seed: int) -> torch.Tensor:
    """float16 ``[N, K, C]`` log-probs, generated a chunk at a time."""
    K, D = head.masks_K_D.shape
    C = head.centres_C_D.shape[0]
    log_probs_N_K_C = torch.empty(N, K, C, dtype=torch.float16)
    g = torch.Generator().manual_seed(seed)
    for start in range(0, N, GENERATION_CHUNK):
        n = min(GENERATION_CHUNK, N - start)
        # Mixtures of two classes: the mixing weight decides how ambiguous an item is.
        first_n, second_n = torch.randint(C, (2, n), generator=g)
        mix_n_1 = torch.rand(n, 1, generator=g)
        features_n_D = (
            mix_n_1 * head.centres_C_D[first_n] + (1 - mix_n_1) * head.centres_C_D[second_n]
        )
        features_n_D += 0.5 * torch.randn(n, D, generator=g)
        logits_n_K_C = (features_n_D[:, None, :] * head.masks_K_D[None]) @ head.weights_D_C
        log_probs_N_K_C[start : start + n] = torch.log_softmax(5 * logits_n_K_C, dim=-1).half()
    return log_probs_N_K_C


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """The peak RSS since the last :func:`reset_peak` (VmHWM), else since the start."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> bool:
    """Restarts the peak RSS from the current RSS (Linux >= 4.0), so that building the pool
    does not count; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def large_round(N: int, b: int, repeats: int, head: Head) -> None:
    log_probs = make_pool(N, head, seed=1)
    pool_mb = log_probs.numel() * log_probs.element_size() / 2**20
    print(
        f"\nPart 1: N={N:,} K={log_probs.shape[1]} C={log_probs.shape[2]} float16 "
        f"({pool_mb:,.0f} MB), b={b}, {DEFAULT_PREFILTER}"
    )
    print(f"  peak RSS while building the pool: {peak_rss_mb():,.0f} MB")
    reset = reset_peak()
    with_pool = rss_mb()
    print(
        f"  RSS with the pool in memory: {with_pool:,.0f} MB"
        + ("" if reset else " (the peak below includes building the pool: no clear_refs)")
    )
    times, bald_times, picks = [], [], None
    for _ in range(repeats):
        started = time.perf_counter()
        _scores_in_chunks(log_probs, checked_bald_scores, DEFAULT_PREFILTER.chunk_elements)
        bald_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        selection = select("batchbald", log_probs, b, generator=torch.Generator().manual_seed(0))
        times.append(time.perf_counter() - started)
        picks = selection.indices.tolist() if picks is None else picks
        assert picks == selection.indices.tolist(), "a seeded round must repeat itself"
    peak = peak_rss_mb()
    print(
        f"  round (score + select): median {statistics.median(times):.2f} s "
        f"(runs {', '.join(f'{t:.2f}' for t in times)})\n"
        f"  of which the BALD pass over the pool: median {statistics.median(bald_times):.2f} s\n"
        f"  peak RSS {peak:,.0f} MB: {peak - with_pool:,.0f} MB above the pool's RSS "
        f"({(peak - with_pool) / pool_mb:.2f}x the float16 log-probs)"
    )


def joint_mi(log_probs_b_K_C: torch.Tensor) -> float:
    """I(y_1..y_b; w) of a batch: BatchBALD's gains over the batch itself, 3 sampling seeds."""
    b = log_probs_b_K_C.shape[0]
    totals = [
        float(
            batchbald_select(
                log_probs_b_K_C, b, generator=torch.Generator().manual_seed(seed)
            ).batch_scores.sum()
        )
        for seed in range(3)
    ]
    return statistics.mean(totals)


def compare(N: int, b: int, head: Head) -> None:
    log_probs = make_pool(N, head, seed=2)
    runs = {}
    for name, prefilter in (("whole pool", None), ("prefilter", Prefilter(above=0))):
        started = time.perf_counter()
        selection = select(
            "batchbald",
            log_probs,
            b,
            generator=torch.Generator().manual_seed(0),
            prefilter=prefilter,
        )
        runs[name] = (selection, time.perf_counter() - started)
    whole, prefiltered = runs["whole pool"][0], runs["prefilter"][0]
    common = len(set(whole.indices.tolist()) & set(prefiltered.indices.tolist()))
    keep = min(N, max(Prefilter().keep, b))
    dropped = float(torch.sort(whole.scores, descending=True).values[keep]) if keep < N else 0.0
    print(f"  N={N:,} b={b}: {common}/{b} picks in common; largest BALD dropped {dropped:.2e}")
    for name, (selection, seconds) in runs.items():
        mi = joint_mi(log_probs[selection.indices].float())
        print(
            f"    {name:<11} {seconds:>7.2f} s  joint MI {mi:.4f} nats  "
            f"(greedy gains sum {float(selection.batch_scores.sum()):.4f}, "
            f"smallest gain {float(selection.batch_scores.min()):.2e})"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="items in the large pool")
    parser.add_argument("--b", type=int, default=10, help="batch size of the large round")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the large round")
    parser.add_argument("--compare-n", default="20000", help="comma list of pool sizes")
    # The whole-pool search at 20k and b=50 ran past 30 min on two loaded cores: once the
    # joint saturates every gain is within rounding of the others and nothing prunes.
    parser.add_argument("--batch-sizes", default="4,10", help="comma list, for part 2")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--skip-large", action="store_true", help="part 2 only")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    head = make_head(D=64, K=20, C=10, seed=0)
    print(
        f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, load "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    if not args.skip_large:
        large_round(args.n, args.b, args.repeats, head)
    print("\nPart 2: BatchBALD with and without the prefilter (keep=5,000)")
    for N in (int(n) for n in args.compare_n.split(",")):
        for b in (int(x) for x in args.batch_sizes.split(",")):
            compare(N, b, head)
    print(f"\nload at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

"""Acquisition speed and memory: nextlabel next to batchbald_redux and Baal on one pool.

One piece because it is one command line talking to itself: the driver runs this file again
with `--worker` for each contender, and the worker times that contender and prints the one
JSON line the driver reads, so both ends of that exchange, and the contenders, sit together.

Every contender runs in its own subprocess on the same synthetic pool (regenerated from the
same seed), so peak RSS is per contender. Times are medians over --repeats runs after one
warm-up call on a tiny pool; CPU time (user + system, all threads) and, where perf can count
them, user-space instructions per run sit beside wall time, so that a ratio measured on a
shared machine does not swing with the load. Prints a table; never run as a test.

    python bench/bench_acquisition.py            # full: redux BatchBALD at 10k takes ~3-4 min
    python bench/bench_acquisition.py --quick    # redux/Baal only at 2k, smaller big pools
    python bench/bench_acquisition.py --skip-baal --skip-redux
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "batchbald", "bald", "entropy" or "margin"
    N: int
    K: int = 20
    C: int = 10
    b: int = 10
    M: int = 10_000


def make_pool(case: Case) -> Any:
    """Log-probs [N, K, C] of a pool where samples disagree, like a half-trained network."""
    import torch

    g = torch.Generator().manual_seed(0)
    logits = 2 * torch.randn(case.N, 1, case.C, generator=g)
    logits = logits + 2 * torch.randn(case.N, case.K, case.C, generator=g)
    return torch.log_softmax(logits, dim=-1)


# --------------------------------------------------------------------------- contenders


def nextlabel_run(case: Case, log_probs: Any, prune: bool = True) -> list[int] | None:
    import torch

    from worker.engine import batchbald, scores

    scorers = {
        "bald": scores.bald_scores,
        "entropy": scores.entropy_scores,
        "margin": scores.margin_scores,
    }
    if case.kind in scorers:
        scorers[case.kind](log_probs)  # validation included
        return None
    selection = batchbald.batchbald_select(
        log_probs,
        case.b,
        generator=torch.Generator().manual_seed(0),
        num_samples=case.M,
        prune=prune,
    )
    return selection.indices.tolist()


def redux_run(case: Case, log_probs: Any) -> list[int] | None:
    import torch
    from batchbald_redux import batchbald

    log_probs = log_probs.double()  # redux's own default working precision
    if case.kind == "bald":
        batchbald.compute_entropy(log_probs) - batchbald.compute_conditional_entropy(log_probs)
        return None
    if case.kind == "entropy":
        batchbald.compute_entropy(log_probs)
        return None
    return list(
        batchbald.get_batchbald_batch(log_probs, case.b, case.M, dtype=torch.double).indices
    )


def baal_run(case: Case, log_probs: Any) -> list[int] | None:
    from baal.active.heuristics import BALD, BatchBALD, Entropy, Margin

    probs_N_C_K = log_probs.double().exp().permute(0, 2, 1).numpy()  # Baal's layout
    heuristics = {"bald": BALD, "entropy": Entropy, "margin": Margin}
    if case.kind in heuristics:
        heuristics[case.kind]().get_uncertainties(probs_N_C_K)  # from probabilities [N, C, K]
        return None
    # num_draw=M/K gives M = K * num_draw = 10,000 sampled configurations, as for the others.
    heuristic = BatchBALD(num_samples=case.b, num_draw=case.M // case.K)
    return [int(i) for i in heuristic(probs_N_C_K)[: case.b]]


CONTENDERS: dict[str, Callable[[Case, Any], list[int] | None]] = {
    "nextlabel": nextlabel_run,
    "nextlabel-noprune": lambda case, lp: nextlabel_run(case, lp, prune=False),
    "batchbald_redux": redux_run,
    "baal": baal_run,
}


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PerfControl:
    """Turns a surrounding ``perf stat -D -1 --control fifo:...`` on only while a run is timed."""

    def __init__(self, control: str | None, ack: str | None) -> None:
        self.control: TextIO | None = open(control, "w") if control else None  # noqa: SIM115
        self.ack: TextIO | None = open(ack) if ack else None  # noqa: SIM115

    def _send(self, command: str) -> None:
        if self.control is None or self.ack is None:
            return
        self.control.write(command + "\n")
        self.control.flush()
        self.ack.readline()  # perf answers "ack" once the events are switched

    @contextmanager
    def counting(self) -> Iterator[None]:
        self._send("enable")
        try:
            yield
        finally:
            self._send("disable")


def kernels() -> dict[str, Any]:
    """Which BLAS and vector kernels numpy and torch use here (threadpoolctl, torch config)."""
    import torch

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_blas": "MKL" if torch.backends.mkl.is_available() else "other",
        "torch_threads": torch.get_num_threads(),
    }
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        info["threadpoolctl"] = "not installed"
        return info
    info["threadpools"] = [
        f"{pool['internal_api']} {pool.get('version') or ''} {pool.get('architecture') or ''}"
        f" x{pool['num_threads']} ({pool['prefix']})"
        for pool in threadpool_info()
    ]
    return info


def worker(contender: str, case: Case, repeats: int, threads: int, perf: PerfControl) -> None:
    """Runs one contender on one case in this process and prints a JSON line."""
    import torch

    torch.set_num_threads(threads)
    run = CONTENDERS[contender]
    warm_up = Case("warm-up", case.kind, N=64, K=case.K, C=case.C, b=3, M=case.M)
    run(warm_up, make_pool(warm_up))
    log_probs = make_pool(case)
    before = rss_mb()
    times, cpu_times, picks = [], [], None
    load_before = os.getloadavg()[0]
    for _ in range(repeats):
        with perf.counting():
            started, cpu_started = time.perf_counter(), time.process_time()
            picks = run(case, log_probs)
            times.append(time.perf_counter() - started)
            cpu_times.append(time.process_time() - cpu_started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "median_s": statistics.median(times),
                "times": times,
                "median_cpu_s": statistics.median(cpu_times),
                "cpu_times": cpu_times,
                "peak_rss_mb": peak,
                "delta_rss_mb": peak - before,
                "picks": picks,
                "load": [load_before, os.getloadavg()[0]],
            }
        )
    )


# --------------------------------------------------------------------------- driver


def perf_counts_instructions() -> bool:
    """Whether ``perf stat`` can count user-space instructions here (not in most VMs)."""
    try:
        probe = subprocess.run(
            ["perf", "stat", "-x,", "-e", "instructions:u", "true"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return False
    return probe.returncode == 0 and "<not" not in probe.stderr


def under_perf(command: list[str], folder: str) -> list[str]:
    """``command`` under perf stat, counting only while the worker says so."""
    control, ack = os.path.join(folder, "control"), os.path.join(folder, "ack")
    os.mkfifo(control)
    os.mkfifo(ack)
    return [
        "perf", "stat", "-x,", "-e", "instructions:u", "-o", os.path.join(folder, "counts"),
        "-D", "-1", "--control", f"fifo:{control},{ack}", "--",
        *command, "--perf-control", control, "--perf-ack", ack,
    ]  # fmt: skip


def instructions(folder: str) -> float | None:
    """Instructions counted in ``folder``'s perf output, or None."""
    try:
        lines = Path(folder, "counts").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(",")
        if len(fields) > 2 and fields[2].startswith("instructions") and fields[0].isdigit():
            return float(fields[0])
    return None


def spawn(
    contender: str,
    case: Case,
    repeats: int,
    timeout: float,
    threads: int,
    wait_policy: str,
    count: bool,
) -> dict[str, Any] | None:
    command = [
        sys.executable,
        __file__,
        "--worker",
        contender,
        "--case",
        json.dumps(case.__dict__),
        "--repeats",
        str(repeats),
        "--threads",
        str(threads),
    ]
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(REPO)}
    if wait_policy:
        env["OMP_WAIT_POLICY"] = wait_policy
    with tempfile.TemporaryDirectory() as folder:
        if count:
            command = under_perf(command, folder)
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, env=env, check=False
            )
        except subprocess.TimeoutExpired:
            print(f"  {contender}: timed out after {timeout:.0f} s")
            return None
        counted = instructions(folder) if count else None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        reason = "killed (out of memory?)" if done.returncode < 0 else done.stderr[-400:]
        print(f"  {contender}: failed, exit {done.returncode}: {reason}")
        return None
    result = dict(json.loads(lines[-1]))
    result["instructions"] = counted / repeats if counted is not None else None
    return result


def available(module: str) -> bool:
    probe = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, check=False
    )
    return probe.returncode == 0


def report(case: Case, results: dict[str, dict[str, Any]]) -> None:
    base = results.get("nextlabel")
    print(
        f"\n{case.name}: N={case.N:,} K={case.K} C={case.C}"
        + (f" b={case.b} M={case.M:,}" if case.kind == "batchbald" else "")
    )
    print(f"  {'contender':<20}{'wall s':>9}{'CPU s':>9}{'G instr':>9}{'runs':>5}"
          f"{'peak RSS MB':>12}{'dRSS MB':>9}{'x wall':>8}{'x CPU':>7}{'x instr':>8}"
          f"{'load':>10}")  # fmt: skip
    for name, result in results.items():
        wall = result["median_s"] / base["median_s"] if base else float("nan")
        cpu = result["median_cpu_s"] / base["median_cpu_s"] if base else float("nan")
        counted = result["instructions"]
        instr = f"{counted / 1e9:>9.2f}" if counted is not None else f"{'n/a':>9}"
        ours = base["instructions"] if base else None
        ratio = f"{counted / ours:>8.1f}" if counted is not None and ours else f"{'n/a':>8}"
        load = "{:.1f}-{:.1f}".format(*result["load"])
        print(
            f"  {name:<20}{result['median_s']:>9.3f}{result['median_cpu_s']:>9.3f}{instr}"
            f"{len(result['times']):>5}{result['peak_rss_mb']:>12.0f}"
            f"{result['delta_rss_mb']:>9.0f}{wall:>8.1f}{cpu:>7.1f}{ratio}{load:>10}"
        )
    picks = {name: r["picks"] for name, r in results.items() if r.get("picks")}
    ours_picks = picks.get("nextlabel")
    for name, other in picks.items():
        if ours_picks is None or name == "nextlabel":
            continue
        pairs = zip(ours_picks, other, strict=False)
        prefix = next((i for i, (a, b) in enumerate(pairs) if a != b), 0)
        prefix = prefix or (len(ours_picks) if ours_picks == other else 0)
        common = len(set(ours_picks) & set(other))
        print(f"  vs {name}: first {prefix} picks identical, {common}/{case.b} picks in common")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small pools; redux/Baal at 2k")
    parser.add_argument("--skip-baal", action="store_true", help="Baal BatchBALD needs >12 GB")
    parser.add_argument("--skip-redux", action="store_true", help="skip batchbald_redux")
    parser.add_argument("--repeats", type=int, default=3, help="runs per fast contender")
    parser.add_argument("--big-n", type=int, default=60_000, help="N of the large-pool cases")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per contender")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per contender")
    parser.add_argument(
        "--omp-wait-policy",
        default="PASSIVE",
        help="OMP_WAIT_POLICY for every contender ('' keeps the environment's): on a shared "
        "machine spinning OpenMP threads slow 2-thread runs several-fold",
    )
    parser.add_argument(
        "--cases", default="", help="comma list of bb2k,bb10k,bbbig,bald,entropy,margin (all)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--perf-control", help=argparse.SUPPRESS)
    parser.add_argument("--perf-ack", help=argparse.SUPPRESS)
    parser.add_argument("--kernels", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def plan_cases(
    args: argparse.Namespace, have_redux: bool, have_baal: bool
) -> list[tuple[Case, list[tuple[str, int]]]]:
    """Which contenders run on which case, and how many times."""
    big = 20_000 if args.quick else args.big_n
    ours = [("nextlabel", args.repeats), ("nextlabel-noprune", args.repeats)]
    redux_at_10k = have_redux and not args.quick
    plan: list[tuple[str, Case, list[tuple[str, int]]]] = [
        (
            "bb2k",
            Case("BatchBALD 2k", "batchbald", N=2_000),
            ours
            + ([("batchbald_redux", 1)] if have_redux else [])
            + ([("baal", 1)] if have_baal else []),
        ),
        (
            "bb10k",
            Case("BatchBALD 10k", "batchbald", N=10_000),
            ours + ([("batchbald_redux", 1)] if redux_at_10k else []),
        ),
        (
            "bbbig",
            Case(f"BatchBALD {big // 1000}k", "batchbald", N=big),
            [("nextlabel", args.repeats), ("nextlabel-noprune", 1)],
        ),
    ]
    for kind in ("bald", "entropy", "margin"):
        contenders = [("nextlabel", args.repeats)]
        if have_redux and kind != "margin":  # redux has no margin
            contenders.append(("batchbald_redux", args.repeats))
        if have_baal:
            contenders.append(("baal", args.repeats))
        plan.append((kind, Case(f"{kind} scores {big // 1000}k", kind, N=big), contenders))
    chosen = args.cases.split(",") if args.cases else [key for key, _, _ in plan]
    return [(case, contenders) for key, case, contenders in plan if key in chosen]


def print_header(args: argparse.Namespace, have_redux: bool, have_baal: bool, count: bool) -> None:
    probe = subprocess.run(
        [sys.executable, __file__, "--kernels", "--threads", str(args.threads)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    print(
        f"python {sys.version.split()[0]}, {args.threads} threads, {os.cpu_count()} CPUs, "
        f"OMP_WAIT_POLICY={args.omp_wait_policy or os.environ.get('OMP_WAIT_POLICY')}, "
        f"redux={have_redux}, baal={have_baal}, load at start "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
        + f"\nkernels: {probe.stdout.strip() or probe.stderr[-300:]}"
        + "\n'wall'/'CPU' = median wall / process CPU seconds (all threads); 'G instr' = "
        + ("user-space instructions per run (perf)" if count else "n/a: perf cannot count here")
        + ";\n'x' = ratio to nextlabel; 'load' = 1-min load average before-after the runs"
    )


def main() -> None:
    args = parse_args()
    if args.kernels:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(kernels()))
        return
    if args.worker:
        perf = PerfControl(args.perf_control, args.perf_ack)
        worker(args.worker, Case(**json.loads(args.case)), args.repeats, args.threads, perf)
        return
    have_redux = not args.skip_redux and available("batchbald_redux")
    have_baal = not args.skip_baal and available("baal")
    count = perf_counts_instructions()
    print_header(args, have_redux, have_baal, count)
    for case, contenders in plan_cases(args, have_redux, have_baal):
        results = {}
        for contender, repeats in contenders:
            result = spawn(
                contender, case, repeats, args.timeout, args.threads, args.omp_wait_policy, count
            )
            if result is not None:
                results[contender] = result
        report(case, results)
    print(
        "\nScores include nextlabel's input validation; redux's BALD is its entropy minus its"
        "\nconditional entropy; Baal's time includes turning the float32 log-probs into its"
        "\nfloat64 probabilities [N, C, K]. Baal BatchBALD runs at 2k only: its [N, M, C]"
        "\nfloat64 array needs >12 GB at 5k."
    )


if __name__ == "__main__":
    main()

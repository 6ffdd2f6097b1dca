"""docs/results.md and docs/plots/*.png from whatever cells of the grid finished.

One piece because it fills one template: each section below is one `${name}` field of
label_efficiency_results.md.tmpl, computed from the rows and curve groups `write_results`
loads once; the grid's plan, the probe and the ablation already live in modules of their own.

The prose is label_efficiency_results.md.tmpl, a string.Template whose `${name}` fields are
the sections built here; every number in them is read off the cells' rounds.csv (and the
probe's and the sampler ablation's files).
"""

from __future__ import annotations

import json
import logging
import math
import shlex
import statistics
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from balanced_batches import OUT as ABLATION_OUT
from balanced_batches import markdown_table
from label_efficiency_plan import BUDGET, ENGINE_FILES, K_FOR, OUT, REPO, Cell
from label_efficiency_probe import probe_section
from scipy.stats import binomtest

from simulate.cli import format_seeds
from simulate.records import PHASES
from simulate.report import (
    THRESHOLDS,
    Curve,
    ThresholdRow,
    format_triple,
    group_curves,
    labels_to_reach,
    mean_accuracy,
    percentile,
    plot_curves,
    read_rounds_csv,
    threshold_table,
)

logger = logging.getLogger("label_efficiency")

TEMPLATE = Path(__file__).with_name("label_efficiency_results.md.tmpl")
DOCS = REPO / "docs"
PLOTS = DOCS / "plots"
RESULTS = DOCS / "results.md"
# Cells run before commit 7d8147f drew each round's seed as project seed + round id, so
# seed s's round r + 1 replayed seed s + 1's round r: their seeds were not independent.
# Rows that a target reads are rerun on a later engine and their old cells moved here.
CORRELATED = OUT / "correlated-seeds"
SEED_FIX_COMMIT = "7d8147f"
INITIAL_LABELS = 20  # 2 per class, as in the paper

# Quoted from ../shared/REFERENCES.md (Kirsch et al. 2019, full MNIST pool of ~60k items;
# 25th / median / 75th percentile over 6 runs, initial labels counted). "" = not reported.
PAPER: dict[tuple[str, str, int], tuple[str, str]] = {
    ("mnist5k", "batchbald", 10): ("70 / 90 / 110", "190 / 200 / 230"),
    ("mnist5k", "bald", 10): ("120 / 120 / 170", "250 / 250 / >300"),
    ("mnist5k", "bald", 1): ("93 / 96 / 101", "197 / 206 / 243"),
    ("repeated-mnist", "batchbald", 10): ("median 120", ""),
    ("repeated-mnist", "random", 10): ("median 195 (b=5)", ""),
    ("repeated-mnist", "bald", 10): ("median 280", ""),
}


def load_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted(OUT.glob("*/*/rounds.csv")):
        rows.extend(read_rounds_csv(path))
    return rows


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(present) if present else None


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def timing_table(rows: Sequence[dict[str, Any]]) -> str:
    """Median seconds per round, per configuration, over all its rounds and seeds."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row.get("status") == "done":
            groups[(row["dataset"], row["strategy"], row["batch_size"], row["mc_samples"])].append(
                row
            )
    lines = [
        "| dataset | strategy | b | K | rounds | label→queue (client) | worker total | load "
        "| train | evaluate | infer | select | write | epochs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, members in sorted(groups.items(), key=lambda item: tuple(map(str, item[0]))):
        cells = [
            _fmt(_median(r.get(name) for r in members))
            for name in ("observed_s", "worker_s", *(f"{phase}_s" for phase in PHASES[:-1]))
        ]
        epochs = _fmt(_median(r.get("epochs") for r in members), 0)
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {len(members)} | "
            + " | ".join(cells)
            + f" | {epochs} |"
        )
    return "\n".join(lines) + "\n"


def _seeds_of(rows: Sequence[dict[str, Any]], key: tuple[Any, ...]) -> list[int]:
    return sorted(
        {
            int(r["seed"])
            for r in rows
            if (r["dataset"], r["strategy"], r["batch_size"], r["mc_samples"], r["mode"]) == key
        }
    )


def results_table(table: Sequence[ThresholdRow], rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| dataset | strategy | b | K | seeds | to 90%: p25 / median / p75 | paper | "
        "to 95%: p25 / median / p75 | paper | accuracy at budget (mean) | command |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table:
        dataset, strategy, b, k, _mode = row.key
        paper = PAPER.get((dataset, strategy, b), ("", ""))
        seeds = _seeds_of(rows, row.key)
        cell = Cell(dataset, strategy, b, k, seeds[0], row.budget)
        repro = f"{strategy}-b{b}-K{k}"
        command = shlex.join(
            cell.command(seeds=format_seeds(seeds), out=OUT / "repro" / dataset / repro)
        )
        reached = [format_triple(row.reached[t], row.budget) for t in THRESHOLDS]
        lines.append(
            f"| {dataset} | {strategy} | {b} | {k} | {len(seeds)} | {reached[0]} | {paper[0]} "
            f"| {reached[1]} | {paper[1]} | {row.final_accuracy:.3f} @ {row.budget} "
            f"| `{command}` |"
        )
    return "\n".join(lines) + "\n"


def labels_to_90(
    groups: dict[tuple[Any, ...], dict[int, Curve]], dataset: str, strategy: str
) -> dict[int, float]:
    """seed -> labels to 90% for the grid's configuration: b=10, the dataset's K, synchronous."""
    curves = groups.get((dataset, strategy, 10, K_FOR[dataset], "sync"), {})
    return {seed: labels_to_reach(curve, 0.90) for seed, curve in curves.items()}


@dataclass(frozen=True)
class Comparison:
    """Medians of labels to 90% over the seeds that every strategy compared has finished."""

    medians: tuple[float, ...]
    seeds: tuple[int, ...]

    @classmethod
    def of(cls, *per_seed: dict[int, float]) -> Comparison:
        common = sorted(set.intersection(*(set(runs) for runs in per_seed)))
        medians = tuple(percentile([runs[s] for s in common], 50) for runs in per_seed)
        return cls(medians=medians, seeds=tuple(common))

    @property
    def measured(self) -> bool:
        return bool(self.seeds)

    def over(self) -> str:
        seeds = ", ".join(map(str, self.seeds))
        return f"seeds {seeds}" if len(self.seeds) > 1 else f"seed {seeds}" if seeds else "no seed"


def _labels(value: float) -> str:
    if math.isnan(value):
        return "–"
    return f">{BUDGET}" if math.isinf(value) else f"{value:g}"


def _verdict(comparison: Comparison, ok: bool) -> str:
    if not comparison.measured:
        return "not measured yet"
    provisional = " (provisional: fewer than 3 seeds)" if len(comparison.seeds) < 3 else ""
    return ("**met**" if ok else "**missed**") + f" over {comparison.over()}{provisional}"


def targets_section(groups: dict[tuple[Any, ...], dict[int, Curve]]) -> str:
    """Each issue-6 target: medians over the seeds all its strategies share, and a verdict."""
    mnist = {s: labels_to_90(groups, "mnist5k", s) for s in ("batchbald", "random", "powerbald")}
    repeated = {
        s: labels_to_90(groups, "repeated-mnist", s)
        for s in ("batchbald", "random", "bald", "powerbald")
    }
    alone = Comparison.of(mnist["batchbald"])
    (bb,) = alone.medians
    versus_random = Comparison.of(mnist["random"], mnist["batchbald"])
    rnd, bb_r = versus_random.medians
    ratio = rnd / bb_r if versus_random.measured else math.nan
    ratio_text = "–" if math.isnan(ratio) else f"{ratio:.2f}×"
    if math.isinf(rnd):
        ratio_text += " or more"
    # The ranking is two comparisons; each uses the seeds its own pair shares.
    batchbald_vs_random = Comparison.of(repeated["batchbald"], repeated["random"])
    r_bb, r_rnd = batchbald_vs_random.medians
    random_vs_bald = Comparison.of(repeated["random"], repeated["bald"])
    r_rnd_for_bald, r_bald = random_vs_bald.medians
    lines = [
        f"- MNIST-5k: BatchBALD median labels to 90% = {_labels(bb)} (target ≤ 110): "
        f"{_verdict(alone, bb <= 110)}",
        f"- MNIST-5k: random / BatchBALD = {_labels(rnd)} / {_labels(bb_r)} = {ratio_text} "
        f"(target ≥ 1.5×): {_verdict(versus_random, ratio >= 1.5)}",
        f"- Repeated-MNIST: BatchBALD {_labels(r_bb)} ≤ random {_labels(r_rnd)}: "
        f"{_verdict(batchbald_vs_random, r_bb <= r_rnd)}",
        f"- Repeated-MNIST: random {_labels(r_rnd_for_bald)} < BALD {_labels(r_bald)}: "
        f"{_verdict(random_vs_bald, r_rnd_for_bald < r_bald)}",
    ]
    for name, runs in (("MNIST-5k", mnist), ("Repeated-MNIST", repeated)):
        power = Comparison.of(runs["powerbald"], runs["batchbald"])
        pb, pbb = power.medians
        lines.append(
            f"- {name}: PowerBALD {_labels(pb)} ≤ 1.1 × BatchBALD {_labels(pbb)}: "
            f"{_verdict(power, pb <= 1.1 * pbb)}"
        )
    return (
        "Medians of the labels to 90% test accuracy for the grid's configuration (b=10; K=20 "
        "on MNIST-5k, K=10 on Repeated-MNIST). A comparison uses only the seeds that all its "
        "strategies have finished, so a strategy with more seeds done does not skew it; "
        "the seeds are named with each verdict.\n\n" + "\n".join(lines) + "\n"
    )


def curve_area_section(groups: dict[tuple[Any, ...], dict[int, Curve]]) -> str:
    """Mean accuracy over [initial labels, budget] per seed for the grid's b=10 rows."""
    lines = [
        "| dataset | strategy | seeds | mean accuracy, seed by seed | median "
        "| minus random, seed by seed | seeds above random (sign test) |",
        "|---|---|---|---|---|---|---|",
    ]
    for dataset in K_FOR:
        runs = {
            key[1]: _areas(curves)
            for key, curves in groups.items()
            if key[0] == dataset and key[2] == 10 and key[3] == K_FOR[dataset]
        }
        baseline = runs.get("random", {})
        for strategy, areas in sorted(runs.items()):
            shared = [seed for seed in areas if seed in baseline and strategy != "random"]
            deltas = [areas[seed] - baseline[seed] for seed in shared]
            above = sum(delta > 0 for delta in deltas)
            sign_test = f" (p = {_sign_test(above, len(deltas)):.2f})" if shared else ""
            lines.append(
                f"| {dataset} | {strategy} | {len(areas)} | "
                + ", ".join(f"s{seed}: {area:.3f}" for seed, area in sorted(areas.items()))
                + f" | {statistics.median(areas.values()):.3f} | "
                + (", ".join(f"s{s}: {d:+.3f}" for s, d in zip(shared, deltas, strict=True)) or "–")
                + (f" | {above} of {len(shared)}{sign_test} |" if shared else " | – |")
            )
    return "\n".join(lines) + "\n"


def _sign_test(above: int, seeds: int) -> float:
    """Two-sided exact sign test: how often a strategy no different from random would be
    above it on at least this lopsided a share of seeds."""
    return float(binomtest(above, seeds, 0.5).pvalue)


def _areas(curves: dict[int, Curve]) -> dict[int, float]:
    """seed -> mean accuracy over the full budget, for the runs that reached it."""
    areas = {}
    for seed, curve in curves.items():
        labels = {n for n, _ in curve}
        if {INITIAL_LABELS, BUDGET} <= labels:
            areas[seed] = mean_accuracy(curve, INITIAL_LABELS, BUDGET)
    return dict(sorted(areas.items()))


def saturation_section(rows: Sequence[dict[str, Any]]) -> str:
    """How much joint mutual information BatchBALD's picks add, against its log K ceiling.

    With K MC samples the estimated I(y_1..y_b; w) can never exceed log K nats, so once the
    sum of gains nears log K the remaining picks are made on gains too small to rank.
    """
    groups: dict[tuple[str, int, int], list[list[float]]] = defaultdict(list)
    for row in rows:
        scores = json.loads(row.get("queue_scores_json") or "[]")
        if row["strategy"] == "batchbald" and row.get("status") == "done" and scores:
            groups[(row["dataset"], row["batch_size"], row["mc_samples"])].append(scores)
    if not groups:
        return "_No BatchBALD round with queue scores yet._\n"
    lines = [
        "| dataset | b | K | rounds | log K (nats) | sum of the b gains: median | "
        "picks with gain < 0.1 nats | median gain of pick 1 / 5 / b |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (dataset, b, k), queues in sorted(groups.items()):
        picks = [queue[:b] for queue in queues]
        sums = [sum(queue) for queue in picks]
        small = sum(1 for queue in picks for gain in queue if gain < 0.1)
        total = sum(len(queue) for queue in picks)
        by_rank = [statistics.median(q[i] for q in picks if len(q) > i) for i in (0, 4, b - 1)]
        lines.append(
            f"| {dataset} | {b} | {k} | {len(picks)} | {math.log(k):.2f} | "
            f"{statistics.median(sums):.2f} | {small}/{total} ({100 * small / total:.0f}%) | "
            + " / ".join(f"{gain:.3f}" for gain in by_rank)
            + " |"
        )
    return "\n".join(lines) + "\n"


def _is_diagnostic(key: tuple[Any, ...]) -> bool:
    """A K other than the grid's: kept off the main plots."""
    return bool(key[3] != K_FOR.get(key[0], key[3]))


def plot_group(groups: dict[tuple[Any, ...], dict[int, Any]], dataset: str, b: int) -> str:
    subset = {
        k: v for k, v in groups.items() if k[0] == dataset and k[2] == b and not _is_diagnostic(k)
    }
    if not subset:
        return ""
    name = f"{dataset}-b{b}.png"
    plot_curves(
        subset,
        PLOTS / name,
        title=f"{dataset}, b={b}: test accuracy, mean and 95% CI over seeds",
        label_keys=("strategy", "mc_samples"),
    )
    return f"![{dataset}, b={b}](plots/{name})"


def write_results() -> None:
    rows = load_rows()
    groups = group_curves(rows)
    table = threshold_table(groups)
    PLOTS.mkdir(parents=True, exist_ok=True)
    plot_lines = [
        plot_group(groups, dataset, b) for dataset, b in sorted({(k[0], k[2]) for k in groups})
    ]
    plot_lines = [line for line in plot_lines if line]
    diagnostics = {
        k: v for k, v in groups.items() if k[0] == "mnist5k" and k[2] == 10 and k[1] == "batchbald"
    }
    if any(_is_diagnostic(k) for k in diagnostics):
        plot_curves(
            diagnostics,
            PLOTS / "mnist5k-b10-diagnostics.png",
            title="MNIST-5k, b=10: BatchBALD with K=20 and K=100",
            label_keys=("strategy", "mc_samples"),
        )
        plot_lines.append("![MNIST-5k diagnostics](plots/mnist5k-b10-diagnostics.png)")
    RESULTS.write_text(
        Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
            updated=time.strftime("%Y-%m-%d %H:%M %Z"),
            results_table=results_table(table, rows) if table else "_No run finished yet._\n",
            targets=targets_section(groups),
            plots="\n\n".join(plot_lines) or "_No plot yet._",
            timings=timing_table(rows) if rows else "_No round yet._\n",
            status=status_section(),
            saturation=saturation_section(rows),
            curve_areas=curve_area_section(groups),
            probe=probe_section(),
            balanced_batches=balanced_batches_section(),
            reruns=rerun_section(groups),
            bald_vs_random=bald_vs_random_paragraph(groups),
            random_spread=random_spread(groups),
        ),
        encoding="utf-8",
    )
    logger.info("wrote %s (%d rounds from %d configurations)", RESULTS, len(rows), len(table))


def _engine_versions() -> dict[str, list[str]]:
    versions: dict[str, list[str]] = defaultdict(list)
    for path in sorted(OUT.glob("*/*/provenance.json")):
        info = json.loads(path.read_text())
        # The engine files the cell recorded: today's ENGINE_FILES, or the older layout's
        # (worker/training.py, worker/pipeline.py, ...) for cells run before the move.
        recorded = [name for name in info if name.startswith("worker/")] or list(ENGINE_FILES)
        key = " / ".join(f"{name} {info.get(name, '?')}" for name in recorded)
        versions[key].append(f"{path.parent.parent.name}/{path.parent.name}")
    return versions


def status_section() -> str:
    finished, failed, pending = [], [], []
    for path in sorted(OUT.glob("*/*")):
        if not path.is_dir() or path.name == "repro" or path.parent == CORRELATED:
            continue
        runs = path / "runs.jsonl"
        name = f"{path.parent.name}/{path.name}"
        if not runs.exists():
            pending.append(name)
            continue
        lines = [json.loads(line) for line in runs.read_text().splitlines() if line.strip()]
        if any("error" not in line for line in lines):
            finished.append(name)
        else:
            failed.append(f"{name}: {lines[-1].get('error', '')[:200]}")
    parts = [f"- finished ({len(finished)}): " + (", ".join(finished) or "none")]
    engines = _engine_versions()
    if len(engines) > 1:
        # The engine is edited while the grid runs: say which cells ran which version.
        parts.append(
            "- engine versions (sha256 prefixes of the engine's files, as each cell recorded "
            "them) differ between cells:\n"
            + "\n".join(f"  - {version}: {', '.join(cells)}" for version, cells in engines.items())
        )
    correlated = [name for name in finished if not _independent_seeds(OUT / name)]
    if correlated:
        parts.append(
            f"- run before {SEED_FIX_COMMIT}, so with round seeds correlated across benchmark "
            f"seeds ({len(correlated)}): {', '.join(correlated)}"
        )
    if failed:
        parts.append("- failed:\n" + "\n".join(f"  - {line}" for line in failed))
    if pending:
        parts.append(f"- started, not finished: {', '.join(pending)}")
    return "\n".join(parts) + "\n"


def _independent_seeds(cell: Path) -> bool:
    """Whether the cell ran on a commit that contains the round-seed fix."""
    head = json.loads((cell / "provenance.json").read_text()).get("head", "")
    ancestor = subprocess.run(
        ["git", "merge-base", "--is-ancestor", SEED_FIX_COMMIT, head],
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    return ancestor.returncode == 0


def rerun_section(groups: dict[tuple[Any, ...], dict[int, Curve]]) -> str:
    """The moved cells (correlated seeds) beside their reruns, seed by seed."""
    old_rows = [
        row for path in sorted(CORRELATED.glob("*/*/rounds.csv")) for row in read_rounds_csv(path)
    ]
    if not old_rows:
        return "_No cell has been rerun._\n"
    lines = [
        "| dataset | strategy | seed | labels to 90%: correlated → rerun "
        "| mean accuracy: correlated → rerun |",
        "|---|---|---|---|---|",
    ]
    for key, old_curves in sorted(group_curves(old_rows).items()):
        new_curves = groups.get(key, {})
        for seed, old in sorted(old_curves.items()):
            new = new_curves.get(seed)
            lines.append(
                f"| {key[0]} | {key[1]} | {seed} | {_labels(labels_to_reach(old, 0.90))} → "
                f"{_labels(labels_to_reach(new, 0.90)) if new else 'not yet'} | "
                f"{_area_text(old)} → {_area_text(new) if new else 'not yet'} |"
            )
    return "\n".join(lines) + "\n"


def bald_vs_random_paragraph(groups: dict[tuple[Any, ...], dict[int, Curve]]) -> str:
    """Repeated-MNIST's random against BALD on the service grid, seed by seed, as measured."""
    random_runs = labels_to_90(groups, "repeated-mnist", "random")
    bald_runs = labels_to_90(groups, "repeated-mnist", "bald")
    both = Comparison.of(random_runs, bald_runs)
    if not both.measured:
        return "_The service grid has no seed with both random and BALD on Repeated-MNIST._"
    rnd, bald = both.medians
    gaps = {seed: bald_runs[seed] - random_runs[seed] for seed in both.seeds}
    behind = sum(gap > 0 for gap in gaps.values())
    ahead = sum(gap < 0 for gap in gaps.values())
    per_seed = ", ".join(f"s{seed}: {_signed(gap)}" for seed, gap in gaps.items())
    verdict = "holds" if rnd < bald else "does not hold"
    return (
        f"On the service grid over {both.over()}, labels to 90% have medians random "
        f"{_labels(rnd)} and BALD {_labels(bald)}, so the paper's random < BALD {verdict} "
        f"on labels to 90%. Seed by seed, BALD needs more labels than random on {behind}, "
        f"fewer on {ahead} and as many on {len(gaps) - behind - ahead} (BALD − random: "
        f"{per_seed}): the two curves cross near 90% at a shallow angle, so single seeds "
        "swing both ways; the whole-curve comparison above is the steadier reading."
    )


def random_spread(groups: dict[tuple[Any, ...], dict[int, Curve]]) -> str:
    """The range of random's labels to 90% over the grid's seeds, per dataset."""
    spreads = []
    for dataset in K_FOR:
        runs = labels_to_90(groups, dataset, "random").values()
        if runs:
            spreads.append(f"{dataset}: {_labels(min(runs))} to {_labels(max(runs))}")
    return "random's labels to 90% on the grid: " + "; ".join(spreads) if spreads else "–"


def _signed(gap: float) -> str:
    """A paired gap in labels; none where a run never reached the threshold."""
    return f"{gap:+g}" if math.isfinite(gap) else "–"


def _area_text(curve: Curve) -> str:
    area = _areas({0: curve}).get(0)
    return "–" if area is None else f"{area:.3f}"


def balanced_batches_section() -> str:
    """The in-process sampler ablation (bench/balanced_batches.py), one table per dataset."""
    tables = [
        f"{path.stem}:\n\n{markdown_table(path)}" for path in sorted(ABLATION_OUT.glob("*.jsonl"))
    ]
    return "\n".join(tables) if tables else "_Not run (`python bench/balanced_batches.py`)._\n"

"""CSV, learning-curve plots and the labels-to-accuracy table of simulated runs.

A run's curve is its list of (labels, test accuracy) points, one per completed round. The
"labels to reach x" of a run is the label count of its first round at or above x, or
infinity if it never got there within its budget (printed as ">budget", as the paper does).
"""

from __future__ import annotations

import csv
import logging
import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from itertools import pairwise
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server or in CI

import matplotlib.pyplot as plt
import numpy as np
from scipy import stats

from simulate.records import RoundRecord

logger = logging.getLogger(__name__)

THRESHOLDS = (0.90, 0.95)
PERCENTILES = (25.0, 50.0, 75.0)
CONFIDENCE = 0.95
GROUP_KEYS = ("dataset", "strategy", "batch_size", "mc_samples", "mode")

Curve = list[tuple[int, float]]


# --- CSV ----------------------------------------------------------------------------------

ROUND_FIELDS = tuple(field.name for field in fields(RoundRecord))


def write_rounds_csv(records: Iterable[RoundRecord], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=ROUND_FIELDS)
        writer.writeheader()
        for record in records:
            writer.writerow(asdict(record))


def read_rounds_csv(path: Path) -> list[dict[str, Any]]:
    """Rows with numbers parsed: ints where the column is integral, floats, or None."""
    with path.open(newline="") as handle:
        return [_typed(row) for row in csv.DictReader(handle)]


_INT_FIELDS = {
    "batch_size",
    "mc_samples",
    "seed",
    "project_id",
    "round_id",
    "labels",
    "epochs",
    "served_from_queue",
}


def _typed(row: dict[str, str]) -> dict[str, Any]:
    typed: dict[str, Any] = {}
    for key, value in row.items():
        if value == "":
            typed[key] = None
        elif key in _INT_FIELDS:
            typed[key] = int(value)
        elif key.endswith("_s") or key in ("accuracy", "nll"):
            typed[key] = float(value)
        else:
            typed[key] = value
    return typed


# --- curves and thresholds ----------------------------------------------------------------


def group_curves(rows: Iterable[dict[str, Any]]) -> dict[tuple[Any, ...], dict[int, Curve]]:
    """Group key (dataset, strategy, b, K, mode) -> seed -> sorted (labels, accuracy) curve."""
    groups: dict[tuple[Any, ...], dict[int, Curve]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row.get("status") != "done" or row.get("accuracy") is None:
            continue
        key = tuple(row[name] for name in GROUP_KEYS)
        groups[key][int(row["seed"])].append((int(row["labels"]), float(row["accuracy"])))
    return {
        key: {seed: sorted(curve) for seed, curve in seeds.items()} for key, seeds in groups.items()
    }


def labels_to_reach(curve: Curve, threshold: float) -> float:
    """Labels at the first point with accuracy >= threshold; inf if never reached."""
    for labels, accuracy in sorted(curve):
        if accuracy >= threshold:
            return float(labels)
    return math.inf


def mean_accuracy(curve: Curve, start: int, stop: int) -> float:
    """Mean test accuracy over the label range [start, stop]: the area under the learning
    curve (linear between rounds) divided by its width.

    Labels to x% reads one point where two curves may cross at a shallow angle; the area
    weighs the whole run, so it ranks strategies with far less seed-to-seed noise. Both
    ends must be measured points of the curve, so runs with different b compare fairly.

    Raises:
        ValueError: start or stop is not a point of the curve, or start >= stop.
    """
    points = dict(curve)
    if start >= stop or start not in points or stop not in points:
        raise ValueError(f"the curve has no points at both {start} and {stop} labels")
    xs = sorted(n for n in points if start <= n <= stop)
    area = sum((right - left) * (points[left] + points[right]) / 2 for left, right in pairwise(xs))
    return area / (stop - start)


def percentile(values: Sequence[float], q: float) -> float:
    """numpy's default (linear) percentile, except that any infinite neighbour gives inf.

    A run that never reached the threshold counts as "more than the budget": it pushes the
    percentiles up without inventing a number for it.
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    if math.isinf(ordered[low]) or math.isinf(ordered[high]):
        return math.inf
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class ThresholdRow:
    """Labels-to-threshold percentiles of one configuration over its seeds."""

    key: tuple[Any, ...]
    seeds: int
    budget: int
    reached: dict[float, tuple[float, ...]]  # threshold -> (p25, median, p75)
    final_accuracy: float


def threshold_table(
    groups: dict[tuple[Any, ...], dict[int, Curve]],
    thresholds: Sequence[float] = THRESHOLDS,
) -> list[ThresholdRow]:
    table = []
    for key, seeds in sorted(groups.items(), key=lambda item: tuple(map(str, item[0]))):
        curves = list(seeds.values())
        reached = {
            threshold: tuple(
                percentile([labels_to_reach(curve, threshold) for curve in curves], q)
                for q in PERCENTILES
            )
            for threshold in thresholds
        }
        table.append(
            ThresholdRow(
                key=key,
                seeds=len(curves),
                budget=max(curve[-1][0] for curve in curves),
                reached=reached,
                final_accuracy=float(np.mean([curve[-1][1] for curve in curves])),
            )
        )
    return table


def format_labels(value: float, budget: int) -> str:
    if math.isinf(value):
        return f">{budget}"
    return f"{value:g}"


def format_triple(values: Sequence[float], budget: int) -> str:
    return " / ".join(format_labels(value, budget) for value in values)


def markdown_table(rows: Sequence[ThresholdRow]) -> str:
    """One line per configuration: labels to 90% and 95% as p25 / median / p75."""
    header = (
        "| dataset | strategy | b | K | mode | seeds | to 90% (p25 / median / p75) "
        "| to 95% (p25 / median / p75) | accuracy at budget |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for row in rows:
        dataset, strategy, b, k, mode = row.key
        cells = [
            format_triple(row.reached.get(threshold, ()), row.budget) for threshold in THRESHOLDS
        ]
        lines.append(
            f"| {dataset} | {strategy} | {b} | {k} | {mode} | {row.seeds} | {cells[0]} "
            f"| {cells[1]} | {row.final_accuracy:.3f} @ {row.budget} |"
        )
    return header + "\n".join(lines) + "\n"


# --- mean and confidence band -------------------------------------------------------------


def mean_band(curves: Sequence[Curve]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels grid, mean accuracy and the half-width of its 95% t-interval over seeds.

    Runs on the synchronous protocol share one grid (20, 20+b, ...); live runs don't, so
    each curve is interpolated onto the union of label counts inside its own range.
    """
    grid = np.array(sorted({labels for curve in curves for labels, _ in curve}), dtype=float)
    matrix = np.full((len(curves), len(grid)), np.nan)
    for row, curve in enumerate(curves):
        x = np.array([labels for labels, _ in curve], dtype=float)
        y = np.array([accuracy for _, accuracy in curve], dtype=float)
        inside = (grid >= x[0]) & (grid <= x[-1])
        matrix[row, inside] = np.interp(grid[inside], x, y)
    counts = np.sum(~np.isnan(matrix), axis=0)
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        # A grid point covered by a single run has no spread: its band is 0, set below.
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(matrix, axis=0)
        sem = np.nanstd(matrix, axis=0, ddof=1) / np.sqrt(counts)
    t = stats.t.ppf(0.5 + CONFIDENCE / 2, np.maximum(counts - 1, 1))
    half = np.where(counts > 1, t * sem, 0.0)
    return grid, mean, half


def plot_curves(
    groups: dict[tuple[Any, ...], dict[int, Curve]],
    path: Path,
    title: str,
    label_keys: Sequence[str] = ("strategy",),
) -> None:
    """Accuracy against labels: the mean over seeds and its 95% band, one line per group."""
    figure, axes = plt.subplots(figsize=(7.5, 5.0))
    lowest = 1.0
    for key, seeds in sorted(groups.items(), key=lambda item: tuple(map(str, item[0]))):
        grid, mean, half = mean_band(list(seeds.values()))
        named = dict(zip(GROUP_KEYS, key, strict=True))
        label = " ".join(_legend(name, named[name]) for name in label_keys)
        (line,) = axes.plot(grid, mean, label=f"{label} ({len(seeds)} seeds)", linewidth=1.6)
        axes.fill_between(grid, mean - half, mean + half, color=line.get_color(), alpha=0.18)
        lowest = min(lowest, float(np.nanmin(mean - half)))
    for threshold in THRESHOLDS:
        axes.axhline(threshold, color="grey", linewidth=0.7, linestyle=":")
    axes.set_xlabel("labels (initial set included)")
    axes.set_ylabel("test accuracy")
    axes.set_title(title)
    # From just below the lowest band: the interesting part is the climb to 90-95%.
    axes.set_ylim(max(0.0, math.floor(lowest * 10) / 10 - 0.05), 1.0)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _legend(name: str, value: Any) -> str:
    return {"batch_size": f"b={value}", "mc_samples": f"K={value}"}.get(name, str(value))

"""A real `simulate` run: a `nextlabel serve` subprocess with its embedded worker, driven
over HTTP by two simulated annotators on scikit-learn's digits."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
# Five rounds (20, 30, ..., 60 labels): about 1-2 minutes on 2 cores (4-5 when others load them).
BUDGET, B = 60, 10


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_simulate_digits_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("app.cli", reason="the nextlabel CLI is not importable")
    out = tmp_path / "sim"
    command = [
        sys.executable,
        "-m",
        "simulate",
        "--dataset",
        "digits",
        "--strategy",
        "batchbald",
        "--batch-size",
        str(B),
        "--mc-samples",
        "5",
        "--seeds",
        "1",
        "--annotators",
        "2",
        "--budget",
        str(BUDGET),
        "--out",
        str(out),
    ]
    completed = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=400, check=False
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    with (out / "rounds.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    labels = [int(row["labels"]) for row in rows]
    # One row per completed round: the initial 20, then one round per b labels.
    assert labels == list(range(20, BUDGET + 1, B))
    assert all(row["status"] == "done" for row in rows)
    accuracies = [float(row["accuracy"]) for row in rows]
    assert all(0.0 <= accuracy <= 1.0 for accuracy in accuracies)
    assert accuracies[-1] > 0.2  # chance is 0.1 on ten balanced classes
    assert all(float(row["worker_s"]) > 0 for row in rows)
    # After every round but the last, the b labels came from the top b of its queue.
    assert [int(row["served_from_queue"]) for row in rows[:-1]] == [B] * (len(rows) - 1)

    (run,) = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert run["labels_made"] == BUDGET
    assert run["labels_exported"] == BUDGET  # the export counts no label twice
    assert run["distinct_items_labelled"] == BUDGET
    assert run["checks"]["export_matches_labels"] is True

    with Image.open(out / "accuracy.png") as plot:
        plot.verify()
        assert plot.format == "PNG"
    assert "batchbald" in (out / "summary.md").read_text()

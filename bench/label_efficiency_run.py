"""Running the grid: the first unfinished cell of the plan, as a `python -m simulate` process.

After every cell the runner rewrites docs/results.md and re-executes the command line, so
a grid that runs for a day picks up edits to the plan and the report.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence

from label_efficiency_plan import ENGINE_FILES, REPO, Cell

logger = logging.getLogger("label_efficiency")

# The command line (bench/label_efficiency.py): rerun for `report`, re-executed for `run`.
SCRIPT = REPO / "bench" / "label_efficiency.py"


def run_cells(cells: Sequence[Cell]) -> None:
    """Run the first unfinished cell, then start over as a fresh bench/label_efficiency.py.

    Re-executing after every cell (same process id) means edits to the plan or the report
    reach a grid that runs for a day, and finished cells are skipped by looking at disk.
    """
    for number, cell in enumerate(cells, start=1):
        if cell.finished() or cell.failed_twice():
            continue
        cell.out.mkdir(parents=True, exist_ok=True)
        if not cell.claim():
            continue
        arguments = cell.command()
        command = [
            sys.executable,
            "-m",
            "simulate",
            *arguments[arguments.index("simulate") + 1 :],
        ]
        logger.info("[%d/%d] %s", number, len(cells), shlex.join(cell.command()))
        (cell.out / "provenance.json").write_text(json.dumps(provenance(), indent=1))
        with (cell.out / "attempts").open("a") as attempts:
            attempts.write(f"{time.time():.0f}\n")
        started = time.monotonic()
        with (cell.out / "stdout.log").open("w") as log:
            code = subprocess.call(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        cell.release()
        logger.info(
            "[%d/%d] exit %d after %.0f s", number, len(cells), code, time.monotonic() - started
        )
        subprocess.call([sys.executable, str(SCRIPT), "report"], cwd=REPO)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, str(SCRIPT), *sys.argv[1:]])
    logger.info("every cell of the plan is finished (or failed twice)")


def provenance() -> dict[str, str]:
    """The commit and the engine files a cell ran with: the tree changes while the grid runs."""
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    digests = {
        name: hashlib.sha256((REPO / name).read_bytes()).hexdigest()[:12]
        for name in ENGINE_FILES
        if (REPO / name).exists()
    }
    return {"head": head, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), **digests}

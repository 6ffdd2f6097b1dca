"""Webhooks sent by a real worker process (`python -m worker.main`) to a receiver on 127.0.0.1.

- A round the worker finishes sends `round.done`, one it gives up on sends `round.failed`,
  each signed with its hook's secret; an event written while no worker ran is sent once
  one starts (the delivery row is the truth).
- A receiver that answers 500 is retried with backoff, then recorded as failed.
- With Redis down under a running worker, deliveries still go out: they never touch the
  broker.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from round_support import (
    child_env,
    insert_digits_project,
    queue_round,
    start_process,
    stop_process,
    wait_until,
)
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from stack_support import READY_LINE, redis_server_of_our_own

from core.db import make_engine, make_session_factory
from core.migrate import upgrade_database
from core.rounds import MAX_ATTEMPTS
from core.storage import LocalImageStore
from core.tables import DeliveryStatus, Round, RoundStatus, Webhook, WebhookDelivery, WebhookEvent
from core.webhooks import emit, signature_matches

pytestmark = pytest.mark.slow

SECRET = "s" * 64
MAX_TRIES = 3


class Receiver:
    """Records each POST by path; paths under /fail answer 500, the rest 200."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.received.append((self.path, dict(self.headers), body))
                self.send_response(500 if self.path.startswith("/fail") else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [json.loads(body) for got, _, body in self.received if got == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


def _worker(tmp_path: Path, database_url: str, broker_url: str, name: str) -> Any:
    env = child_env(
        NEXTLABEL_ENVIRONMENT="test",
        NEXTLABEL_DATA_DIR=str(tmp_path / "data"),
        NEXTLABEL_DATABASE_URL=database_url,
        NEXTLABEL_BROKER_URL=broker_url,
        NEXTLABEL_LOG_FORMAT="text",
        NEXTLABEL_WEBHOOK_BACKOFF_SECONDS="0.2",
        NEXTLABEL_WEBHOOK_MAX_ATTEMPTS=str(MAX_TRIES),
        NEXTLABEL_WEBHOOK_TIMEOUT_SECONDS="2",
    )
    log = tmp_path / f"{name}.log"
    proc = start_process(["python", "-m", "worker.main"], env=env, log=log)
    wait_until(
        lambda: READY_LINE in log.read_text(errors="replace"),
        timeout=90, what=f"worker {name} to be ready", proc=proc, log=log,
    )  # fmt: skip
    return proc, log


def _hook(factory: sessionmaker[Session], project_id: int, url: str) -> int:
    with factory() as session:
        hook = Webhook(project_id=project_id, url=url, events=list(WebhookEvent), secret=SECRET)
        session.add(hook)
        session.commit()
        return hook.id


def _delivery_states(factory: sessionmaker[Session], hook_id: int) -> list[tuple[str, int]]:
    with factory() as session:
        rows = session.execute(
            select(WebhookDelivery.status, WebhookDelivery.attempts)
            .where(WebhookDelivery.webhook_id == hook_id)
            .order_by(WebhookDelivery.id)
        ).all()
    return [(status.value, attempts) for status, attempts in rows]


def test_a_worker_sends_round_events_signed_and_retries_a_failing_receiver(
    tmp_path: Path, receiver: Receiver
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(parents=True)
    database_url = f"sqlite:///{data_dir / 'nextlabel.db'}"
    upgrade_database(database_url)
    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    store = LocalImageStore(data_dir / "images")
    with factory() as session:
        done_project = insert_digits_project(session, store, pool=20, validation=10)
        failing_project = insert_digits_project(session, store, pool=5, validation=0)
    ok_hook = _hook(factory, done_project.project_id, f"{receiver.base}/ok")
    failing_hook = _hook(factory, failing_project.project_id, f"{receiver.base}/fail")
    with factory() as session:
        # No labels yet: the worker writes its random round, and that is `round.done`.
        done_round = queue_round(session, done_project.project_id)
        worn_out = Round(
            project_id=failing_project.project_id,
            status=RoundStatus.queued,
            strategy="bald",
            attempts=MAX_ATTEMPTS,
        )
        session.add(worn_out)
        # Written while no worker runs: sent when one starts.
        early = emit(
            session,
            project_id=done_project.project_id,
            event=WebhookEvent.labels_exported,
            data={"format": "csv"},
        )
        session.commit()
        failed_round = worn_out.id

    proc, log = _worker(tmp_path, database_url, f"sqla+sqlite:///{data_dir / 'broker.db'}", "w")
    try:
        wait_until(
            lambda: len(receiver.bodies("/ok")) >= 2
            and _delivery_states(factory, failing_hook) == [("failed", MAX_TRIES)],
            timeout=120, what="the deliveries", proc=proc, log=log,
        )  # fmt: skip
    finally:
        stop_process(proc)
        engine.dispose()

    by_event = {body["event"]: body for body in receiver.bodies("/ok")}
    assert by_event["labels.exported"]["id"] == early
    assert by_event["round.done"]["data"]["round"]["id"] == done_round
    assert by_event["round.done"]["data"]["round"]["status"] == "done"
    for path, headers, body in receiver.received:
        assert signature_matches(SECRET, body, headers["X-Nextlabel-Signature"]), path
    # The failing receiver heard of its round's failure MAX_TRIES times, then no more; the
    # export event of the other project never reached it.
    failures = receiver.bodies("/fail")
    assert [body["event"] for body in failures] == ["round.failed"] * MAX_TRIES
    assert {body["data"]["round"]["id"] for body in failures} == {failed_round}
    assert _delivery_states(factory, ok_hook) == [("delivered", 1), ("delivered", 1)]


def test_deliveries_go_out_while_redis_is_down(tmp_path: Path, receiver: Receiver) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(parents=True)
    database_url = f"sqlite:///{data_dir / 'nextlabel.db'}"
    upgrade_database(database_url)
    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    with factory() as session:
        project = insert_digits_project(
            session, LocalImageStore(data_dir / "images"), pool=5, validation=0
        )
    hook = _hook(factory, project.project_id, f"{receiver.base}/ok")
    with redis_server_of_our_own(tmp_path) as redis:
        broker_url = f"redis://127.0.0.1:{redis['port']}/0"
        proc, log = _worker(tmp_path, database_url, broker_url, "w")
        try:
            stop_process(redis["proc"])  # the broker is gone; the worker keeps running
            time.sleep(1)
            with factory() as session:
                emit(
                    session,
                    project_id=project.project_id,
                    event=WebhookEvent.labels_exported,
                    data={"format": "csv"},
                )
                session.commit()
            wait_until(
                lambda: _delivery_states(factory, hook) == [(DeliveryStatus.delivered.value, 1)],
                timeout=30, what="the delivery with Redis down", proc=proc, log=log,
            )  # fmt: skip
        finally:
            stop_process(proc)
            engine.dispose()
    assert [body["event"] for body in receiver.bodies("/ok")] == ["labels.exported"]

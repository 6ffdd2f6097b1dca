"""Broker outages with the real parts: the API over HTTP, a Celery worker process, a Redis of
the test's own that it kills, and a broker that accepts connections and never answers.

- Redis dies while a round runs: labelling goes on, the worker finishes the round, and the
  follow-up round it queues while Redis is down runs once Redis is back, without restarting
  the worker (the sweep, every SWEEP_SECONDS). No label is lost or counted twice.
- A broker that never answers: a label that queues a round answers while the publish is
  still stuck, /healthz answers meanwhile, and once a broker is there the round runs.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from round_support import free_port, fresh_pg_database, stop_process, wait_until
from stack_support import (
    API,
    RETRAIN_EVERY,
    Stack,
    label_next,
    make_project,
    redis_server_of_our_own,
    running_stack,
    triggered_round,
)

from core.dispatch import LOST_AFTER_SECONDS, SWEEP_SECONDS

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

# The worker's own reconnect to a restarted Redis backs off for up to about 30 s; a message
# published before it has declared its queue again is lost, and an idle worker's sweep sends
# it again after LOST_AFTER_SECONDS. Then the round itself (~10 s on 2 CPU cores).
BACK_IN_SERVICE_SECONDS = 30 + LOST_AFTER_SECONDS + 2 * SWEEP_SECONDS + 60


def test_a_round_queued_while_redis_is_down_runs_when_it_is_back(tmp_path: Path) -> None:
    with (
        fresh_pg_database() as database_url,
        redis_server_of_our_own(tmp_path) as redis,
        running_stack(
            tmp_path,
            database_url=database_url,
            broker_url=f"redis://127.0.0.1:{redis['port']}/0",
        ) as stack,
    ):
        project = make_project(stack)
        _, log = stack.start_worker("outage")
        labelled = label_next(stack, project, RETRAIN_EVERY)
        first = triggered_round(labelled)
        wait_until(
            lambda: stack.round(first)["status"] == "running",
            timeout=60, what="the first round to start", log=log,
        )  # fmt: skip

        stop_process(redis["proc"])  # Redis dies mid-round and forgets every message
        labelled += label_next(stack, project, RETRAIN_EVERY)  # labelling goes on
        stack.wait_round(first, log=log)  # the worker still finishes and writes its round
        follow_up = wait_until(
            lambda: _queued_round(stack, project.project_id),
            timeout=60, what="the follow-up round to be queued", log=log,
        )  # fmt: skip
        assert follow_up["dispatched_at"] is None  # the broker took nothing

        redis["start"]()  # back, empty; the worker is not restarted
        stack.wait_round(follow_up["id"], log=log, timeout=BACK_IN_SERVICE_SECONDS)

        assert stack.round(follow_up["id"])["labels_used"] == 2 * RETRAIN_EVERY
        _assert_every_label_exported_once(stack, project.project_id, labelled)


def test_a_broker_that_never_answers_holds_up_neither_labels_nor_the_api(
    tmp_path: Path,
) -> None:
    port = free_port()
    with (
        fresh_pg_database() as database_url,
        silent_broker(port) as silent,
        running_stack(
            tmp_path, database_url=database_url, broker_url=f"redis://127.0.0.1:{port}/0"
        ) as stack,
    ):
        project = make_project(stack)
        dispatcher = stack.app.state.dispatcher
        labelled = label_next(stack, project, RETRAIN_EVERY)
        round_id = triggered_round(labelled)
        # The label has answered, yet the publish it asked for is still stuck on the broker
        # (its thread may take a moment to connect: the label did not wait for it).
        wait_until(lambda: silent.connections, timeout=30, what="the publish to reach the broker")
        assert not dispatcher.drain(0.1)
        health = stack.http.get("/healthz")
        assert health.status_code == 200
        assert not dispatcher.drain(0.1)  # /healthz answered while the publish hung
        assert stack.round(round_id)["status"] == "queued"

        silent.close()  # a real Redis takes the silent broker's place
        with redis_server_of_our_own(tmp_path, port=port):
            _, log = stack.start_worker("after")
            stack.wait_round(round_id, log=log)


class SilentBroker:
    """A TCP server that accepts connections, reads what it is sent, and never answers."""

    def __init__(self, port: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", port))
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.connections.append(connection)

    def close(self) -> None:
        self.listener.close()
        for connection in self.connections:
            connection.close()
        self.thread.join(5)


@contextlib.contextmanager
def silent_broker(port: int) -> Iterator[SilentBroker]:
    broker = SilentBroker(port)
    try:
        yield broker
    finally:
        broker.close()


def _queued_round(stack: Stack, project_id: int) -> dict[str, Any] | None:
    rounds = stack.http.get(f"{API}/projects/{project_id}/rounds", headers=stack.admin).json()
    queued = [r for r in rounds if r["status"] == "queued"]
    return queued[0] if queued else None


def _assert_every_label_exported_once(
    stack: Stack, project_id: int, labelled: list[dict[str, Any]]
) -> None:
    response = stack.http.get(
        f"{API}/projects/{project_id}/export", params={"format": "jsonl"}, headers=stack.admin
    )
    assert response.status_code == 200, response.text
    rows = [json.loads(line) for line in response.text.splitlines() if line]
    exported = sorted(row["item_id"] for row in rows)
    answered = sorted(x["label"]["item_id"] for x in labelled)
    assert exported == answered  # each 2xx label once, nothing more

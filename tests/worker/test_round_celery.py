"""Real parts: a Celery worker process, the API over HTTP, a scripted annotator, real digits.

- Redis + PostgreSQL (the deployment) and the embedded mode (SQLite broker and database):
  labels through the REST API trigger a round, the worker trains and scores, and `next`
  switches to the new round's queue with validation accuracy well above chance.
- kill -9 of the worker mid-round: no label lost, no half-written queue, and the round is
  rerun by the next worker (start-up recovery), after which the next round succeeds.
- a Redis restart under a running worker: it reconnects and runs the next round.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from round_support import (
    child_env,
    fresh_pg_database,
    insert_digits_project,
    own_redis_db,
    queue_round,
    round_row,
    start_process,
    stop_process,
    wait_until,
)
from sqlalchemy import func, select
from stack_support import (
    API,
    QUEUE_SIZE,
    READY_LINE,
    RETRAIN_EVERY,
    Stack,
    label_next,
    make_project,
    redis_server_of_our_own,
    running_stack,
    triggered_round,
)

from core.broker import enqueue_round, make_celery
from core.db import make_engine, make_session_factory
from core.migrate import upgrade_database
from core.settings import Settings
from core.storage import LocalImageStore
from core.tables import Label, Prediction, QueueEntry, RoundStatus

pytestmark = pytest.mark.slow


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


# --------------------------------------------------------------------------- the loop


def _the_loop(stack: Stack) -> None:
    project = make_project(stack)
    _, log = stack.start_worker("worker")
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
    # As `nextlabel worker` and embedded `serve` start it: python -m worker.main.
    _the_loop(embedded_stack)


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
    with redis_server_of_our_own(tmp_path) as server:
        yield server


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
    argv = [sys.executable, "-m", "worker.main"]
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

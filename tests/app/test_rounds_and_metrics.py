"""Rounds (manual and label-triggered), round detail, and project metrics."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from core.dispatch import SEND_GRACE_SECONDS, due_for_dispatch
from core.settings import Settings
from core.tables import Round, RoundStatus
from tests.app.conftest import Api, free_port, open_api, png_bytes, zip_bytes
from tests.app.test_labelling import add_done_round


def _rounds(api: Api) -> list[Round]:
    with api.app.state.session_factory() as session:
        return list(session.scalars(select(Round).order_by(Round.id)))


def _broker_messages(api: Api) -> int:
    """Tasks waiting in the embedded broker (a SQLite file in the test's data folder)."""
    path = api.app.state.settings.data_dir / "broker.db"
    with sqlite3.connect(path) as connection:
        return int(connection.execute("SELECT count(*) FROM kombu_message").fetchone()[0])


def test_manual_round_is_202_and_a_queued_round_answers_a_second_request(api: Api) -> None:
    pid = api.project(strategy="entropy")["id"]
    started = api.post(f"/api/v1/projects/{pid}/rounds")
    assert started.status_code == 202, started.text
    body = started.json()
    assert (body["status"], body["trigger"], body["strategy"]) == ("queued", "manual", "entropy")
    assert api.app.state.dispatcher.drain(10)
    assert _broker_messages(api) == 1
    # Retrain now again while it waits: the same round, not sent twice (it was sent moments ago).
    again = api.post(f"/api/v1/projects/{pid}/rounds")
    assert again.status_code == 202 and again.json()["id"] == body["id"]
    assert api.app.state.dispatcher.drain(10)
    assert _broker_messages(api) == 1
    listed = api.get(f"/api/v1/projects/{pid}/rounds").json()
    assert [r["id"] for r in listed] == [body["id"]]
    assert listed[0]["dispatched_at"] is not None
    queue = api.get(f"/api/v1/projects/{pid}/metrics").json()["queue"]
    assert queue["active_round_id"] == body["id"]
    assert not queue["active_round_waiting_for_broker"]
    detail = api.get(f"/api/v1/rounds/{body['id']}").json()
    assert detail["queue"] == [] and detail["status"] == "queued"


def test_a_running_round_makes_retrain_now_409(api: Api) -> None:
    pid = api.project()["id"]
    round_id = api.post(f"/api/v1/projects/{pid}/rounds").json()["id"]
    with api.app.state.session_factory() as session:
        session.get_one(Round, round_id).status = RoundStatus.running
        session.commit()
    again = api.post(f"/api/v1/projects/{pid}/rounds")
    assert again.status_code == 409
    assert f"round {round_id} is running" in again.json()["detail"]


def test_labels_trigger_one_round_every_retrain_every(api: Api) -> None:
    pid = api.project(retrain_every=3)["id"]
    ids = api.upload_images(pid, 8)
    ann = api.user("ann", projects=[pid])
    enqueued = [api.label(item_id, "cat", ann).json()["round_enqueued"] for item_id in ids[:4]]
    rounds = _rounds(api)
    assert len(rounds) == 1
    assert enqueued == [None, None, rounds[0].id, None]
    assert (rounds[0].status, rounds[0].trigger, rounds[0].label_watermark) == (
        RoundStatus.queued,
        "labels",
        3,
    )
    # Replacing a label does not count as a new one towards the next round.
    with api.app.state.session_factory() as session:
        session.get_one(Round, rounds[0].id).status = RoundStatus.done
        session.commit()
    api.label(ids[3], "dog", ann)
    api.label(ids[4], "dog", ann)
    assert len(_rounds(api)) == 1
    assert api.label(ids[5], "dog", ann).json()["round_enqueued"] is not None
    assert len(_rounds(api)) == 2


def test_relabelling_items_labelled_before_the_last_round_counts_towards_the_next(
    api: Api,
) -> None:
    pid = api.project(retrain_every=2)["id"]
    ids = api.upload_images(pid, 3)
    ann = api.user("ann", projects=[pid])
    assert api.label(ids[0], "cat", ann).json()["round_enqueued"] is None
    first = api.label(ids[1], "cat", ann).json()["round_enqueued"]
    assert first is not None
    with api.app.state.session_factory() as session:
        session.get_one(Round, first).status = RoundStatus.done
        session.commit()
    # The new labels replace ones the round trained on: both are news to the model.
    assert api.label(ids[0], "dog", ann).json()["round_enqueued"] is None
    second = api.label(ids[1], "dog", ann).json()["round_enqueued"]
    assert second is not None and second != first
    assert [r.trigger for r in _rounds(api)] == ["labels", "labels"]


@pytest.fixture
def broker_down_api(settings: Settings) -> Iterator[Api]:
    # A real broker address with nothing listening: every publish is refused.
    down = settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    with open_api(down) as api:
        yield api


def test_a_round_the_broker_refused_stays_queued_and_is_due_for_the_sweep(
    broker_down_api: Api,
) -> None:
    api = broker_down_api
    pid = api.project()["id"]
    response = api.post(f"/api/v1/projects/{pid}/rounds")
    assert response.status_code == 202 and response.json()["status"] == "queued"
    assert api.app.state.dispatcher.drain(30)
    (queued,) = _rounds(api)
    assert (queued.status, queued.dispatched_at) == (RoundStatus.queued, None)
    queue = api.get(f"/api/v1/projects/{pid}/metrics").json()["queue"]
    assert queue["active_round_id"] == queued.id and queue["active_round_waiting_for_broker"]
    later = datetime.now(UTC) + timedelta(seconds=SEND_GRACE_SECONDS + 1)
    with api.app.state.session_factory() as session:
        assert due_for_dispatch(session, now=later, include_lost=False) == [queued.id]
    # Retrain now is not blocked by it: the same round is the answer, and it is sent again.
    again = api.post(f"/api/v1/projects/{pid}/rounds")
    assert again.status_code == 202 and again.json()["id"] == queued.id


def test_round_detail_shows_queue_and_hides_other_projects(api: Api) -> None:
    pid = api.project()["id"]
    other = api.project("other")["id"]
    ids = api.upload_images(pid, 3)
    round_id = add_done_round(api, pid, queue=[ids[1], ids[0]], scores={ids[0]: 1, ids[1]: 2})
    api.label(ids[0], "cat", api.admin_token)
    detail = api.get(f"/api/v1/rounds/{round_id}").json()
    assert [(q["item_id"], q["rank"], q["labelled"]) for q in detail["queue"]] == [
        (ids[1], 0, False),
        (ids[0], 1, True),
    ]
    assert detail["queue"][0]["image_url"] == f"/api/v1/items/{ids[1]}/image"
    outsider = api.user("outsider", projects=[other])
    assert api.get(f"/api/v1/rounds/{round_id}", outsider).status_code == 404


def test_metrics_before_anything(api: Api) -> None:
    pid = api.project()["id"]
    metrics = api.get(f"/api/v1/projects/{pid}/metrics").json()
    assert metrics["label_counts"] == {"cat": 0, "dog": 0, "bird": 0}
    assert metrics["learning_curve"] == []
    assert metrics["validation"]["items"] == 0
    assert "No validation items" in metrics["validation"]["note"]
    queue = metrics["queue"]
    assert (queue["pool_remaining"], queue["pool_exhausted"], queue["round_id"]) == (0, True, None)
    assert queue["labels_until_retrain"] == 10


def test_metrics_values(api: Api) -> None:
    pid = api.project(retrain_every=4)["id"]
    ids = api.upload_images(pid, 5)
    api.upload(pid, [("v.zip", zip_bytes({"v.png": png_bytes(77), "labels.csv": b"v.png,dog\n"}))])
    ann = api.user("ann", projects=[pid])
    bob = api.user("bob", projects=[pid])
    api.label(ids[0], "cat", ann)
    api.label(ids[0], "dog", ann)  # replaced: counts once, as dog
    api.label(ids[1], "dog", bob)
    round_id = add_done_round(api, pid, queue=[ids[2]], scores={ids[2]: 1.0, ids[3]: 0.5})
    api.label(ids[2], "bird", bob)

    metrics = api.get(f"/api/v1/projects/{pid}/metrics", ann).json()
    assert metrics["totals"] == {
        "items": 6,
        "pool": 5,
        "validation": 1,
        "labelled": 3,
        "near_duplicates": 0,
        "duplicates_skipped": 0,
    }
    assert metrics["label_counts"] == {"cat": 0, "dog": 2, "bird": 1}
    per_annotator = {a["name"]: (a["labels"], a["labels_today"]) for a in metrics["annotators"]}
    assert per_annotator == {"ann": (1, 1), "bob": (2, 2)}
    (point,) = metrics["learning_curve"]
    assert (point["round_id"], point["accuracy"], point["nll"]) == (round_id, 0.5, 1.2)
    queue = metrics["queue"]
    assert queue["round_id"] == round_id
    assert queue["labels_since_round"] == 3  # the test round's watermark is 0
    assert queue["queue_remaining"] == 0
    assert (queue["pool_remaining"], queue["pool_exhausted"]) == (2, False)
    assert metrics["validation"] == {"items": 1, "with_known_label": 1, "note": None}

    for item_id in ids[3:]:
        api.label(item_id, "cat", ann)
    assert api.get(f"/api/v1/projects/{pid}/metrics").json()["queue"]["pool_exhausted"] is True


def test_metrics_pass_on_the_workers_validation_note(api: Api) -> None:
    pid = api.project()["id"]
    api.upload(pid, [("v.zip", zip_bytes({"v.png": png_bytes(1), "labels.csv": b"v.png,cat\n"}))])
    round_id = add_done_round(api, pid, queue=[], scores={})
    with api.app.state.session_factory() as session:
        session.get_one(Round, round_id).metrics = {"accuracy": None, "nll": None, "note": "hi"}
        session.commit()
    metrics = api.get(f"/api/v1/projects/{pid}/metrics").json()
    assert metrics["validation"]["note"] == "hi"
    assert metrics["learning_curve"][0]["accuracy"] is None

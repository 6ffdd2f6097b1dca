"""Races, against a real uvicorn server: leases, round triggering and label retries."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from sqlalchemy import select

from core.tables import Label, Lease, Round
from tests.app.conftest import Api, bearer


def _in_parallel(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls at once: all threads wait at a barrier, then fire together."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def test_twenty_concurrent_next_calls_from_two_annotators_never_overlap(
    api: Api, live_server: str
) -> None:
    pid = api.project()["id"]
    api.upload_images(pid, 40)
    tokens = {"ann": api.user("ann", projects=[pid]), "bob": api.user("bob", projects=[pid])}
    with httpx.Client(base_url=live_server, timeout=60) as client:

        def call(name: str) -> tuple[str, list[int]]:
            response = client.get(
                f"/api/v1/projects/{pid}/next", params={"n": 3}, headers=bearer(tokens[name])
            )
            assert response.status_code == 200, response.text
            return name, [entry["item"]["id"] for entry in response.json()]

        for _round in range(3):
            results = _in_parallel([lambda n=name: call(n) for name in ["ann", "bob"] * 10])
            got: dict[str, set[int]] = {"ann": set(), "bob": set()}
            for name, ids in results:
                assert len(ids) == 3 and len(set(ids)) == 3
                got[name] |= set(ids)
            assert not got["ann"] & got["bob"], "an item was handed to both annotators"
            # Each annotator's parallel calls agree on their own lease set: no orphan leases.
            with api.app.state.session_factory() as session:
                leases = session.execute(select(Lease.item_id, Lease.annotator_id)).all()
            owners = {item_id: annotator_id for item_id, annotator_id in leases}
            me = {name: api.get("/api/v1/me", tokens[name]).json()["id"] for name in tokens}
            for name, ids in got.items():
                assert all(owners[item_id] == me[name] for item_id in ids)
            # Label everything handed out, so the next burst races for fresh items.
            for name, ids in got.items():
                for item_id in ids:
                    assert api.label(item_id, "cat", tokens[name]).status_code == 201


def test_concurrent_labelling_queues_exactly_one_round(api: Api, live_server: str) -> None:
    pid = api.project(retrain_every=5)["id"]
    ids = api.upload_images(pid, 16)
    tokens = [api.user(f"a{i}", projects=[pid]) for i in range(4)]
    with httpx.Client(base_url=live_server, timeout=60) as client:

        def label(item_id: int, token: str) -> int | None:
            response = client.post(
                f"/api/v1/items/{item_id}/labels", json={"label": "dog"}, headers=bearer(token)
            )
            assert response.status_code == 201, response.text
            enqueued: int | None = response.json()["round_enqueued"]
            return enqueued

        calls = [lambda i=item_id, t=tokens[k % 4]: label(i, t) for k, item_id in enumerate(ids)]
        enqueued = [r for r in _in_parallel(calls) if r is not None]
    with api.app.state.session_factory() as session:
        rounds = session.scalars(select(Round)).all()
    assert len(rounds) == 1
    assert rounds[0].status == "queued" and rounds[0].trigger == "labels"
    assert enqueued == [rounds[0].id]


def test_concurrent_retries_of_one_label_write_one_row(api: Api, live_server: str) -> None:
    pid = api.project()["id"]
    (item_id,) = api.upload_images(pid, 1)
    token = api.user("ann", projects=[pid])
    headers = {**bearer(token), "Idempotency-Key": "0b6f2c1e-retry"}
    with httpx.Client(base_url=live_server, timeout=60) as client:

        def label() -> tuple[int, int]:
            response = client.post(
                f"/api/v1/items/{item_id}/labels", json={"label": "cat"}, headers=headers
            )
            return response.status_code, int(response.json()["id"])

        results = _in_parallel([label] * 8)
    assert {status for status, _ in results} == {201}
    assert len({label_id for _, label_id in results}) == 1
    with api.app.state.session_factory() as session:
        rows = session.execute(select(Label.id, Label.is_current)).all()
    assert [(label_id, is_current) for label_id, is_current in rows] == [(results[0][1], True)]
    assert api.get(f"/api/v1/items/{item_id}").json()["label_count"] == 1

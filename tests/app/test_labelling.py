"""next, label, replace, undo, skip, unskip, lease release and idempotent labels, through HTTP."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from app.services import labels as labels_service
from app.services.imports import random_key_for
from core.tables import Item, Label, Lease, Prediction, QueueEntry, Round, RoundStatus, utcnow
from tests.app.conftest import CLASSES, Api, bearer


def _labels(api: Api) -> list[Label]:
    with api.app.state.session_factory() as session:
        return list(session.scalars(select(Label).order_by(Label.id)))


def _item(api: Api, item_id: int) -> dict[str, Any]:
    return dict(api.get(f"/api/v1/items/{item_id}").json())


def add_done_round(api: Api, project_id: int, *, queue: list[int], scores: dict[int, float]) -> int:
    """What the worker writes when a round finishes: queue entries and predictions."""
    with api.app.state.session_factory() as session:
        done = Round(
            project_id=project_id,
            status=RoundStatus.done,
            trigger="manual",
            strategy="bald",
            labels_used=0,
            label_watermark=0,
            metrics={"accuracy": 0.5, "nll": 1.2, "per_class_accuracy": {}, "validation_items": 0},
            finished_at=utcnow(),
        )
        session.add(done)
        session.flush()
        for rank, item_id in enumerate(queue):
            session.add(
                QueueEntry(
                    round_id=done.id,
                    item_id=item_id,
                    rank=rank,
                    score=scores[item_id],
                    strategy="bald",
                )
            )
        for item_id, score in scores.items():
            session.add(
                Prediction(
                    round_id=done.id,
                    item_id=item_id,
                    predicted="dog",
                    confidence=0.6,
                    probabilities=[0.3, 0.6, 0.1],
                    score=score,
                )
            )
        session.commit()
        return done.id


def test_next_serves_the_pool_in_seeded_random_order_before_any_round(api: Api) -> None:
    project = api.project(seed=7)
    pid = project["id"]
    ids = api.upload_images(pid, 12)
    ann = api.user("ann", projects=[pid])
    served = api.next(pid, ann, n=5)
    with api.app.state.session_factory() as session:
        keys = dict(session.execute(select(Item.id, Item.random_key)).all())
        hashes = dict(session.execute(select(Item.id, Item.sha256)).all())
    expected = sorted(ids, key=lambda i: keys[i])[:5]
    assert [s["item"]["id"] for s in served] == expected
    assert all(keys[i] == random_key_for(seed=7, sha256=hashes[i]) for i in ids)
    first = served[0]
    assert (first["strategy"], first["round_id"], first["rank"], first["score"]) == (
        "random",
        None,
        None,
        None,
    )
    assert first["prediction"] is None
    assert first["item"]["image_url"] == f"/api/v1/items/{first['item']['id']}/image"
    assert first["lease_expires_at"].endswith(("Z", "+00:00"))


def test_own_lease_is_re_served_and_others_leases_are_excluded(api: Api) -> None:
    pid = api.project()["id"]
    api.upload_images(pid, 6)
    ann = api.user("ann", projects=[pid])
    bob = api.user("bob", projects=[pid])
    first = [s["item"]["id"] for s in api.next(pid, ann, n=2)]
    # Reloading the page gives ann the same items, in the same order.
    assert [s["item"]["id"] for s in api.next(pid, ann, n=2)] == first
    # Asking for more keeps hers first and adds new ones.
    more = [s["item"]["id"] for s in api.next(pid, ann, n=3)]
    assert more[:2] == first and more[2] not in first
    bobs = [s["item"]["id"] for s in api.next(pid, bob, n=10)]
    assert len(bobs) == 3 and not set(bobs) & set(more)


def test_expired_lease_can_be_taken_by_someone_else(api: Api) -> None:
    pid = api.project()["id"]
    (only,) = api.upload_images(pid, 1)
    ann = api.user("ann", projects=[pid])
    bob = api.user("bob", projects=[pid])
    assert [s["item"]["id"] for s in api.next(pid, ann)] == [only]
    assert api.next(pid, bob) == []
    with api.app.state.session_factory() as session:
        session.execute(update(Lease).values(expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    assert [s["item"]["id"] for s in api.next(pid, bob)] == [only]
    assert api.next(pid, ann) == []


def test_label_replace_never_counts_twice_and_undo_keeps_history(api: Api) -> None:
    pid = api.project()["id"]
    api.upload_images(pid, 3)
    ann = api.user("ann", projects=[pid])
    (served,) = api.next(pid, ann)
    item_id = served["item"]["id"]

    first = api.label(item_id, "cat", ann)
    assert first.status_code == 201, first.text
    assert first.json()["replaced_previous"] is False
    second = api.label(item_id, "dog", ann)
    assert second.json()["replaced_previous"] is True
    assert _item(api, item_id)["label_count"] == 1
    rows = _labels(api)
    assert [(r.label, r.is_current, r.retired_at is not None) for r in rows] == [
        ("cat", False, True),
        ("dog", True, False),
    ]
    export = api.get(f"/api/v1/projects/{pid}/export", params={"format": "jsonl"}).text
    assert len(export.splitlines()) == 1 and '"dog"' in export

    undo = api.delete(f"/api/v1/items/{item_id}/labels/mine", ann)
    assert undo.status_code == 200, undo.text
    assert undo.json()["label"] == "dog"
    assert _item(api, item_id)["label_count"] == 0
    assert [(r.label, r.is_current, r.undone) for r in _labels(api)] == [
        ("cat", False, False),
        ("dog", False, True),
    ]
    # The undone item comes straight back to its labeller.
    assert api.next(pid, ann)[0]["item"]["id"] == item_id
    assert api.delete(f"/api/v1/items/{item_id}/labels/mine", ann).status_code == 404


def test_labelled_items_leave_the_queue_and_two_annotators_count_separately(api: Api) -> None:
    pid = api.project()["id"]
    ids = api.upload_images(pid, 2)
    ann = api.user("ann", projects=[pid])
    bob = api.user("bob", projects=[pid])
    api.label(ids[0], "cat", ann)
    api.label(ids[0], "bird", bob)
    assert _item(api, ids[0])["label_count"] == 2
    assert [s["item"]["id"] for s in api.next(pid, ann, n=5)] == [ids[1]]


def test_relabelling_an_item_others_labelled_replaces_only_your_own_label(api: Api) -> None:
    pid = api.project()["id"]
    (item_id,) = api.upload_images(pid, 1)
    ann = api.user("ann", projects=[pid])
    bob = api.user("bob", projects=[pid])
    assert api.label(item_id, "cat", ann).json()["replaced_previous"] is False
    # The item has a label (ann's), but none of bob's: nothing of his to replace.
    assert api.label(item_id, "bird", bob).json()["replaced_previous"] is False
    assert api.label(item_id, "dog", bob).json()["replaced_previous"] is True
    assert _item(api, item_id)["label_count"] == 2
    current = sorted((r.label, r.is_current) for r in _labels(api))
    assert current == [("bird", False), ("cat", True), ("dog", True)]


def test_skip_hides_the_item_from_the_skipper_only(api: Api) -> None:
    pid = api.project()["id"]
    api.upload_images(pid, 2)
    ann = api.user("ann", projects=[pid])
    bob = api.user("bob", projects=[pid])
    (served,) = api.next(pid, ann)
    skipped = served["item"]["id"]
    response = api.post(f"/api/v1/items/{skipped}/skip", ann)
    assert response.json() == {"item_id": skipped, "skipped": True}
    assert skipped not in [s["item"]["id"] for s in api.next(pid, ann, n=5)]
    # The skip released ann's lease: bob can have it.
    assert skipped in [s["item"]["id"] for s in api.next(pid, bob, n=5)]


def test_label_not_in_classes_is_422_and_changes_nothing(api: Api) -> None:
    pid = api.project()["id"]
    (item_id,) = api.upload_images(pid, 1)
    response = api.label(item_id, "unicorn", api.admin_token)
    assert response.status_code == 422
    assert "'unicorn' is not one of this project's classes" in response.json()["detail"]
    assert _labels(api) == []
    assert _item(api, item_id)["label_count"] == 0


def test_next_follows_the_latest_done_round_then_scores_then_random(api: Api) -> None:
    pid = api.project()["id"]
    ids = api.upload_images(pid, 8)
    late = api.upload_images(pid, 2, first_seed=100)  # imported after the round: no prediction
    ann = api.user("ann", projects=[pid])
    bob = api.user("bob", projects=[pid])
    scores = {item_id: float(i) for i, item_id in enumerate(ids)}
    queue = [ids[2], ids[0], ids[5]]
    round_id = add_done_round(api, pid, queue=queue, scores=scores)
    api.label(ids[0], "cat", bob)  # labelled: skipped in the queue

    served = api.next(pid, ann, n=10)
    got = [s["item"]["id"] for s in served]
    by_score = sorted(set(ids) - {ids[0], ids[2], ids[5]}, key=lambda i: -scores[i])
    assert got[:2] == [ids[2], ids[5]]
    assert got[2:7] == by_score
    assert sorted(got[7:]) == sorted(late)
    head = served[0]
    assert (head["rank"], head["score"], head["strategy"], head["round_id"]) == (
        0,
        2.0,
        "bald",
        round_id,
    )
    assert head["prediction"] == {
        "label": "dog",
        "confidence": 0.6,
        "probabilities": dict(zip(CLASSES, [0.3, 0.6, 0.1], strict=True)),
        "top": [{"label": "dog", "probability": 0.6}, {"label": "cat", "probability": 0.3}],
        "round_id": round_id,
    }
    assert served[1]["rank"] == 2
    assert (served[2]["rank"], served[2]["strategy"]) == (None, "bald")
    assert served[7]["strategy"] == "random" and served[7]["prediction"] is None

    # The label copies the round that served the item (from ann's lease).
    label = api.label(ids[2], "bird", ann).json()
    assert label["round_id"] == round_id
    # Re-served leases keep their rank and round.
    again = api.next(pid, ann, n=1)[0]
    assert (again["item"]["id"], again["rank"], again["round_id"]) == (ids[5], 2, round_id)


def test_next_validates_n(api: Api) -> None:
    pid = api.project()["id"]
    response = api.get(f"/api/v1/projects/{pid}/next", params={"n": 0})
    assert response.status_code == 422
    assert "query parameter 'n'" in response.json()["detail"]


# --- handing leases back, unskipping, idempotent labels -------------------------------------


def _next_ids(api: Api, project_id: int, token: str, n: int = 5) -> list[int]:
    return [served["item"]["id"] for served in api.next(project_id, token, n=n)]


def _leases(api: Api) -> dict[int, int]:
    """item id -> the annotator holding its lease."""
    with api.app.state.session_factory() as session:
        rows = session.execute(select(Lease.item_id, Lease.annotator_id))
        return {item_id: annotator_id for item_id, annotator_id in rows}


def _me(api: Api, token: str) -> int:
    return int(api.get("/api/v1/me", token).json()["id"])


def test_releasing_a_lease_hands_the_item_to_the_next_caller_and_never_anothers(
    api: Api,
) -> None:
    pid = api.project()["id"]
    (only,) = api.upload_images(pid, 1)
    ann = api.user("ann", projects=[pid])
    bob = api.user("bob", projects=[pid])
    assert _next_ids(api, pid, ann) == [only]
    assert _next_ids(api, pid, bob) == []

    # Bob cannot release ann's lease: 204, and nothing changes.
    response = api.delete(f"/api/v1/items/{only}/lease", bob)
    assert response.status_code == 204 and response.content == b""
    assert _leases(api) == {only: _me(api, ann)}
    assert _next_ids(api, pid, bob) == []

    assert api.delete(f"/api/v1/items/{only}/lease", ann).status_code == 204
    assert _leases(api) == {}
    assert _next_ids(api, pid, bob) == [only]
    # Ann has no lease any more: her release is a no-op and leaves bob's alone.
    assert api.delete(f"/api/v1/items/{only}/lease", ann).status_code == 204
    assert _leases(api) == {only: _me(api, bob)}
    assert _next_ids(api, pid, ann) == []


def test_releasing_a_lease_on_an_item_you_cannot_see_is_404(api: Api) -> None:
    pid = api.project()["id"]
    (item_id,) = api.upload_images(pid, 1)
    outsider = api.user("outsider")
    response = api.delete(f"/api/v1/items/{item_id}/lease", outsider)
    assert response.status_code == 404
    assert "does not exist or is in a project you are not in" in response.json()["detail"]
    assert api.delete("/api/v1/items/999999/lease").status_code == 404


def test_undoing_a_skip_serves_the_item_again_leased_to_the_skipper(api: Api) -> None:
    pid = api.project()["id"]
    ids = api.upload_images(pid, 3)
    ann = api.user("ann", projects=[pid])
    bob = api.user("bob", projects=[pid])
    skipped = _next_ids(api, pid, ann, n=1)[0]
    assert api.post(f"/api/v1/items/{skipped}/skip", ann).status_code == 200
    others = _next_ids(api, pid, ann)
    assert skipped not in others
    for item_id in others:  # back to the pool, for bob
        assert api.delete(f"/api/v1/items/{item_id}/lease", ann).status_code == 204

    response = api.delete(f"/api/v1/items/{skipped}/skip", ann)
    assert response.status_code == 204 and response.content == b""
    # Leased back to ann, so she gets it first and bob does not get it at all.
    assert _leases(api)[skipped] == _me(api, ann)
    assert _next_ids(api, pid, ann, n=1) == [skipped]
    assert skipped not in _next_ids(api, pid, bob)
    assert sorted(_next_ids(api, pid, ann) + _next_ids(api, pid, bob)) == sorted(ids)
    # No skip left: a second undo is a no-op.
    assert api.delete(f"/api/v1/items/{skipped}/skip", ann).status_code == 204


def test_undoing_someone_elses_skip_is_not_possible(api: Api) -> None:
    pid = api.project()["id"]
    (only,) = api.upload_images(pid, 1)
    ann = api.user("ann", projects=[pid])
    bob = api.user("bob", projects=[pid])
    api.post(f"/api/v1/items/{only}/skip", ann)
    assert api.delete(f"/api/v1/items/{only}/skip", bob).status_code == 204
    assert _next_ids(api, pid, ann) == []
    assert _leases(api) == {}


def _label_with_key(api: Api, item_id: int, label: str, token: str, key: str) -> Any:
    headers = {**bearer(token), "Idempotency-Key": key}
    return api.client.post(
        f"/api/v1/items/{item_id}/labels", json={"label": label, "ms_spent": 5}, headers=headers
    )


def test_a_retried_label_with_the_same_idempotency_key_is_written_once(api: Api) -> None:
    pid = api.project()["id"]
    item_id = api.upload_images(pid, 1)[0]
    ann = api.user("ann", projects=[pid])
    assert api.label(item_id, "cat", ann).status_code == 201  # no key: replaced below

    first = _label_with_key(api, item_id, "dog", ann, "key-1")
    again = _label_with_key(api, item_id, "dog", ann, "key-1")
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert first.json()["replaced_previous"] is True
    assert [(r.label, r.is_current, r.idempotency_key) for r in _labels(api)] == [
        ("cat", False, None),
        ("dog", True, "key-1"),
    ]
    assert _item(api, item_id)["label_count"] == 1

    # The replay stands even after an undo: the retry of an old request changes nothing.
    assert api.delete(f"/api/v1/items/{item_id}/labels/mine", ann).status_code == 200
    late = _label_with_key(api, item_id, "dog", ann, "key-1")
    assert late.status_code == 201 and late.json()["id"] == first.json()["id"]
    assert len(_labels(api)) == 2 and _item(api, item_id)["label_count"] == 0


def test_an_idempotency_key_is_per_annotator_and_per_label_request(api: Api) -> None:
    pid = api.project()["id"]
    ids = api.upload_images(pid, 2)
    ann = api.user("ann", projects=[pid])
    bob = api.user("bob", projects=[pid])
    mine = _label_with_key(api, ids[0], "cat", ann, "shared")
    theirs = _label_with_key(api, ids[0], "cat", bob, "shared")
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"]
    assert _item(api, ids[0])["label_count"] == 2

    for item_id, label in [(ids[1], "cat"), (ids[0], "dog")]:
        reused = _label_with_key(api, item_id, label, ann, "shared")
        assert reused.status_code == 422
        assert "Idempotency-Key 'shared' was already used" in reused.json()["detail"]
    assert len(_labels(api)) == 2
    too_long = _label_with_key(api, ids[1], "cat", ann, "k" * 101)
    assert too_long.status_code == 422
    assert "Idempotency-Key" in too_long.json()["detail"]


def test_a_duplicate_that_misses_the_first_label_in_its_lookup_returns_it(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race: the second request looks the key up before the first one commits; its
    insert then violates the unique index and it answers with the first request's label."""
    pid = api.project()["id"]
    (item_id,) = api.upload_images(pid, 1)
    ann = api.user("ann", projects=[pid])
    first = _label_with_key(api, item_id, "bird", ann, "race")
    assert first.status_code == 201

    lookup = labels_service._replay
    calls: list[int] = []

    def late_lookup(**kwargs: Any) -> Any:
        calls.append(1)
        return None if len(calls) == 1 else lookup(**kwargs)

    monkeypatch.setattr(labels_service, "_replay", late_lookup)
    second = _label_with_key(api, item_id, "bird", ann, "race")
    assert len(calls) == 2  # the miss, then the lookup after the failed insert
    assert second.status_code == 201, second.text
    assert second.json()["id"] == first.json()["id"]
    assert second.headers["idempotent-replayed"] == "true"
    # The loser's transaction was rolled back whole: the first label is still current.
    assert [(r.label, r.is_current, r.retired_at) for r in _labels(api)] == [("bird", True, None)]
    assert _item(api, item_id)["label_count"] == 1

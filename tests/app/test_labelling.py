"""next, label, replace, undo and skip, through HTTP."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from app.models import Item, Label, Lease, Prediction, QueueEntry, Round, RoundStatus, utcnow
from app.services.imports import random_key_for
from tests.app.conftest import CLASSES, Api


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

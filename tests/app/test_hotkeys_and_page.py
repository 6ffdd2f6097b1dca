"""What the labelling page is served: hotkeys that match the classes, file names only where
the project shows them, and why an image was chosen (percentile, top two, the tail)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import insert

from core.hotkeys import effective_hotkeys
from core.tables import Prediction, QueueEntry, Role, Round, RoundStatus, utcnow
from tests.app.conftest import Api

DIGITS = [str(digit) for digit in range(10)]


# --- the assignment ---------------------------------------------------------------------------


def test_digit_classes_get_their_own_keys() -> None:
    assert effective_hotkeys(DIGITS, {}) == {digit: digit for digit in DIGITS}


def test_long_names_take_free_keys_in_order_after_one_character_names() -> None:
    classes = ["cat", "1", "dog", "a", "S", "bird"]
    # "1" and "a" keep their own keys; "S" would be skip (s), so it gets a free one; the
    # rest take 2, 3, ... skipping the keys already taken.
    assert effective_hotkeys(classes, {}) == {
        "cat": "2",
        "1": "1",
        "dog": "3",
        "a": "a",
        "S": "4",
        "bird": "5",
    }


def test_an_admins_key_wins_and_moves_the_class_that_had_it() -> None:
    keys = effective_hotkeys(DIGITS, {"9": "0"})
    assert keys["9"] == "0"
    assert keys["0"] == "9"  # its own key is taken: the first free one
    assert len(set(keys.values())) == 10


def test_classes_past_the_last_key_have_none() -> None:
    classes = [f"class {n}" for n in range(40)]
    keys = effective_hotkeys(classes, {})
    assert len(keys) == 35  # 10 digits and 25 letters (s is skip)
    assert "s" not in keys.values() and "class 39" not in keys


# --- the API ----------------------------------------------------------------------------------


def test_project_json_serves_the_effective_map(api: Api) -> None:
    project = api.project(name="digits", classes=DIGITS)
    assert project["hotkeys"] == {}
    assert project["effective_hotkeys"] == {digit: digit for digit in DIGITS}
    assert project["show_filenames"] is False
    animals = api.project()
    assert animals["effective_hotkeys"] == {"cat": "1", "dog": "2", "bird": "3"}


def test_admin_sets_hotkeys_on_create_and_patch(api: Api) -> None:
    project = api.project(hotkeys={"cat": "C", "dog": "d"})
    assert project["hotkeys"] == {"cat": "c", "dog": "d"}  # one key whatever the case
    assert project["effective_hotkeys"] == {"cat": "c", "dog": "d", "bird": "1"}
    pid = project["id"]
    patched = api.patch(f"/api/v1/projects/{pid}", json={"hotkeys": {"bird": "b"}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["effective_hotkeys"] == {"cat": "1", "dog": "2", "bird": "b"}
    # Other changes leave them alone; {} returns every class to automatic keys.
    renamed = api.patch(f"/api/v1/projects/{pid}", json={"name": "pets"}).json()
    assert renamed["hotkeys"] == {"bird": "b"}
    reset = api.patch(f"/api/v1/projects/{pid}", json={"hotkeys": {}}).json()
    assert reset["effective_hotkeys"] == {"cat": "1", "dog": "2", "bird": "3"}
    # Annotators read the same map.
    ann = api.user("ann", projects=[pid])
    assert api.get(f"/api/v1/projects/{pid}", ann).json()["effective_hotkeys"] == {
        "cat": "1",
        "dog": "2",
        "bird": "3",
    }


@pytest.mark.parametrize(
    ("hotkeys", "named"),
    [
        ({"cat": "s"}, "'s' (for 'cat') is the page's key for skip"),
        ({"cat": " "}, "must be a visible character"),
        ({"cat": "x", "dog": "X"}, "'x' is given to both 'cat' and 'dog'"),
        ({"cow": "c"}, "'cow' is not one of the project's classes"),
        ({"cat": "\t"}, "must be a visible character"),
    ],
)
def test_bad_hotkeys_are_422_naming_the_problem(
    api: Api, hotkeys: dict[str, str], named: str
) -> None:
    created = api.post(
        "/api/v1/projects",
        json={"name": "x", "classes": ["cat", "dog", "bird"], "hotkeys": hotkeys},
    )
    assert created.status_code == 422, created.text
    assert named in created.json()["detail"]
    pid = api.project()["id"]
    patched = api.patch(f"/api/v1/projects/{pid}", json={"name": "renamed", "hotkeys": hotkeys})
    assert patched.status_code == 422, patched.text
    assert named in patched.json()["detail"]
    # Nothing changed, the name included.
    project = api.get(f"/api/v1/projects/{pid}").json()
    assert (project["name"], project["hotkeys"]) == ("animals", {})


@pytest.mark.parametrize("key", ["ab", ""])
def test_a_key_of_other_than_one_character_is_422(api: Api, key: str) -> None:
    created = api.post(
        "/api/v1/projects", json={"name": "x", "classes": ["cat", "dog"], "hotkeys": {"cat": key}}
    )
    assert created.status_code == 422, created.text
    assert "hotkeys" in created.json()["detail"]


def test_only_admins_set_hotkeys(api: Api) -> None:
    pid = api.project()["id"]
    ann = api.user("ann", projects=[pid])
    refused = api.patch(f"/api/v1/projects/{pid}", ann, json={"hotkeys": {"cat": "c"}})
    assert refused.status_code == 403


# --- file names ------------------------------------------------------------------------------


def test_next_sends_annotators_no_file_names_unless_the_project_shows_them(api: Api) -> None:
    pid = api.project()["id"]
    api.upload_images(pid, 3)
    ann = api.user("ann", projects=[pid])
    admin = api.user("boss", role=Role.admin)
    [served] = api.next(pid, ann)
    assert served["item"]["filename"] is None
    assert api.next(pid, admin)[0]["item"]["filename"].startswith("img")  # admins: always
    patched = api.patch(f"/api/v1/projects/{pid}", json={"show_filenames": True})
    assert patched.json()["show_filenames"] is True
    [again] = api.next(pid, ann)
    assert again["item"]["id"] == served["item"]["id"]
    assert again["item"]["filename"].startswith("img")


def test_show_filenames_takes_true_or_false_only(api: Api) -> None:
    pid = api.project()["id"]
    for value in (1, "true"):
        response = api.patch(f"/api/v1/projects/{pid}", json={"show_filenames": value})
        assert response.status_code == 422, response.text


# --- why this image --------------------------------------------------------------------------


def add_round(
    api: Api,
    project_id: int,
    *,
    strategy: str,
    queue: list[tuple[int, str]],
    scores: dict[int, float],
    probabilities: list[float],
) -> int:
    with api.app.state.session_factory() as session:
        done = Round(
            project_id=project_id,
            status=RoundStatus.done,
            strategy=strategy,
            finished_at=utcnow(),
        )
        session.add(done)
        session.flush()
        if queue:
            session.execute(
                insert(QueueEntry),
                [
                    {
                        "round_id": done.id,
                        "item_id": item_id,
                        "rank": rank,
                        "score": scores[item_id],
                        "strategy": picked_by,
                    }
                    for rank, (item_id, picked_by) in enumerate(queue)
                ],
            )
        session.execute(
            insert(Prediction),
            [
                {
                    "round_id": done.id,
                    "item_id": item_id,
                    "predicted": "dog",
                    "confidence": max(probabilities),
                    "probabilities": probabilities,
                    "score": score,
                }
                for item_id, score in scores.items()
            ],
        )
        session.commit()
        return done.id


def _by_id(served: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {entry["item"]["id"]: entry for entry in served}


def test_percentile_within_the_round_and_the_top_two(api: Api) -> None:
    pid = api.project()["id"]
    items = api.upload_images(pid, 10)
    # Scores 0.0 .. 0.9: item k scores higher than k of the 10.
    scores = {item_id: index / 10 for index, item_id in enumerate(items)}
    best, second, worst = items[9], items[8], items[0]
    add_round(
        api,
        pid,
        strategy="bald",
        queue=[(best, "bald"), (second, "bald"), (worst, "bald")],
        scores=scores,
        probabilities=[0.25, 0.7, 0.05],
    )
    ann = api.user("ann", projects=[pid])
    served = _by_id(api.next(pid, ann, n=3))
    # Percentile rank: the share of the round scoring lower, the item itself counted half.
    assert served[best]["score_percentile"] == pytest.approx(95.0)
    assert served[second]["score_percentile"] == pytest.approx(85.0)
    assert served[worst]["score_percentile"] == pytest.approx(5.0)
    assert served[best]["score"] == pytest.approx(0.9)
    prediction = served[best]["prediction"]
    assert prediction["top"] == [
        {"label": "dog", "probability": pytest.approx(0.7)},
        {"label": "cat", "probability": pytest.approx(0.25)},
    ]
    assert "BALD put it #1 in round" in served[best]["reason"]


def test_ties_share_the_middle_and_no_round_means_no_percentile(api: Api) -> None:
    pid = api.project()["id"]
    items = api.upload_images(pid, 4)
    ann = api.user("ann", projects=[pid])
    [random] = api.next(pid, ann)
    assert random["score_percentile"] is None and random["prediction"] is None
    assert "No model has been trained yet" in random["reason"]
    api.delete(f"/api/v1/items/{random['item']['id']}/lease", ann)
    add_round(
        api,
        pid,
        strategy="entropy",
        queue=[],
        scores={item_id: 0.5 for item_id in items},
        probabilities=[0.4, 0.4, 0.2],
    )
    [tied] = api.next(pid, ann)
    assert tied["score_percentile"] == pytest.approx(50.0)
    assert tied["rank"] is None and "queue is used up" in tied["reason"]
    # Equal probabilities: the class order decides.
    assert [choice["label"] for choice in tied["prediction"]["top"]] == ["cat", "dog"]


def test_the_powerbald_tail_of_a_batchbald_queue_says_why(api: Api) -> None:
    pid = api.project()["id"]
    items = api.upload_images(pid, 4)
    add_round(
        api,
        pid,
        strategy="batchbald",
        queue=[(items[0], "batchbald"), (items[1], "powerbald")],
        scores={item_id: 0.1 * (index + 1) for index, item_id in enumerate(items)},
        probabilities=[0.2, 0.5, 0.3],
    )
    ann = api.user("ann", projects=[pid])
    head, tail = api.next(pid, ann, n=2)
    assert (head["strategy"], tail["strategy"]) == ("batchbald", "powerbald")
    assert head["reason"].startswith("BatchBALD put it #1 in round")
    assert tail["reason"].startswith("PowerBALD, not BatchBALD, put it #2 in round")
    assert "BatchBALD chose only the first batch" in tail["reason"]

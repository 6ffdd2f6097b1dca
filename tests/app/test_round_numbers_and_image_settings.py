"""Rounds numbered within their project, and image settings that are honoured or refused."""

from __future__ import annotations

import pytest

from tests.app.conftest import Api
from tests.app.test_labelling import add_done_round


def test_rounds_are_numbered_within_their_project(api: Api) -> None:
    first = api.project("first")["id"]
    second = api.project("second")["id"]
    # Ids interleave across the projects: first gets ids 1 and 3, second 2 and 4.
    done = [
        add_done_round(api, project, queue=[], scores={})
        for project in (first, second, first, second)
    ]
    queued = api.post(f"/api/v1/projects/{second}/rounds").json()
    assert (queued["id"], queued["number"]) == (done[-1] + 1, 3)

    listed = api.get(f"/api/v1/projects/{second}/rounds").json()
    assert [(r["id"], r["number"]) for r in listed] == [
        (queued["id"], 3),
        (done[3], 2),
        (done[1], 1),
    ]
    assert api.get(f"/api/v1/rounds/{done[2]}").json()["number"] == 2
    assert api.get(f"/api/v1/rounds/{done[1]}").json()["number"] == 1

    metrics = api.get(f"/api/v1/projects/{second}/metrics").json()
    assert [p["round_number"] for p in metrics["learning_curve"]] == [1, 2]
    queue = metrics["queue"]
    assert (queue["round_id"], queue["round_number"]) == (done[3], 2)
    assert (queue["active_round_id"], queue["active_round_number"]) == (queued["id"], 3)
    fresh = api.get(f"/api/v1/projects/{api.project('third')['id']}/metrics").json()["queue"]
    assert fresh["round_number"] is None and fresh["active_round_number"] is None


def test_image_settings_are_set_at_creation_and_changed_by_patch(api: Api) -> None:
    created = api.project("rgb", image_size=48, image_channels=3)
    assert (created["image_size"], created["image_channels"]) == (48, 3)
    pid = created["id"]
    patched = api.patch(f"/api/v1/projects/{pid}", json={"image_size": 64, "image_channels": 1})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["image_size"], patched.json()["image_channels"]) == (64, 1)
    stored = api.get(f"/api/v1/projects/{pid}").json()
    assert (stored["image_size"], stored["image_channels"]) == (64, 1)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"image_chanels": 3}, "image_chanels"),  # a typo is not silently ignored
        ({"colour": "rgb"}, "colour"),
        ({"image_channels": 2}, "image_channels"),
        ({"image_size": 4}, "image_size"),
        ({"image_size": 1024}, "image_size"),
    ],
)
def test_a_setting_the_api_cannot_honour_is_a_422_naming_it(
    api: Api, body: dict[str, object], named: str
) -> None:
    pid = api.project()["id"]
    answer = api.patch(f"/api/v1/projects/{pid}", json={"mc_samples": 5, **body})
    assert answer.status_code == 422, answer.text
    assert named in answer.json()["detail"]
    assert api.get(f"/api/v1/projects/{pid}").json()["mc_samples"] == 20  # nothing changed


def test_creating_a_project_with_an_unknown_field_is_a_422(api: Api) -> None:
    answer = api.post(
        "/api/v1/projects", json={"name": "x", "classes": ["a", "b"], "image_width": 32}
    )
    assert answer.status_code == 422 and "image_width" in answer.json()["detail"]
    assert api.get("/api/v1/projects").json() == []


# --- representations (issue 17) ------------------------------------------------------------


def test_auto_resolves_to_the_paper_cnn_for_small_grey_images_else_the_pretrained_backbone(
    api: Api,
) -> None:
    grey = api.project("grey", image_size=28, image_channels=1)
    photos = api.project("photos", image_size=64, image_channels=3)
    assert (grey["network"], grey["resolved_network"]) == ("auto", "mnist_cnn")
    assert (photos["network"], photos["resolved_network"]) == ("auto", "efficientnet_lite0")
    assert grey["embedding"] is None and photos["embedding"] is None  # nothing embedded yet
    assert (photos["cold_start"], photos["near_duplicates"]) == ("typiclust", "flag")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"network": "custom"}, "needs custom_backbone"),
        ({"network": "custom", "custom_backbone": "torchvision:resnet50"}, "custom_weights"),
        ({"custom_weights": "/models/w.pt"}, "apply only with network 'custom'"),
        ({"network": "custom", "custom_backbone": "keras:resnet50"}, "custom_backbone"),
        ({"cold_start": "kmeans"}, "cold_start"),
        ({"near_duplicates": "delete"}, "near_duplicates"),
        ({"near_duplicate_distance": 1.5}, "near_duplicate_distance"),
    ],
)
def test_backbone_settings_that_do_not_fit_are_a_422_saying_why(
    api: Api, body: dict[str, object], message: str
) -> None:
    pid = api.project(image_channels=3, image_size=64)["id"]
    answer = api.patch(f"/api/v1/projects/{pid}", json=body)
    assert answer.status_code == 422, answer.text
    assert message in answer.json()["detail"]
    assert api.get(f"/api/v1/projects/{pid}").json()["network"] == "auto"  # nothing changed


def test_a_custom_backbone_is_kept_and_forgotten_when_the_network_changes(api: Api) -> None:
    custom = {
        "network": "custom",
        "custom_backbone": "torchvision:resnet50",
        "custom_weights": "/models/resnet50-team.pt",
    }
    pid = api.project(image_channels=3, image_size=64, **custom)["id"]
    stored = api.get(f"/api/v1/projects/{pid}").json()
    assert {key: stored[key] for key in custom} == custom

    moved = api.patch(f"/api/v1/projects/{pid}", json={"network": "efficientnet_lite0"}).json()

    assert (moved["custom_backbone"], moved["custom_weights"]) == (None, None)


def test_the_near_duplicate_distance_returns_to_the_default_with_null(api: Api) -> None:
    pid = api.project(near_duplicate_distance=0.1)["id"]
    assert api.get(f"/api/v1/projects/{pid}").json()["near_duplicate_distance"] == 0.1

    reset = api.patch(f"/api/v1/projects/{pid}", json={"near_duplicate_distance": None})

    assert reset.json()["near_duplicate_distance"] is None


def test_changing_the_representation_of_a_project_on_embeddings_queues_a_round(
    api: Api,
) -> None:
    pid = api.project(image_channels=3, image_size=64)["id"]
    assert api.get(f"/api/v1/projects/{pid}/rounds").json() == []

    api.patch(f"/api/v1/projects/{pid}", json={"mc_samples": 10})  # not the representation
    api.patch(f"/api/v1/projects/{pid}", json={"image_channels": 3})  # resent as it was
    assert api.get(f"/api/v1/projects/{pid}/rounds").json() == []
    api.patch(f"/api/v1/projects/{pid}", json={"image_channels": 1})

    rounds = api.get(f"/api/v1/projects/{pid}/rounds").json()
    assert [(r["status"], r["trigger"]) for r in rounds] == [("queued", "settings")]


def test_an_upload_to_a_project_on_embeddings_queues_a_round_to_embed_it(api: Api) -> None:
    photos = api.project("photos", image_channels=3, image_size=64)["id"]
    digits = api.project("digits", image_channels=1, image_size=28)["id"]

    api.upload_images(photos, 3)
    api.upload_images(digits, 3, first_seed=100)

    queued = api.get(f"/api/v1/projects/{photos}/rounds").json()
    assert [(r["status"], r["trigger"]) for r in queued] == [("queued", "upload")]
    # Pixels: nothing to embed, and a round waits for retrain_every labels as before.
    assert api.get(f"/api/v1/projects/{digits}/rounds").json() == []

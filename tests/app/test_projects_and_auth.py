"""Projects, memberships, annotators and who may do what."""

from __future__ import annotations

from sqlalchemy import func, select

from core.catalog import COLD_STARTS, PHASES, STRATEGIES
from core.tables import Item, Label
from tests.app.conftest import Api


def test_project_crud(api: Api) -> None:
    created = api.project("animals", strategy="bald", retrain_every=5)
    pid = created["id"]
    assert created["classes"] == ["cat", "dog", "bird"]
    assert (created["strategy"], created["retrain_every"], created["effective_queue_size"]) == (
        "bald",
        5,
        10,
    )
    assert created["counts"] == {
        "items": 0,
        "pool": 0,
        "validation": 0,
        "labelled": 0,
        "near_duplicates": 0,
        "duplicates_skipped": 0,
    }
    assert created["created_at"].endswith(("Z", "+00:00"))

    duplicate = api.post("/api/v1/projects", json={"name": "animals", "classes": ["a", "b"]})
    assert duplicate.status_code == 409
    assert "already exists" in duplicate.json()["detail"]

    patched = api.patch(f"/api/v1/projects/{pid}", json={"name": "pets", "query_size": 20})
    assert patched.status_code == 200
    assert (patched.json()["name"], patched.json()["query_size"]) == ("pets", 20)
    assert [p["name"] for p in api.get("/api/v1/projects").json()] == ["pets"]

    ids = api.upload_images(pid, 2)
    api.label(ids[0], "cat", api.admin_token)
    assert api.delete(f"/api/v1/projects/{pid}").status_code == 204
    assert api.get(f"/api/v1/projects/{pid}").status_code == 404
    with api.app.state.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Item)) == 0
        assert session.scalar(select(func.count()).select_from(Label)) == 0


def test_project_create_validates_classes(api: Api) -> None:
    response = api.post("/api/v1/projects", json={"name": "x", "classes": ["a", "a"]})
    assert response.status_code == 422
    body = response.json()
    assert "body field 'classes'" in body["detail"] and "distinct" in body["detail"]
    assert body["errors"][0]["loc"] == ["body", "classes"]


def test_membership_controls_visibility(api: Api) -> None:
    mine = api.project("mine")["id"]
    theirs = api.project("theirs")["id"]
    ann = api.user("ann")
    assert api.get("/api/v1/projects", ann).json() == []
    assert api.get(f"/api/v1/projects/{mine}", ann).status_code == 404

    me = api.get("/api/v1/me", ann).json()
    added = api.put(f"/api/v1/projects/{mine}/members/{me['id']}")
    assert added.status_code == 200 and added.json()["project_ids"] == [mine]
    assert [p["id"] for p in api.get("/api/v1/projects", ann).json()] == [mine]
    assert api.get(f"/api/v1/projects/{mine}", ann).status_code == 200
    not_member = api.get(f"/api/v1/projects/{theirs}", ann)
    assert not_member.status_code == 404
    assert "not a member" in not_member.json()["detail"]

    assert api.delete(f"/api/v1/projects/{mine}/members/{me['id']}").status_code == 204
    assert api.get(f"/api/v1/projects/{mine}/next", ann).status_code == 404
    assert api.put(f"/api/v1/projects/{mine}/members/9999").status_code == 404


def test_items_of_other_projects_are_404(api: Api) -> None:
    mine = api.project("mine")["id"]
    theirs = api.project("theirs")["id"]
    (my_item,) = api.upload_images(mine, 1)
    (their_item,) = api.upload_images(theirs, 1, first_seed=50)
    ann = api.user("ann", projects=[mine])
    assert api.get(f"/api/v1/items/{my_item}", ann).status_code == 200
    for response in (
        api.get(f"/api/v1/items/{their_item}", ann),
        api.get(f"/api/v1/items/{their_item}/image", ann),
        api.label(their_item, "cat", ann),
        api.post(f"/api/v1/items/{their_item}/skip", ann),
        api.delete(f"/api/v1/items/{their_item}/labels/mine", ann),
        api.get(f"/api/v1/projects/{theirs}/items", ann),
        api.get(f"/api/v1/projects/{theirs}/metrics", ann),
        api.get(f"/api/v1/projects/{theirs}/rounds", ann),
        api.get("/api/v1/items/424242", ann),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["detail"].endswith(".")
    with api.app.state.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Label)) == 0


def test_missing_or_wrong_token_is_401_with_www_authenticate(api: Api) -> None:
    missing = api.client.get("/api/v1/projects")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "Bearer" in missing.json()["detail"]
    wrong = api.client.get("/api/v1/me", headers={"Authorization": "Bearer not-a-token"})
    assert wrong.status_code == 401
    assert "not valid" in wrong.json()["detail"]
    basic = api.client.get("/api/v1/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401


def test_annotators_cannot_do_admin_things(api: Api) -> None:
    pid = api.project()["id"]
    ann = api.user("ann", projects=[pid])
    forbidden = [
        api.post("/api/v1/annotators", ann, json={"name": "eve"}),
        api.get("/api/v1/annotators", ann),
        api.post("/api/v1/projects", ann, json={"name": "x", "classes": ["a", "b"]}),
        api.patch(f"/api/v1/projects/{pid}", ann, json={"name": "y"}),
        api.delete(f"/api/v1/projects/{pid}", ann),
        api.put(f"/api/v1/projects/{pid}/members/1", ann),
        api.upload(pid, [("a.png", b"x")], token=ann),
        api.get(f"/api/v1/projects/{pid}/export", ann),
    ]
    for response in forbidden:
        assert response.status_code == 403, response.text
        assert "Only admins" in response.json()["detail"]
    assert api.get(f"/api/v1/projects/{pid}", ann).json()["name"] == "animals"


def test_admin_creates_annotators_and_the_token_works(api: Api) -> None:
    created = api.post("/api/v1/annotators", json={"name": "zoe", "role": "annotator"})
    assert created.status_code == 201
    body = created.json()
    assert body["role"] == "annotator" and len(body["token"]) >= 40
    me = api.get("/api/v1/me", body["token"]).json()
    assert (me["id"], me["name"], me["project_ids"]) == (body["id"], "zoe", [])
    listed = api.get("/api/v1/annotators").json()
    assert [a["name"] for a in listed] == ["root", "zoe"]
    assert all("token" not in a for a in listed)
    assert api.post("/api/v1/annotators", json={"name": "zoe"}).status_code == 409


def test_unknown_route_and_method_are_json(api: Api) -> None:
    missing = api.client.get("/api/v1/nowhere")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Not found: there is no such page or API route."}
    wrong_method = api.client.put("/healthz")
    assert wrong_method.status_code == 405
    assert "not allowed" in wrong_method.json()["detail"]


def test_malformed_json_is_a_readable_422(api: Api) -> None:
    response = api.client.post(
        "/api/v1/projects",
        content=b"{not json",
        headers={"Authorization": f"Bearer {api.admin_token}", "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["detail"].startswith("The request is not valid: ")


def test_the_catalog_lists_what_projects_accept(api: Api) -> None:
    catalog = api.get("/api/v1/catalog").json()
    strategies = [entry["name"] for entry in catalog["strategies"]]
    assert strategies == list(STRATEGIES)
    assert [entry["name"] for entry in catalog["phases"]] == list(PHASES)
    assert [entry["name"] for entry in catalog["cold_starts"]] == list(COLD_STARTS)
    assert all(entry["label"] and entry["description"] for entry in catalog["networks"])
    for name in strategies:  # every listed strategy is one a project takes
        response = api.patch(f"/api/v1/projects/{api.project(name)['id']}", json={"strategy": name})
        assert response.status_code == 200, response.text
    unknown = api.post(
        "/api/v1/projects", json={"name": "x", "classes": ["a", "b"], "strategy": "coreset"}
    )
    assert unknown.status_code == 422

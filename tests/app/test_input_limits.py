"""Every integer and string the API accepts fits what the database stores, or is a 422.

The contract is read from the OpenAPI schema, so a new route or field is checked without
a new test: each integer declares bounds within the 32 bits an Integer column holds, and
the server enforces them; each string of a JSON body refuses NUL, which PostgreSQL cannot
store. Both backends: the 500s these replace differed between SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from app.services.imports import Candidate, import_candidates
from core.tables import INT32_MAX, INT32_MIN, LABEL_LENGTH, Item, Project
from tests.app.conftest import CLASSES, Api, png_bytes

# A valid body for every route that takes JSON; the test below fails when one is missing.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/api/v1/annotators"): {"name": "ann", "role": "annotator"},
    ("post", "/api/v1/projects"): {"name": "p", "classes": ["a", "b"], "seed": 1},
    ("patch", "/api/v1/projects/{project_id}"): {"name": "q", "query_size": 5},
    ("post", "/api/v1/items/{item_id}/labels"): {"label": "cat", "ms_spent": 10},
    ("post", "/api/v1/projects/{project_id}/webhooks"): {"url": "http://127.0.0.1:9/hook"},
}
TOO_BIG = [2**31, 2**63, 10**30]


def _operations(api: Api) -> list[tuple[str, str, dict[str, Any]]]:
    spec = api.app.openapi()
    return [
        (method, path, operation)
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    ]


def _integer(schema: dict[str, Any]) -> dict[str, Any] | None:
    """The integer schema in `schema` (alone or in anyOf with null), else None.

    An enum of integers (image_channels: 1 or 3) is bounded by its values: not counted.
    """
    for option in schema.get("anyOf", [schema]):
        if option.get("type") == "integer" and "enum" not in option:
            return option
    return None


def _body_schema(api: Api, operation: dict[str, Any]) -> dict[str, Any] | None:
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        return None
    ref = content["application/json"]["schema"]["$ref"]
    return dict(api.app.openapi()["components"]["schemas"][ref.rsplit("/", 1)[-1]])


def _url(path: str, **values: int) -> str:
    for name in ("project_id", "item_id", "annotator_id", "round_id", "webhook_id"):
        path = path.replace("{" + name + "}", str(values.get(name, 1)))
    assert "{" not in path, f"a path parameter this test does not know: {path}"
    return path


def _locs(response: Any) -> list[list[Any]]:
    return [error["loc"] for error in response.json()["errors"]]


# --- integers -----------------------------------------------------------------------------


def test_every_integer_parameter_and_field_is_bounded_to_32_bits(api: Api) -> None:
    checked = []
    for method, path, operation in _operations(api):
        schemas = {
            f"{parameter['in']} {parameter['name']}": parameter["schema"]
            for parameter in operation.get("parameters", [])
        }
        body = _body_schema(api, operation)
        if body is not None:
            schemas |= {f"body {name}": field for name, field in body["properties"].items()}
        for where, schema in schemas.items():
            integer = _integer(schema)
            if integer is None:
                continue
            checked.append(f"{method} {path} {where}")
            assert integer.get("minimum", INT32_MIN - 1) >= INT32_MIN, (method, path, where)
            assert integer.get("maximum", INT32_MAX + 1) <= INT32_MAX, (method, path, where)
    assert "get /api/v1/projects/{project_id}/items query cursor" in checked
    assert "post /api/v1/projects body seed" in checked


def test_ids_out_of_range_are_422_on_every_route(api: Api) -> None:
    for method, path, operation in _operations(api):
        for parameter in operation.get("parameters", []):
            if parameter["in"] != "path":
                continue
            name = parameter["name"]
            assert _integer(parameter["schema"]) is not None, (path, name)
            for value in [*TOO_BIG, 0, -1]:
                url = _url(path, **{name: value})
                response = api.client.request(
                    method, url, headers={"Authorization": f"Bearer {api.admin_token}"}
                )
                assert response.status_code == 422, (method, url, response.text)
                assert ["path", name] in _locs(response), (method, url)
                assert f"path parameter '{name}'" in response.json()["detail"]


def test_integer_query_parameters_out_of_range_are_422(api: Api) -> None:
    pid = api.project()["id"]
    for method, path, operation in _operations(api):
        for parameter in operation.get("parameters", []):
            integer = _integer(parameter["schema"])
            if parameter["in"] != "query" or integer is None:
                continue
            name = parameter["name"]
            for value in [integer["minimum"] - 1, integer["maximum"] + 1, *TOO_BIG]:
                url = _url(path, project_id=pid)
                response = api.client.request(
                    method,
                    url,
                    params={name: value},
                    headers={"Authorization": f"Bearer {api.admin_token}"},
                )
                assert response.status_code == 422, (url, name, value, response.text)
                assert ["query", name] in _locs(response)


def test_integer_body_fields_out_of_range_are_422(api: Api) -> None:
    for method, path, operation in _operations(api):
        body = _body_schema(api, operation)
        if body is None:
            continue
        valid = BODIES[(method, path)]
        for name, field in body["properties"].items():
            integer = _integer(field)
            if integer is None:
                continue
            for value in [integer["minimum"] - 1, integer["maximum"] + 1, *TOO_BIG]:
                response = api.client.request(
                    method,
                    _url(path),
                    json={**valid, name: value},
                    headers={"Authorization": f"Bearer {api.admin_token}"},
                )
                assert response.status_code == 422, (path, name, value, response.text)
                assert ["body", name] in _locs(response)


def test_seed_and_cursor_at_the_bounds_work(api: Api) -> None:
    for seed in (INT32_MIN, INT32_MAX):
        project = api.project(f"seed {seed}", seed=seed)
        assert project["seed"] == seed
        api.upload_images(project["id"], 1, first_seed=seed % 1000)
    page = api.get(f"/api/v1/projects/{project['id']}/items", params={"cursor": INT32_MAX})
    assert page.status_code == 200
    assert page.json() == {"items": [], "next_cursor": None}


# --- strings ------------------------------------------------------------------------------


def _string_fields(schema: dict[str, Any]) -> list[tuple[str, bool]]:
    """(field, is a list of strings) for the free-text fields of a body (not enums)."""
    fields = []
    for name, field in schema["properties"].items():
        for option in field.get("anyOf", [field]):
            if option.get("type") == "string" and "enum" not in option:
                fields.append((name, False))
            elif option.get("type") == "array" and option["items"].get("type") == "string":
                fields.append((name, True))
    return fields


@pytest.mark.parametrize("bad", ["\x00", "\n", "\r", "\t", "\x1b", "\x7f", "\x85"])
def test_every_string_of_a_json_body_refuses_control_characters(api: Api, bad: str) -> None:
    checked = set()
    for method, path, operation in _operations(api):
        body = _body_schema(api, operation)
        if body is None:
            continue
        assert (method, path) in BODIES, f"add a valid body for {method} {path} to BODIES"
        valid = BODIES[(method, path)]
        for name, is_list in _string_fields(body):
            value = f"a{bad}b"
            mutated = {**valid, name: [value, "other"] if is_list else value}
            response = api.client.request(
                method,
                _url(path),
                json=mutated,
                headers={"Authorization": f"Bearer {api.admin_token}"},
            )
            assert response.status_code == 422, (path, name, response.text)
            loc = ["body", name, 0] if is_list else ["body", name]
            assert loc in _locs(response), (path, name, response.json())
            assert f"U+{ord(bad):04X}" in response.json()["detail"]
            checked.add(name)
    assert checked == {"name", "classes", "label", "url", "custom_backbone", "custom_weights"}


def test_nul_in_names_stores_nothing(api: Api) -> None:
    created = api.post("/api/v1/projects", json={"name": "a\x00b", "classes": CLASSES})
    assert created.status_code == 422
    assert created.json()["errors"][0]["loc"] == ["body", "name"]
    assert "body field 'name'" in created.json()["detail"]
    pid = api.project()["id"]
    renamed = api.patch(f"/api/v1/projects/{pid}", json={"name": "x\x00"})
    assert renamed.status_code == 422
    assert api.get(f"/api/v1/projects/{pid}").json()["name"] == "animals"
    person = api.post("/api/v1/annotators", json={"name": "ann\x00", "role": "annotator"})
    assert person.status_code == 422
    assert [a["name"] for a in api.get("/api/v1/annotators").json()] == ["root"]


def test_label_and_idempotency_key_refuse_nul(api: Api) -> None:
    pid = api.project()["id"]
    (item_id,) = api.upload_images(pid, 1)
    label = api.label(item_id, "cat\x00", api.admin_token)
    assert label.status_code == 422
    assert label.json()["errors"][0]["loc"] == ["body", "label"]
    keyed = api.client.post(
        f"/api/v1/items/{item_id}/labels",
        json={"label": "cat"},
        headers=[
            (b"authorization", f"Bearer {api.admin_token}".encode()),
            (b"idempotency-key", b"key\x00"),
        ],
    )
    assert keyed.status_code == 422, keyed.text
    assert keyed.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert api.label(item_id, "cat", api.admin_token).status_code == 201


def _multipart(files: list[tuple[bytes, bytes]]) -> tuple[bytes, str]:
    # By hand: httpx percent-encodes control characters in file names, and a browser or
    # another client need not.
    boundary = "nextlabelboundary"
    parts = [
        b"--" + boundary.encode() + b"\r\n"
        b'Content-Disposition: form-data; name="files"; filename="' + name + b'"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n"
        for name, data in files
    ]
    body = b"".join(parts) + b"--" + boundary.encode() + b"--\r\n"
    return body, f"multipart/form-data; boundary={boundary}"


def test_upload_with_nul_in_a_file_name_is_422_naming_it_and_imports_nothing(api: Api) -> None:
    pid = api.project()["id"]
    body, content_type = _multipart([(b"fine.png", png_bytes(1)), (b"a\x00b.png", png_bytes(2))])
    response = api.client.post(
        f"/api/v1/projects/{pid}/items",
        content=body,
        headers={"Authorization": f"Bearer {api.admin_token}", "Content-Type": content_type},
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "files", 1, "filename"]
    assert "body field 'files.1.filename'" in response.json()["detail"]
    with api.app.state.session_factory() as session:
        assert session.scalars(select(Item)).all() == []
    # Other control characters store fine and come back as sent.
    body, content_type = _multipart([(b"new\nline.png", png_bytes(3))])
    response = api.client.post(
        f"/api/v1/projects/{pid}/items",
        content=body,
        headers={"Authorization": f"Bearer {api.admin_token}", "Content-Type": content_type},
    )
    assert response.status_code == 200, response.text
    (created,) = response.json()["created"]
    assert api.get(f"/api/v1/items/{created}").json()["filename"] == "new\nline.png"


def test_import_skips_a_candidate_whose_name_holds_nul(api: Api) -> None:
    pid = api.project()["id"]
    with api.app.state.session_factory() as session:
        project = session.get_one(Project, pid)
        report = import_candidates(
            session=session,
            store=api.app.state.store,
            project=project,
            candidates=[Candidate("a\x00b.png", png_bytes(1)), Candidate("ok.png", png_bytes(2))],
            max_pixels=10_000,
        )
    assert len(report.created) == 1
    assert [(s.name, "NUL" in s.reason) for s in report.skipped] == [("a\x00b.png", True)]


# --- class names and labels ---------------------------------------------------------------


def test_a_class_name_is_at_most_a_label_long_and_every_class_can_be_labelled(
    api: Api,
) -> None:
    longest = "c" * LABEL_LENGTH
    too_long = api.post(
        "/api/v1/projects", json={"name": "long", "classes": [longest + "c", "dog"]}
    )
    assert too_long.status_code == 422
    assert too_long.json()["errors"][0]["loc"] == ["body", "classes", 0]
    assert f"at most {LABEL_LENGTH} characters" in too_long.json()["detail"]

    # Outer spaces are refused, not stripped: what the schema allows is what is taken.
    spaced = api.post("/api/v1/projects", json={"name": "spaced", "classes": [" cat", "dog"]})
    assert spaced.status_code == 422
    assert spaced.json()["errors"][0]["loc"] == ["body", "classes", 0]
    assert "space" in spaced.json()["detail"]
    project = api.project("longest", classes=[longest, "dog"])
    assert project["classes"] == [longest, "dog"]
    (item_id,) = api.upload_images(project["id"], 1)
    labelled = api.label(item_id, longest, api.admin_token)
    assert labelled.status_code == 201, labelled.text
    assert labelled.json()["label"] == longest

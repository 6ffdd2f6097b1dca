"""Export: csv, json and jsonl carry exactly the current labels."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from sqlalchemy import select

from app.models import Annotator, Item, Label
from app.services.export import COLUMNS
from tests.app.conftest import Api


def _expected(api: Api) -> list[dict[str, Any]]:
    with api.app.state.session_factory() as session:
        rows = session.execute(
            select(Label, Item, Annotator.name)
            .join(Item, Item.id == Label.item_id)
            .join(Annotator, Annotator.id == Label.annotator_id)
            .where(Label.is_current.is_(True))
            .order_by(Label.id)
        ).all()
    return [
        {
            "item_id": item.id,
            "filename": item.filename,
            "sha256": item.sha256,
            "label": label.label,
            "annotator": name,
            "ms_spent": label.ms_spent,
            "round_id": label.round_id,
        }
        for label, item, name in rows
    ]


def _without_time(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "created_at"} for row in rows]


def test_export_matches_the_labels_in_every_format(api: Api) -> None:
    pid = api.project()["id"]
    ids = api.upload_images(pid, 6)
    ann = api.user("ann", projects=[pid])
    bob = api.user("bob", projects=[pid])
    api.post(f"/api/v1/items/{ids[0]}/labels", ann, json={"label": "cat", "ms_spent": 1200})
    api.label(ids[0], "dog", bob)
    api.label(ids[1], "bird", ann)
    api.label(ids[1], "cat", ann)  # replaced
    api.label(ids[2], "dog", ann)
    api.delete(f"/api/v1/items/{ids[2]}/labels/mine", ann)  # undone
    api.label(ids[3], "bird", bob)
    expected = _expected(api)
    assert len(expected) == 4

    response = api.get(f"/api/v1/projects/{pid}/export", params={"format": "csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    reader = csv.DictReader(io.StringIO(response.text))
    assert tuple(reader.fieldnames or ()) == COLUMNS
    from_csv = [
        {
            **row,
            "item_id": int(row["item_id"]),
            "ms_spent": int(row["ms_spent"]) if row["ms_spent"] else None,
            "round_id": int(row["round_id"]) if row["round_id"] else None,
        }
        for row in reader
    ]
    assert _without_time(from_csv) == expected

    as_json = api.get(f"/api/v1/projects/{pid}/export", params={"format": "json"})
    assert as_json.headers["content-type"] == "application/json"
    from_json = as_json.json()
    assert _without_time(from_json) == expected

    as_jsonl = api.get(f"/api/v1/projects/{pid}/export", params={"format": "jsonl"})
    from_jsonl = [json.loads(line) for line in as_jsonl.text.splitlines()]
    assert from_jsonl == from_json
    assert [row["created_at"] for row in from_csv] == [row["created_at"] for row in from_json]
    assert all(row["created_at"].endswith("+00:00") for row in from_json)


def test_export_of_an_empty_project(api: Api) -> None:
    pid = api.project()["id"]
    assert api.get(f"/api/v1/projects/{pid}/export").text == ",".join(COLUMNS) + "\n"
    assert api.get(f"/api/v1/projects/{pid}/export", params={"format": "json"}).json() == []
    assert api.get(f"/api/v1/projects/{pid}/export", params={"format": "jsonl"}).text == ""
    bad = api.get(f"/api/v1/projects/{pid}/export", params={"format": "xml"})
    assert bad.status_code == 422
    assert "query parameter 'format'" in bad.json()["detail"]


def test_export_pages_through_many_labels(api: Api, monkeypatch: Any) -> None:
    monkeypatch.setattr("app.services.export.PAGE_SIZE", 3)
    pid = api.project()["id"]
    ids = api.upload_images(pid, 8)
    for item_id in ids:
        api.label(item_id, "cat", api.admin_token)
    rows = api.get(f"/api/v1/projects/{pid}/export", params={"format": "json"}).json()
    assert [row["item_id"] for row in rows] == ids

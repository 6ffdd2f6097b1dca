"""Export: csv, json and jsonl carry exactly the current labels."""

from __future__ import annotations

import csv
import io
import json
import re
from email.message import Message
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from sqlalchemy import select

from app.services.export import COLUMNS
from core.tables import Annotator, Item, Label, Project
from tests.app.conftest import Api, bearer


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
    monkeypatch.setattr("app.services.export.common.PAGE_SIZE", 3)
    pid = api.project()["id"]
    ids = api.upload_images(pid, 8)
    for item_id in ids:
        api.label(item_id, "cat", api.admin_token)
    rows = api.get(f"/api/v1/projects/{pid}/export", params={"format": "json"}).json()
    assert [row["item_id"] for row in rows] == ids


def _rename(api: Api, project_id: int, name: str) -> None:
    # Behind the API's back: names stored before the API refused control characters (or
    # written by other tools) must still export.
    with api.app.state.session_factory() as session:
        session.get_one(Project, project_id).name = name
        session.commit()


def _filename_star(header: str) -> str:
    match = re.search(r"filename\*=UTF-8''([^;\s]+)", header)
    assert match, header
    return unquote(match.group(1), encoding="utf-8", errors="strict")


@pytest.mark.parametrize(
    "name",
    ["日本語", "new\nline", "del\x7fete", 'say "hi"', "back\\slash", "50% off; x=1", "tab\there"],
)
def test_export_filename_is_rfc_6266_encoded_for_any_project_name(api: Api, name: str) -> None:
    pid = api.project()["id"]
    _rename(api, pid, name)
    response = api.get(f"/api/v1/projects/{pid}/export")
    assert response.status_code == 200
    raw = response.headers.raw
    (header,) = [value for key, value in raw if key.lower() == b"content-disposition"]
    # Visible ASCII and spaces only: what every HTTP implementation passes through.
    assert all(0x20 <= byte < 0x7F for byte in header), header
    text = header.decode("ascii")
    assert _filename_star(text) == f"{name}-labels.csv"
    fallback = re.fullmatch(r'attachment; filename="([^"\\]*)"; filename\*=\S+', text)
    assert fallback, text
    assert fallback.group(1).endswith("-labels.csv")
    assert not set(fallback.group(1)) & set('%"\\/')
    # An independent decoder of the extended parameter (the stdlib's RFC 2231 support; it
    # prefers whichever `filename` comes first, so it is given `filename*` alone).
    message = Message()
    message["Content-Disposition"] = "attachment; " + text.split("; ")[-1]
    assert message.get_filename() == f"{name}-labels.csv"


def test_export_of_a_project_named_with_a_newline_answers_on_a_real_server(
    api: Api, live_server: str
) -> None:
    pid = api.project()["id"]
    _rename(api, pid, "two\nlines")
    response = httpx.get(
        f"{live_server}/api/v1/projects/{pid}/export", headers=bearer(api.admin_token)
    )
    assert response.status_code == 200
    assert _filename_star(response.headers["content-disposition"]) == "two\nlines-labels.csv"

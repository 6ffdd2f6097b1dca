"""Exports that training code reads: the ImageFolder zip and the latest predictions."""

from __future__ import annotations

import csv
import io
import json
import math
import zipfile
from typing import Any

import httpx
import pytest
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute
from sqlalchemy import select
from typer.testing import CliRunner

from app.api.export import POOL_HEADER, ROUND_HEADER, WITHOUT_HEADER
from app.api.export import router as export_router
from app.cli import cli
from app.services.export import (
    MANIFEST_COLUMNS,
    PREDICTION_COLUMNS,
    imagefolder_zip,
    labelled_pages,
    path_segment,
    predictive_entropy,
    resolve_label,
)
from core.storage import LocalImageStore
from core.tables import Item, Label, Prediction, Round, RoundStatus, Split, utcnow
from tests.app.conftest import CLASSES, Api, bearer, png_bytes, zip_bytes

EXPORT = "/api/v1/projects/{}/export"


def _export(api: Api, pid: int, token: str | None = None, **params: str) -> httpx.Response:
    return api.get(EXPORT.format(pid), token, params=params)


def _labels_by_image(api: Api, pid: int) -> dict[str, tuple[str, str]]:
    """sha256 -> (split, label) of every labelled item: a validation item's known label, a
    pool item's one current label (a pool item with several would fail the comparison)."""
    with api.app.state.session_factory() as session:
        items = session.scalars(select(Item).where(Item.project_id == pid)).all()
        current = session.execute(
            select(Label.item_id, Label.label).where(
                Label.project_id == pid, Label.is_current.is_(True)
            )
        ).all()
    votes: dict[int, list[str]] = {}
    for item_id, label in current:
        votes.setdefault(item_id, []).append(label)
    found = {}
    for item in items:
        if item.split == Split.validation and item.known_label is not None:
            found[item.sha256] = ("validation", item.known_label)
        elif item.id in votes:
            (label,) = set(votes[item.id])
            found[item.sha256] = ("pool", label)
    return found


def _sha(api: Api, item_id: int) -> str:
    with api.app.state.session_factory() as session:
        item = session.get_one(Item, item_id)
        return item.sha256


def _labelled_project(api: Api) -> tuple[int, list[int], dict[str, int]]:
    """A project with agreeing, majority, tied, colliding and validation items."""
    pid = api.project()["id"]
    ids = api.upload_images(pid, 5)
    # Two files named x.png in different folders (no class folders: no labels).
    same_name = api.upload(
        pid, [("twins.zip", zip_bytes({"a/x.png": png_bytes(50), "b/x.png": png_bytes(51)}))]
    )
    assert same_name.status_code == 200, same_name.text
    twins = same_name.json()["created"]
    validation = api.upload(
        pid,
        [
            (
                "val.zip",
                zip_bytes(
                    {
                        "v1.png": png_bytes(60),
                        "v2.png": png_bytes(61),
                        "labels.csv": b"v1.png,bird\nv2.png,cat\n",
                    }
                ),
            )
        ],
    )
    assert validation.status_code == 200, validation.text
    ann, bob, cy = (api.user(name, projects=[pid]) for name in ("ann", "bob", "cy"))
    api.label(ids[0], "cat", ann)
    api.label(ids[1], "dog", ann)  # dog 2, bird 1: dog
    api.label(ids[1], "dog", bob)
    api.label(ids[1], "bird", cy)
    api.label(ids[2], "cat", ann)  # cat 1, dog 1: tied
    api.label(ids[2], "dog", bob)
    api.label(twins[0], "bird", ann)
    api.label(twins[1], "bird", ann)
    # ids[3] and ids[4] stay unlabelled.
    return pid, ids, {"tied": ids[2], "twin_a": twins[0], "twin_b": twins[1]}


def _zip_of(response: httpx.Response) -> zipfile.ZipFile:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert "imagefolder.zip" in response.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert archive.testzip() is None
    return archive


def test_imagefolder_zip_holds_the_resolved_labels_in_the_imagefolder_layout(api: Api) -> None:
    pid, _, named = _labelled_project(api)
    archive = _zip_of(_export(api, pid, format="imagefolder"))
    twin_b = named["twin_b"]
    assert sorted(archive.namelist()) == sorted(
        [
            "excluded.csv",
            "manifest.csv",
            "train/bird/x.png",
            f"train/bird/{twin_b}-x.png",
            "train/cat/img000.png",
            "train/dog/img001.png",
            "val/bird/v1.png",
            "val/cat/v2.png",
        ]
    )
    assert archive.read("train/cat/img000.png") == png_bytes(0)
    assert archive.read(f"train/bird/{twin_b}-x.png") == png_bytes(51)
    manifest = list(csv.reader(io.StringIO(archive.read("manifest.csv").decode())))
    assert manifest[0] == list(MANIFEST_COLUMNS)
    assert sorted(manifest[1:]) == sorted(
        [
            ["train/cat/img000.png", "cat", "train"],
            ["train/dog/img001.png", "dog", "train"],
            ["train/bird/x.png", "bird", "train"],
            [f"train/bird/{twin_b}-x.png", "bird", "train"],
            ["val/bird/v1.png", "bird", "val"],
            ["val/cat/v2.png", "cat", "val"],
        ]
    )
    excluded = list(csv.DictReader(io.StringIO(archive.read("excluded.csv").decode())))
    assert excluded == [
        {
            "item_id": str(named["tied"]),
            "filename": "img002.png",
            "sha256": _sha(api, named["tied"]),
            "reason": "annotators are tied (cat 1, dog 1)",
        }
    ]


def test_imagefolder_zip_round_trips_through_the_import(api: Api) -> None:
    pid, _, named = _labelled_project(api)
    exported = _export(api, pid, format="imagefolder").content
    copy = api.project("copy")["id"]
    imported = api.upload(copy, [("animals-imagefolder.zip", exported)])
    assert imported.status_code == 200, imported.text
    report = imported.json()
    assert report["problems"] == []
    assert [s["name"] for s in report["skipped"]] == ["excluded.csv"]  # not an image

    tied = _sha(api, named["tied"])
    expected = {sha: found for sha, found in _majority_labels(api, pid).items() if sha != tied}
    assert _labels_by_image(api, copy) == expected
    assert len(expected) == 6 and tied not in _labels_by_image(api, copy)
    # Importing the same zip again changes nothing.
    again = api.upload(copy, [("again.zip", exported)]).json()
    assert again["created"] == [] and again["unchanged"] == 6


def _majority_labels(api: Api, pid: int) -> dict[str, tuple[str, str]]:
    """The source project's labels resolved as the export promises: the majority."""
    with api.app.state.session_factory() as session:
        items = {item.id: item for item in session.scalars(select(Item))}
        current = session.execute(
            select(Label.item_id, Label.label).where(
                Label.project_id == pid, Label.is_current.is_(True)
            )
        ).all()
    votes: dict[int, dict[str, int]] = {}
    for item_id, label in current:
        votes.setdefault(item_id, {}).setdefault(label, 0)
        votes[item_id][label] += 1
    found: dict[str, tuple[str, str]] = {}
    for item in items.values():
        if item.project_id != pid:
            continue
        if item.split == Split.validation and item.known_label is not None:
            found[item.sha256] = ("validation", item.known_label)
        elif item.id in votes:
            found[item.sha256] = ("pool", resolve_label(votes[item.id]) or "tied")
    return found


def test_imagefolder_round_trip_with_classes_that_are_not_safe_as_folder_names(api: Api) -> None:
    classes = ["a/b", "..", "100%", "train", "val"]
    pid = api.project("odd", classes=classes)["id"]
    ids = api.upload_images(pid, 5)
    for item_id, label in zip(ids, classes, strict=True):
        api.label(item_id, label, api.admin_token)
    archive = _zip_of(_export(api, pid, format="imagefolder"))
    assert sorted(n for n in archive.namelist() if n != "manifest.csv") == [
        "train/%2E%2E/img001.png",
        "train/100%25/img002.png",
        "train/a%2Fb/img000.png",
        "train/train/img003.png",
        "train/val/img004.png",
    ]
    copy = api.project("odd copy", classes=classes)["id"]
    exported = _export(api, pid, format="imagefolder").content
    imported = api.upload(copy, [("odd.zip", exported)])
    assert imported.status_code == 200, imported.text
    assert _labels_by_image(api, copy) == _labels_by_image(api, pid)


def test_imagefolder_names_stay_single_safe_segments() -> None:
    assert path_segment("cat") == "cat"
    assert path_segment("chat noir é") == "chat noir é"
    assert path_segment("a/b\\c") == "a%2Fb%5Cc"
    assert path_segment(".") == "%2E" and path_segment("..") == "%2E%2E"
    assert path_segment("...x") == "...x"
    assert path_segment("50%") == "50%25"
    assert path_segment("a\nb") == "a%0Ab"
    assert resolve_label({"cat": 2, "dog": 1}) == "cat"
    assert resolve_label({"cat": 1, "dog": 1}) is None
    assert resolve_label({"cat": 1, "dog": 1, "bird": 3}) == "bird"
    assert resolve_label({}) is None


def test_imagefolder_gives_hidden_and_manifest_named_files_the_item_id(api: Api) -> None:
    pid = api.project()["id"]
    response = api.upload(
        pid,
        [
            (".hidden.png", png_bytes(1)),
            ("labels.jsonl.png", png_bytes(2)),
            ("Thumbs.db", png_bytes(3)),
            ("X.PNG", png_bytes(4)),
            ("x.png", png_bytes(5)),
        ],
    )
    assert response.status_code == 200, response.text
    ids = response.json()["created"]
    for item_id in ids:
        api.label(item_id, "cat", api.admin_token)
    archive = _zip_of(_export(api, pid, format="imagefolder"))
    assert sorted(archive.namelist()) == sorted(
        [
            "manifest.csv",
            f"train/cat/{ids[0]}-.hidden.png",
            "train/cat/labels.jsonl.png",
            f"train/cat/{ids[2]}-Thumbs.db",
            "train/cat/X.PNG",
            f"train/cat/{ids[4]}-x.png",  # x.png and X.PNG are one file on macOS/Windows
        ]
    )
    copy = api.project("copy")["id"]
    imported = api.upload(copy, [("c.zip", _export(api, pid, format="imagefolder").content)])
    assert imported.status_code == 200 and imported.json()["problems"] == []
    assert _labels_by_image(api, copy) == _labels_by_image(api, pid)


def test_imagefolder_lists_an_image_missing_from_the_store(api: Api) -> None:
    pid = api.project()["id"]
    ids = api.upload_images(pid, 2)
    for item_id in ids:
        api.label(item_id, "dog", api.admin_token)
    store: LocalImageStore = api.app.state.store
    store.delete(_sha(api, ids[0]))
    archive = _zip_of(_export(api, pid, format="imagefolder"))
    assert "train/dog/img001.png" in archive.namelist()
    excluded = list(csv.DictReader(io.StringIO(archive.read("excluded.csv").decode())))
    assert [(row["item_id"], row["reason"]) for row in excluded] == [
        (str(ids[0]), "the image cannot be read from the store (FileNotFoundError)")
    ]


def test_imagefolder_of_a_project_without_labels_is_a_zip_with_an_empty_manifest(
    api: Api,
) -> None:
    pid = api.project()["id"]
    api.upload_images(pid, 3)
    archive = _zip_of(_export(api, pid, format="imagefolder"))
    assert archive.namelist() == ["manifest.csv"]
    assert archive.read("manifest.csv") == b"filename,label,split\n"


def test_imagefolder_zip_is_written_as_the_images_are_read(api: Api) -> None:
    """Structure, not timing: with a small chunk size, the first bytes go out after the first
    image is read, and every later chunk after one more; pages are read lazily too."""
    pid = api.project()["id"]
    ids = api.upload_images(pid, 40)
    for item_id in ids:
        api.label(item_id, "cat", api.admin_token)
    store: LocalImageStore = api.app.state.store
    reads: list[str] = []

    class CountingStore:
        def get(self, key: str) -> bytes:
            reads.append(key)
            return store.get(key)

    pages_read: list[int] = []

    def pages() -> Any:
        for page in labelled_pages(
            session_factory=api.app.state.session_factory, project_id=pid, page_size=10
        ):
            pages_read.append(len(page))
            yield page

    chunks = imagefolder_zip(pages=pages(), store=CountingStore(), classes=CLASSES, chunk_bytes=1)  # type: ignore[arg-type]
    first = next(chunks)
    assert first.startswith(b"PK\x03\x04")
    assert (len(reads), pages_read) == (1, [10])
    sizes = [len(first)] + [len(chunk) for chunk in chunks]
    assert len(reads) == 40 and pages_read == [10, 10, 10, 10]
    # One chunk per image (its local header, data and descriptor), then the manifest and
    # the central directory: never the images gathered up.
    assert len(sizes) >= 40 and max(sizes[:40]) < len(png_bytes(0)) + 200


def _add_round(api: Api, pid: int, predictions: dict[int, list[float]], **fields: Any) -> int:
    with api.app.state.session_factory() as session:
        done = Round(
            project_id=pid,
            status=fields.get("status", RoundStatus.done),
            trigger="manual",
            strategy="bald",
            finished_at=utcnow(),
        )
        session.add(done)
        session.flush()
        for index, (item_id, probabilities) in enumerate(predictions.items()):
            best = max(range(len(probabilities)), key=probabilities.__getitem__)
            session.add(
                Prediction(
                    round_id=done.id,
                    item_id=item_id,
                    predicted=CLASSES[best],
                    confidence=probabilities[best],
                    probabilities=probabilities,
                    score=0.25 * index,
                )
            )
        session.commit()
        return done.id


def _predicted_project(api: Api) -> tuple[int, list[int], int, dict[int, list[float]]]:
    pid = api.project()["id"]
    ids = api.upload_images(pid, 4)
    api.label(ids[0], "cat", api.admin_token)
    validation = api.upload(
        pid, [("v.zip", zip_bytes({"v.png": png_bytes(90), "labels.csv": b"v.png,dog\n"}))]
    )
    assert validation.status_code == 200
    _add_round(api, pid, {i: [0.2, 0.5, 0.3] for i in ids})  # an older round
    probabilities = {
        ids[1]: [0.7, 0.2, 0.1],
        ids[2]: [1.0, 0.0, 0.0],
        ids[3]: [1 / 3, 1 / 3, 1 / 3],
    }
    round_id = _add_round(api, pid, probabilities)
    _add_round(api, pid, {ids[1]: [0.0, 0.0, 1.0]}, status=RoundStatus.failed)
    later = api.upload_images(pid, 2, first_seed=20)  # after the round: no prediction
    return pid, [*ids, *later], round_id, probabilities


def test_predictions_csv_lists_every_pool_item_with_the_stored_prediction(api: Api) -> None:
    pid, ids, round_id, probabilities = _predicted_project(api)
    response = _export(api, pid, format="predictions")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert f"predictions-round{round_id}.csv" in response.headers["content-disposition"]
    assert response.headers[ROUND_HEADER] == str(round_id)
    assert response.headers[POOL_HEADER] == "6"
    assert response.headers[WITHOUT_HEADER] == "3"  # labelled before the round, and 2 after
    reader = csv.DictReader(io.StringIO(response.text))
    assert reader.fieldnames == [*PREDICTION_COLUMNS, "p_cat", "p_dog", "p_bird"]
    rows = list(reader)
    assert [int(row["item_id"]) for row in rows] == ids  # the validation item is not pool
    with api.app.state.session_factory() as session:
        stored = {
            p.item_id: p
            for p in session.scalars(select(Prediction).where(Prediction.round_id == round_id))
        }
    for row in rows:
        item_id = int(row["item_id"])
        assert row["sha256"] == _sha(api, item_id)
        assert row["label_count"] == ("1" if item_id == ids[0] else "0")
        if item_id not in probabilities:
            assert all(row[column] == "" for column in reader.fieldnames[4:]), row
            continue
        prediction = stored[item_id]
        assert row["round_id"] == str(round_id)
        assert row["predicted"] == prediction.predicted
        assert float(row["confidence"]) == prediction.confidence
        assert float(row["score"]) == prediction.score
        cells = [float(row[f"p_{name}"]) for name in CLASSES]
        assert cells == probabilities[item_id]
        assert float(row["entropy"]) == pytest.approx(-sum(p * math.log(p) for p in cells if p > 0))
    by_id = {int(row["item_id"]): row for row in rows}
    assert float(by_id[ids[2]]["entropy"]) == 0.0  # certain
    assert float(by_id[ids[3]]["entropy"]) == pytest.approx(math.log(3))  # uniform


def test_predictions_as_jsonl_carry_the_same_values(api: Api) -> None:
    pid, ids, round_id, probabilities = _predicted_project(api)
    response = _export(api, pid, **{"format": "predictions", "as": "jsonl"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers[WITHOUT_HEADER] == "3"
    records = [json.loads(line) for line in response.text.splitlines()]
    assert [record["item_id"] for record in records] == ids
    assert set(records[0]) == {*PREDICTION_COLUMNS, "probabilities"}
    for record in records:
        expected = probabilities.get(record["item_id"])
        if expected is None:
            assert record["predicted"] is None and record["probabilities"] is None
            assert record["entropy"] is None and record["round_id"] is None
            continue
        assert record["probabilities"] == dict(zip(CLASSES, expected, strict=True))
        assert record["round_id"] == round_id
        assert record["entropy"] == pytest.approx(predictive_entropy(expected))
    as_csv = list(csv.DictReader(io.StringIO(_export(api, pid, format="predictions").text)))
    assert [row["predicted"] or None for row in as_csv] == [r["predicted"] for r in records]


def test_predictions_before_any_round_and_misused_as(api: Api) -> None:
    pid = api.project()["id"]
    api.upload_images(pid, 2)
    early = _export(api, pid, format="predictions")
    assert early.status_code == 409
    assert "No round has finished yet" in early.json()["detail"]
    misused = _export(api, pid, **{"format": "csv", "as": "jsonl"})
    assert misused.status_code == 422 and "`as`" in misused.json()["detail"]
    unknown = _export(api, pid, **{"format": "predictions", "as": "xml"})
    assert unknown.status_code == 422


def test_predictions_page_through_many_items(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.services.export.common.PAGE_SIZE", 2)
    pid, ids, _, _ = _predicted_project(api)
    lines = _export(api, pid, **{"format": "predictions", "as": "jsonl"}).text.splitlines()
    assert [json.loads(line)["item_id"] for line in lines] == ids


@pytest.mark.parametrize("fmt", ["imagefolder", "predictions"])
def test_annotators_may_not_export(api: Api, fmt: str) -> None:
    pid, _, _, _ = _predicted_project(api)
    ann = api.user("ann", projects=[pid])
    assert _export(api, pid, ann, format=fmt).status_code == 403
    assert _export(api, 999, format=fmt).status_code == 404


def test_both_exports_stream_chunked_from_a_real_server(api: Api, live_server: str) -> None:
    pid, ids, _, _ = _predicted_project(api)
    for item_id in ids[1:]:
        api.label(item_id, "bird", api.admin_token)
    (route,) = export_router.routes
    assert isinstance(route, APIRoute) and route.response_class is StreamingResponse
    url = f"{live_server}{EXPORT.format(pid)}"
    for params in ({"format": "imagefolder"}, {"format": "predictions"}):
        with httpx.stream("GET", url, params=params, headers=bearer(api.admin_token)) as response:
            assert response.status_code == 200
            assert response.headers["transfer-encoding"] == "chunked"
            assert "content-length" not in response.headers
            body = b"".join(response.iter_bytes())
        if params["format"] == "imagefolder":
            assert len(zipfile.ZipFile(io.BytesIO(body)).namelist()) == 6 + 1 + 1  # + manifest


def test_cli_writes_the_zip_and_the_predictions(
    api: Api, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = api.app.state.settings
    monkeypatch.setenv("NEXTLABEL_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("NEXTLABEL_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("NEXTLABEL_LOG_LEVEL", "WARNING")
    pid, _, round_id, _ = _predicted_project(api)
    runner = CliRunner()
    out = tmp_path / "animals.zip"
    result = runner.invoke(cli, ["export", "animals", "--format", "imagefolder", "--out", str(out)])
    assert result.exit_code == 0, result.output
    from_api = _zip_of(_export(api, pid, format="imagefolder"))
    with zipfile.ZipFile(out) as from_cli:
        assert from_cli.namelist() == from_api.namelist()
        assert all(from_cli.read(n) == from_api.read(n) for n in from_api.namelist())
    result = runner.invoke(cli, ["export", str(pid), "--format", "predictions", "--as", "jsonl"])
    assert result.exit_code == 0, result.output
    assert f"round {round_id}: 6 pool items, 3 without a prediction" in result.stderr
    assert result.stdout == _export(api, pid, **{"format": "predictions", "as": "jsonl"}).text
    misused = runner.invoke(cli, ["export", "animals", "--as", "jsonl"])
    assert misused.exit_code == 2

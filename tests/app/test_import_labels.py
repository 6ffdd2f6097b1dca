"""Importing existing labels (issue 18): class folders and manifests, through the API and
the CLI, with a dry run first, every problem reported and nothing written on refusal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from app.cli import cli
from app.services.imports import IMPORT_ANNOTATOR
from core.tables import Annotator, Item, Label, Round, Split, is_current
from tests.app.conftest import Api, png_bytes, zip_bytes

runner = CliRunner()


def _import(api: Api, pid: int, files: list[tuple[str, bytes]], **params: Any) -> httpx.Response:
    multipart = [("files", (name, data, "application/octet-stream")) for name, data in files]
    query = {key: str(value).lower() for key, value in params.items()}
    return api.post(f"/api/v1/projects/{pid}/items", params=query, files=multipart)


def _counts(api: Api) -> tuple[int, int]:
    """(items, current labels) in the database."""
    with api.app.state.session_factory() as session:
        items = session.scalar(select(func.count()).select_from(Item)) or 0
        labels = session.scalar(select(func.count()).select_from(Label).where(is_current())) or 0
    return items, labels


def _image_folder_zip() -> bytes:
    return zip_bytes(
        {
            "cat/1.png": png_bytes(1),
            "cat/2.png": png_bytes(2),
            "dog/1.png": png_bytes(3),  # same base name as cat/1.png: paths tell them apart
            "bird/4.png": png_bytes(4),
            ".DS_Store": b"\0\0\0\1Bud1",
        }
    )


def test_image_folder_zip_dry_run_then_training_labels_make_a_round_due(api: Api) -> None:
    pid = api.project(retrain_every=4)["id"]
    archive = _image_folder_zip()

    dry = _import(api, pid, [("animals.zip", archive)], dry_run=True)
    assert dry.status_code == 200, dry.text
    summary = dry.json()
    assert summary["dry_run"] is True and summary["created"] == []
    assert (summary["images"], summary["new_items"]) == (4, 4)
    assert summary["training"] == {"bird": 1, "cat": 2, "dog": 1}
    assert summary["validation"] == {} and summary["problems"] == []
    assert _counts(api) == (0, 0)

    report = _import(api, pid, [("animals.zip", archive)]).json()
    assert len(report["created"]) == 4 and report["training"] == {"bird": 1, "cat": 2, "dog": 1}
    assert report["round_queued"] is not None
    rounds = api.get(f"/api/v1/projects/{pid}/rounds").json()
    assert [(r["id"], r["status"], r["trigger"]) for r in rounds] == [
        (report["round_queued"], "queued", "labels")
    ]
    assert rounds[0]["labels_used"] == 4

    # The labels are the import account's, and show as such in the dashboard and exports.
    metrics = api.get(f"/api/v1/projects/{pid}/metrics").json()
    assert {(a["name"], a["labels"]) for a in metrics["annotators"]} == {(IMPORT_ANNOTATOR, 4)}
    exported = api.get(f"/api/v1/projects/{pid}/export", params={"format": "json"}).json()
    assert {(row["filename"], row["label"], row["annotator"]) for row in exported} == {
        ("cat/1.png", "cat", IMPORT_ANNOTATOR),
        ("cat/2.png", "cat", IMPORT_ANNOTATOR),
        ("dog/1.png", "dog", IMPORT_ANNOTATOR),
        ("bird/4.png", "bird", IMPORT_ANNOTATOR),
    }
    with api.app.state.session_factory() as session:
        account = session.scalars(select(Annotator).where(Annotator.name == IMPORT_ANNOTATOR)).one()
        assert len(account.token_hash) != 64  # no token hashes to it: nobody logs in as it
        counts = set(session.scalars(select(Item.label_count)))
    assert counts == {1}
    # Labelled items are not served to annotators again.
    ann = api.user("ann", projects=[pid])
    assert api.next(pid, ann, n=5) == []

    # Importing the same thing again changes nothing: no item, no label, no round.
    again = _import(api, pid, [("animals.zip", archive)]).json()
    assert again["created"] == [] and again["training"] == {}
    assert (again["unchanged"], again["problems"], again["round_queued"]) == (4, [], None)
    assert _counts(api) == (4, 4)


def test_manifest_with_splits_and_labels_as(api: Api) -> None:
    pid = api.project()["id"]
    manifest = (
        b"filename,label,split\n"
        b"a.png,cat,training\n"
        b"b.png,dog,validation\n"
        b"c.png,bird\n"  # no split of its own: labels_as decides
    )
    files = [
        ("a.png", png_bytes(1)),
        ("b.png", png_bytes(2)),
        ("c.png", png_bytes(3)),
        ("d.png", png_bytes(4)),  # not in the manifest: unlabelled, into the pool
        ("manifest.csv", manifest),
    ]
    summary = _import(api, pid, files, dry_run=True, labels_as="validation").json()
    assert (summary["training"], summary["validation"]) == ({"cat": 1}, {"bird": 1, "dog": 1})
    assert (summary["unlabelled"], summary["images"]) == (1, 4)

    report = _import(api, pid, files, labels_as="validation").json()
    assert len(report["created"]) == 4 and report["problems"] == []
    with api.app.state.session_factory() as session:
        rows = session.execute(select(Item.filename, Item.split, Item.known_label)).all()
    assert set(rows) == {
        ("a.png", Split.pool, None),
        ("b.png", Split.validation, "dog"),
        ("c.png", Split.validation, "bird"),
        ("d.png", Split.pool, None),
    }
    assert _counts(api) == (4, 1)


def test_jsonl_manifest_inside_a_zip_and_labels_csv_keeps_its_meaning(api: Api) -> None:
    pid = api.project()["id"]
    jsonl = b'{"filename": "x.png", "label": "cat"}\n{"filename": "y.png", "label": "dog"}\n'
    archive = zip_bytes({"x.png": png_bytes(1), "y.png": png_bytes(2), "labels.jsonl": jsonl})
    report = _import(api, pid, [("a.zip", archive)]).json()
    assert report["training"] == {"cat": 1, "dog": 1}
    # labels.csv alone: validation items, as it always was...
    legacy = zip_bytes({"v.png": png_bytes(3), "labels.csv": b"v.png,bird\n"})
    assert _import(api, pid, [("v.zip", legacy)]).json()["validation"] == {"bird": 1}
    # ...unless the user says otherwise.
    legacy = zip_bytes({"w.png": png_bytes(4), "labels.csv": b"w.png,bird\n"})
    chosen = _import(api, pid, [("w.zip", legacy)], labels_as="training").json()
    assert (chosen["training"], chosen["validation"]) == ({"bird": 1}, {})


BAD = {
    "cat/ok.png": png_bytes(1),
    "fish/nemo.png": png_bytes(2),  # a class folder the project does not have
    "dog/notes.txt": b"not an image at all",  # labelled dog, but not an image
    "dog/fine.png": png_bytes(3),
    "labels.jsonl": (
        b'{"filename": "cat/ok.png", "label": "cat"}\n'
        b'{"filename": "gone.png", "label": "dog"}\n'  # no such file
        b'{"filename": "cat/ok.png", "label": "dog"}\n'  # duplicate row, another label
        b"not json\n"
    ),
}


def test_every_problem_is_reported_and_nothing_written_unless_skipped(api: Api) -> None:
    pid = api.project()["id"]
    archive = zip_bytes(BAD)

    refused = _import(api, pid, [("bad.zip", archive)])
    assert refused.status_code == 422
    body = refused.json()
    assert "nothing was imported" in body["detail"]
    problems = {tuple(error["loc"][2:]): error["msg"] for error in body["errors"]}
    assert "'fish' is not one of the project's classes" in problems[("fish/nemo.png",)]
    assert "not an image" in problems[("dog/notes.txt",)]
    assert "not among the files imported" in problems[("gone.png",)]
    assert "duplicate row" in problems[("labels.jsonl:3",)]
    assert "not a JSON object" in problems[("labels.jsonl:4",)]
    assert len(problems) == 5
    assert _counts(api) == (0, 0)
    assert not [p for p in api.app.state.settings.image_dir.rglob("*") if p.is_file()]

    dry = _import(api, pid, [("bad.zip", archive)], dry_run=True).json()
    assert len(dry["problems"]) == 5 and dry["training"] == {"cat": 1, "dog": 1}

    report = _import(api, pid, [("bad.zip", archive)], skip_problems=True).json()
    assert len(report["created"]) == 2 and len(report["problems"]) == 5
    assert report["training"] == {"cat": 1, "dog": 1}
    assert _counts(api) == (2, 2)


def test_an_image_already_here_gets_its_label_and_conflicts_are_problems(api: Api) -> None:
    pid = api.project()["id"]
    [item] = api.upload_images(pid, 1, first_seed=7)
    manifest = b"img007.png,cat\n"
    files = [("img007.png", png_bytes(7)), ("manifest.csv", manifest)]
    report = _import(api, pid, files).json()
    assert (report["created"], report["training"]) == ([], {"cat": 1})
    assert api.get(f"/api/v1/items/{item}").json()["label_count"] == 1
    conflicting = _import(
        api, pid, [("img007.png", png_bytes(7)), ("manifest.csv", b"img007.png,dog\n")]
    )
    assert conflicting.status_code == 422
    assert "imported as 'cat'" in conflicting.json()["errors"][0]["msg"]
    # The same image twice in one import with two labels: a problem, not a coin toss.
    twice = zip_bytes({"cat/a.png": png_bytes(9), "dog/a-copy.png": png_bytes(9)})
    response = _import(api, pid, [("t.zip", twice)])
    assert response.status_code == 422 and "labelled apart" in response.text


@pytest.fixture
def env(api: Api, monkeypatch: pytest.MonkeyPatch) -> Api:
    settings = api.app.state.settings
    monkeypatch.setenv("NEXTLABEL_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("NEXTLABEL_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("NEXTLABEL_LOG_LEVEL", "WARNING")
    return api


def test_cli_image_folder_with_split_folders_dry_run_then_import(env: Api, tmp_path: Path) -> None:
    pid = env.project("cli", retrain_every=2)["id"]
    root = tmp_path / "dataset"
    for index, path in enumerate(
        ["train/cat/a.png", "train/dog/b.png", "train/dog/c.png", "val/bird/d.png"]
    ):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(png_bytes(100 + index))

    dry = runner.invoke(cli, ["import", "cli", str(root), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would import 3 training labels: cat 1, dog 2" in dry.output
    assert "would import 1 validation labels: bird 1" in dry.output
    assert _counts(env) == (0, 0)

    done = runner.invoke(cli, ["import", "cli", str(root)])
    assert done.exit_code == 0, done.output
    assert "created 4 items" in done.output and "round" in done.output
    rounds = env.get(f"/api/v1/projects/{pid}/rounds").json()
    assert [r["status"] for r in rounds] == ["queued"]
    assert _counts(env) == (4, 3)

    again = runner.invoke(cli, ["import", "cli", str(root)])
    assert "4 images: 0 new, 4 unchanged" in again.output
    assert _counts(env) == (4, 3)


def test_cli_manifest_labels_as_validation_and_refusal(env: Api, tmp_path: Path) -> None:
    env.project("cli")
    root = tmp_path / "flat"
    root.mkdir()
    for seed in range(3):
        (root / f"{seed}.png").write_bytes(png_bytes(200 + seed))
    manifest = tmp_path / "labels.jsonl"
    rows = [{"filename": "0.png", "label": "cat"}, {"filename": "1.png", "label": "dog"}]
    manifest.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    args = ["import", "cli", str(root), "--manifest", str(manifest), "--labels-as", "validation"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "imported 2 validation labels: cat 1, dog 1" in result.output
    # The progress bar counts images, not the manifest.
    assert "3/3" in result.output
    with env.app.state.session_factory() as session:
        known = dict(session.execute(select(Item.filename, Item.known_label)).all())
    assert known == {"0.png": "cat", "1.png": "dog", "2.png": None}

    bad = tmp_path / "bad.csv"
    bad.write_text("0.png,cat\n9.png,dog\n")
    refused = runner.invoke(cli, ["import", "cli", str(root), "--manifest", str(bad)])
    assert refused.exit_code == 1
    assert "9.png: listed in bad.csv:2 but not among the files imported" in refused.output
    assert "nothing was imported" in refused.output


def test_cli_progress_counts_images_not_labels_csv(env: Api, tmp_path: Path) -> None:
    env.project("cli")
    root = tmp_path / "v"
    root.mkdir()
    (root / "a.png").write_bytes(png_bytes(1))
    (root / "b.png").write_bytes(png_bytes(2))
    (root / "labels.csv").write_text("a.png,cat\n")
    result = runner.invoke(cli, ["import", "cli", str(root)])
    assert result.exit_code == 0, result.output
    assert "2/2" in result.output and "3/3" not in result.output


def test_cli_project_create(env: Api) -> None:
    result = runner.invoke(
        cli, ["project", "create", "birds", "--classes", "robin, wren,jay", "--strategy", "bald"]
    )
    assert result.exit_code == 0, result.output
    pid = int(result.stdout.strip().splitlines()[-1])
    project = env.get(f"/api/v1/projects/{pid}").json()
    assert (project["name"], project["classes"], project["strategy"]) == (
        "birds",
        ["robin", "wren", "jay"],
        "bald",
    )
    assert "retrain_every: 10" in result.output
    again = runner.invoke(cli, ["project", "create", "birds", "--classes", "a,b"])
    assert again.exit_code == 1 and "already exists" in again.output
    bad = runner.invoke(cli, ["project", "create", "x", "--classes", "only"])
    assert bad.exit_code == 2 and "classes" in bad.output
    with env.app.state.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Round)) == 0

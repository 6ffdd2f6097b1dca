"""Bring your own embeddings (issue 17): vectors keyed by file name or sha256, through the API
and the CLI; every problem is a 422 that lists it and writes nothing, and coverage is always
reported."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from app.cli import cli
from core.embeddings import EmbeddingSpace, EmbeddingStore, imported_space_key
from core.tables import Item, Round, RoundStatus
from tests.app.conftest import Api, png_bytes

runner = CliRunner()

NAMES = ["cat/1.png", "cat/2.png", "dog/1.png", "bird/4.png"]


def _images(api: Api, **project: Any) -> tuple[int, dict[str, int], dict[str, str]]:
    """A project with four images: its id, item ids by file name, sha256 by file name."""
    pid = api.project(**project)["id"]
    files = [(name, png_bytes(seed)) for seed, name in enumerate(NAMES)]
    response = api.upload(pid, files)
    assert response.status_code == 200, response.text
    items = api.get(f"/api/v1/projects/{pid}/items").json()["items"]
    ids = {item["filename"]: item["id"] for item in items}
    shas = {name: hashlib.sha256(data).hexdigest() for name, data in files}
    return pid, ids, shas


def _npz(keys: list[str], vectors_N_D: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, keys=np.array(keys), vectors=vectors_N_D)
    return buffer.getvalue()


def _parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _import(api: Api, pid: int, name: str, data: bytes, **params: Any) -> httpx.Response:
    query = {key: str(value).lower() for key, value in params.items()}
    return api.post(
        f"/api/v1/projects/{pid}/embeddings",
        params=query,
        files={"file": (name, data, "application/octet-stream")},
    )


def _space(api: Api, pid: int) -> EmbeddingSpace:
    """A fresh view of the project's imported space, as another process (the worker) has."""
    return EmbeddingStore(api.app.state.settings.embedding_dir).space(imported_space_key(pid))


def _vectors(n: int, dim: int, start: float = 0.0) -> np.ndarray:
    return (start + np.arange(n * dim, dtype=np.float32)).reshape(n, dim)


def test_vectors_by_file_name_then_by_sha256_cover_the_project_in_parts(api: Api) -> None:
    pid, ids, shas = _images(api)
    first = _vectors(3, 4)

    response = _import(api, pid, "part1.npz", _npz(NAMES[:3], first))

    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["imported"], report["dimension"], report["problems"]) == (3, 4, [])
    assert report["coverage"] == {
        "items": 4,
        "covered": 3,
        "uncovered": 1,
        "uncovered_items": [{"id": ids["bird/4.png"], "filename": "bird/4.png"}],
    }
    found = _space(api, pid).get([shas[name] for name in NAMES[:3]])
    assert found.missing == [] and found.vectors_N_D.tolist() == first.tolist()

    # The last item by its sha256 (any case), in a second file: the first part stays.
    last = _vectors(1, 4, start=100)
    response = _import(api, pid, "part2.npz", _npz([shas["bird/4.png"].upper()], last))

    assert response.status_code == 200, response.text
    assert response.json()["coverage"]["uncovered"] == 0
    summary = api.get(f"/api/v1/projects/{pid}/embeddings").json()
    assert (summary["dimension"], summary["vectors"]) == (4, 4)
    assert summary["coverage"]["covered"] == 4
    assert _space(api, pid).get([shas["bird/4.png"]]).vectors_N_D.tolist() == last.tolist()
    # Under the key the worker reads them by (worker.round.embed: the item's file_key).
    with api.app.state.session_factory() as session:
        worker_keys = list(session.scalars(select(Item.file_key).where(Item.project_id == pid)))
    assert len(worker_keys) == 4 and _space(api, pid).get(worker_keys).missing == []


def _two_items_named_alike(api: Api, pid: int) -> None:
    for seed in (50, 51):  # different bytes, so two items with one file name
        assert api.upload(pid, [("same.png", png_bytes(seed))]).status_code == 200


@pytest.mark.parametrize(
    ("keys", "vectors", "key", "problem"),
    [
        (NAMES[:2], np.array([[1, 2, 3], [np.nan, 0, 0]]), "cat/2.png", "not finite"),
        (NAMES[:2], np.array([[1, 2, 3], [np.inf, 0, 0]]), "cat/2.png", "not finite"),
        (["cat/1.png", "cat/9.png"], np.ones((2, 3)), "cat/9.png", "names no item"),
        (["cat/1.png", "cat/1.png"], np.ones((2, 3)), "cat/1.png", "given twice (rows 0 and 1)"),
        (["same.png"], np.ones((1, 3)), "same.png", "names 2 items"),
    ],
    ids=["nan", "inf", "unknown-key", "duplicate-key", "ambiguous-name"],
)
def test_a_bad_key_or_vector_is_a_422_naming_it_and_nothing_is_written(
    api: Api, keys: list[str], vectors: np.ndarray, key: str, problem: str
) -> None:
    pid, _, _ = _images(api)
    _two_items_named_alike(api, pid)

    response = _import(api, pid, "bad.npz", _npz(keys, vectors))

    assert response.status_code == 422, response.text
    body = response.json()
    assert "Nothing was imported: 1 problem(s)" in body["detail"]
    assert body["errors"] == [] and body["problem_count"] == 1
    assert [(p["key"], problem in p["reason"]) for p in body["problems"]] == [(key, True)]
    assert len(_space(api, pid)) == 0 and _space(api, pid).dim is None


def test_two_keys_for_one_item_and_every_problem_of_a_file_are_listed(api: Api) -> None:
    pid, ids, shas = _images(api)
    keys = ["cat/1.png", shas["cat/1.png"], "nope.png", "dog/1.png"]
    vectors = np.ones((4, 2))
    vectors[3, 1] = np.nan

    body = _import(api, pid, "bad.npz", _npz(keys, vectors)).json()

    cat = ids["cat/1.png"]
    assert [(p["key"], p["reason"]) for p in body["problems"]] == [
        (shas["cat/1.png"], f"item {cat} (cat/1.png) already has a vector, by 'cat/1.png'"),
        ("nope.png", "names no item of the project (neither a file name nor a sha256)"),
        ("dog/1.png", "vector is not finite (NaN or inf)"),
    ]
    assert "3 problem(s) in 'bad.npz'" in body["detail"]
    assert len(_space(api, pid)) == 0


def test_another_dimension_needs_replace_which_clears_the_old_vectors(api: Api) -> None:
    pid, _, shas = _images(api)
    assert _import(api, pid, "v1.npz", _npz(NAMES, _vectors(4, 4))).status_code == 200

    refused = _import(api, pid, "v2.npz", _npz(NAMES[:2], _vectors(2, 6)))

    assert refused.status_code == 422
    [problem] = refused.json()["problems"]
    assert problem["key"] is None
    assert problem["reason"].startswith("vectors of dimension 6 do not fit the 4 of the project's")
    assert _space(api, pid).dim == 4 and len(_space(api, pid)) == 4

    replaced = _import(api, pid, "v2.npz", _npz(NAMES[:2], _vectors(2, 6)), replace=True)

    assert replaced.status_code == 200, replaced.text
    report = replaced.json()
    assert (report["replaced"], report["imported"], report["dimension"]) == (4, 2, 6)
    assert report["coverage"]["uncovered"] == 2  # the old vectors of the other two are gone
    space = _space(api, pid)
    assert (space.dim, len(space)) == (6, 2)
    assert space.missing([shas[name] for name in NAMES]) == [shas["dog/1.png"], shas["bird/4.png"]]


def test_a_dry_run_reports_coverage_and_problems_and_writes_nothing(api: Api) -> None:
    pid, _, _ = _images(api)

    dry = _import(api, pid, "v.npz", _npz(NAMES[:1], _vectors(1, 3)), dry_run=True)

    assert dry.status_code == 200, dry.text
    report = dry.json()
    assert report["dry_run"] is True and report["imported"] == 1
    assert (report["coverage"]["covered"], report["coverage"]["uncovered"]) == (1, 3)
    assert len(_space(api, pid)) == 0

    bad = _import(api, pid, "v.npz", _npz(["ghost.png"], _vectors(1, 3)), dry_run=True).json()

    assert bad["imported"] == 0 and bad["problem_count"] == 1
    assert bad["problems"] == [
        {
            "key": "ghost.png",
            "reason": "names no item of the project (neither a file name nor a sha256)",
        }
    ]
    assert bad["coverage"]["covered"] == 0 and len(_space(api, pid)) == 0


def test_parquet_with_a_vector_column_or_one_column_per_dimension(api: Api) -> None:
    pid, _, shas = _images(api)
    lists = pa.table({"key": NAMES[:2], "vector": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]})

    assert _import(api, pid, "lists.parquet", _parquet(lists)).status_code == 200

    columns = pa.table({"key": NAMES[2:], "d0": [7.0, 10.0], "d1": [8, 11], "d2": [9.0, 12.0]})
    response = _import(api, pid, "columns.parquet", _parquet(columns))

    assert response.status_code == 200, response.text
    found = _space(api, pid).get([shas[name] for name in NAMES])
    assert found.vectors_N_D.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]]

    ragged = pa.table({"key": NAMES[:3], "vector": [[1.0, 2.0], [3.0, 4.0], [5.0]]})
    refused = _import(api, pid, "ragged.parquet", _parquet(ragged), replace=True)

    assert refused.status_code == 422
    assert [(p["key"], p["reason"]) for p in refused.json()["problems"]] == [
        ("dog/1.png", "1 values where the file's other vectors have 2")
    ]
    assert _space(api, pid).dim == 3  # replace refused too: the old vectors stay


def test_a_structured_npy_imports_and_other_files_are_refused_naming_the_formats(
    api: Api,
) -> None:
    pid, _, shas = _images(api)
    records = np.empty(2, dtype=[("key", "U100"), ("vector", "f4", (5,))])
    records["key"], records["vector"] = NAMES[:2], _vectors(2, 5)
    buffer = io.BytesIO()
    np.save(buffer, records)

    assert _import(api, pid, "v.npy", buffer.getvalue()).status_code == 200
    assert _space(api, pid).get([shas["cat/2.png"]]).vectors_N_D.tolist() == [
        [5.0, 6.0, 7.0, 8.0, 9.0]
    ]

    pickled = io.BytesIO()
    np.savez(pickled, keys=np.array(NAMES[:1], dtype=object), vectors=np.ones((1, 5)))
    plain = io.BytesIO()
    np.save(plain, np.ones((2, 5)))
    for name, data, message in [
        ("v.csv", b"key,a\n", "send .npz (arrays keys and vectors), .npy"),
        ("v.npz", pickled.getvalue(), "keys holds Python objects, which are never unpickled"),
        ("v.npy", plain.getvalue(), "a plain array has no keys"),
        ("v.npz", b"not a zip", "is not a .npz file"),
        ("v.npz", _npz([], np.zeros((0, 5))), "the file holds no vectors"),
    ]:
        response = _import(api, pid, name, data)
        assert response.status_code == 422, (name, response.text)
        assert message in response.json()["problems"][0]["reason"], response.text
    assert len(_space(api, pid)) == 2


def test_a_file_that_would_unpack_past_the_limit_is_refused_before_it_is_read(
    small_limit_api: Api,
) -> None:
    pid, _, _ = _images(small_limit_api)
    bomb = io.BytesIO()  # 8 kB that unpack to 8 MB, against a 10 kB upload limit
    np.savez_compressed(bomb, keys=np.array(NAMES[:1]), vectors=np.zeros((1, 1_000_000)))

    response = _import(small_limit_api, pid, "bomb.npz", bomb.getvalue())

    assert response.status_code == 422
    reason = response.json()["problems"][0]["reason"]
    assert reason.startswith("its arrays unpack to 8000") and reason.endswith("bytes, over 20000")
    assert len(_space(small_limit_api, pid)) == 0


def test_an_import_into_an_embeddings_project_queues_a_round(api: Api) -> None:
    pid, _, _ = _images(api, name="byo", network="embeddings")
    # The upload queued a round (to embed the new images); while it waits, it is the one
    # that will read the vectors.
    [upload_round] = api.get(f"/api/v1/projects/{pid}/rounds").json()
    waiting = _import(api, pid, "v.npz", _npz(NAMES[:2], _vectors(2, 8))).json()
    assert waiting["round_queued"] is None
    assert waiting["notes"] == [
        "a round is already queued or running: the next to start reads the vectors"
    ]
    with api.app.state.session_factory() as session:  # as a worker would finish it
        session.get_one(Round, upload_round["id"]).status = RoundStatus.done
        session.commit()

    report = _import(api, pid, "v.npz", _npz(NAMES[2:], _vectors(2, 8))).json()

    assert report["round_queued"] is not None and report["notes"] == []
    rounds = api.get(f"/api/v1/projects/{pid}/rounds").json()
    assert [(r["id"], r["trigger"]) for r in rounds] == [
        (report["round_queued"], "embeddings"),
        (upload_round["id"], "upload"),
    ]


def test_only_admins_import_or_read_embeddings_and_other_networks_get_a_note(api: Api) -> None:
    pid, _, _ = _images(api)
    token = api.user("ann", projects=[pid])

    denied = api.post(
        f"/api/v1/projects/{pid}/embeddings",
        token,
        files={"file": ("v.npz", _npz(NAMES, _vectors(4, 2)))},
    )
    assert denied.status_code == 403
    assert api.get(f"/api/v1/projects/{pid}/embeddings", token).status_code == 403

    report = _import(api, pid, "v.npz", _npz(NAMES, _vectors(4, 2))).json()
    assert report["round_queued"] is None
    assert report["notes"] == [
        "the project's network is 'mnist_cnn': its rounds learn on imported vectors only "
        "with network 'embeddings'"
    ]


# --- the command line ---------------------------------------------------------------------


@pytest.fixture
def env(api: Api, monkeypatch: pytest.MonkeyPatch) -> Api:
    """Point the CLI (which reads NEXTLABEL_* variables) at the test's database."""
    settings = api.app.state.settings
    monkeypatch.setenv("NEXTLABEL_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("NEXTLABEL_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("NEXTLABEL_LOG_LEVEL", "WARNING")
    return api


def test_the_command_imports_reports_coverage_and_refuses_with_the_problems(
    env: Api, tmp_path: Path
) -> None:
    pid, ids, shas = _images(env, name="cli")
    good = tmp_path / "vectors.npz"
    good.write_bytes(_npz(NAMES[:3], _vectors(3, 4)))

    dry = runner.invoke(cli, ["import-embeddings", "cli", str(good), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would import 3 vectors of dimension 4" in dry.output
    assert len(_space(env, pid)) == 0

    result = runner.invoke(cli, ["import-embeddings", str(pid), str(good)])
    assert result.exit_code == 0, result.output
    assert "imported 3 vectors of dimension 4" in result.output
    assert "coverage: 3 of 4 items have a vector" in result.output
    assert f"item {ids['bird/4.png']}: bird/4.png" in result.output
    assert len(_space(env, pid)) == 3

    bad = tmp_path / "bad.npz"
    bad.write_bytes(_npz(["bird/4.png", "ghost.png"], _vectors(2, 4)))
    refused = runner.invoke(cli, ["import-embeddings", "cli", str(bad)])
    assert refused.exit_code == 1
    assert "ghost.png: names no item of the project" in refused.output
    assert "error: Nothing was imported: 1 problem(s) in 'bad.npz'" in refused.output
    assert _space(env, pid).missing([shas["bird/4.png"]]) == [shas["bird/4.png"]]

    wrong = runner.invoke(cli, ["import-embeddings", "cli", str(tmp_path / "x.csv")])
    assert wrong.exit_code == 2  # typer: no such file


def test_deleting_a_project_deletes_its_imported_vectors_and_its_models(api: Api) -> None:
    from core.storage import ModelStore

    pid, _, shas = _images(api, network="embeddings")
    assert _import(api, pid, "v.npz", _npz(NAMES, _vectors(4, 4))).status_code == 200
    models = ModelStore(api.app.state.settings.model_dir)
    models.put(pid, 1, model=b"weights", card=b"{}")  # as a round of the project saved one

    assert api.delete(f"/api/v1/projects/{pid}").status_code == 204

    assert len(_space(api, pid)) == 0 and _space(api, pid).get([shas[NAMES[0]]]).missing
    assert models.round_ids(pid) == []

"""The round's trained model, exported (issue 18): a real round on real digits saves it, the
API serves it as a zip over HTTP, and torch alone reproduces the round's predictions.

The round runs in-process (worker.round.run_round on SQLite, as in test_pipeline.py); the
API is a real app on the same data directory behind a live server, read through the public
client. The model is read with `torch.jit.load` and fed images decoded with Pillow and numpy
from the card's preprocessing, nothing of nextlabel's.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import typing
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from fastapi import FastAPI
from PIL import Image
from round_support import (
    DigitsProject,
    add_labels,
    balanced_pool_ids,
    child_env,
    queue_round,
    round_row,
)
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from app.cli import cli
from app.main import create_app
from app.services.annotators import create_annotator
from app.services.export import ExportKind
from core import storage
from core.settings import Settings
from core.storage import MODEL_CARD_FILE, MODEL_FILE, ModelStore
from core.tables import Role
from nextlabel_client import ApiError, Client
from nextlabel_client.models import ExportFormat
from tests.app.conftest import serving
from worker.round.artifact import CHECK_ITEMS, MODEL_NOT_SAVED_NOTE
from worker.round.run import WorkerContext, round_seed, run_round

MODEL_ROUND_HEADER = "X-Model-Round"
CHECKED_ITEMS = 20
# Stored probabilities are rounded to 6 decimals; the model on the CPU agrees to ~1e-7.
ATOL = 1e-5


@pytest.fixture
def wk_app(wk_context: WorkerContext, wk_settings: Settings) -> FastAPI:
    """The API on the worker's data directory and database (no worker of its own)."""
    settings = Settings(
        environment="test",
        data_dir=wk_settings.data_dir,
        database_url=wk_settings.resolved_database_url,
        broker_url=wk_settings.resolved_broker_url,
        embedded_worker=False,
        log_level="WARNING",
    )
    return create_app(settings)


class LastAnswer:
    """The headers of the client's last answer (its methods return the body only)."""

    def __init__(self) -> None:
        self.headers = httpx.Headers()

    def __call__(self, response: httpx.Response) -> None:
        self.headers = response.headers


@pytest.fixture
def last_answer() -> LastAnswer:
    return LastAnswer()


@pytest.fixture
def admin(wk_app: FastAPI, last_answer: LastAnswer) -> Iterator[Client]:
    with wk_app.state.session_factory() as session:
        _, token = create_annotator(session=session, name="root", role=Role.admin)
    hooks = {"response": [last_answer]}
    with serving(wk_app) as url, Client(url, token, event_hooks=hooks) as client:
        yield client


def _trained_round(
    context: WorkerContext, session: Session, project: DigitsProject, per_class: int = 3
) -> int:
    """Label `per_class` items of each digit in all (more if earlier rounds labelled more),
    then run a round on them."""
    fresh = balanced_pool_ids(project, per_class=per_class)
    add_labels(session, project, [i for i in fresh if i not in project.labelled])
    round_id = queue_round(session, project.project_id)
    outcome = run_round(round_id, settings=context.settings, context=context)
    assert outcome.status == "done", outcome
    return round_id


def _unzip(data: bytes, into: Path) -> tuple[Path, dict[str, Any]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert sorted(archive.namelist()) == sorted([MODEL_FILE, MODEL_CARD_FILE])
        archive.extractall(into)
    return into / MODEL_FILE, json.loads((into / MODEL_CARD_FILE).read_text())


def _decode(data: bytes, preprocessing: dict[str, Any]) -> np.ndarray:
    """[C, H, W] float32 in [0, 1], following the card's recipe with Pillow and numpy."""
    mode, size = preprocessing["mode"], preprocessing["image_size"]
    with Image.open(io.BytesIO(data)) as opened:
        opened.draft(mode, (size, size))
        image = opened.convert(mode)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8).astype(np.float32) / 255
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _predictions(admin: Client, project_id: int) -> dict[int, dict[str, Any]]:
    lines = admin.export(project_id, "predictions", as_="jsonl").decode().splitlines()
    rows = (json.loads(line) for line in lines)
    return {row["item_id"]: row for row in rows if row["probabilities"] is not None}


def _export_model(admin: Client, last_answer: LastAnswer, project_id: int) -> tuple[int, bytes]:
    """(the round the export names in its header, the zip)."""
    data = admin.export(project_id, "model")
    assert last_answer.headers["content-type"] == "application/zip"
    return int(last_answer.headers[MODEL_ROUND_HEADER]), data


# --------------------------------------------------------------------------- reproduction


def test_the_exported_model_reproduces_the_rounds_predictions_with_torch_alone(
    wk_context: WorkerContext,
    wk_session: Session,
    wk_digits: Callable[..., DigitsProject],
    admin: Client,
    last_answer: LastAnswer,
    tmp_path: Path,
) -> None:
    project = wk_digits(pool=120, validation=60, strategy="batchbald", query_size=5)
    round_id = _trained_round(wk_context, wk_session, project)
    rnd = round_row(wk_session, round_id)
    assert rnd is not None and rnd.metrics["note"] is None

    served_round, data = _export_model(admin, last_answer, project.project_id)
    assert served_round == round_id
    model_path, card = _unzip(data, tmp_path / "export")

    model = torch.jit.load(str(model_path), map_location="cpu").eval()
    stored = _predictions(admin, project.project_id)
    item_ids = sorted(stored)[:CHECKED_ITEMS]
    assert len(item_ids) == CHECKED_ITEMS
    images = [_decode(admin.image(item_id), card["preprocessing"]) for item_id in item_ids]
    with torch.no_grad():
        probs_N_C = model(torch.from_numpy(np.stack(images))).numpy()
    classes = card["classes"]
    expected_N_C = np.array([[stored[i]["probabilities"][c] for c in classes] for i in item_ids])
    np.testing.assert_allclose(probs_N_C, expected_N_C, atol=ATOL, rtol=0)
    predicted = [classes[int(index)] for index in probs_N_C.argmax(axis=1)]
    assert predicted == [stored[i]["predicted"] for i in item_ids]

    # The card: whose model, which classes in which order, how to feed it, how good it was.
    assert card["format"] == "torchscript" and card["model_file"] == MODEL_FILE
    assert card["project"]["id"] == project.project_id
    assert card["round"] == {"id": round_id, "number": 1, "started_at": card["round"]["started_at"]}
    assert classes == [str(d) for d in range(10)] and card["network"] == "mnist_cnn"
    preprocessing = card["preprocessing"]
    assert (preprocessing["mode"], preprocessing["channels"]) == ("L", 1)
    assert preprocessing["image_size"] == 28 and "bilinear" in preprocessing["resize"]
    assert "/ 255" in preprocessing["scale"] and len(preprocessing["steps"]) >= 4
    outputs = card["outputs"]
    assert outputs["mc_samples"] == 10 == rnd.metrics["mc_samples"]
    assert outputs["mask_seed"] == round_seed(0, round_id)
    metrics = card["metrics"]
    for key in ("accuracy", "nll", "per_class_accuracy", "labels_used", "train_items"):
        assert metrics[key] == rnd.metrics[key], key
    assert metrics["labels_used"] == metrics["train_items"] == 30
    assert metrics["strategy"] == rnd.metrics["strategy"] == "batchbald"
    assert set(metrics["per_class_accuracy"]) <= set(classes)
    assert card["check"]["items"] == CHECK_ITEMS
    assert card["check"]["max_abs_difference"] < ATOL
    assert card["torch_version"] == torch.__version__ and card["created_at"]
    assert "torch.jit.load" in card["usage"]


def test_the_cards_usage_snippet_runs_in_a_fresh_python_with_torch_alone(
    wk_context: WorkerContext,
    wk_session: Session,
    wk_digits: Callable[..., DigitsProject],
    admin: Client,
    tmp_path: Path,
) -> None:
    project = wk_digits(pool=60, validation=20)
    _trained_round(wk_context, wk_session, project, per_class=2)
    folder = tmp_path / "export"
    _, card = _unzip(admin.export(project.project_id, "model"), folder)
    stored = _predictions(admin, project.project_id)
    item_id = min(stored)
    (folder / "image.png").write_bytes(admin.image(item_id))

    # No repository on the path: what the snippet needs must come from torch, Pillow, numpy.
    env = {k: v for k, v in child_env().items() if k != "PYTHONPATH"}
    ran = subprocess.run(
        [sys.executable, "-I", "-c", card["usage"]],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    predicted, confidence = ran.stdout.split()
    assert predicted == stored[item_id]["predicted"]
    assert float(confidence) == pytest.approx(stored[item_id]["confidence"], abs=ATOL)


# --------------------------------------------------------------------------- no model


def test_no_model_before_a_round_finished_nor_after_a_round_without_labels(
    wk_context: WorkerContext,
    wk_session: Session,
    wk_digits: Callable[..., DigitsProject],
    admin: Client,
) -> None:
    project = wk_digits(pool=30, validation=10)
    with pytest.raises(ApiError) as early:
        admin.export(project.project_id, "model")
    assert early.value.status_code == 409 and "No round has finished yet" in early.value.detail

    # A round before the first label trains nothing: it finishes, with no model to export.
    round_id = queue_round(wk_session, project.project_id)
    assert run_round(round_id, settings=wk_context.settings, context=wk_context).status == "done"
    with pytest.raises(ApiError) as untrained:
        admin.export(project.project_id, "model")
    assert untrained.value.status_code == 409
    assert "No finished round has a saved model" in untrained.value.detail

    with pytest.raises(ApiError) as missing:
        admin.export(project.project_id + 1000, "model")
    assert missing.value.status_code == 404


def test_a_round_whose_model_cannot_be_saved_finishes_and_says_so(
    wk_context: WorkerContext,
    wk_session: Session,
    wk_digits: Callable[..., DigitsProject],
    admin: Client,
) -> None:
    # A file where the models folder should be: saving fails as a full or read-only disk would.
    wk_context.settings.model_dir.write_bytes(b"not a folder")
    project = wk_digits(pool=60, validation=20)
    round_id = _trained_round(wk_context, wk_session, project, per_class=2)

    rnd = round_row(wk_session, round_id)
    assert rnd is not None and rnd.metrics["note"].startswith(f"{MODEL_NOT_SAVED_NOTE}: ")
    assert len(_predictions(admin, project.project_id)) > 0  # the round's work is all there
    with pytest.raises(ApiError) as refused:
        admin.export(project.project_id, "model")
    assert refused.value.status_code == 409


# --------------------------------------------------------------------------- which model


def test_the_newest_model_is_served_by_the_api_and_the_cli_and_older_ones_are_pruned(
    wk_context: WorkerContext,
    wk_session: Session,
    wk_digits: Callable[..., DigitsProject],
    admin: Client,
    last_answer: LastAnswer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setattr(storage, "MODELS_KEPT_PER_PROJECT", 1)
    models = ModelStore(wk_context.settings.model_dir)
    project = wk_digits(pool=80, validation=20)
    first = _trained_round(wk_context, wk_session, project, per_class=2)
    assert models.round_ids(project.project_id) == [first]
    second = _trained_round(wk_context, wk_session, project, per_class=3)

    assert models.round_ids(project.project_id) == [second]
    served_round, data = _export_model(admin, last_answer, project.project_id)
    assert served_round == second
    card = json.loads(zipfile.ZipFile(io.BytesIO(data)).read(MODEL_CARD_FILE))
    assert card["round"]["id"] == second and card["round"]["number"] == 2
    assert card["metrics"]["labels_used"] == 30

    # The CLI writes the same zip, byte for byte.
    settings = wk_context.settings
    monkeypatch.setenv("NEXTLABEL_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("NEXTLABEL_LOG_LEVEL", "WARNING")
    out = tmp_path / "model.zip"
    argv = ["export", str(project.project_id), "--format", "model", "--out", str(out)]
    result = CliRunner().invoke(cli, [*argv, "--data-dir", str(settings.data_dir)])
    assert result.exit_code == 0, result.output
    assert f"the model of round {second}" in result.stderr
    assert out.read_bytes() == data


def test_a_deleted_projects_model_is_never_served_to_the_project_given_its_ids(
    wk_context: WorkerContext,
    wk_session: Session,
    wk_digits: Callable[..., DigitsProject],
    admin: Client,
) -> None:
    gone = wk_digits(pool=60, validation=20)
    gone_round = _trained_round(wk_context, wk_session, gone, per_class=2)
    models = ModelStore(wk_context.settings.model_dir)
    old = models.get(gone.project_id, gone_round)
    assert old is not None
    left_behind = {"model": old.model_path.read_bytes(), "card": old.card_path.read_bytes()}
    admin.delete_project(gone.project_id)
    assert models.round_ids(gone.project_id) == []  # deleted with its project

    # SQLite hands the newest ids out again: the new project and its first round get them.
    project = wk_digits(pool=30, validation=10)
    round_id = queue_round(wk_session, project.project_id)
    assert (project.project_id, round_id) == (gone.project_id, gone_round)
    assert run_round(round_id, settings=wk_context.settings, context=wk_context).status == "done"
    # Even files left behind (a deletion that could not remove them) are not served: the
    # card names a round that started before this one.
    models.put(project.project_id, round_id, **left_behind)

    with pytest.raises(ApiError) as refused:
        admin.export(project.project_id, "model")
    assert refused.value.status_code == 409


def test_the_clients_export_formats_are_the_apis() -> None:
    assert set(typing.get_args(ExportFormat)) == set(typing.get_args(ExportKind))

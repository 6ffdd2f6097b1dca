"""The public client covers the API: every route has a method, and every method works.

Coverage is a comparison of two sets: the (method, path) pairs of the app's OpenAPI document
and the routes the client's methods are marked with (``Client.routes()``). A route added to
the API without a client method fails the first test. The second drives a real app over
HTTP through every client method, checking on the wire that each sent the route it is
marked with, so the marks cannot drift from what the methods do.
"""

from __future__ import annotations

import io
import re
import typing
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.services.annotators import create_annotator
from core.settings import Settings
from core.tables import Role
from nextlabel_client import ApiError, Client, Route, route_of
from nextlabel_client import models as client_models
from tests.app.conftest import png_bytes, serving, zip_bytes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    settings = Settings(
        environment="test",
        data_dir=tmp_path / "data",
        broker_url=None,
        embedded_worker=False,
        log_level="WARNING",
    )
    return create_app(settings)


def served_routes(app: FastAPI) -> set[Route]:
    return {
        Route(method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }


def test_every_route_of_the_api_has_a_client_method(app: FastAPI) -> None:
    served = served_routes(app)
    covered = set(Client.routes().values())
    assert sorted(served - covered) == [], "routes without a client method"
    assert sorted(covered - served) == [], "client methods for routes the API does not have"


@pytest.mark.parametrize(
    ("alias", "schema"),
    [
        ("Role", "Role"),
        ("Split", "Split"),
        ("RoundStatus", "RoundStatus"),
        ("WebhookEvent", "WebhookEvent"),
        ("DeliveryStatus", "DeliveryStatus"),
        ("LabelUse", "LabelUse"),
    ],
)
def test_the_clients_choices_are_the_apis(app: FastAPI, alias: str, schema: str) -> None:
    """A value the API may send that the client's Literal lacks would fail to parse."""
    served = app.openapi()["components"]["schemas"][schema]["enum"]
    assert set(typing.get_args(getattr(client_models, alias))) == set(served)


# --- the live scenario ------------------------------------------------------------------


@pytest.fixture
def base_url(app: FastAPI) -> Iterator[str]:
    with serving(app) as url:
        yield url


class Wire:
    """Calls client methods, checking that each sent only the route it is marked with."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.called: set[str] = set()

    def hook(self, request: httpx.Request) -> None:
        self.sent.append((request.method, request.url.path))

    def __call__(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.sent.clear()
        result = method(*args, **kwargs)
        if isinstance(result, Iterator):
            result = list(result)
        marked = route_of(method)
        path = re.compile("^" + re.sub(r"\{[^}/]+\}", "[^/]+", marked.path) + "$")
        assert self.sent, f"{method.__name__} sent nothing"
        for sent_method, sent_path in self.sent:
            assert sent_method == marked.method and path.match(sent_path), (
                f"{method.__name__} is marked {marked} but sent {sent_method} {sent_path}"
            )
        self.called.add(method.__name__)
        return result


@pytest.fixture
def wire() -> Wire:
    return Wire()


@pytest.fixture
def admin(app: FastAPI, base_url: str, wire: Wire) -> Iterator[Client]:
    with app.state.session_factory() as session:
        _, token = create_annotator(session=session, name="root", role=Role.admin)
    with Client(base_url, token, event_hooks={"request": [wire.hook]}) as client:
        yield client


def test_every_client_method_works_against_a_live_service(
    admin: Client, wire: Wire, tmp_path: Path
) -> None:
    # The service.
    assert wire(admin.health).status == "ok"
    assert wire(admin.readiness).checks["database"] == "ok"
    assert "nextlabel" in wire(admin.prometheus_metrics)
    catalog = wire(admin.catalog)
    assert "batchbald" in catalog.names("strategies") and catalog.phases
    assert catalog.names("cold_starts") == ["typiclust", "probcover", "random"]
    assert wire(admin.me).role == "admin"

    # A project and a member.
    project = wire(admin.create_project, "animals", ["cat", "dog", "bird"], query_size=5)
    assert project.classes == ["cat", "dog", "bird"] and project.query_size == 5
    assert [p.id for p in wire(admin.list_projects)] == [project.id]
    assert wire(admin.update_project, project.id, retrain_every=3).retrain_every == 3
    assert wire(admin.project, project.id).counts.items == 0
    member = wire(admin.create_annotator, "ann")
    assert member.token and member.role == "annotator"
    assert {a.name for a in wire(admin.list_annotators)} == {"root", "ann"}
    assert project.id in wire(admin.add_member, project.id, member.id).project_ids
    wire(admin.remove_member, project.id, member.id)

    # Items: three PNGs (a dry run first, which writes nothing), then a zip.
    pngs = [(f"img{seed}.png", png_bytes(seed)) for seed in range(3)]
    dry = wire(admin.upload, project.id, pngs, dry_run=True)
    assert dry.dry_run and dry.new_items == 3 and dry.created == []
    report = wire(admin.upload, project.id, pngs, labels_as="training", skip_problems=True)
    assert len(report.created) == 3 and report.skipped == []
    zipped = wire(admin.upload_zip, project.id, "more.zip", zip_bytes({"a.png": png_bytes(9)}))
    assert len(zipped.created) == 1
    page = wire(admin.list_items, project.id, "unlabelled", limit=2)
    assert len(page.items) == 2 and page.next_cursor is not None
    assert len(wire(admin.iter_items, project.id, "unlabelled", page_size=1)) == 4
    assert wire(admin.item, report.created[0]).filename == "img0.png"
    assert wire(admin.image, report.created[0]).startswith(PNG_SIGNATURE)

    # Embeddings: vectors for three of the four images, by file name.
    vectors = io.BytesIO()
    np.savez(vectors, keys=[name for name, _ in pngs], vectors=np.eye(3, 4, dtype=np.float32))
    imported = wire(admin.import_embeddings, project.id, ("vectors.npz", vectors.getvalue()))
    assert (imported.imported, imported.dimension, imported.coverage.uncovered) == (3, 4, 1)
    assert [item.filename for item in imported.coverage.uncovered_items] == ["a.png"]
    assert wire(admin.embeddings, project.id).vectors == 3

    # Labelling: next, a label replayed with its key, undo, skip, a lease given back.
    first, second = wire(admin.next_items, project.id, n=2)
    item_id = first.item.id
    label = wire(admin.label, item_id, "cat", ms_spent=1200, idempotency_key="key-1")
    replay = wire(admin.label, item_id, "cat", ms_spent=1200, idempotency_key="key-1")
    assert (replay.id, replay.label) == (label.id, "cat")
    assert wire(admin.undo_label, item_id).id == label.id
    assert wire(admin.skip, second.item.id).skipped
    wire(admin.unskip, second.item.id)
    wire(admin.release_lease, second.item.id)
    kept = wire(admin.label, item_id, "dog")
    assert kept.id != label.id

    # Rounds and metrics.
    started = wire(admin.start_round, project.id)
    assert started.status == "queued"
    assert [r.id for r in wire(admin.rounds, project.id)] == [started.id]
    assert wire(admin.round, started.id).queue == []
    metrics = wire(admin.metrics, project.id)
    assert metrics.totals.labelled == 1 and metrics.label_counts.get("dog") == 1

    # Export.
    csv_text = wire(admin.export_csv, project.id)
    header, row = csv_text.strip().splitlines()  # one label
    assert "label" in header and "dog" in row
    assert b'"dog"' in wire(admin.export, project.id, "jsonl")
    folder = zipfile.ZipFile(io.BytesIO(wire(admin.export, project.id, "imagefolder")))
    assert any("/dog/" in name for name in folder.namelist()), folder.namelist()
    written = wire(admin.export_to, project.id, tmp_path / "labels.json", "json")
    assert written == (tmp_path / "labels.json").stat().st_size > 0

    # Webhooks.
    hook = wire(admin.create_webhook, project.id, "http://127.0.0.1:9/hook", ["round.done"])
    assert hook.secret and hook.events == ["round.done"]
    assert [h.id for h in wire(admin.webhooks, project.id)] == [hook.id]
    assert wire(admin.deliveries, hook.id, limit=10) == []
    wire(admin.delete_webhook, project.id, hook.id)
    assert admin.webhooks(project.id) == []

    wire(admin.delete_project, project.id)
    assert wire.called == set(Client.routes()), "client methods the scenario left out"


def test_errors_carry_the_status_and_the_apis_detail(admin: Client) -> None:
    with pytest.raises(ApiError) as refused:
        admin.create_project("one class", ["cat"])
    assert refused.value.status_code == 422
    assert refused.value.detail and refused.value.errors[0]["loc"][:2] == ["body", "classes"]

    with pytest.raises(ApiError) as missing:
        admin.project(999)
    assert missing.value.status_code == 404 and missing.value.detail

    project = admin.create_project("animals", ["cat", "dog"])
    with pytest.raises(ApiError) as early:
        admin.export(project.id, "predictions")
    assert early.value.status_code == 409 and "round" in early.value.detail

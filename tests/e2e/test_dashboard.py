"""The admin dashboard in real Chromium: the learning curve after a real round, and the forms."""

from __future__ import annotations

import base64
import csv
import io
import zipfile
from collections.abc import Callable
from dataclasses import replace

import pytest
from browser_support import (
    PHONE,
    Api,
    Console,
    Project,
    Server,
    digit_pngs,
    screenshot,
    wait_for_next_image,
)
from playwright.sync_api import Page, expect

from worker.engine.training import TrainConfig
from worker.round.run import WorkerContext, run_round

pytestmark = pytest.mark.browser

LABELS_BEFORE_ROUND = 12
# The test is about the dashboard showing a real round, not about the model: a short
# schedule keeps the round to seconds on a shared 2-core machine.
SHORT_TRAINING = TrainConfig(min_steps=10, max_epochs=2, patience=1)
THUMBNAILS_LOADED = """() => {
    const images = [...document.querySelectorAll('#queue img')];
    return images.length > 0 && images.every(img => img.complete && img.naturalWidth === 28);
}"""


def label_truthfully(project: Project, server: Server, count: int) -> None:
    """The annotator labels `count` served items with their true digits, through the API."""
    annotator = Api(server.url, project.annotator_token)
    served = annotator("GET", f"/projects/{project.id}/next", params={"n": count})
    assert len(served) == count
    for entry in served:
        digit = project.digit_of(entry["item"]["filename"])
        annotator("POST", f"/items/{entry['item']['id']}/labels", json={"label": str(digit)})


def test_dashboard_shows_the_learning_curve_after_a_round_has_completed(
    make_project: Callable[..., Project],
    open_page: Callable[..., tuple[Page, Console]],
    server: Server,
    admin_token: str,
) -> None:
    # retrain_every is high so the only round is the one this test starts and runs.
    project = make_project(pool=30, validation=20, retrain_every=1000, mc_samples=8)
    label_truthfully(project, server, LABELS_BEFORE_ROUND)
    labeller, _ = open_page(token=project.annotator_token)
    labeller.goto("/")
    before = wait_for_next_image(labeller, None)
    expect(labeller.locator("#why")).to_contain_text("Random order")

    admin = Api(server.url, admin_token)
    started = admin("POST", f"/projects/{project.id}/rounds")
    # The round runs here, in the test process, through the same function the Celery task
    # calls; only its training schedule is shortened.
    context = replace(WorkerContext.from_settings(server.settings()), train_config=SHORT_TRAINING)
    outcome = run_round(started["id"], settings=server.settings(), context=context)
    assert outcome.status == "done", outcome
    curve = admin.metrics(project.id)["learning_curve"]
    assert [point["round_id"] for point in curve] == [started["id"]]
    assert curve[0]["labels_used"] == LABELS_BEFORE_ROUND

    page, console = open_page(token=admin_token)
    page.goto(f"/dashboard?project={project.id}")
    expect(page.locator("#learning-curve canvas").first).to_be_visible()
    expect(page.locator("#curve-empty")).to_be_hidden()
    expect(page.locator("#curve-table tbody tr")).to_have_count(1)
    expect(page.locator("#curve-table tbody tr td").nth(1)).to_have_text(str(LABELS_BEFORE_ROUND))
    done = page.locator(f"#rounds tbody tr[data-round='{started['id']}']")
    expect(done.locator(".badge")).to_have_text("done")
    expect(done.locator(".phase-bar span")).not_to_have_count(0)
    expect(page.locator("#class-counts .count")).to_have_count(10)
    expect(page.locator("#annotator-counts tbody")).to_contain_text(str(LABELS_BEFORE_ROUND))
    expect(page.locator("#tile-model")).to_contain_text("%")
    figures = page.locator("#queue figure")
    expect(figures).not_to_have_count(0)
    page.wait_for_function(THUMBNAILS_LOADED)
    screenshot(page, "dashboard", full_page=True)

    # The annotator's open page announces the model and serves the round's queue next.
    expect(labeller.get_by_text(f"New model from round {started['id']}")).to_be_visible(
        timeout=20_000
    )
    labeller.wait_for_function(
        "round => nextlabel.buffer.length && nextlabel.buffer[0].round === round"
        " && nextlabel.buffer[0].loaded",
        arg=started["id"],
    )
    labeller.keyboard.press("s")
    wait_for_next_image(labeller, before)
    expect(labeller.locator("#guess-label")).to_be_visible()
    expect(labeller.locator("#guess-confidence")).to_contain_text("% confident")
    expect(labeller.locator("#why")).to_contain_text(f"#{started['id']}")
    screenshot(labeller, "label-with-model")

    # Export through the UI: a Blob download fetched with the Bearer header.
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Export labels as CSV").click()
    exported = download_info.value
    assert exported.suggested_filename == f"{project.name}-labels.csv"
    rows = list(csv.DictReader(io.StringIO(exported.path().read_text())))
    assert len(rows) == LABELS_BEFORE_ROUND

    # Retrain now: the round is queued and the button says so until it has run.
    page.get_by_role("button", name="Retrain now: start a new round").click()
    expect(page.get_by_text("queued: the worker will train a new model")).to_be_visible()
    expect(page.locator("#retrain")).to_be_disabled()
    expect(page.locator("#rounds tbody tr[data-status='queued']")).to_have_count(1)

    phone, phone_console = open_page(token=admin_token, viewport=PHONE)
    phone.goto(f"/dashboard?project={project.id}")
    expect(phone.locator("#learning-curve canvas").first).to_be_visible()
    phone.wait_for_function(THUMBNAILS_LOADED)
    screenshot(phone, "dashboard-phone", full_page=True)
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert console.errors == [] and phone_console.errors == []


DROP = """files => {
    const transfer = new DataTransfer();
    for (const file of files) {
        const bytes = Uint8Array.from(atob(file.data), char => char.charCodeAt(0));
        transfer.items.add(new File([bytes], file.name, {type: file.type}));
    }
    return transfer;
}"""


def test_admin_creates_a_project_uploads_images_and_changes_settings(
    open_page: Callable[..., tuple[Page, Console]], server: Server, admin_token: str
) -> None:
    page, console = open_page(token=admin_token)
    page.goto("/dashboard")
    page.get_by_role("textbox", name="Name").first.fill("shapes from the UI")
    page.get_by_role("textbox", name="Classes").fill("circle\nsquare, triangle")
    page.get_by_role("button", name="Create project").click()
    expect(page.locator("#project-name")).to_have_text("shapes from the UI")
    project_id = int(page.url.split("project=")[1])
    admin = Api(server.url, admin_token)
    assert admin("GET", f"/projects/{project_id}")["classes"] == ["circle", "square", "triangle"]

    # Drag and drop five images and a file that is not an image.
    dropped = [
        {"name": name, "type": "image/png", "data": base64.b64encode(data).decode()}
        for name, data, _ in digit_pngs(5)
    ]
    dropped.append({"name": "notes.png", "type": "image/png", "data": "bm90IGFuIGltYWdl"})
    transfer = page.evaluate_handle(DROP, dropped)
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": transfer})
    expect(page.locator("#upload-summary")).to_have_text("5 images added, 1 skipped.")
    expect(page.locator("#skipped tbody tr")).to_have_count(1)
    expect(page.locator("#skipped")).to_contain_text("notes.png")
    expect(page.locator("#upload-meter")).to_have_attribute("style", "width: 100%;")

    # A zip through the file picker.
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        for name, data, _ in digit_pngs(3, offset=5):
            zipped.writestr(f"more/{name}", data)
    page.set_input_files(
        "#file-input",
        files=[{"name": "more.zip", "mimeType": "application/zip", "buffer": archive.getvalue()}],
    )
    expect(page.locator("#upload-summary")).to_have_text("3 images added.")
    expect(page.locator("#tile-items")).to_have_text("8")

    # Settings go through PATCH /projects/{pid}.
    page.get_by_label("Strategy").select_option("bald")
    page.get_by_label("Query size").fill("5")
    page.get_by_label("Retrain every").fill("25")
    page.get_by_label("MC samples").fill("16")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_text("Settings saved")).to_be_visible()
    saved = admin("GET", f"/projects/{project_id}")
    fields = ("strategy", "query_size", "retrain_every", "mc_samples")
    assert [saved[name] for name in fields] == ["bald", 5, 25, 16]
    # An out-of-range value is explained before anything is sent.
    page.get_by_label("Query size").fill("0")
    page.get_by_role("button", name="Save settings").click()
    expect(page.locator("#settings-error")).to_contain_text("Query size must be a whole number")

    # A new annotator: the token is shown once and they are a member of this project.
    page.get_by_role("textbox", name="New annotator").fill("ui-annotator")
    page.get_by_role("button", name="Create", exact=True).click()
    token = page.locator("#new-token-value").inner_text()
    me = Api(server.url, token)("GET", "/me")
    assert me["name"] == "ui-annotator" and project_id in me["project_ids"]
    expect(page.locator("#members")).to_contain_text("ui-annotator")
    screenshot(page, "dashboard-new-project", full_page=True)
    assert console.errors == []

"""Pretrained representations on the dashboard, in real Chromium (issue 17): the network, cold
start and near-duplicate settings in both project forms, the embedding progress panel, the
network column of the rounds table and the near-duplicates list, at desktop and phone width.

Rows the worker would write (embedding progress, a finished round, near-duplicate flags) are
written here through the database, as test_dashboard_states.py does: the server has no worker
and these tests are about what the dashboard shows, not about embedding.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from browser_support import OVERFLOW_REPORT, PHONE, Api, Console, Project, Server, screenshot
from playwright.sync_api import Page, Request, expect
from sqlalchemy import update
from sqlalchemy.orm import Session

from core.db import make_engine
from core.tables import EmbeddingProgress, Item, Round, RoundStatus, utcnow

pytestmark = pytest.mark.browser

SPACE = (
    "efficientnet_lite0/sha256:0123456789abcdef/224px/c3/bilinear"
    "/mean=0.485000,0.456000,0.406000/std=0.229000,0.224000,0.225000/v1"
)
PRETRAINED = "EfficientNet-Lite0 (pretrained)"
THUMBS_DRAWN = """() => {
    const images = [...document.querySelectorAll('#duplicates img')];
    return images.length > 0 && images.every((img) => img.complete && img.naturalWidth > 0);
}"""


@contextmanager
def database(server: Server) -> Iterator[Session]:
    engine = make_engine(server.settings().resolved_database_url)
    try:
        with Session(engine) as session, session.begin():
            yield session
    finally:
        engine.dispose()


def add_progress(server: Server, project_id: int, **fields: object) -> None:
    """The project's embedding row as a worker part-way through would leave it."""
    row = {
        "space_key": SPACE,
        "total": 200,
        "reused": 50,
        "embedded": 30,
        "failed": 0,
        "state": "embedding",
        "started_at": utcnow() - timedelta(seconds=10),
        **fields,
    }
    with database(server) as session:
        session.add(EmbeddingProgress(project_id=project_id, duplicates_checked_through=0, **row))


def add_embedding_round(server: Server, project_id: int) -> int:
    """A finished round on frozen features, its timings with an embed phase."""
    now = utcnow()
    with database(server) as session:
        done = Round(
            project_id=project_id,
            status=RoundStatus.done,
            trigger="manual",
            strategy="probcover",
            labels_used=0,
            metrics={"network": "efficientnet_lite0", "embedding_space": SPACE, "embedded_now": 30},
            timings={"load": 0.5, "embed": 20.0, "train": 2.0, "select": 0.5, "total": 23.0},
            started_at=now - timedelta(minutes=2),
            finished_at=now - timedelta(minutes=1),
        )
        session.add(done)
        session.flush()
        return done.id


def flag(server: Server, item_id: int, *, of: int, distance: float, skipped: bool) -> None:
    with database(server) as session:
        session.execute(
            update(Item)
            .where(Item.id == item_id)
            .values(
                near_duplicate_of=of, near_duplicate_distance=distance, duplicate_skipped=skipped
            )
        )


def test_a_project_made_on_the_form_keeps_its_network_cold_start_and_duplicate_policy(
    open_page: Callable[..., tuple[Page, Console]], server: Server, admin_token: str
) -> None:
    page, _ = open_page(token=admin_token)
    page.goto("/dashboard")
    form = page.locator("#create-project")
    form.locator("[name=name]").fill("pretrained-photos")
    form.locator("[name=classes]").fill("cat\ndog")
    form.locator("[name=image_size]").fill("64")
    form.locator("[name=image_channels]").select_option("3")
    # The choices come from the catalog, with the chosen one's description under them.
    form.locator("[name=network]").select_option("efficientnet_lite0")
    expect(form.locator("[data-network-note]")).to_contain_text("Frozen ImageNet features")
    expect(form.locator("[name=custom_weights]")).to_be_hidden()
    form.locator("[name=cold_start]").select_option("probcover")
    form.locator("[name=near_duplicates]").select_option("skip")
    form.locator("[name=near_duplicate_distance]").fill("0.05")
    form.locator("button[type=submit]").click()
    expect(page.locator("#project-name")).to_have_text("pretrained-photos")

    admin = Api(server.url, admin_token)
    (created,) = [p for p in admin("GET", "/projects") if p["name"] == "pretrained-photos"]
    stored = admin("GET", f"/projects/{created['id']}")
    assert (stored["network"], stored["cold_start"], stored["near_duplicates"]) == (
        "efficientnet_lite0",
        "probcover",
        "skip",
    )
    assert stored["near_duplicate_distance"] == pytest.approx(0.05)
    settings = page.locator("#settings")
    expect(settings.locator("[name=network]")).to_have_value("efficientnet_lite0")
    expect(settings.locator("[name=cold_start]")).to_have_value("probcover")
    expect(settings.locator("[name=near_duplicate_distance]")).to_have_value("0.05")
    expect(page.locator("#resolved-network")).to_have_text(f"Rounds use: {PRETRAINED}")

    # Back to "auto" from the settings: 64 px RGB resolves to the pretrained network, and
    # the dashboard says so; only what changed is sent.
    patches: list[str | None] = []

    def record(sent: Request) -> None:
        if sent.method == "PATCH":
            patches.append(sent.post_data)

    page.on("request", record)
    settings.locator("[name=network]").select_option("auto")
    settings.locator("button[type=submit]").click()
    expect(page.locator("#resolved-network")).to_have_text(f"Rounds use: Automatic → {PRETRAINED}")
    expect(page.locator("#project-sub")).to_contain_text(f"Automatic → {PRETRAINED}")
    assert patches == ['{"network":"auto"}']
    assert admin("GET", f"/projects/{created['id']}")["network"] == "auto"


def test_a_custom_backbone_without_weights_shows_the_apis_reason(
    make_project: Callable[..., Project],
    open_page: Callable[..., tuple[Page, Console]],
    server: Server,
    admin_token: str,
) -> None:
    project = make_project(pool=2)
    page, console = open_page(token=admin_token)
    # Chromium logs every refused request; the two 422s are this test's point.
    console.allowed.append(re.compile(r"status of 422 \(Unprocessable Entity\)$"))
    page.goto(f"/dashboard?project={project.id}")

    form = page.locator("#create-project")
    form.locator("[name=name]").fill("custom-without-weights")
    form.locator("[name=classes]").fill("a, b")
    # A distance out of range is explained before anything is sent.
    form.locator("[name=near_duplicate_distance]").fill("1.5")
    form.locator("button[type=submit]").click()
    expect(page.locator("#create-error")).to_contain_text("Duplicate distance must be a number")
    form.locator("[name=near_duplicate_distance]").fill("")
    form.locator("[name=network]").select_option("custom")
    expect(form.locator("[name=custom_weights]")).to_be_visible()
    form.locator("[name=custom_backbone]").fill("torchvision:resnet50")
    form.locator("button[type=submit]").click()
    # The API's 422, in its words, next to the form; no project was made.
    expect(page.locator("#create-error")).to_contain_text("custom_weights")
    expect(page.locator("#create-error")).to_contain_text("network 'custom' needs")
    admin = Api(server.url, admin_token)
    assert "custom-without-weights" not in [p["name"] for p in admin("GET", "/projects")]
    # Another network hides the custom inputs again.
    form.locator("[name=network]").select_option("resnet18")
    expect(form.locator("[name=custom_weights]")).to_be_hidden()

    # The same from the settings form of the open project.
    settings = page.locator("#settings")
    settings.locator("[name=network]").select_option("custom")
    settings.locator("[name=custom_backbone]").fill("torchvision:resnet50")
    settings.locator("button[type=submit]").click()
    expect(page.locator("#settings-error")).to_contain_text("custom_weights")
    assert admin("GET", f"/projects/{project.id}")["network"] == "auto"


def test_the_embedding_panel_shows_progress_and_the_rounds_their_network(
    make_project: Callable[..., Project],
    open_page: Callable[..., tuple[Page, Console]],
    server: Server,
    admin_token: str,
) -> None:
    project = make_project(pool=4, network="efficientnet_lite0", retrain_every=1000)
    add_progress(server, project.id)
    round_id = add_embedding_round(server, project.id)

    page, _ = open_page(token=admin_token)
    page.goto(f"/dashboard?project={project.id}")
    panel = page.locator("#embedding-panel")
    expect(panel).to_be_visible()
    expect(page.locator("#embedding-state")).to_have_text("embedding")
    expect(page.locator("#embedding-done")).to_have_text("80 of 200 images")  # 50 reused + 30
    expect(page.locator("#embedding-pct")).to_have_text("40%")
    expect(page.locator("#embedding-meter")).to_have_attribute("aria-valuenow", "80")
    expect(page.locator("#embedding-meter")).to_have_attribute("aria-valuemax", "200")
    expect(panel.locator("[data-fact=reused] dd")).to_have_text("50")
    # About 3 images/s over 10 s: some 40 s left (more, as the test's clock runs on).
    expect(panel.locator("[data-fact=time-left] dd")).to_contain_text("about")
    expect(panel.locator("[data-fact=images-s] dd")).not_to_have_text("–")
    expect(page.locator("#embedding-space")).to_contain_text("efficientnet_lite0 · 01234567")
    expect(page.locator("#embedding-error")).to_be_hidden()

    row = page.locator(f"#rounds tbody tr[data-round='{round_id}']")
    expect(row.locator("td.network")).to_contain_text(PRETRAINED)
    space = row.locator("td.network .space")
    expect(space).to_have_text("space 01234567 · 224px c3")  # the model is named above it
    expect(space).to_have_attribute("title", f"{SPACE}\n30 embedded by this round")
    expect(row.locator(".phases")).to_have_attribute("title", re.compile(r"\bembed 20\.0 s\b"))
    expect(row).to_contain_text("ProbCover")
    expect(page.locator("#phase-legend")).to_contain_text("embed")

    # A failed embedding says why, on the next refresh.
    with database(server) as session:
        session.execute(
            update(EmbeddingProgress)
            .where(EmbeddingProgress.project_id == project.id)
            .values(state="failed", error="weights file not found", finished_at=utcnow())
        )
    page.reload()
    expect(page.locator("#embedding-state")).to_have_text("failed")
    expect(page.locator("#embedding-error")).to_have_text("weights file not found")
    expect(panel.locator("[data-fact=time-left] dd")).to_have_text("–")


def test_near_duplicates_are_counted_and_listed_beside_what_they_resemble(
    make_project: Callable[..., Project],
    open_page: Callable[..., tuple[Page, Console]],
    server: Server,
    admin_token: str,
) -> None:
    project = make_project(pool=6, network="efficientnet_lite0", retrain_every=1000)
    admin = Api(server.url, admin_token)
    items = admin("GET", f"/projects/{project.id}/items", params={"limit": 6})["items"]
    first, flagged, skipped = (item["id"] for item in items[:3])
    flag(server, flagged, of=first, distance=0.0123, skipped=False)
    flag(server, skipped, of=first, distance=0.02, skipped=True)
    add_progress(server, project.id, embedded=150, state="done", finished_at=utcnow())
    add_embedding_round(server, project.id)
    counts = admin("GET", f"/projects/{project.id}")["counts"]
    assert (counts["near_duplicates"], counts["duplicates_skipped"]) == (2, 1)

    page, _ = open_page(token=admin_token)
    page.goto(f"/dashboard?project={project.id}")
    link = page.locator("#tile-duplicates")
    expect(link).to_have_text("2 near duplicates")
    link.click()
    listed = page.locator("#duplicates li")
    expect(listed).to_have_count(2)
    expect(page.locator("#duplicates-note")).to_have_text("2 items · 1 skipped")
    shown = page.locator(f"#duplicates li[data-item='{flagged}']")
    expect(shown).to_have_attribute("data-of", str(first))
    expect(shown.locator(".distance")).to_have_text("distance 0.012")
    expect(shown.locator(".badge")).to_have_text("flagged")
    expect(shown.locator(f"figure[data-item='{first}']")).to_have_count(1)
    expect(page.locator(f"#duplicates li[data-item='{skipped}'] .badge")).to_have_text("skipped")
    page.wait_for_function(THUMBS_DRAWN)
    expect(page.locator("#duplicates-more")).to_be_hidden()

    # At phone width every new panel fits: nothing reaches past the screen's edge.
    phone, _ = open_page(token=admin_token, viewport=PHONE)
    phone.goto(f"/dashboard?project={project.id}")
    expect(phone.locator("#embedding-panel")).to_be_visible()
    expect(phone.locator("#duplicates li")).to_have_count(2)
    phone.wait_for_function(THUMBS_DRAWN)
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    report = phone.evaluate(OVERFLOW_REPORT)
    assert report == {"unmarked": [], "outside": []}, report
    screenshot(phone, "dashboard-representations-phone", full_page=True)

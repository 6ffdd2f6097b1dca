"""The dashboard's states in real Chromium: a project made with RGB images, an empty project,
and the dashboard of a busy project on a 390 px phone."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from browser_support import (
    OVERFLOW_REPORT,
    PHONE,
    Api,
    Console,
    Project,
    Server,
    digit_pngs,
    screenshot,
)
from playwright.sync_api import Page, expect
from sqlalchemy.orm import Session

from core.db import make_engine
from core.tables import QueueEntry, Round, RoundStatus, utcnow

pytestmark = pytest.mark.browser

SCORES_INSIDE_TILES = """() => [...document.querySelectorAll('#queue figure')].every((figure) => {
    const tile = figure.getBoundingClientRect();
    return [...figure.querySelectorAll('figcaption span')].every((span) => {
        const box = span.getBoundingClientRect();
        return box.left >= tile.left - 0.5 && box.right <= tile.right + 0.5;
    });
})"""


def test_a_project_created_on_the_dashboard_keeps_its_image_size_and_colour(
    open_page: Callable[..., tuple[Page, Console]], server: Server, admin_token: str
) -> None:
    page, _ = open_page(token=admin_token)
    page.goto("/dashboard")
    form = page.locator("#create-project")
    form.locator("[name=name]").fill("photos-rgb")
    form.locator("[name=classes]").fill("cat\ndog")
    form.locator("[name=image_size]").fill("48")
    form.locator("[name=image_channels]").select_option("3")
    form.locator("button[type=submit]").click()
    expect(page.locator("#project-name")).to_have_text("photos-rgb")
    expect(page.locator("#project-sub")).to_contain_text("48×48 RGB")

    admin = Api(server.url, admin_token)
    (created,) = [p for p in admin("GET", "/projects") if p["name"] == "photos-rgb"]
    assert (created["image_size"], created["image_channels"]) == (48, 3)
    settings = page.locator("#settings")
    expect(settings.locator("[name=image_size]")).to_have_value("48")
    expect(settings.locator("[name=image_channels]")).to_have_value("3")

    # Changed later from the settings form: the next round reads them from the project.
    settings.locator("[name=image_size]").fill("64")
    settings.locator("[name=image_channels]").select_option("1")
    settings.locator("button[type=submit]").click()
    expect(page.locator("#project-sub")).to_contain_text("64×64 greyscale")
    stored = admin("GET", f"/projects/{created['id']}")
    assert (stored["image_size"], stored["image_channels"]) == (64, 1)


def test_an_empty_project_says_how_to_add_images_and_cannot_retrain(
    open_page: Callable[..., tuple[Page, Console]], server: Server, admin_token: str
) -> None:
    admin = Api(server.url, admin_token)
    project = admin("POST", "/projects", json={"name": "empty-one", "classes": ["a", "b"]})
    page, _ = open_page(token=admin_token)
    page.goto(f"/dashboard?project={project['id']}")

    empty = page.locator("#empty-project")
    expect(empty).to_be_visible()
    expect(empty).to_contain_text("No images yet")
    expect(page.locator("#empty-project-command")).to_have_text(
        f"nextlabel import {project['id']} ./images"
    )
    expect(page.locator("#retrain")).to_be_disabled()
    expect(page.locator("#tile-retrain")).to_have_text("No images")
    expect(page.locator("#tile-retrain")).not_to_contain_text("Pool done")
    screenshot(page, "dashboard-empty-project")

    # Images, then one label: the empty state goes, then "Retrain now" comes on.
    files = [("files", (name, data, "image/png")) for name, data, _ in digit_pngs(3)]
    admin("POST", f"/projects/{project['id']}/items", files=files)
    page.reload()
    expect(page.locator("#tile-items")).to_have_text("3")
    expect(empty).to_be_hidden()
    expect(page.locator("#retrain")).to_be_disabled()
    (served,) = admin("GET", f"/projects/{project['id']}/next", params={"n": 1})
    admin("POST", f"/items/{served['item']['id']}/labels", json={"label": "a"})
    page.reload()
    expect(page.locator("#tile-labelled")).to_have_text("1")
    expect(page.locator("#retrain")).to_be_enabled()


def _add_rounds(server: Server, project_id: int, item_ids: list[int]) -> list[int]:
    """Two finished rounds (the second with a queue of awkward scores) and a running one."""
    engine = make_engine(server.settings().resolved_database_url)
    now = utcnow()
    timings = {"load": 1.5, "train": 42.0, "evaluate": 3.25, "infer": 7.0, "select": 0.5}
    try:
        with Session(engine) as session:
            rounds = [
                Round(
                    project_id=project_id,
                    status=status,
                    trigger="manual",
                    strategy="batchbald",
                    labels_used=10 * (n + 1),
                    metrics={"accuracy": 0.8123, "nll": 0.61234} if finished else {},
                    timings={**timings, "total": 54.25} if finished else {},
                    started_at=now - timedelta(minutes=5 - n),
                    finished_at=now - timedelta(minutes=4 - n) if finished else None,
                )
                for n, (status, finished) in enumerate(
                    [
                        (RoundStatus.done, True),
                        (RoundStatus.done, True),
                        (RoundStatus.running, False),
                    ]
                )
            ]
            session.add_all(rounds)
            session.flush()
            for rank, item_id in enumerate(item_ids):
                score = 1.23456789e-7 * (rank + 1) if rank % 2 else 123456.789 / (rank + 1)
                session.add(
                    QueueEntry(
                        round_id=rounds[1].id,
                        item_id=item_id,
                        rank=rank,
                        score=score,
                        strategy="batchbald",
                    )
                )
            session.commit()
            return [found.id for found in rounds]
    finally:
        engine.dispose()


def test_the_phone_dashboard_scrolls_only_inside_a_marked_region(
    make_project: Callable[..., Project],
    open_page: Callable[..., tuple[Page, Console]],
    server: Server,
    admin_token: str,
) -> None:
    # An earlier project's rounds first: this project's round numbers still start at 1.
    make_project(pool=1)
    other = make_project(pool=1).id
    _add_rounds(server, other, [])
    project = make_project(pool=12, retrain_every=1000)
    admin = Api(server.url, admin_token)
    items = admin("GET", f"/projects/{project.id}/items", params={"limit": 12})["items"]
    ids = _add_rounds(server, project.id, [item["id"] for item in items])

    page, _ = open_page(token=admin_token, viewport=PHONE)
    page.goto(f"/dashboard?project={project.id}")
    running = page.locator(f"#rounds tbody tr[data-round='{ids[2]}']")
    expect(running.locator("td").first).to_have_text("#3")
    expect(running.locator("td").last).to_have_text("–")  # not finished: no time
    expect(page.locator(f"#rounds tbody tr[data-round='{ids[0]}'] td").first).to_have_text("#1")
    expect(page.locator("#queue-note")).to_contain_text("Round 2")
    expect(page.locator("#tile-model-sub")).to_contain_text("round 2")
    expect(page.locator("#retrain")).to_have_text("Round 3 running…")
    expect(page.locator("#queue figure")).to_have_count(12)

    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    wrap = page.locator("#rounds-wrap")
    expect(wrap).to_have_attribute("data-overflowing", "")
    expect(page.locator("#rounds-hint")).to_be_visible()
    assert wrap.evaluate("node => getComputedStyle(node).overflowX") == "auto"
    report = page.evaluate(OVERFLOW_REPORT)
    assert report == {"unmarked": [], "outside": []}, report
    assert page.evaluate(SCORES_INSIDE_TILES)
    screenshot(page, "dashboard-phone", full_page=True)

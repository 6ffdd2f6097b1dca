"""The annotator's page in real Chromium: sign-in, keyboard labelling, undo, prefetch, phone."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from browser_support import (
    KEYS,
    PHONE,
    Api,
    Console,
    Project,
    Server,
    screenshot,
    wait_for_next_image,
    wait_until_sent,
)
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser


def test_annotator_labels_twenty_images_by_keyboard_and_undoes_one(
    make_project: Callable[..., Project],
    open_page: Callable[..., tuple[Page, Console]],
    server: Server,
    admin_token: str,
) -> None:
    project = make_project(pool=40)
    page, console = open_page()
    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in to nextlabel")).to_be_visible()
    screenshot(page, "signin")
    page.get_by_label("API token").fill(project.annotator_token)
    page.get_by_role("button", name="Sign in").click()

    current = wait_for_next_image(page, None)
    for index, name in enumerate(project.classes):
        button = page.get_by_role("button", name=f"Label as {name} (key {KEYS[index]})")
        expect(button.locator("kbd")).to_have_text(KEYS[index])

    labelled: dict[int, str] = {}
    for n in range(20):
        page.keyboard.press(KEYS[n % 10])
        labelled[current] = project.classes[n % 10]
        current = wait_for_next_image(page, current)

    undone = list(labelled)[-1]
    page.keyboard.press("Backspace")
    # Undo brings the item back on the stage, ready to be labelled again.
    page.wait_for_function(
        "id => nextlabel.current.id === id"
        " && document.querySelector('#stage img').src === nextlabel.current.url",
        arg=undone,
    )
    del labelled[undone]
    wait_until_sent(page)

    admin = Api(server.url, admin_token)
    labels = admin.labels(project.id)
    assert {row["item_id"]: row["label"] for row in labels} == labelled
    assert len(labels) == 19
    assert all(row["ms_spent"] is not None and row["ms_spent"] >= 0 for row in labels)
    metrics = admin.metrics(project.id)
    assert metrics["totals"]["labelled"] == 19
    mine = next(row for row in metrics["annotators"] if row["annotator_id"] == project.annotator_id)
    assert (mine["labels"], mine["labels_today"]) == (19, 19)
    # The page's own progress agrees once it has polled the metrics again.
    expect(page.locator("#stat-today")).to_have_text("19", timeout=15_000)
    expect(page.locator("#stat-labelled")).to_have_text("19 / 40")
    expect(page.locator("#sync-state")).to_have_text("All labels saved")
    screenshot(page, "label-desktop")
    assert console.errors == []


def test_next_image_is_prefetched_and_shown_without_waiting_for_the_network(
    make_project: Callable[..., Project],
    open_page: Callable[..., tuple[Page, Console]],
    server: Server,
    admin_token: str,
) -> None:
    project = make_project(pool=20)
    page, console = open_page(token=project.annotator_token)
    image_requests: list[str] = []
    page.on("request", lambda request: image_requests.append(request.url.split("?")[0]))
    page.goto("/")
    page.wait_for_function(
        "() => window.nextlabel && nextlabel.current"
        " && nextlabel.buffer.length >= 3 && nextlabel.buffer.every(entry => entry.loaded)"
    )
    labelled = page.evaluate("nextlabel.current.id")
    upcoming = page.evaluate("nextlabel.buffer[0]")
    image_path = f"/api/v1/items/{upcoming['id']}/image"
    # Structural prefetch: the next item's image was fetched before any key was pressed.
    assert sum(url.endswith(image_path) for url in image_requests) == 1

    # Press a key and look at the stage within the same task as the keydown: no network
    # reply can have arrived, so whatever is drawn now came from the prefetch buffer.
    shown = page.evaluate(
        """() => {
            document.dispatchEvent(new KeyboardEvent('keydown', {key: '3', bubbles: true}));
            const img = document.querySelector('#stage img');
            return {id: nextlabel.current.id, src: img.src, complete: img.complete,
                    width: img.naturalWidth, pixelated: img.classList.contains('pixelated')};
        }"""
    )
    assert shown == {
        "id": upcoming["id"],
        "src": upcoming["url"],
        "complete": True,
        "width": 28,
        "pixelated": True,
    }
    wait_until_sent(page)
    assert sum(url.endswith(image_path) for url in image_requests) == 1
    assert page.evaluate("performance.getEntriesByName('nextlabel:key-to-image').length") >= 1

    # Space skips even when a class button has focus: it must not also "click" that button.
    skipped = int(page.evaluate("nextlabel.current.id"))
    page.get_by_role("button", name="Label as 4 (key 4)").focus()
    page.keyboard.press(" ")
    wait_for_next_image(page, skipped)
    wait_until_sent(page)
    labels = Api(server.url, admin_token).labels(project.id)
    assert [(row["item_id"], row["label"]) for row in labels] == [(labelled, "3")]
    # The buffer was topped up again behind the scenes.
    page.wait_for_function("() => nextlabel.buffer.length >= 3")
    assert console.errors == []


def test_labelling_page_works_at_phone_width(
    make_project: Callable[..., Project],
    open_page: Callable[..., tuple[Page, Console]],
    server: Server,
    admin_token: str,
) -> None:
    project = make_project(pool=20)
    page, console = open_page(token=project.annotator_token, viewport=PHONE)
    page.goto("/")
    first = wait_for_next_image(page, None)
    screenshot(page, "label-phone")
    # Nothing wider than the screen, and the class buttons are big enough to tap.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    stage = page.locator("#stage").bounding_box()
    assert stage is not None and stage["width"] >= PHONE["width"] - 40
    for button in page.locator(".class-btn").all():
        box = button.bounding_box()
        assert box is not None and box["height"] >= 44 and box["width"] >= 44
    page.get_by_role("button", name="Label as 7 (key 7)").tap()
    wait_for_next_image(page, first)
    wait_until_sent(page)
    labels = Api(server.url, admin_token).labels(project.id)
    assert [(row["item_id"], row["label"]) for row in labels] == [(first, "7")]
    assert console.errors == []

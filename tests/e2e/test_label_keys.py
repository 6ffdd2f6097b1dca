"""The labelling page's keys, confirmation, file names and phone layout, in real Chromium."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from browser_support import (
    PHONE,
    Api,
    Console,
    Project,
    Server,
    wait_for_next_image,
    wait_until_sent,
)
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser

# Press a key and read the confirmation within the same task as the keydown: what it says
# right away, before it fades.
PRESS_AND_READ = """key => {
    document.dispatchEvent(new KeyboardEvent('keydown', {key, bubbles: true}));
    const badge = document.querySelector('#confirm');
    return {text: badge.textContent, hidden: badge.hidden};
}"""


def test_digit_keys_label_the_digit_of_the_same_name_and_say_so(
    make_project: Callable[..., Project],
    open_page: Callable[..., tuple[Page, Console]],
    server: Server,
    admin_token: str,
) -> None:
    project = make_project(pool=14, show_filenames=False)
    page, console = open_page(token=project.annotator_token)
    page.goto("/")
    current = wait_for_next_image(page, None)
    for digit in project.classes:
        button = page.get_by_role("button", name=f"Label as {digit} (key {digit})")
        expect(button.locator("kbd")).to_have_text(digit)

    labelled: dict[int, str] = {}
    for digit in "0123456789":
        shown = page.evaluate(PRESS_AND_READ, digit)
        assert shown == {"text": f"✓ {digit}", "hidden": False}
        labelled[current] = digit
        current = wait_for_next_image(page, current)
    # It fades on its own.
    expect(page.locator("#confirm")).to_be_hidden()
    page.keyboard.press("7")
    expect(page.locator("#confirm")).to_have_text("✓ 7")
    labelled[current] = "7"
    wait_until_sent(page)

    labels = Api(server.url, admin_token).labels(project.id)
    assert {row["item_id"]: row["label"] for row in labels} == labelled
    assert console.errors == []


def test_a_hotkey_set_by_an_admin_labels_its_class(
    make_project: Callable[..., Project],
    open_page: Callable[..., tuple[Page, Console]],
    server: Server,
    admin_token: str,
) -> None:
    project = make_project(pool=6)
    admin = Api(server.url, admin_token)
    patched = admin("PATCH", f"/projects/{project.id}", json={"hotkeys": {"7": "x"}})
    assert patched["effective_hotkeys"]["7"] == "x"
    page, console = open_page(token=project.annotator_token)
    page.goto("/")
    current = wait_for_next_image(page, None)
    expect(page.get_by_role("button", name="Label as 7 (key X)").locator("kbd")).to_have_text("X")
    page.keyboard.press("x")
    expect(page.locator("#confirm")).to_contain_text("7")
    wait_for_next_image(page, current)
    wait_until_sent(page)
    assert [(row["item_id"], row["label"]) for row in admin.labels(project.id)] == [(current, "7")]
    assert console.errors == []


def test_file_names_are_shown_to_annotators_only_when_turned_on(
    make_project: Callable[..., Project],
    open_page: Callable[..., tuple[Page, Console]],
    server: Server,
    admin_token: str,
) -> None:
    project = make_project(pool=4, show_filenames=False)
    page, console = open_page(token=project.annotator_token)
    page.goto("/")
    wait_for_next_image(page, None)
    expect(page.locator("#item-meta")).not_to_be_empty()
    assert page.locator("#item-name").text_content() == ""
    html = page.content()
    assert not any(name in html for name in project.truth), "a file name is on the page"

    Api(server.url, admin_token)("PATCH", f"/projects/{project.id}", json={"show_filenames": True})
    page.reload()
    wait_for_next_image(page, None)
    shown = page.locator("#item-name").text_content()
    assert shown in project.truth
    assert console.errors == []


def test_phone_width_shows_sync_state_user_and_label_link_without_overflow(
    make_project: Callable[..., Project],
    open_page: Callable[..., tuple[Page, Console]],
) -> None:
    project = make_project(pool=4)
    page, console = open_page(token=project.annotator_token, viewport=PHONE)
    page.goto("/")
    wait_for_next_image(page, None)
    expect(page.locator("#sync-state")).to_have_text("All labels saved")
    for locator in (
        page.locator("#sync-state"),
        page.locator("#who-name"),
        page.get_by_role("link", name="Label", exact=True),
    ):
        expect(locator).to_be_visible()
        box = locator.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
        assert box["width"] > 0 and box["height"] > 0
    # The sync state is words, not just a dot.
    assert (
        page.evaluate("getComputedStyle(document.querySelector('#sync-state')).fontSize") != "0px"
    )
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    # The confirmation fits over the phone's image too.
    page.keyboard.press("3")
    expect(page.locator("#confirm")).to_have_text("✓ 3")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert console.errors == []

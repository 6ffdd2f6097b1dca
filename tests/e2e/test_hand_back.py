"""The labelling page gives back what it does not use: leases on pagehide and on stale items,
and a skip when it is undone."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from browser_support import (
    KEYS,
    Api,
    Console,
    Project,
    Server,
    wait_for_next_image,
    wait_until_sent,
)
from playwright.sync_api import Page, Request

pytestmark = pytest.mark.browser

BUFFER_FULL = "() => nextlabel.buffer.length >= 6 && nextlabel.buffer.every(entry => entry.loaded)"
LEASE_PATH = re.compile(r"/api/v1/items/(\d+)/lease$")


def second_annotator(server: Server, admin_token: str, project: Project) -> Api:
    admin = Api(server.url, admin_token)
    other = admin("POST", "/annotators", json={"name": f"other-{project.id}", "role": "annotator"})
    admin("PUT", f"/projects/{project.id}/members/{other['id']}")
    return Api(server.url, other["token"])


def next_ids(annotator: Api, project: Project, n: int) -> list[int]:
    served = annotator("GET", f"/projects/{project.id}/next", params={"n": n})
    return [entry["item"]["id"] for entry in served]


def lease_releases(page: Page) -> list[int]:
    """Item ids of the DELETE /items/{iid}/lease requests the page sends from now on."""
    released: list[int] = []

    def record(request: Request) -> None:
        match = LEASE_PATH.search(request.url)
        if request.method == "DELETE" and match:
            released.append(int(match.group(1)))

    page.on("request", record)
    return released


def test_leaving_the_page_hands_its_leases_back(
    make_project: Callable[..., Project],
    open_page: Callable[..., tuple[Page, Console]],
    server: Server,
    admin_token: str,
) -> None:
    project = make_project(pool=8)
    other = second_annotator(server, admin_token, project)
    page, console = open_page(token=project.annotator_token)
    page.goto("/")
    wait_for_next_image(page, None)
    page.wait_for_function(BUFFER_FULL)
    # The page holds 7 leases (the item on stage and 6 buffered): one item is left for others.
    assert len(next_ids(other, project, 8)) == 1

    # Leave for another page of the site (about:blank would trip the fixture's init script):
    # pagehide sends keepalive DELETEs for everything the page held.
    page.goto("/static/favicon.svg")
    deadline = time.monotonic() + 15
    while len(got := next_ids(other, project, 8)) < 8 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(got) == 8
    assert console.errors == []


def test_stale_buffered_items_are_handed_back(
    make_project: Callable[..., Project],
    open_page: Callable[..., tuple[Page, Console]],
) -> None:
    project = make_project(pool=20)
    page, console = open_page(token=project.annotator_token)
    page.clock.install()
    page.goto("/")
    current = wait_for_next_image(page, None)
    page.wait_for_function(BUFFER_FULL)
    buffered = page.evaluate("nextlabel.buffer.map(entry => entry.id)")
    released = lease_releases(page)

    page.clock.fast_forward("05:01")  # past BUFFER_MAX_AGE_MS: every buffered item is stale
    page.keyboard.press(KEYS[0])
    wait_for_next_image(page, current)
    wait_until_sent(page)
    # Handed back before the refill asked for more (which may serve some of them again).
    assert set(buffered) <= set(released)
    assert console.errors == []


def test_undoing_a_sent_skip_lets_next_serve_the_item_again(
    make_project: Callable[..., Project],
    open_page: Callable[..., tuple[Page, Console]],
    server: Server,
) -> None:
    project = make_project(pool=10)
    annotator = Api(server.url, project.annotator_token)
    page, console = open_page(token=project.annotator_token)
    page.goto("/")
    skipped = wait_for_next_image(page, None)
    page.keyboard.press(" ")
    wait_for_next_image(page, skipped)
    wait_until_sent(page)
    assert skipped not in next_ids(annotator, project, 20)

    unskips: list[str] = []
    page.on(
        "request",
        lambda request: (
            unskips.append(request.method)
            if request.url.endswith(f"/items/{skipped}/skip")
            else None
        ),
    )
    page.keyboard.press("Backspace")
    page.wait_for_function("id => nextlabel.current.id === id", arg=skipped)
    wait_until_sent(page)
    assert unskips == ["DELETE"]
    assert skipped in next_ids(annotator, project, 20)
    assert console.errors == []

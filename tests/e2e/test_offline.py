"""Labels made while the server is stopped are kept in the browser and sent when it is back."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from browser_support import (
    KEYS,
    REFUSED,
    Api,
    Console,
    Server,
    bootstrap_admin,
    create_project,
    screenshot,
    start_server,
    wait_for_next_image,
    wait_until_sent,
)
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser

OUTBOX_SIZES = """() => Object.keys(localStorage)
    .filter(key => key.startsWith('nextlabel.outbox.v1.') && !key.endsWith('.inflight'))
    .map(key => JSON.parse(localStorage.getItem(key)).length)"""


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Server]:
    """A server of this test's own, since the test stops it."""
    server = start_server(tmp_path)
    yield server
    server.stop()


def test_labels_made_while_the_server_is_stopped_are_sent_once_it_is_back(
    own_server: Server, open_page: Callable[..., tuple[Page, Console]]
) -> None:
    admin_token = bootstrap_admin(own_server)
    project = create_project(own_server, admin_token, pool=30)
    page, console = open_page(token=project.annotator_token, base_url=own_server.url)
    # While the server is down, Chromium itself logs each refused request; nothing else.
    console.allowed.append(REFUSED)
    page.goto("/")
    current = wait_for_next_image(page, None)
    page.wait_for_function(
        "() => nextlabel.buffer.length >= 5 && nextlabel.buffer.every(entry => entry.loaded)"
    )

    labelled: dict[int, str] = {}
    for n in range(2):
        page.keyboard.press(KEYS[n])
        labelled[current] = project.classes[n]
        current = wait_for_next_image(page, current)
    wait_until_sent(page)

    own_server.stop()
    for n in range(2, 6):
        page.keyboard.press(KEYS[n])
        labelled[current] = project.classes[n]
        current = wait_for_next_image(page, current)
    banner = page.locator("#banner")
    expect(banner).to_contain_text("Can't reach the nextlabel server")
    expect(banner).to_contain_text("4 changes saved in this browser")
    expect(page.locator("#sync-state")).to_have_text("Offline · 4 waiting")
    assert page.evaluate("nextlabel.pending.map(op => [op.item_id, op.label])") == [
        [item_id, label] for item_id, label in list(labelled.items())[2:]
    ]
    assert page.evaluate(OUTBOX_SIZES) == [4]
    screenshot(page, "label-offline")

    own_server.start()
    page.wait_for_function("() => nextlabel.pending.length === 0", timeout=30_000)
    expect(banner).to_be_hidden()
    expect(page.locator("#sync-state")).to_have_text("All labels saved")

    labels = Api(own_server.url, admin_token).labels(project.id)
    assert {row["item_id"]: row["label"] for row in labels} == labelled
    assert len(labels) == 6
    assert page.evaluate(OUTBOX_SIZES) == [0]
    assert console.errors == []

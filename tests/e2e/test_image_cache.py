"""Chromium's HTTP cache never hands one user's image to another in a shared browser."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from browser_support import Api, Console, Project, Server
from playwright.sync_api import Page

pytestmark = pytest.mark.browser

FETCH = """async ([url, token]) => {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const response = await fetch(url, { headers });
    return response.status;
}"""


def test_a_cached_image_is_not_served_to_another_token_or_to_none(
    make_project: Callable[..., Project],
    open_page: Callable[..., tuple[Page, Console]],
    server: Server,
    admin_token: str,
) -> None:
    project = make_project(pool=2)
    admin = Api(server.url, admin_token)
    outsider = admin("POST", "/annotators", json={"name": "outsider", "role": "annotator"})
    items = admin("GET", f"/projects/{project.id}/items")["items"]
    url = items[0]["image_url"]

    page, console = open_page()
    # The refused fetches below are logged by Chromium itself; they are the point.
    console.allowed.append(re.compile(r"status of 40[14]"))
    page.goto("/healthz")
    assert page.evaluate(FETCH, [url, project.annotator_token]) == 200
    # Same browser, same URL: the member's cached copy must not answer for anyone else.
    assert page.evaluate(FETCH, [url, None]) == 401
    assert page.evaluate(FETCH, [url, outsider["token"]]) == 404
    assert page.evaluate(FETCH, [url, project.annotator_token]) == 200

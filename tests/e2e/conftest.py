"""Fixtures for the browser tests: a real server, an admin, digits projects, Chromium pages.

The helpers they build on (the server subprocess, the REST client, digit images, the
console collector) live in browser_support.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from browser_support import (
    CHROMIUM,
    DESKTOP,
    LAUNCH_ARGS,
    Console,
    Project,
    Server,
    bootstrap_admin,
    create_project,
    start_server,
)
from playwright.sync_api import Browser, Page, sync_playwright


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("nextlabel-e2e"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def admin_token(server: Server) -> str:
    return bootstrap_admin(server)


@pytest.fixture
def make_project(server: Server, admin_token: str) -> Callable[..., Project]:
    """make_project(pool=40, validation=0, **settings) on the shared server."""

    def make(**kwargs: Any) -> Project:
        return create_project(server, admin_token, **kwargs)

    return make


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (Debian's chromium package); it is never downloaded"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser: Browser, server: Server) -> Iterator[Callable[..., tuple[Page, Console]]]:
    """open_page(token=None, viewport=DESKTOP, base_url=server.url) → (page, console).

    Pages get a fresh context (their own localStorage). Each page's console must stay free
    of errors: checked again when the test ends.
    """
    opened: list[tuple[Page, Console]] = []

    def open_(
        token: str | None = None, viewport: dict[str, int] = DESKTOP, base_url: str | None = None
    ) -> tuple[Page, Console]:
        context = browser.new_context(
            viewport=viewport, base_url=base_url or server.url, device_scale_factor=1,
            has_touch=viewport["width"] < 700, is_mobile=False,
        )  # fmt: skip
        if token:
            context.add_init_script(
                "if (!localStorage.getItem('nextlabel.token'))"
                f" localStorage.setItem('nextlabel.token', {json.dumps(token)});"
            )
        page = context.new_page()
        page.set_default_timeout(15_000)
        console = Console()
        console.attach(page)
        opened.append((page, console))
        return page, console

    yield open_
    try:
        for page, console in opened:
            assert console.errors == [], f"{page.url} logged errors: {console.errors}"
    finally:
        for page, _ in opened:
            page.context.close()

"""The pages under their Content-Security-Policy in real Chromium: nothing is refused.

/docs and /redoc render from the vendored Swagger UI and ReDoc; the labelling page and the
dashboard work as before. A page records every `securitypolicyviolation` event it sees, and
the open_page fixture also fails a test whose page logged an error (Chromium logs each
refusal as one).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from browser_support import Console, Project, Server, wait_for_next_image
from playwright.sync_api import Page, Request, Response, expect

pytestmark = pytest.mark.browser

RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener('securitypolicyviolation', event => {
    window.cspViolations.push(`${event.violatedDirective} refused ${event.blockedURI}`);
});
"""


def open_watched(
    open_page: Callable[..., tuple[Page, Console]], token: str | None = None
) -> tuple[Page, list[str]]:
    """A page that records CSP violations, and the URLs of every request it makes."""
    page, _ = open_page(token=token)
    page.add_init_script(RECORD_VIOLATIONS)
    requested: list[str] = []

    def record(request: Request) -> None:
        requested.append(request.url)

    page.on("request", record)
    return page, requested


def assert_clean(page: Page, requested: list[str], server: Server) -> None:
    assert page.evaluate("window.cspViolations") == []
    origin = urlsplit(server.url).netloc
    elsewhere = [url for url in requested if urlsplit(url).netloc not in (origin, "")]
    assert elsewhere == [], f"requests to other origins: {elsewhere}"


def assert_under_policy(response: Response | None) -> None:
    assert response is not None
    policy = response.headers.get("content-security-policy", "")
    assert "script-src 'self';" in policy and "style-src 'self';" in policy, policy


def test_swagger_ui_renders_the_operations_from_local_files(
    open_page: Callable[..., tuple[Page, Console]], server: Server
) -> None:
    page, requested = open_watched(open_page)
    page.goto("/docs")
    expect(page.locator(".opblock").first).to_be_visible()
    expect(page.locator(".opblock-summary-path", has_text="/api/v1/projects").first).to_be_visible()
    assert page.locator(".opblock").count() > 10
    # "Try it out" calls the API from the page: connect-src allows this origin.
    healthz = page.locator(
        ".opblock", has=page.locator(".opblock-summary-path", has_text="/healthz")
    )
    healthz.locator(".opblock-summary").click()
    healthz.get_by_role("button", name="Try it out").click()
    healthz.get_by_role("button", name="Execute").click()
    expect(healthz.locator(".live-responses-table tbody .response-col_status")).to_have_text("200")
    assert_clean(page, requested, server)
    assert any(url.endswith("/static/vendor/swagger-ui/swagger-ui-bundle.js") for url in requested)


def test_redoc_renders_the_reference_from_local_files(
    open_page: Callable[..., tuple[Page, Console]], server: Server
) -> None:
    page, requested = open_watched(open_page)
    page.goto("/redoc")
    expect(page.get_by_role("heading", name=re.compile(r"^nextlabel")).first).to_be_visible()
    expect(page.get_by_text("/api/v1/projects").first).to_be_attached()
    assert_clean(page, requested, server)
    assert any(url.endswith("/static/vendor/redoc/redoc.standalone.js") for url in requested)


def test_labelling_page_and_dashboard_run_under_the_policy(
    make_project: Callable[..., Project],
    open_page: Callable[..., tuple[Page, Console]],
    server: Server,
    admin_token: str,
) -> None:
    project = make_project(pool=6)
    labeller, requested = open_watched(open_page, token=project.annotator_token)
    assert_under_policy(labeller.goto("/"))
    # The image is a blob: URL (prefetched), which img-src must allow.
    wait_for_next_image(labeller, None)
    assert labeller.evaluate("document.querySelector('#stage img').src").startswith("blob:")
    labeller.keyboard.press("1")
    expect(labeller.locator("#last-action")).not_to_be_empty()
    assert_clean(labeller, requested, server)

    dashboard, requested = open_watched(open_page, token=admin_token)
    assert_under_policy(dashboard.goto(f"/dashboard?project={project.id}"))
    expect(dashboard.locator("#tile-items")).to_have_text("6")
    expect(dashboard.locator("#members li").first).to_be_visible()
    assert_clean(dashboard, requested, server)

"""Security headers on every kind of response; the API reference pages load only local files."""

from __future__ import annotations

from html.parser import HTMLParser

import httpx
import pytest

from core.settings import REPO_ROOT
from tests.app.conftest import Api, png_bytes

FRAMING = {"x-frame-options": "DENY", "x-content-type-options": "nosniff"}


def directives(response: httpx.Response) -> dict[str, list[str]]:
    """The Content-Security-Policy as {directive: [sources]}."""
    policy = response.headers["content-security-policy"]
    parsed = {}
    for part in policy.split(";"):
        name, *sources = part.split()
        parsed[name] = sources
    return parsed


def assert_hardened(response: httpx.Response) -> dict[str, list[str]]:
    for name, value in FRAMING.items():
        assert response.headers.get(name) == value, (name, response.url)
    assert response.headers.get("referrer-policy") == "same-origin"
    policy = directives(response)
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]  # no inline scripts, no eval, no CDN
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"]
    return policy


@pytest.mark.parametrize("path", ["/", "/dashboard"])
def test_ui_pages_get_the_strict_policy(api: Api, path: str) -> None:
    response = api.client.get(path)
    assert response.status_code == 200
    policy = assert_hardened(response)
    assert policy["style-src"] == ["'self'"]
    # The labelling page shows prefetched images as blob: URLs; nothing else is allowed.
    assert policy["img-src"] == ["'self'", "blob:"]


@pytest.mark.parametrize(
    "path",
    [
        "/static/js/label.js",
        "/static/css/base.css",
        "/static/vendor/uplot/uPlot.esm.js",
        "/static/vendor/swagger-ui/swagger-ui-bundle.js",
        "/static/vendor/redoc/redoc.standalone.js",
    ],
)
def test_static_files_get_the_headers(api: Api, path: str) -> None:
    response = api.client.get(path)
    assert response.status_code == 200
    assert_hardened(response)


def test_api_responses_get_the_headers_errors_included(small_limit_api: Api) -> None:
    api = small_limit_api
    project = api.project()
    item_id = api.upload_images(project["id"], 1)[0]
    responses = [
        api.get("/api/v1/projects"),
        api.get(f"/api/v1/items/{item_id}/image"),
        api.client.get("/openapi.json"),
        api.client.get("/api/v1/projects"),  # 401
        api.client.get("/no/such/page"),  # 404
        api.upload(project["id"], [("big.png", png_bytes(1, size=200))]),  # 413
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 401, 404, 413]
    for response in responses:
        assert_hardened(response)


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "spec-url", "data-openapi-url") and value:
                self.urls.append(value)


@pytest.mark.parametrize(
    ("path", "bundle"),
    [
        ("/docs", "/static/vendor/swagger-ui/swagger-ui-bundle.js"),
        ("/redoc", "/static/vendor/redoc/redoc.standalone.js"),
    ],
)
def test_api_reference_pages_load_only_same_origin_files(api: Api, path: str, bundle: str) -> None:
    response = api.client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assets = _Assets()
    assets.feed(page)
    assert bundle in assets.urls
    assert "/openapi.json" in assets.urls
    for url in assets.urls:
        assert url.startswith("/") and not url.startswith("//"), url
        assert api.client.get(url).status_code == 200, url
    assert "http" not in page.lower()
    assert "<script>" not in page  # every script is a file, so script-src needs no inline
    policy = assert_hardened(response)
    # ReDoc's styled-components insert <style> elements; its search index runs in a blob worker.
    assert policy["style-src"] == ["'self'", "'unsafe-inline'"]
    assert policy["worker-src"] == ["'self'", "blob:"]


def test_fastapi_cdn_docs_are_gone_and_the_openapi_document_stays(api: Api) -> None:
    assert api.client.get("/docs/oauth2-redirect").status_code == 404
    assert api.client.get("/openapi.json").json()["info"]["title"] == "nextlabel"
    for path in ("/docs", "/redoc"):
        assert "cdn.jsdelivr.net" not in api.client.get(path).text


def test_vendored_redoc_loads_no_logo_from_its_cdn() -> None:
    # The published bundle fetches its "API docs by Redocly" logo from cdn.redoc.ly; the
    # vendored copy is patched (frontend/vendor/README.md) to load nothing from outside.
    bundle = (REPO_ROOT / "frontend/vendor/redoc/redoc.standalone.js").read_text()
    assert "cdn.redoc.ly" not in bundle

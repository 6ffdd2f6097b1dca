"""The API reference pages, /docs (Swagger UI) and /redoc (ReDoc), from vendored copies.

FastAPI's own pages load both libraries, unpinned, from a public CDN, on the origin whose
localStorage holds the annotator's token, and start Swagger UI with an inline script. These
pages load pinned copies from frontend/vendor/ (versions and licences in its README) and
start Swagger UI from frontend/js/swagger-init.js, so the Content-Security-Policy of
`app.web_security` needs no 'unsafe-inline' for scripts. The OpenAPI document stays at
`app.openapi_url` (/openapi.json).
"""

from __future__ import annotations

from html import escape

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

SWAGGER_PATH = "/docs"
REDOC_PATH = "/redoc"
DOCS_PATHS = frozenset({SWAGGER_PATH, REDOC_PATH})

_SWAGGER_HTML = """<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <title>{title} · API (Swagger UI)</title>
    <link rel="icon" href="/static/favicon.svg" type="image/svg+xml" />
    <link rel="stylesheet" href="/static/vendor/swagger-ui/swagger-ui.css" />
  </head>
  <body>
    <div id="swagger-ui" data-openapi-url="{openapi_url}"></div>
    <script src="/static/vendor/swagger-ui/swagger-ui-bundle.js"></script>
    <script src="/static/js/swagger-init.js"></script>
  </body>
</html>
"""

_REDOC_HTML = """<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <title>{title} · API (ReDoc)</title>
    <link rel="icon" href="/static/favicon.svg" type="image/svg+xml" />
  </head>
  <body>
    <redoc spec-url="{openapi_url}"></redoc>
    <script src="/static/vendor/redoc/redoc.standalone.js"></script>
  </body>
</html>
"""


def add_docs(app: FastAPI) -> None:
    """Register /docs and /redoc; create the app with `docs_url=None, redoc_url=None`."""
    if app.openapi_url is None:
        return
    fields = {"title": escape(app.title), "openapi_url": escape(app.openapi_url)}
    swagger = _SWAGGER_HTML.format(**fields)
    redoc = _REDOC_HTML.format(**fields)

    @app.get(SWAGGER_PATH, include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return HTMLResponse(swagger)

    @app.get(REDOC_PATH, include_in_schema=False)
    def redoc_ui() -> HTMLResponse:
        return HTMLResponse(redoc)

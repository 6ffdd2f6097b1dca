"""Security headers on every response, built with the `secure` library.

The UI keeps the annotator's bearer token in localStorage, so any script that runs on this
origin can read it: the Content-Security-Policy lets scripts come only from this server's
own files (no inline scripts, no eval, no CDN), and the page may not be framed by another
site (clickjacking). The same headers go on the API's JSON, static files and images, so a
file served by mistake as HTML gets no more rights than the pages do.

Two policies, chosen by path:
- `app_csp()` for everything but the API reference pages: styles from our own files only
  (the UI's scripts set styles through the CSSOM, `el.style.width = ...`, which CSP allows);
  images also from `blob:` (the labelling page shows prefetched images as object URLs).
- `docs_csp()` for /docs and /redoc (`app.docs_pages`): still no inline script, but inline
  styles allowed (ReDoc's styled-components inject `<style>` elements; Swagger UI draws
  icons from `data:` SVG in its stylesheet) and `blob:` workers (ReDoc's search index).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import cast

from secure import (
    ContentSecurityPolicy,
    CrossOriginOpenerPolicy,
    ReferrerPolicy,
    Secure,
    XContentTypeOptions,
    XFrameOptions,
)
from secure.middleware import SecureASGIMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send


def _base_csp() -> ContentSecurityPolicy:
    return (
        ContentSecurityPolicy()
        .default_src("'self'")
        .script_src("'self'")
        .connect_src("'self'")
        .object_src("'none'")
        .base_uri("'none'")
        .form_action("'self'")
        .frame_ancestors("'none'")
    )


def app_csp() -> ContentSecurityPolicy:
    return _base_csp().style_src("'self'").img_src("'self'", "blob:")


def docs_csp() -> ContentSecurityPolicy:
    return (
        _base_csp()
        .style_src("'self'", "'unsafe-inline'")
        .img_src("'self'", "data:")
        .worker_src("'self'", "blob:")
    )


def secure_headers(csp: ContentSecurityPolicy) -> Secure:
    """nosniff, no framing, same-origin referrers and opener, and this CSP."""
    return Secure(
        csp=csp,
        xcto=XContentTypeOptions().nosniff(),
        xfo=XFrameOptions().deny(),
        referrer=ReferrerPolicy().same_origin(),
        coop=CrossOriginOpenerPolicy().same_origin(),
    ).validate_and_normalize_headers(on_invalid="raise", strict=True)


class SecurityHeaders:
    """Adds `secure_headers(app_csp())` to every HTTP response, `docs_csp()` on `docs_paths`.

    Added last in `create_app`, so it wraps the other middleware: their own responses
    (413 from the body limit) carry the headers too.
    """

    def __init__(self, app: ASGIApp, docs_paths: Collection[str]) -> None:
        self.docs_paths = frozenset(docs_paths)
        # cast: `secure` types an ASGI message as `object`, Starlette as a mapping.
        self.app_headers = cast(
            ASGIApp, SecureASGIMiddleware(app, secure=secure_headers(app_csp()))
        )
        self.docs_headers = cast(
            ASGIApp, SecureASGIMiddleware(app, secure=secure_headers(docs_csp()))
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self.docs_paths:
            await self.docs_headers(scope, receive, send)
        else:
            await self.app_headers(scope, receive, send)

"""The API's ASGI middleware: the upload size limit and the request metrics.

Both wrap every HTTP request below the routers, so they see bodies and status codes that
no endpoint does: `BodySizeLimit` refuses a body over the limit before (or while) it is read,
and `RequestMetrics` counts requests and their latency by route template.
"""

from __future__ import annotations

import time

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.health import Instruments


class BodyTooLarge(StarletteHTTPException):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            status_code=413,
            detail=f"The request is larger than the {max_bytes:,}-byte upload limit "
            "(NEXTLABEL_MAX_UPLOAD_BYTES). Split it into smaller uploads, or use "
            "`nextlabel import` for large collections.",
        )


class BodySizeLimit:
    """413 for bodies over the limit: at once from Content-Length, else while reading.

    Counting while reading matters for chunked uploads, which declare no length; the
    error is raised from `receive`, so the multipart parser stops at the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            error = BodyTooLarge(self.max_bytes)
            response = JSONResponse(status_code=413, content={"detail": error.detail})
            await response(scope, receive, send)
            return
        if declared is not None:
            # The server reads exactly Content-Length bytes of body: nothing to count.
            await self.app(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counting_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class RequestMetrics:
    """Request counts and latency by route template (not raw path: bounded label values)."""

    def __init__(self, app: ASGIApp, instruments: Instruments) -> None:
        self.app = app
        self.instruments = instruments

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = 500

        async def recording_send(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            self.instruments.requests.labels(method, route, str(status_code)).inc()
            self.instruments.latency.labels(method, route).observe(time.perf_counter() - started)

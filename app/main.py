"""The application factory: settings, migrations, database, routers, errors, frontend."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import routers
from app.api.errors import AllowedMethods, document_errors
from app.api.health import Instruments, make_instruments
from app.deps import HOT_CONNECTIONS
from app.docs_pages import DOCS_PATHS, add_docs
from app.security import make_token_cache
from app.services import ServiceError
from app.web_security import SecurityHeaders
from core.broker import enqueue_round, make_celery
from core.db import make_engine, make_session_factory, ping_idle_connections
from core.dispatch import RoundDispatcher
from core.logs import configure_logging
from core.migrate import upgrade_database
from core.settings import REPO_ROOT, Settings, get_settings
from core.storage import LocalImageStore

logger = logging.getLogger(__name__)

FRONTEND_DIR = REPO_ROOT / "frontend"
# Threads serving sync endpoints; below app.db's PostgreSQL pool of 20 (+20 overflow).
REQUEST_THREADS = 16
# Pooled PostgreSQL connections idle longer than this are pinged before use.
IDLE_PING_SECONDS = 5.0
# A hot request waits this long for one of the hot engine's connections, then fails (503).
HOT_POOL_TIMEOUT_SECONDS = 30.0
VERSION = "0.1.0"


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API: migrates the database first, so a fresh data folder just works."""
    settings = settings or get_settings()
    configure_logging(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.migrate_on_start:
        upgrade_database(settings.resolved_database_url)
    engine = _make_api_engine(settings.resolved_database_url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _more_sqlite_cache)
        serialize_sqlite_writes(engine)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Sync endpoints run in this many threads. More only adds GIL contention; it must
        # stay below the connection pool, or requests open and close connections.
        to_thread.current_default_thread_limiter().total_tokens = REQUEST_THREADS
        yield
        app.state.dispatcher.close()
        engine.dispose()
        if hot_engine is not None:
            await hot_engine.dispose()

    app = FastAPI(
        title="nextlabel",
        version=VERSION,
        description="Label images with Bayesian active learning: a model picks the image "
        "that teaches it most. Authenticate with `Authorization: Bearer <token>`.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    hot_engine = _make_hot_engine(settings.resolved_database_url)
    app.state.hot_session_factory = (
        async_sessionmaker(hot_engine, expire_on_commit=False) if hot_engine else None
    )
    app.state.store = LocalImageStore(settings.image_dir)
    celery = app.state.celery = make_celery(settings)
    app.state.dispatcher = RoundDispatcher(
        publish=lambda round_id: enqueue_round(celery, round_id),
        session_factory=app.state.session_factory,
    )
    app.state.instruments = make_instruments()
    app.state.token_cache = make_token_cache(settings.token_cache_seconds)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(RequestMetrics, instruments=app.state.instruments)
    app.add_middleware(SecurityHeaders, docs_paths=DOCS_PATHS)
    _add_error_handlers(app)
    api_routers = routers()
    for router in api_routers:
        document_errors(router)
        app.include_router(router)
    app.state.allowed_methods = AllowedMethods(api_routers)
    _add_frontend(app)
    logger.info(
        "nextlabel API ready",
        extra={"environment": settings.environment, "data_dir": str(settings.data_dir)},
    )
    return app


def _make_api_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # One pooled connection per request thread (SQLite connections are cheap to keep,
        # costly to open: WAL and cache pragmas run on each).
        return make_engine(url, pool_size=REQUEST_THREADS, max_overflow=REQUEST_THREADS)
    engine = make_engine(url, pool_pre_ping=False)
    ping_idle_connections(engine, idle_seconds=IDLE_PING_SECONDS)
    return engine


def _make_hot_engine(url: str) -> AsyncEngine | None:
    """PostgreSQL: an asyncio engine for the hottest routes (`next`, labelling).

    They run their sync service code through `AsyncSession.run_sync`, in a greenlet on the
    event loop: each database wait yields to other requests, and no request hops to a
    thread (see `app.deps.HOT_CONNECTIONS`). SQLite keeps threads: its driver has no
    asyncio interface, and it waits on no network.
    """
    if url.startswith("sqlite"):
        return None
    hot_engine = create_async_engine(
        url, pool_size=HOT_CONNECTIONS, max_overflow=0, pool_timeout=HOT_POOL_TIMEOUT_SECONDS
    )
    ping_idle_connections(hot_engine.sync_engine, idle_seconds=IDLE_PING_SECONDS)
    return hot_engine


def _more_sqlite_cache(dbapi_connection: Any, _record: Any) -> None:
    # SQLite's default page cache is 2 MB per connection; a larger one plus a memory-mapped
    # file keep a large project's index pages in memory across requests instead of
    # re-reading them with read() calls. (Connection-level settings, nothing is stored.)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA cache_size=-32000")
    cursor.execute("PRAGMA mmap_size=1073741824")
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()


def serialize_sqlite_writes(engine: Engine) -> None:
    """Let one thread of this process write to SQLite at a time, queueing the others.

    SQLite allows one writer; a second connection that wants to write gets SQLITE_BUSY and
    its busy handler sleeps and retries (1 ms, 2 ms, ... up to 100 ms a nap), which turns
    a few contended writes into tail latencies of hundreds of milliseconds. A lock taken
    before a transaction's first write and released when its connection goes back to the
    pool (after the commit or rollback) makes request threads wait their turn instead,
    without sleeping. API processes started together (`serve --workers N`) queue the same
    way on an exclusive lock of a file beside the database, taken while holding the thread
    lock. Other processes (the worker, the CLI) still meet the busy handler, rarely.
    """
    lock = threading.Lock()
    lock_file = _write_lock_file(engine)

    def before_execute(conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        if conn.info.get(_WRITE_LOCK) or statement.lstrip()[:6].upper() not in _WRITES:
            return
        lock.acquire()
        if lock_file is not None:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
            except BaseException:
                lock.release()
                raise
        conn.info[_WRITE_LOCK] = True

    def checkin(_dbapi_connection: Any, record: Any) -> None:
        # After the commit or rollback has really happened: a Session hands its connection
        # back when its transaction ends (the engine's "commit" event fires too early).
        if record.info.pop(_WRITE_LOCK, False):
            try:
                if lock_file is not None:
                    fcntl.flock(lock_file, fcntl.LOCK_UN)
            finally:
                lock.release()

    event.listen(engine, "before_cursor_execute", before_execute)
    event.listen(engine.pool, "checkin", checkin)


def _write_lock_file(engine: Engine) -> int | None:
    """A descriptor of `<database>.write.lock`, shared by this process's threads."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database).with_suffix(".write.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    weakref.finalize(engine, os.close, descriptor)
    return descriptor


_WRITE_LOCK = "nextlabel_write_lock"
# First six characters of statements that write (or start a write: BEGIN IMMEDIATE).
_WRITES = frozenset({"INSERT", "UPDATE", "DELETE", "REPLAC", "BEGIN "})


# --- errors: always {"detail": "<a sentence>"} ---------------------------------------------


def _add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(PoolTimeout, _busy)
    app.add_exception_handler(Exception, _unexpected_error)


async def _service_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return JSONResponse(status_code=exc.status_code, content={"detail": str(exc)})


async def _busy(_request: Request, exc: Exception) -> JSONResponse:
    # Every pooled database connection stayed in use for the pool's timeout: the request
    # did nothing, and a retry shortly after is safe.
    logger.warning("no database connection free: %s", exc)
    return JSONResponse(
        status_code=503,
        content={"detail": "The server is busy: no database connection came free. Try again."},
        headers={"Retry-After": "1"},
    )


_HTTP_MESSAGES = {
    400: "The request body could not be parsed: send JSON (or a multipart form for uploads) "
    "encoded as UTF-8.",
    404: "Not found: there is no such page or API route.",
    405: "This HTTP method is not allowed on this route.",
}


_FRAMEWORK_DETAILS = ("Not Found", "Method Not Allowed", "There was an error parsing the body")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail
    if exc.status_code in _HTTP_MESSAGES and detail in _FRAMEWORK_DETAILS:
        detail = _HTTP_MESSAGES[exc.status_code]
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        allowed = request.app.state.allowed_methods.of(request.url.path)
        headers["Allow"] = ", ".join(allowed) or headers.get("Allow", "")
    return JSONResponse(status_code=exc.status_code, content={"detail": detail}, headers=headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    problems = "; ".join(_describe_validation_error(error) for error in errors)
    return JSONResponse(
        status_code=422,
        content={
            "detail": f"The request is not valid: {problems}.",
            "errors": [
                {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
                for e in errors
            ],
        },
    )


_PLACES = {"body": "body", "query": "query parameter", "path": "path parameter"}


def _describe_validation_error(error: Any) -> str:
    location = [str(part) for part in error.get("loc", ())]
    place = _PLACES.get(location[0], location[0]) if location else "request"
    field = ".".join(location[1:])
    where = f"{place} field {field!r}" if place == "body" and field else f"{place} {field!r}"
    if not field:
        where = f"the {place}"
    return f"{where}: {error.get('msg', 'invalid')}"


async def _unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error", exc_info=exc)
    return JSONResponse(
        status_code=500,
        content={"detail": "Something went wrong on the server; the error has been logged."},
    )


# --- middleware -------------------------------------------------------------------------------


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


# --- the browser UI -----------------------------------------------------------------------


def _add_frontend(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return _page("index.html")

    @app.get("/dashboard", include_in_schema=False)
    def dashboard() -> FileResponse:
        return _page("dashboard.html")

    add_docs(app)
    if FRONTEND_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=FRONTEND_DIR), name="static")


def _page(name: str) -> FileResponse:
    path = FRONTEND_DIR / name
    if not path.is_file():
        raise StarletteHTTPException(
            status_code=404, detail=f"The web UI is not installed here (frontend/{name} missing)."
        )
    return FileResponse(path, headers={"Cache-Control": "no-cache"})

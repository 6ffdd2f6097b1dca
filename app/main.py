"""The application factory: settings, migrations, database, routers, errors, frontend.

`create_app` wires the pieces that live elsewhere: the database engines (app.engines), the
ASGI middleware (app.middleware), the routers (app.api); what stays here is the error
handlers (every error answered as {"detail": "<a sentence>"}) and the browser UI's pages.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import async_sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api import routers
from app.api.errors import AllowedMethods, document_errors
from app.api.health import make_instruments
from app.docs_pages import DOCS_PATHS, add_docs
from app.engines import REQUEST_THREADS, make_api_engine, make_hot_engine
from app.middleware import BodySizeLimit, RequestMetrics
from app.security import make_token_cache
from app.services import ServiceError
from app.web_security import SecurityHeaders
from core.broker import enqueue_round, make_celery
from core.db import make_session_factory
from core.dispatch import RoundDispatcher
from core.embeddings import EmbeddingStore
from core.logs import configure_logging
from core.migrate import upgrade_database
from core.settings import REPO_ROOT, Settings, get_settings
from core.storage import LocalImageStore

logger = logging.getLogger(__name__)

FRONTEND_DIR = REPO_ROOT / "frontend"
VERSION = "0.1.0"


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API: migrates the database first, so a fresh data folder just works."""
    settings = settings or get_settings()
    configure_logging(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.migrate_on_start:
        upgrade_database(settings.resolved_database_url)
    engine = make_api_engine(settings.resolved_database_url)

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
    hot_engine = make_hot_engine(settings.resolved_database_url)
    app.state.hot_session_factory = (
        async_sessionmaker(hot_engine, expire_on_commit=False) if hot_engine else None
    )
    app.state.store = LocalImageStore(settings.image_dir)
    # One per process: each space indexes its shards once, not on every request.
    app.state.embeddings = EmbeddingStore(settings.embedding_dir)
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

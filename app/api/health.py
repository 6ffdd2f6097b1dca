"""Liveness, readiness and Prometheus metrics (outside /api/v1, for orchestrators)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import redis
from fastapi import APIRouter, Request, Response
from kombu import Connection
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.schemas import Health
from core.settings import Settings

router = APIRouter(tags=["health"])

BROKER_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True)
class Instruments:
    """Prometheus metrics of one app, in its own registry (tests build many apps)."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    labels_created: Counter
    next_served: Counter


def make_instruments() -> Instruments:
    registry = CollectorRegistry()
    return Instruments(
        registry=registry,
        requests=Counter(
            "nextlabel_http_requests",
            "HTTP requests by route template and status.",
            ["method", "route", "status"],
            registry=registry,
        ),
        latency=Histogram(
            "nextlabel_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["method", "route"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        ),
        labels_created=Counter(
            "nextlabel_labels_created",
            "Labels created (replacements included).",
            registry=registry,
        ),
        next_served=Counter(
            "nextlabel_next_items_served",
            "Items handed out by `next`, by the strategy that chose them.",
            ["strategy"],
            registry=registry,
        ),
    )


def instruments(request: Request) -> Instruments:
    found: Instruments = request.app.state.instruments
    return found


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    summary="Readiness: the database and the task broker answer",
    responses={503: {"model": Health}},
)
def readyz(request: Request, response: Response) -> Health:
    settings: Settings = request.app.state.settings
    checks = {
        "database": _check_database(request),
        "broker": _check_broker(settings),
    }
    health = Health(
        status="ok" if all(v == "ok" for v in checks.values()) else "unavailable", checks=checks
    )
    if health.status != "ok":
        response.status_code = 503
    return health


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    data = generate_latest(instruments(request).registry)
    return Response(content=data, media_type=CONTENT_TYPE_LATEST)


def _check_database(request: Request) -> str:
    try:
        with request.app.state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # readiness reports any failure rather than raising it
        return f"error: {exc.__class__.__name__}: {exc}"
    return "ok"


def _check_broker(settings: Settings) -> str:
    url = settings.resolved_broker_url
    try:
        if settings.broker_is_embedded:
            return _check_embedded_broker(url)
        if url.startswith(("redis://", "rediss://")):
            return _check_redis(url)
        return _check_kombu(url)
    except Exception as exc:  # readiness reports any failure rather than raising it
        return f"error: {exc.__class__.__name__}: {exc}"


def _check_embedded_broker(url: str) -> str:
    # The embedded broker is a SQLite file: ready when its folder can be written.
    database = make_url(url.removeprefix("sqla+")).database or ""
    folder = os.path.dirname(os.path.abspath(database))
    if os.path.isdir(folder) and os.access(folder, os.W_OK):
        return "ok"
    return f"error: broker folder {folder} is not writable"


def _check_redis(url: str) -> str:
    client = redis.Redis.from_url(
        url, socket_connect_timeout=BROKER_TIMEOUT_SECONDS, socket_timeout=BROKER_TIMEOUT_SECONDS
    )
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


def _check_kombu(url: str) -> str:
    with Connection(url, connect_timeout=BROKER_TIMEOUT_SECONDS) as connection:
        connection.ensure_connection(max_retries=1)
    return "ok"

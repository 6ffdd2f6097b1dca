"""HTTP routers, one per resource. Everything but health and Prometheus lives under /api/v1.

Each router carries its full prefix, so a route's `path` is the template Prometheus labels
requests with.
"""

from __future__ import annotations

from fastapi import APIRouter

from app.api import (
    annotators,
    catalog,
    embeddings,
    export,
    health,
    items,
    labels,
    metrics,
    projects,
    queue,
    rounds,
    webhooks,
)


def routers() -> list[APIRouter]:
    modules = (
        annotators, catalog, projects, items, embeddings, queue, labels, rounds, metrics, export,
        webhooks, health,
    )  # fmt: skip
    return [module.router for module in modules]

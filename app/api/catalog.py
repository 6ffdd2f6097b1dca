"""The catalog of strategies, networks, cold starts and round phases (core.catalog), for the UI
and clients."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from app.deps import API_PREFIX, CurrentUser
from app.schemas import Catalog, CatalogEntry
from core.catalog import (
    COLD_START_ENTRIES,
    NETWORK_ENTRIES,
    PHASE_ENTRIES,
    STRATEGY_ENTRIES,
    Entry,
)

router = APIRouter(prefix=API_PREFIX, tags=["catalog"])


@router.get(
    "/catalog", summary="Every strategy, network, cold start and round phase, with descriptions"
)
async def get_catalog(_user: CurrentUser) -> Catalog:
    return Catalog(
        strategies=_entries(STRATEGY_ENTRIES),
        networks=_entries(NETWORK_ENTRIES),
        cold_starts=_entries(COLD_START_ENTRIES),
        phases=_entries(PHASE_ENTRIES),
    )


def _entries(entries: tuple[Entry, ...]) -> list[CatalogEntry]:
    return [CatalogEntry(**asdict(entry)) for entry in entries]

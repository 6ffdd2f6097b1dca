"""The catalog of strategies, networks and round phases (core.catalog), for the UI and clients."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from app.deps import API_PREFIX, CurrentUser
from app.schemas import Catalog, CatalogEntry
from core.catalog import NETWORK_ENTRIES, PHASE_ENTRIES, STRATEGY_ENTRIES, Entry

router = APIRouter(prefix=API_PREFIX, tags=["catalog"])


@router.get("/catalog", summary="Every strategy, network and round phase, with descriptions")
async def get_catalog(_user: CurrentUser) -> Catalog:
    return Catalog(
        strategies=_entries(STRATEGY_ENTRIES),
        networks=_entries(NETWORK_ENTRIES),
        phases=_entries(PHASE_ENTRIES),
    )


def _entries(entries: tuple[Entry, ...]) -> list[CatalogEntry]:
    return [CatalogEntry(**asdict(entry)) for entry in entries]

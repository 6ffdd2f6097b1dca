"""The simulator takes strategy and phase names from the service it drives (GET /catalog)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.main import create_app
from app.services.annotators import create_annotator
from core.catalog import PHASES, STRATEGIES
from core.settings import Settings
from core.tables import Project, Role
from nextlabel_client import Client
from simulate.datasets import load_dataset
from simulate.records import PHASES as RECORDED_PHASES
from simulate.records import RunConfig
from simulate.runner import run_one
from simulate.upload import Archives
from tests.app.conftest import serving


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    return create_app(Settings(environment="test", data_dir=tmp_path / "data", log_level="WARNING"))


@pytest.fixture
def admin(app: FastAPI) -> Iterator[Client]:
    with app.state.session_factory() as session:
        _, token = create_annotator(session=session, name="admin", role=Role.admin)
    with serving(app) as url, Client(url, token) as client:
        yield client


def test_the_catalog_names_what_the_service_offers(admin: Client) -> None:
    catalog = admin.catalog()
    assert catalog.names("strategies") == list(STRATEGIES)
    assert tuple(catalog.names("phases")) == PHASES == RECORDED_PHASES[:-1]


def test_a_strategy_the_service_does_not_offer_is_refused_before_anything_is_made(
    admin: Client, app: FastAPI
) -> None:
    config = RunConfig(dataset="digits", strategy="coreset", batch_size=10, seed=0, budget=20)
    dataset = load_dataset("digits")
    with pytest.raises(ValueError, match="unknown strategy 'coreset'"):
        run_one(admin, dataset, Archives.build(dataset), config)
    with app.state.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Project)) == 0


def test_a_network_the_service_does_not_offer_is_refused_before_anything_is_made(
    admin: Client, app: FastAPI
) -> None:
    config = RunConfig(
        dataset="digits", strategy="random", batch_size=10, seed=0, budget=20, network="vgg"
    )
    dataset = load_dataset("digits")
    with pytest.raises(ValueError, match="unknown network 'vgg'"):
        run_one(admin, dataset, Archives.build(dataset), config)
    with app.state.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Project)) == 0

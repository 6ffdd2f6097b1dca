"""The OpenAPI document is the contract: Schemathesis fuzzes every operation against it.

Each generated request is sent as an admin and as an annotator, once with the ids it
generated (mostly nothing there) and once with the ids of a real project, item, round and
annotator, so the fuzzed bodies and queries reach real rows. Every Schemathesis check runs:
no 5xx, every status, header and body as documented, schema-invalid input rejected and
valid input accepted. On SQLite and on PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy import select

from app.services.annotators import create_annotator
from core.tables import Annotator, Item, Role, Round, RoundStatus
from tests.app.conftest import Api
from tests.app.test_labelling import add_done_round

# Examples per operation: the suite's time budget (about 25 operations × 2 backends). A
# deeper run: NEXTLABEL_FUZZ_EXAMPLES=500 python -m pytest tests/app/test_openapi_contract.py
EXAMPLES = int(os.environ.get("NEXTLABEL_FUZZ_EXAMPLES", "25"))


@dataclass(frozen=True)
class World:
    """Real rows for generated requests to reach, and who calls."""

    tokens: dict[str, str]
    path_ids: dict[str, int]


@pytest.fixture
def world(api: Api) -> World:
    project = api.project()["id"]
    items = api.upload_images(project, 6)
    annotator = api.user("ann", projects=[project])
    api.label(items[0], "cat", annotator)
    round_id = add_done_round(api, project, queue=items[1:4], scores={i: 1.0 for i in items})
    with api.app.state.session_factory() as session:
        _, admin = create_annotator(session=session, name="fuzzing admin", role=Role.admin)
        member = session.scalars(select(Annotator.id).where(Annotator.name == "ann")).one()
        assert session.get(Round, round_id).status == RoundStatus.done  # type: ignore[union-attr]
        assert session.get(Item, items[1]) is not None
    return World(
        tokens={"admin": admin, "annotator": annotator},
        path_ids={
            "project_id": project,
            "item_id": items[1],
            "round_id": round_id,
            "annotator_id": member,
        },
    )


@pytest.fixture
def contract(app: FastAPI, world: World) -> Iterator[Any]:
    yield schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("contract")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_operation_keeps_the_contract(case: Any, world: World) -> None:
    generated = dict(case.path_parameters or {})
    real = {name: world.path_ids.get(name, value) for name, value in generated.items()}
    # Real ids only where the generated ones were meant to be valid, and the token only
    # where the headers were not generated to be invalid (a missing Authorization, say).
    meta = case.meta
    may_replace_ids = meta is None or not meta.is_negative_at(ParameterLocation.PATH)
    may_sign_in = meta is None or not meta.is_negative_at(ParameterLocation.HEADER)
    destructive = case.method == "DELETE" and case.path == "/api/v1/projects/{project_id}"
    for role, token in world.tokens.items():
        auth = {"Authorization": f"Bearer {token}"} if may_sign_in else None
        case.path_parameters = dict(generated)
        call_and_validate(case, auth)
        if may_replace_ids and real != generated and not (destructive and role == "admin"):
            # (Deleting the shared project would leave nothing for the rest.)
            case.path_parameters = dict(real)
            call_and_validate(case, auth)


def call_and_validate(case: Any, headers: dict[str, str] | None) -> None:
    """`case.call_and_validate`, except that a well-formed request the service refuses as not
    acceptable (a 422 with no schema `errors`: hotkeys for classes the project lacks, say)
    is not a schema-valid request rejected. Every other check still runs on it."""
    response = case.call(headers=headers)
    excluded = [positive_data_acceptance] if _not_acceptable(response) else None
    case.validate_response(response, headers=headers, excluded_checks=excluded)


def _not_acceptable(response: Any) -> bool:
    if response.status_code != 422:
        return False
    body = response.json()
    return isinstance(body, dict) and not body.get("errors")

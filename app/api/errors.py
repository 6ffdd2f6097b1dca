"""The error answers of every route, in the OpenAPI document exactly as they are on the wire.

Generated clients and integrations read the document, not the code, so each route lists the
errors it can give, read off what the route depends on rather than written by hand:
- 401 when it needs a token, 403 when it needs an admin's;
- 404 when a path names something (a project, an item, a round) that may not be yours;
- 400 and 413 when it takes a body (unparseable; over the upload limit, which applies to
  every body);
- 422 when it takes any input, with the shape `app.main` answers with (not FastAPI's);
- 503 when it touches the database, token checks included (every connection busy).
409 and other route-specific answers stay declared on the route itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import APIRouter
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from app.deps import get_admin_user, get_current_user, get_db
from app.schemas import ErrorMessage


class ValidationProblem(BaseModel):
    loc: list[str | int] = Field(description="Where: body, query, path or header, then the field.")
    msg: str
    type: str


class ValidationErrorMessage(BaseModel):
    """A 422: one sentence for a person, and, when the request broke its schema, each problem."""

    detail: str
    errors: list[ValidationProblem] = Field(
        default_factory=list,
        description="Each field that broke the request schema; empty when the request was "
        "well-formed but not acceptable (an unknown class, say).",
    )


_MESSAGES = {
    400: "The request body could not be parsed",
    401: "No token, or a token that is not valid",
    403: "Only admins can do this",
    404: "No such resource visible to you",
    409: "Conflicts with the current state",
    413: "The request body is over the upload limit",
    503: "Every database connection is busy: retry shortly (see Retry-After)",
}


def document_errors(router: APIRouter) -> None:
    """Add the errors each of the router's routes can answer with to its OpenAPI responses."""
    for route in router.routes:
        if isinstance(route, APIRoute) and route.include_in_schema:
            for status_code in _error_codes(route):
                _declare(route, status_code)


def _error_codes(route: APIRoute) -> Iterator[int]:
    calls = set(_calls(route.dependant))
    if get_current_user in calls or get_admin_user in calls:
        yield 401
    if get_admin_user in calls:
        yield 403
    if route.dependant.path_params:
        yield 404
    if route.body_field is not None:
        yield 400  # a body that can't be parsed at all (not JSON, not a form)
        yield 413
    if _takes_input(route.dependant):
        yield 422
    if get_db in calls or get_current_user in calls:
        yield 503  # checking a token reads the database too


def _declare(route: APIRoute, status_code: int) -> None:
    model: type[BaseModel] = ValidationErrorMessage if status_code == 422 else ErrorMessage
    declared: dict[str, Any] = route.responses.setdefault(status_code, {})
    declared.setdefault("description", _MESSAGES.get(status_code, "The request is not valid"))
    if "model" not in declared and "content" not in declared:
        declared["model"] = model


def _calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def _takes_input(dependant: Dependant) -> bool:
    own = (
        dependant.path_params
        or dependant.query_params
        or dependant.header_params
        or dependant.body_params
    )
    return bool(own) or any(_takes_input(sub) for sub in dependant.dependencies)


class AllowedMethods:
    """Every method each API path answers to, for the `Allow` header of a 405.

    Starlette answers a 405 from the first route whose path matched, which names only that
    route's methods; a path served by several routes (GET and PATCH of a project) has more.
    """

    def __init__(self, routers: Iterable[APIRouter]) -> None:
        self._routes = [
            (route.path_regex, route.methods or set())
            for router in routers
            for route in router.routes
            if isinstance(route, APIRoute)
        ]

    def of(self, path: str) -> list[str]:
        methods = {m for regex, ms in self._routes if regex.match(path) for m in ms}
        return sorted(methods)

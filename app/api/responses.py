"""JSON answers built in one step by pydantic's serializer, for the hottest routes.

A route that returns a model has FastAPI validate it against the response model again and
then encode it with `json`; for `next` and labelling that was a tenth of the server's
CPU. These routes declare `response_model=` for the OpenAPI schema and return the bytes
pydantic-core writes directly; the JSON is the same.
"""

from __future__ import annotations

from pydantic import BaseModel, TypeAdapter
from starlette.responses import Response

from app.schemas import NextItem

_NEXT_ITEMS = TypeAdapter(list[NextItem])


def model_response(
    model: BaseModel, *, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        model.model_dump_json().encode(),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


def next_items_response(items: list[NextItem]) -> Response:
    return Response(_NEXT_ITEMS.dump_json(items), media_type="application/json")

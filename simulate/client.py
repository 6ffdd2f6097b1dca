"""A typed httpx client for the part of ``/api/v1`` the simulator uses.

It parses replies into its own small models (unknown fields ignored) rather than importing
the service's schemas: the simulator is a user of the public JSON contract, and must notice
when that contract, not an internal class, changes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
# Multipart field the items endpoint reads its files from.
UPLOAD_FIELD = "files"
# Every request may hit a SQLite file busy with a worker transaction: generous, not infinite.
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=10.0)
_RETRY_STATUSES = frozenset({502, 503, 504})

ModelT = TypeVar("ModelT", bound=BaseModel)


class _Reply(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Project(_Reply):
    id: int
    name: str
    classes: list[str]
    strategy: str
    query_size: int
    retrain_every: int
    mc_samples: int
    seed: int


class Item(_Reply):
    id: int
    filename: str
    split: str
    known_label: str | None = None


class ItemPage(_Reply):
    items: list[Item]
    next_cursor: int | None = None


class SkippedFile(_Reply):
    name: str
    reason: str


class UploadReport(_Reply):
    created: list[int]
    skipped: list[SkippedFile]


class ServedItem(Item):
    # `next` sends annotators no file name unless the project shows them.
    filename: str | None = None  # type: ignore[assignment]


class NextItem(_Reply):
    item: ServedItem
    rank: int | None = None
    score: float | None = None
    strategy: str
    round_id: int | None = None


class LabelReply(_Reply):
    id: int
    item_id: int
    label: str
    round_id: int | None = None
    replaced_previous: bool = False
    round_enqueued: int | None = None


class Round(_Reply):
    id: int
    status: str
    trigger: str | None = None
    strategy: str | None = None
    labels_used: int
    metrics: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    error: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class QueueEntry(_Reply):
    item_id: int
    rank: int
    score: float
    strategy: str
    labelled: bool = False


class RoundDetail(Round):
    queue: list[QueueEntry] = []


class CurvePoint(_Reply):
    round_id: int
    labels_used: int
    accuracy: float | None = None
    nll: float | None = None


class ProjectMetrics(_Reply):
    learning_curve: list[CurvePoint]


class AnnotatorCreated(_Reply):
    id: int
    name: str
    token: str


class ApiError(RuntimeError):
    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        super().__init__(
            f"{response.request.method} {response.request.url.path} -> "
            f"{response.status_code}: {response.text[:500]}"
        )


class Client:
    """One authenticated connection to a nextlabel service; thread-safe (httpx.Client is)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.transport = transport  # tests pass an in-process fake service
        self._http = httpx.Client(
            base_url=self.base_url,
            transport=transport,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            # Several annotator threads share the client: one connection each.
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ---------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = path
        for attempt in range(5):
            try:
                response = self._http.request(method, url, **kwargs)
            except httpx.TransportError as error:
                # A busy 2-core machine can drop a connection; the request is idempotent or,
                # for labels, harmless to repeat (a second label replaces the first).
                logger.warning("%s %s failed (%s), retrying", method, url, error)
                time.sleep(0.5 * (attempt + 1))
                continue
            if response.status_code in _RETRY_STATUSES:
                time.sleep(0.5 * (attempt + 1))
                continue
            if response.is_error:
                raise ApiError(response)
            return response
        raise RuntimeError(f"{method} {url}: no answer after 5 attempts")

    def _api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._request(method, API_PREFIX + path, **kwargs)

    @staticmethod
    def _parse(model: type[ModelT], data: Any) -> ModelT:
        return model.model_validate(data)

    @staticmethod
    def _parse_list(model: type[ModelT], data: Any, key: str) -> list[ModelT]:
        # Tolerate a bare list or an envelope such as {"items": [...]}.
        rows = data.get(key, []) if isinstance(data, Mapping) else data
        return [model.model_validate(row) for row in rows]

    # --- service ----------------------------------------------------------------------

    def healthy(self) -> bool:
        try:
            return self._http.get("/healthz", timeout=5.0).status_code == 200
        except httpx.TransportError:
            return False

    def ready(self) -> bool:
        try:
            return self._http.get("/readyz", timeout=10.0).status_code == 200
        except httpx.TransportError:
            return False

    # --- projects ---------------------------------------------------------------------

    def create_project(self, **fields: Any) -> Project:
        return self._parse(Project, self._api("POST", "/projects", json=fields).json())

    def update_project(self, project_id: int, **fields: Any) -> Project:
        reply = self._api("PATCH", f"/projects/{project_id}", json=fields)
        return self._parse(Project, reply.json())

    def delete_project(self, project_id: int) -> None:
        self._api("DELETE", f"/projects/{project_id}")

    # --- people -----------------------------------------------------------------------

    def create_annotator(self, name: str, role: str = "annotator") -> AnnotatorCreated:
        reply = self._api("POST", "/annotators", json={"name": name, "role": role})
        return self._parse(AnnotatorCreated, reply.json())

    def add_member(self, project_id: int, annotator_id: int) -> None:
        self._api("PUT", f"/projects/{project_id}/members/{annotator_id}")

    # --- items ------------------------------------------------------------------------

    def upload_zip(self, project_id: int, name: str, data: bytes) -> UploadReport:
        files = [(UPLOAD_FIELD, (name, data, "application/zip"))]
        reply = self._api("POST", f"/projects/{project_id}/items", files=files)
        return self._parse(UploadReport, reply.json())

    def list_items(self, project_id: int, status: str, limit: int = 1000) -> list[Item]:
        """Every item with ``status`` (labelled, unlabelled or validation), all pages."""
        items: list[Item] = []
        cursor: int | None = None
        while True:
            params: dict[str, Any] = {"status": status, "limit": limit}
            if cursor is not None:
                params["cursor"] = cursor
            page = self._parse(
                ItemPage, self._api("GET", f"/projects/{project_id}/items", params=params).json()
            )
            items.extend(page.items)
            if page.next_cursor is None or not page.items:
                return items
            cursor = page.next_cursor

    # --- labelling --------------------------------------------------------------------

    def next_items(self, project_id: int, n: int = 1) -> list[NextItem]:
        reply = self._api("GET", f"/projects/{project_id}/next", params={"n": n})
        return self._parse_list(NextItem, reply.json(), "items")

    def label(self, item_id: int, label: str, ms_spent: int | None = None) -> LabelReply:
        body: dict[str, Any] = {"label": label}
        if ms_spent is not None:
            body["ms_spent"] = ms_spent
        return self._parse(
            LabelReply, self._api("POST", f"/items/{item_id}/labels", json=body).json()
        )

    # --- rounds and metrics -----------------------------------------------------------

    def rounds(self, project_id: int) -> list[Round]:
        reply = self._api("GET", f"/projects/{project_id}/rounds")
        return self._parse_list(Round, reply.json(), "rounds")

    def round(self, round_id: int) -> RoundDetail:
        return self._parse(RoundDetail, self._api("GET", f"/rounds/{round_id}").json())

    def start_round(self, project_id: int) -> Round:
        return self._parse(Round, self._api("POST", f"/projects/{project_id}/rounds").json())

    def catalog(self) -> dict[str, list[str]]:
        """The names the service offers (GET /catalog): strategies, networks and round
        phases, each in the service's order."""
        served = self._api("GET", "/catalog").json()
        return {kind: [str(entry["name"]) for entry in served[kind]] for kind in served}

    def metrics(self, project_id: int) -> ProjectMetrics:
        reply = self._api("GET", f"/projects/{project_id}/metrics")
        return self._parse(ProjectMetrics, reply.json())

    def export_csv(self, project_id: int) -> str:
        reply = self._api("GET", f"/projects/{project_id}/export", params={"format": "csv"})
        return reply.text

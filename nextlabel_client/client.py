"""A typed httpx client for every route of a nextlabel service.

Each public method calls one route and says which with ``@route(method, path)``, the path
exactly as the service's OpenAPI document writes it; the method sends that route and no
other (``_send`` reads it off the method). ``Client.routes()`` is therefore the list of what
the client covers, and tests/client compares it with the service's document, so a route
added to the API without a method here fails the tests.

Guarantees:
- Replies are parsed into the models of ``nextlabel_client.models``; fields this client does
  not know are kept, never an error.
- Every error answer raises one ``ApiError`` carrying the status and the API's ``detail``
  (and, for a 422, each field's problem).
- A request is sent again only when repeating it cannot do a thing twice: when it never
  reached the service (no connection), when the service answered 503 (every database
  connection busy: nothing was done), and otherwise only for reads, PUTs and DELETEs,
  uploads (the service keeps one copy of an image), embeddings (the same vectors again
  change nothing) and labels (each carries an
  Idempotency-Key, so a retry returns the first answer). Creating a project, an annotator,
  a round or a webhook is never sent twice.

One piece because it is one class with a method per route, each a few lines over the shared
`_send`; the models live in nextlabel_client.models.
"""

from __future__ import annotations

import logging
import mimetypes
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
from pydantic import BaseModel

from nextlabel_client.models import (
    Annotator,
    AnnotatorCreated,
    Catalog,
    EmbeddingImportReport,
    EmbeddingSummary,
    ExportFormat,
    Health,
    ImportReport,
    Item,
    ItemPage,
    ItemStatus,
    Label,
    LabelUse,
    NextItem,
    PredictionsAs,
    Project,
    ProjectMetrics,
    Role,
    Round,
    RoundDetail,
    Skip,
    Webhook,
    WebhookCreated,
    WebhookDelivery,
    WebhookEvent,
)

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
# Multipart field the items endpoint reads its files from.
UPLOAD_FIELD = "files"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Every request may hit a SQLite file busy with a worker transaction: generous, not infinite.
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=10.0)
DEFAULT_ATTEMPTS = 5
# The longest wait between attempts, whatever a Retry-After asks for.
MAX_BACKOFF_S = 5.0
_REPEATABLE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})
# Answers from a proxy in front of the service: the request may or may not have been done.
_GATEWAY_STATUSES = frozenset({502, 504})
_BUSY = 503
_EXPORT_CHUNK = 1 << 16

ModelT = TypeVar("ModelT", bound=BaseModel)
MethodT = TypeVar("MethodT", bound=Callable[..., Any])
Upload = Path | tuple[str, bytes | IO[bytes]]
"""A file to upload: a path, or (file name, contents)."""


@dataclass(frozen=True, order=True)
class Route:
    """One operation of the API: its HTTP method and its path as OpenAPI writes it."""

    method: str
    path: str

    def url(self, **path_params: int) -> str:
        return self.path.format(**path_params)


_ROUTE_ATTRIBUTE = "__nextlabel_route__"


def route(method: str, path: str) -> Callable[[MethodT], MethodT]:
    """Mark a Client method as the caller of ``method path`` (path as in /openapi.json)."""

    def mark(function: MethodT) -> MethodT:
        setattr(function, _ROUTE_ATTRIBUTE, Route(method.upper(), path))
        return function

    return mark


def route_of(method: Callable[..., Any]) -> Route:
    """The route a Client method (bound or not) calls."""
    found = getattr(method, _ROUTE_ATTRIBUTE, None)
    if not isinstance(found, Route):
        raise TypeError(f"{method!r} is not marked with @route")
    return found


class ApiError(Exception):
    """The service answered with an error: ``status_code`` and the API's ``detail``.

    ``errors`` lists each field that broke the request's schema (a 422), as the API gives
    them: ``{"loc": [...], "msg": ..., "type": ...}``; empty otherwise.
    """

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.status_code = response.status_code
        self.method = response.request.method
        self.path = response.request.url.path
        body = _json_or_none(response)
        detail = body.get("detail") if isinstance(body, Mapping) else None
        self.detail: str = detail if isinstance(detail, str) else response.text[:500]
        errors = body.get("errors") if isinstance(body, Mapping) else None
        self.errors: list[dict[str, Any]] = list(errors) if isinstance(errors, list) else []
        super().__init__(f"{self.method} {self.path} -> {self.status_code}: {self.detail}")


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


class Client:
    """One authenticated connection to a nextlabel service; thread-safe (httpx.Client is).

    ``base_url`` is the service's root (``http://host:8000``), not ``/api/v1``. Use it as a
    context manager, or call ``close()``.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        attempts: int = DEFAULT_ATTEMPTS,
        transport: httpx.BaseTransport | None = None,
        event_hooks: Mapping[str, list[Callable[..., Any]]] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.transport = transport  # tests pass an in-process service
        self.attempts = attempts
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=self.base_url,
            transport=transport,
            headers=headers,
            timeout=timeout,
            event_hooks=dict(event_hooks or {}),
            # Several threads may share the client (the simulator's annotators do).
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def routes(cls) -> dict[str, Route]:
        """Method name -> the route it calls, for every public method that calls one."""
        found = {}
        for name in dir(cls):
            route_ = getattr(getattr(cls, name), _ROUTE_ATTRIBUTE, None)
            if isinstance(route_, Route) and not name.startswith("_"):
                found[name] = route_
        return found

    # --- plumbing -----------------------------------------------------------------------

    def _send(
        self,
        method: Callable[..., Any],
        path_params: Mapping[str, int] | None = None,
        *,
        repeatable: bool = False,
        accept: frozenset[int] = frozenset(),
        **kwargs: Any,
    ) -> httpx.Response:
        """Send the route ``method`` is marked with; raise ApiError on an error answer.

        ``repeatable``: repeating the request cannot do anything twice, so it is sent again
        after any lost connection or gateway error, not only before it reached the service.
        ``accept``: error statuses that are answers here, returned rather than raised.
        """
        route_ = route_of(method)
        url = route_.url(**(path_params or {}))
        headers = kwargs.get("headers") or {}
        repeatable = repeatable or route_.method in _REPEATABLE_METHODS
        repeatable = repeatable or IDEMPOTENCY_HEADER in headers
        for attempt in range(1, self.attempts + 1):
            last = attempt == self.attempts
            try:
                response = self._http.request(route_.method, url, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
                if last:
                    raise
                logger.warning("%s %s: no connection (%s), retrying", route_.method, url, error)
                self._pause(attempt, None)
                continue
            except httpx.TransportError as error:
                if last or not repeatable:
                    raise
                logger.warning("%s %s failed (%s), retrying", route_.method, url, error)
                self._pause(attempt, None)
                continue
            if response.status_code in accept or not response.is_error:
                return response
            retry = response.status_code == _BUSY or (
                repeatable and response.status_code in _GATEWAY_STATUSES
            )
            if not retry or last:
                raise ApiError(response)
            self._pause(attempt, response.headers.get("Retry-After"))
        raise AssertionError("unreachable: the last attempt returns or raises")

    @staticmethod
    def _pause(attempt: int, retry_after: str | None) -> None:
        wait = 0.5 * attempt
        if retry_after is not None and retry_after.isdigit():
            wait = float(retry_after)
        time.sleep(min(wait, MAX_BACKOFF_S))

    @staticmethod
    def _one(model: type[ModelT], response: httpx.Response) -> ModelT:
        return model.model_validate(response.json())

    @staticmethod
    def _many(model: type[ModelT], response: httpx.Response) -> list[ModelT]:
        return [model.model_validate(row) for row in response.json()]

    # --- the service --------------------------------------------------------------------

    @route("GET", "/healthz")
    def health(self) -> Health:
        """Liveness: the process answers (checks nothing else)."""
        return self._one(Health, self._send(self.health))

    @route("GET", "/readyz")
    def readiness(self) -> Health:
        """Readiness: the database and the task broker, each ``ok`` or why not. A service
        that is not ready answers 503 with the same shape: returned, not raised."""
        return self._one(Health, self._send(self.readiness, accept=frozenset({_BUSY})))

    @route("GET", "/metrics")
    def prometheus_metrics(self) -> str:
        """The service's Prometheus metrics, in Prometheus' text format."""
        return self._send(self.prometheus_metrics).text

    @route("GET", f"{API_PREFIX}/catalog")
    def catalog(self) -> Catalog:
        """The strategies, networks and round phases the service offers."""
        return self._one(Catalog, self._send(self.catalog))

    # --- people -------------------------------------------------------------------------

    @route("GET", f"{API_PREFIX}/me")
    def me(self) -> Annotator:
        """Who the token belongs to."""
        return self._one(Annotator, self._send(self.me))

    @route("GET", f"{API_PREFIX}/annotators")
    def list_annotators(self) -> list[Annotator]:
        """Everyone (admins only)."""
        return self._many(Annotator, self._send(self.list_annotators))

    @route("POST", f"{API_PREFIX}/annotators")
    def create_annotator(self, name: str, role: Role = "annotator") -> AnnotatorCreated:
        """A new account; its ``token`` is shown once (admins only)."""
        body = {"name": name, "role": role}
        return self._one(AnnotatorCreated, self._send(self.create_annotator, json=body))

    @route("PUT", f"{API_PREFIX}/projects/{{project_id}}/members/{{annotator_id}}")
    def add_member(self, project_id: int, annotator_id: int) -> Annotator:
        """Let an annotator label a project (admins only)."""
        ids = {"project_id": project_id, "annotator_id": annotator_id}
        return self._one(Annotator, self._send(self.add_member, ids))

    @route("DELETE", f"{API_PREFIX}/projects/{{project_id}}/members/{{annotator_id}}")
    def remove_member(self, project_id: int, annotator_id: int) -> None:
        ids = {"project_id": project_id, "annotator_id": annotator_id}
        self._send(self.remove_member, ids)

    # --- projects -----------------------------------------------------------------------

    @route("GET", f"{API_PREFIX}/projects")
    def list_projects(self) -> list[Project]:
        """The projects you can see (admins: all of them)."""
        return self._many(Project, self._send(self.list_projects))

    @route("POST", f"{API_PREFIX}/projects")
    def create_project(self, name: str, classes: Sequence[str], **settings: Any) -> Project:
        """A new project; ``settings`` are the API's (strategy, query_size, retrain_every,
        queue_size, mc_samples, image_size, image_channels, network, seed, hotkeys,
        show_filenames)."""
        body = {"name": name, "classes": list(classes), **settings}
        return self._one(Project, self._send(self.create_project, json=body))

    @route("GET", f"{API_PREFIX}/projects/{{project_id}}")
    def project(self, project_id: int) -> Project:
        return self._one(Project, self._send(self.project, {"project_id": project_id}))

    @route("PATCH", f"{API_PREFIX}/projects/{{project_id}}")
    def update_project(self, project_id: int, **fields: Any) -> Project:
        """Change settings (they apply from the next round); an unknown field is a 422."""
        reply = self._send(self.update_project, {"project_id": project_id}, json=fields)
        return self._one(Project, reply)

    @route("DELETE", f"{API_PREFIX}/projects/{{project_id}}")
    def delete_project(self, project_id: int) -> None:
        self._send(self.delete_project, {"project_id": project_id})

    # --- items --------------------------------------------------------------------------

    @route("POST", f"{API_PREFIX}/projects/{{project_id}}/items")
    def upload(
        self,
        project_id: int,
        files: Sequence[Upload],
        *,
        dry_run: bool = False,
        labels_as: LabelUse | None = None,
        skip_problems: bool = False,
    ) -> ImportReport:
        """Upload images, .zip files and manifests (one request).

        ``dry_run``: check everything and report what would happen; nothing is written.
        ``labels_as``: what labels without a split of their own become. ``skip_problems``:
        import what has no problem instead of refusing everything.
        """
        params: dict[str, Any] = {"dry_run": dry_run, "skip_problems": skip_problems}
        if labels_as is not None:
            params["labels_as"] = labels_as
        with ExitStack() as stack:
            multipart = [(UPLOAD_FIELD, _part(upload, stack)) for upload in files]
            reply = self._send(
                self.upload,
                {"project_id": project_id},
                # The service keeps one copy of each image: sending it again adds nothing.
                repeatable=True,
                params=params,
                files=multipart,
            )
        return self._one(ImportReport, reply)

    @route("POST", f"{API_PREFIX}/projects/{{project_id}}/items")
    def upload_zip(self, project_id: int, name: str, data: bytes) -> ImportReport:
        """Upload one zip archive held in memory."""
        return self.upload(project_id, [(name, data)])

    # --- embeddings ---------------------------------------------------------------------

    @route("POST", f"{API_PREFIX}/projects/{{project_id}}/embeddings")
    def import_embeddings(
        self, project_id: int, file: Upload, *, dry_run: bool = False, replace: bool = False
    ) -> EmbeddingImportReport:
        """Import vectors keyed by file name or sha256: an .npz (``keys``, ``vectors``), an
        .npy (a structured array with fields ``key`` and ``vector``) or a .parquet file.

        Any problem refuses the whole file: ApiError 422, whose ``response.json()`` lists
        ``problems``; ``dry_run`` reports them instead, writing nothing. ``replace``: remove
        the project's imported vectors first (a new model's, of another dimension).
        """
        params = {"dry_run": dry_run, "replace": replace}
        with ExitStack() as stack:
            reply = self._send(
                self.import_embeddings,
                {"project_id": project_id},
                # The same vectors again change nothing.
                repeatable=True,
                params=params,
                files=[("file", _part(file, stack))],
            )
        return self._one(EmbeddingImportReport, reply)

    @route("GET", f"{API_PREFIX}/projects/{{project_id}}/embeddings")
    def embeddings(self, project_id: int) -> EmbeddingSummary:
        """The project's imported vectors: dimension, count, and the items they cover."""
        reply = self._send(self.embeddings, {"project_id": project_id})
        return self._one(EmbeddingSummary, reply)

    @route("GET", f"{API_PREFIX}/projects/{{project_id}}/items")
    def list_items(
        self,
        project_id: int,
        status: ItemStatus | None = None,
        *,
        limit: int = 100,
        cursor: int | None = None,
    ) -> ItemPage:
        """One page of a project's items; pass ``page.next_cursor`` as ``cursor`` for the
        next (``iter_items`` does)."""
        params: dict[str, Any] = {"limit": limit}
        if status is not None:
            params["status"] = status
        if cursor is not None:
            params["cursor"] = cursor
        reply = self._send(self.list_items, {"project_id": project_id}, params=params)
        return self._one(ItemPage, reply)

    @route("GET", f"{API_PREFIX}/projects/{{project_id}}/items")
    def iter_items(
        self, project_id: int, status: ItemStatus | None = None, *, page_size: int = 1000
    ) -> Iterator[Item]:
        """Every item (with ``status``: labelled, unlabelled or validation), page by page."""
        cursor: int | None = None
        while True:
            page = self.list_items(project_id, status, limit=page_size, cursor=cursor)
            yield from page.items
            if page.next_cursor is None or not page.items:
                return
            cursor = page.next_cursor

    @route("GET", f"{API_PREFIX}/items/{{item_id}}")
    def item(self, item_id: int) -> Item:
        return self._one(Item, self._send(self.item, {"item_id": item_id}))

    @route("GET", f"{API_PREFIX}/items/{{item_id}}/image")
    def image(self, item_id: int) -> bytes:
        """The item's image as stored (PNG or JPEG bytes)."""
        return self._send(self.image, {"item_id": item_id}).content

    # --- labelling ----------------------------------------------------------------------

    @route("GET", f"{API_PREFIX}/projects/{{project_id}}/next")
    def next_items(self, project_id: int, n: int = 1) -> list[NextItem]:
        """Up to ``n`` items to label next, each leased to you; empty when none is left."""
        reply = self._send(self.next_items, {"project_id": project_id}, params={"n": n})
        return self._many(NextItem, reply)

    @route("DELETE", f"{API_PREFIX}/items/{{item_id}}/lease")
    def release_lease(self, item_id: int) -> None:
        """Give an item served to you back, unlabelled, to the others."""
        self._send(self.release_lease, {"item_id": item_id})

    @route("POST", f"{API_PREFIX}/items/{{item_id}}/labels")
    def label(
        self,
        item_id: int,
        label: str,
        ms_spent: int | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Label:
        """Label an item; a second label from you replaces the first.

        ``idempotency_key``: a string unique to this label (one is made if not given): a
        request sent again with the same key returns the first label, and writes nothing.
        """
        body: dict[str, Any] = {"label": label}
        if ms_spent is not None:
            body["ms_spent"] = ms_spent
        headers = {IDEMPOTENCY_HEADER: idempotency_key or uuid.uuid4().hex}
        reply = self._send(self.label, {"item_id": item_id}, json=body, headers=headers)
        return self._one(Label, reply)

    @route("DELETE", f"{API_PREFIX}/items/{{item_id}}/labels/mine")
    def undo_label(self, item_id: int) -> Label:
        """Undo your label (kept in history); the item is leased back to you."""
        return self._one(Label, self._send(self.undo_label, {"item_id": item_id}))

    @route("POST", f"{API_PREFIX}/items/{{item_id}}/skip")
    def skip(self, item_id: int) -> Skip:
        """Do not show you this item again."""
        # Skipping twice is skipping once.
        return self._one(Skip, self._send(self.skip, {"item_id": item_id}, repeatable=True))

    @route("DELETE", f"{API_PREFIX}/items/{{item_id}}/skip")
    def unskip(self, item_id: int) -> None:
        """Undo your skip (nothing without one); the item is leased back to you."""
        self._send(self.unskip, {"item_id": item_id})

    # --- rounds and metrics -------------------------------------------------------------

    @route("GET", f"{API_PREFIX}/projects/{{project_id}}/rounds")
    def rounds(self, project_id: int) -> list[Round]:
        return self._many(Round, self._send(self.rounds, {"project_id": project_id}))

    @route("POST", f"{API_PREFIX}/projects/{{project_id}}/rounds")
    def start_round(self, project_id: int) -> Round:
        """Ask for a round now; ApiError 409 when one is already queued or running."""
        return self._one(Round, self._send(self.start_round, {"project_id": project_id}))

    @route("GET", f"{API_PREFIX}/rounds/{{round_id}}")
    def round(self, round_id: int) -> RoundDetail:
        """A round with the queue it wrote."""
        return self._one(RoundDetail, self._send(self.round, {"round_id": round_id}))

    @route("GET", f"{API_PREFIX}/projects/{{project_id}}/metrics")
    def metrics(self, project_id: int) -> ProjectMetrics:
        """Counts, the learning curve and how fresh the queue is."""
        reply = self._send(self.metrics, {"project_id": project_id})
        return self._one(ProjectMetrics, reply)

    # --- export -------------------------------------------------------------------------

    @route("GET", f"{API_PREFIX}/projects/{{project_id}}/export")
    def export(
        self, project_id: int, format: ExportFormat = "csv", *, as_: PredictionsAs | None = None
    ) -> bytes:
        """The export in memory: labels (csv, json, jsonl), an ImageFolder zip
        (imagefolder), the latest predictions (predictions; ``as_`` csv or jsonl) or a zip of
        the latest round's trained model, ``model.pt`` (TorchScript) and ``model_card.json``
        (model; 409 until a finished round has saved one). For large projects, ``export_to``
        streams to a file instead."""
        params = _export_params(format, as_)
        return self._send(self.export, {"project_id": project_id}, params=params).content

    @route("GET", f"{API_PREFIX}/projects/{{project_id}}/export")
    def export_csv(self, project_id: int) -> str:
        """The labels as CSV text."""
        return self.export(project_id, "csv").decode("utf-8")

    @route("GET", f"{API_PREFIX}/projects/{{project_id}}/export")
    def export_to(
        self,
        project_id: int,
        destination: Path,
        format: ExportFormat = "csv",
        *,
        as_: PredictionsAs | None = None,
    ) -> int:
        """Stream the export into ``destination``; returns the bytes written. One attempt:
        an export is streamed as the service reads it, so it is not sent twice."""
        url = route_of(self.export_to).url(project_id=project_id)
        params = _export_params(format, as_)
        written = 0
        with self._http.stream("GET", url, params=params) as response:
            if response.is_error:
                response.read()
                raise ApiError(response)
            with destination.open("wb") as sink:
                for chunk in response.iter_bytes(_EXPORT_CHUNK):
                    written += sink.write(chunk)
        return written

    # --- webhooks -----------------------------------------------------------------------

    @route("POST", f"{API_PREFIX}/projects/{{project_id}}/webhooks")
    def create_webhook(
        self, project_id: int, url: str, events: Sequence[WebhookEvent] | None = None
    ) -> WebhookCreated:
        """Send a project's events to ``url`` (all events when ``events`` is None). The
        reply's ``secret`` signs each delivery and is shown once."""
        body: dict[str, Any] = {"url": url}
        if events is not None:
            body["events"] = list(events)
        reply = self._send(self.create_webhook, {"project_id": project_id}, json=body)
        return self._one(WebhookCreated, reply)

    @route("GET", f"{API_PREFIX}/projects/{{project_id}}/webhooks")
    def webhooks(self, project_id: int) -> list[Webhook]:
        return self._many(Webhook, self._send(self.webhooks, {"project_id": project_id}))

    @route("DELETE", f"{API_PREFIX}/projects/{{project_id}}/webhooks/{{webhook_id}}")
    def delete_webhook(self, project_id: int, webhook_id: int) -> None:
        self._send(self.delete_webhook, {"project_id": project_id, "webhook_id": webhook_id})

    @route("GET", f"{API_PREFIX}/webhooks/{{webhook_id}}/deliveries")
    def deliveries(
        self, webhook_id: int, *, before: int | None = None, limit: int = 100
    ) -> list[WebhookDelivery]:
        """A webhook's deliveries, newest first; pass the last id as ``before`` for more."""
        params: dict[str, Any] = {"limit": limit}
        if before is not None:
            params["before"] = before
        reply = self._send(self.deliveries, {"webhook_id": webhook_id}, params=params)
        return self._many(WebhookDelivery, reply)


def _part(upload: Upload, stack: ExitStack) -> tuple[str, bytes | IO[bytes], str]:
    content: bytes | IO[bytes]
    if isinstance(upload, Path):
        name, content = upload.name, stack.enter_context(upload.open("rb"))
    else:
        name, content = upload
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return name, content, media_type


def _export_params(format: ExportFormat, as_: PredictionsAs | None) -> dict[str, str]:
    params: dict[str, str] = {"format": format}
    if as_ is not None:
        params["as"] = as_
    return params

"""Webhooks: a project's events, signed and sent to the URLs its admins registered.

Guarantees, in order:
- An event's deliveries are rows written in the transaction of the event itself (a round's
  fenced status change, an export's record): an event that rolled back sends nothing, and
  one that committed is sent, whatever becomes of the broker or the process afterwards.
- The delivery row is the truth. Workers send due rows from threads of their own
  (`WebhookSender`), not through the broker, so a broker outage delays no delivery. A slow
  receiver holds up neither a round nor another hook: each attempt runs on one of the
  sender's few threads and is cut off after `webhook_timeout_seconds`.
- At least once. An attempt begins by claiming its row with a conditional UPDATE
  (attempts + 1, next_attempt_at pushed past the attempt's time limit), so no two senders
  make the same attempt; a sender that dies mid-attempt leaves the row due again once the
  claim lapses. Receivers deduplicate on the event id.
- A failed attempt (no answer in time, a network error, any status but 2xx; redirects are
  not followed) is tried again after `webhook_backoff_seconds` × 2^(attempt − 1), at most
  `webhook_backoff_max_seconds`; after `webhook_max_attempts` the delivery has failed for
  good. Each outcome is written on the row, where admins read it.

Signing: `X-Nextlabel-Signature: sha256=<hex>` is HMAC-SHA256 of the exact body, keyed with
the hook's secret. The body holds the event id and when the event happened, so both are
signed; `X-Nextlabel-Event`, `X-Nextlabel-Event-Id` and `X-Nextlabel-Timestamp` (the
attempt's Unix time) repeat them for receivers that route before parsing.

One piece because a delivery's life (written with its event, claimed, signed, sent, retried,
given up) is one state machine over one row, as core/rounds.py is for a round.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import secrets
import threading
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings
from core.tables import DeliveryStatus, Round, Webhook, WebhookDelivery, WebhookEvent

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Nextlabel-Signature"
EVENT_HEADER = "X-Nextlabel-Event"
EVENT_ID_HEADER = "X-Nextlabel-Event-Id"
DELIVERY_HEADER = "X-Nextlabel-Delivery"
TIMESTAMP_HEADER = "X-Nextlabel-Timestamp"
USER_AGENT = "nextlabel-webhooks/1"
# An attempt's claim outlives its time limit by this much before another sender may retry.
CLAIM_GRACE_SECONDS = 30.0
ERROR_LENGTH = 500


# --------------------------------------------------------------------------- signing


def new_secret() -> str:
    """A hook's signing secret: 256 random bits as 64 hex digits."""
    return secrets.token_hex(32)


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for `body`: `sha256=<hex HMAC-SHA256>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_matches(secret: str, body: bytes, signature: str) -> bool:
    """What a receiver checks (in constant time) before trusting a delivery."""
    return hmac.compare_digest(sign(secret, body), signature)


# --------------------------------------------------------------------------- emitting


def emit(
    session: Session, *, project_id: int, event: WebhookEvent, data: dict[str, Any]
) -> str | None:
    """Add a delivery of `event` for each hook of the project that takes it, in the caller's
    transaction (the caller commits). Returns the event id; None when no hook takes it."""
    hook_ids = _hooks_taking(session, project_id, event)
    if not hook_ids:
        return None
    return _add_deliveries(session, hook_ids, project_id, event, data)


def emit_round_event(session: Session, *, round_id: int, event: WebhookEvent) -> str | None:
    """`round.done` or `round.failed` with the round as the caller's transaction holds it
    now (call it after the status change, before the commit)."""
    row = session.execute(_ROUND_FIELDS.where(Round.id == round_id)).mappings().one_or_none()
    if row is None:
        return None
    hook_ids = _hooks_taking(session, row["project_id"], event)
    if not hook_ids:
        return None
    number = session.scalar(
        select(func.count()).where(Round.project_id == row["project_id"], Round.id <= round_id)
    )
    described = {name: _jsonable(value) for name, value in row.items()}
    data = {"round": {**described, "number": number}}
    return _add_deliveries(session, hook_ids, row["project_id"], event, data)


_ROUND_FIELDS = select(
    Round.id,
    Round.project_id,
    Round.status,
    Round.trigger,
    Round.strategy,
    Round.labels_used,
    Round.attempts,
    Round.error,
    Round.metrics,
    Round.created_at,
    Round.started_at,
    Round.finished_at,
)


def _hooks_taking(session: Session, project_id: int, event: WebhookEvent) -> list[int]:
    # A project has a handful of hooks: filtering their JSON event lists here keeps the
    # query the same on SQLite and PostgreSQL.
    hooks = session.execute(
        select(Webhook.id, Webhook.events).where(Webhook.project_id == project_id)
    ).all()
    return [hook_id for hook_id, events in hooks if event.value in events]


def _add_deliveries(
    session: Session,
    hook_ids: list[int],
    project_id: int,
    event: WebhookEvent,
    data: dict[str, Any],
) -> str:
    now = datetime.now(UTC)
    event_id = str(uuid.uuid4())
    envelope = {
        "id": event_id,
        "event": event.value,
        "created_at": now.isoformat(),
        "project_id": project_id,
        "data": data,
    }
    body = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)
    rows = [
        {
            "webhook_id": hook_id,
            "event": event,
            "event_id": event_id,
            "body": body,
            "status": DeliveryStatus.pending,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for hook_id in hook_ids
    ]
    session.execute(insert(WebhookDelivery), rows)
    log.info(
        "webhook event %s (%s) for %d hook(s)",
        event.value,
        event_id,
        len(hook_ids),
        extra={"project_id": project_id},
    )
    return event_id


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        # SQLite hands back naive datetimes; every time nextlabel writes is UTC.
        moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return moment.isoformat()
    return value


# --------------------------------------------------------------------------- sending


@dataclass(frozen=True)
class DeliveryPolicy:
    """How long an attempt may take, how many there are, and the wait between them."""

    timeout_seconds: float = 10.0
    max_attempts: int = 8
    backoff_seconds: float = 30.0
    backoff_max_seconds: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryPolicy:
        return cls(
            timeout_seconds=settings.webhook_timeout_seconds,
            max_attempts=settings.webhook_max_attempts,
            backoff_seconds=settings.webhook_backoff_seconds,
            backoff_max_seconds=settings.webhook_backoff_max_seconds,
        )

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1, 2, …)."""
        return min(self.backoff_seconds * 2.0 ** min(attempt - 1, 60), self.backoff_max_seconds)

    @property
    def claim_seconds(self) -> float:
        # urllib's timeout bounds each socket wait (connect, then each read), not the whole.
        return 2 * self.timeout_seconds + CLAIM_GRACE_SECONDS


@dataclass(frozen=True)
class Attempt:
    """One claimed attempt at a delivery: everything needed to send it, and its number."""

    delivery_id: int
    number: int
    url: str
    secret: str
    event: str
    event_id: str
    body: bytes

    def headers(self, *, now: datetime) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_HEADER: self.event,
            EVENT_ID_HEADER: self.event_id,
            DELIVERY_HEADER: str(self.delivery_id),
            TIMESTAMP_HEADER: str(int(now.timestamp())),
            SIGNATURE_HEADER: sign(self.secret, self.body),
        }


@dataclass(frozen=True)
class Answer:
    """What the receiver said: an HTTP status, or why there was none."""

    status_code: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def due_deliveries(session: Session, *, now: datetime, limit: int) -> list[int]:
    """Pending deliveries whose next attempt has come, the longest waiting first."""
    query = (
        select(WebhookDelivery.id)
        .where(
            WebhookDelivery.status == DeliveryStatus.pending,
            WebhookDelivery.next_attempt_at <= now.astimezone(UTC),
        )
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def claim_attempt(
    session_factory: sessionmaker[Session], delivery_id: int, *, policy: DeliveryPolicy
) -> Attempt | None:
    """Start the next attempt at a due delivery, in a transaction of its own; None when it
    is not due (delivered, failed, waiting, or claimed by another sender)."""
    now = datetime.now(UTC)
    with session_factory() as session, session.begin():
        row = session.execute(
            select(
                WebhookDelivery.attempts,
                WebhookDelivery.event,
                WebhookDelivery.event_id,
                WebhookDelivery.body,
                Webhook.url,
                Webhook.secret,
            )
            .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
            .where(WebhookDelivery.id == delivery_id)
        ).one_or_none()
        if row is None:
            return None
        claimed = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status == DeliveryStatus.pending,
                WebhookDelivery.attempts == row.attempts,
                WebhookDelivery.next_attempt_at <= now,
            )
            .values(
                attempts=row.attempts + 1,
                last_attempt_at=now,
                next_attempt_at=now + timedelta(seconds=policy.claim_seconds),
            )
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            return None
    event = WebhookEvent(row.event).value
    return Attempt(delivery_id, row.attempts + 1, row.url, row.secret, event, row.event_id,
                   row.body.encode())  # fmt: skip


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is the receiver's answer, not a place to send the body again."""

    def redirect_request(self, *_: Any, **__: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def post(attempt: Attempt, *, timeout: float) -> Answer:
    """POST the attempt's body; never raises for anything the network or receiver does."""
    request = urllib.request.Request(
        attempt.url,
        data=attempt.body,
        method="POST",
        headers=attempt.headers(now=datetime.now(UTC)),
    )
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return Answer(response.status)
    except urllib.error.HTTPError as refused:
        refused.close()
        return Answer(refused.code, f"HTTP {refused.code} {refused.reason}"[:ERROR_LENGTH])
    except urllib.error.URLError as failed:
        return Answer(None, _described(failed.reason))
    except (OSError, http.client.HTTPException, ValueError) as failed:
        return Answer(None, _described(failed))


def _described(reason: object) -> str:
    if isinstance(reason, BaseException):
        text = f"{type(reason).__name__}: {reason}"
    else:
        text = str(reason)
    return text[:ERROR_LENGTH]


def record_answer(
    session_factory: sessionmaker[Session],
    attempt: Attempt,
    answer: Answer,
    *,
    policy: DeliveryPolicy,
) -> DeliveryStatus:
    """Write the attempt's outcome: delivered, failed for good, or the time of the next try.

    Fenced on the attempt number, so an attempt whose claim lapsed writes nothing."""
    now = datetime.now(UTC)
    outcome: dict[str, Any] = {"last_status_code": answer.status_code, "last_error": answer.error}
    if answer.ok:
        status = DeliveryStatus.delivered
    elif attempt.number >= policy.max_attempts:
        status = DeliveryStatus.failed
    else:
        status = DeliveryStatus.pending
    if status == DeliveryStatus.pending:
        delay = timedelta(seconds=policy.retry_delay(attempt.number))
        outcome.update(next_attempt_at=now + delay)
    else:
        outcome.update(status=status, next_attempt_at=None, finished_at=now)
    with session_factory() as session, session.begin():
        session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == attempt.delivery_id,
                WebhookDelivery.status == DeliveryStatus.pending,
                WebhookDelivery.attempts == attempt.number,
            )
            .values(**outcome)
            .execution_options(synchronize_session=False)
        )
    return status


def deliver(
    session_factory: sessionmaker[Session], delivery_id: int, *, policy: DeliveryPolicy
) -> DeliveryStatus | None:
    """Make the next attempt at one delivery if it is due; None if it was not."""
    attempt = claim_attempt(session_factory, delivery_id, policy=policy)
    if attempt is None:
        return None
    answer = post(attempt, timeout=policy.timeout_seconds)
    status = record_answer(session_factory, attempt, answer, policy=policy)
    log.log(
        logging.INFO if answer.ok else logging.WARNING,
        "webhook delivery %s attempt %s: %s",
        delivery_id,
        attempt.number,
        answer.status_code or answer.error,
        extra={"delivery_id": delivery_id, "delivery_status": status.value},
    )
    return status


def deliver_due(
    session_factory: sessionmaker[Session], *, policy: DeliveryPolicy, limit: int = 100
) -> list[int]:
    """One pass over what is due, one attempt after another; returns the deliveries tried."""
    with session_factory() as session:
        due = due_deliveries(session, now=datetime.now(UTC), limit=limit)
    return [delivery_id for delivery_id in due if deliver(session_factory, delivery_id,
                                                          policy=policy) is not None]  # fmt: skip


class WebhookSender:
    """Sends due deliveries beside whatever else the process does (a worker's rounds).

    Every `poll_seconds` it looks for due rows and hands each to one of `threads` threads,
    at most `threads` at a time, so one slow receiver delays the others by nothing and the
    process by nothing. Several senders (one per worker) may run: claims keep them apart.
    """

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        policy: DeliveryPolicy,
        threads: int = 4,
        poll_seconds: float = 1.0,
    ) -> None:
        self._session_factory = session_factory
        self._policy = policy
        self._threads = threads
        self._poll_seconds = poll_seconds
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="webhook")
        self._lock = threading.Lock()
        self._in_flight: set[int] = set()
        self._stopped = threading.Event()
        self._loop = threading.Thread(target=self._run, name="webhook-sender", daemon=True)

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        """Stop polling; attempts under way finish on their own (their claims say so)."""
        self._stopped.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._loop.is_alive():
            self._loop.join(self._poll_seconds + 1)

    def poll(self) -> int:
        """Hand what is due to the threads; returns how many attempts were started."""
        with self._lock:
            room = self._threads - len(self._in_flight)
        if room <= 0:
            return 0
        with self._session_factory() as session:
            due = due_deliveries(session, now=datetime.now(UTC), limit=room + self._threads)
        started = 0
        for delivery_id in due:
            with self._lock:
                if delivery_id in self._in_flight or len(self._in_flight) >= self._threads:
                    continue
                self._in_flight.add(delivery_id)
            self._pool.submit(self._deliver, delivery_id)
            started += 1
        return started

    def _deliver(self, delivery_id: int) -> None:
        try:
            deliver(self._session_factory, delivery_id, policy=self._policy)
        except Exception:
            # A database hiccup: the claim lapses and a later poll tries again.
            log.exception("webhook delivery %s failed to run", delivery_id)
        finally:
            with self._lock:
                self._in_flight.discard(delivery_id)

    def _run(self) -> None:
        while not self._stopped.wait(self._poll_seconds):
            try:
                self.poll()
            except Exception:
                log.exception("webhook poll failed")

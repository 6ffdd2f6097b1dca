"""Webhooks: registered by admins, signed, retried with backoff, their outcomes readable.

Deliveries go only to a receiver of the test's own on 127.0.0.1 (http.server in a thread).
Events come from where they happen: the round lifecycle's failure (core.rounds), the export
route, and, for `round.done`, the function the worker's write calls in its transaction
(a real worker sends one in tests/worker/test_webhook_delivery.py).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from core.rounds import MAX_ATTEMPTS, claim_round
from core.settings import Settings
from core.tables import DeliveryStatus, Round, RoundStatus, WebhookDelivery, WebhookEvent
from core.webhooks import (
    DeliveryPolicy,
    WebhookSender,
    claim_attempt,
    deliver_due,
    emit_round_event,
    sign,
    signature_matches,
)
from tests.app.conftest import Api
from tests.app.test_labelling import add_done_round

# Short waits: a test's retries take tenths of a second, not minutes.
FAST = DeliveryPolicy(timeout_seconds=2.0, max_attempts=3, backoff_seconds=0.05)


# --------------------------------------------------------------------------- the receiver


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records each POST and answers `statuses` in turn
    (then the last one again), after `delay` seconds."""

    url: str = ""
    statuses: list[int] = field(default_factory=lambda: [200])
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)

    def answer(self) -> int:
        index = min(len(self.received) - 1, len(self.statuses) - 1)
        return self.statuses[index]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            receiver.received.append(Received(dict(self.headers), body, time.monotonic()))
            time.sleep(receiver.delay)
            status = receiver.answer()
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", receiver.url + "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., Receiver]]:
    servers: list[ThreadingHTTPServer] = []

    def start(**options: Any) -> Receiver:
        receiver = Receiver(**options)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
        server.daemon_threads = True
        receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return receiver

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver(receiver_factory: Callable[..., Receiver]) -> Receiver:
    return receiver_factory()


# --------------------------------------------------------------------------- helpers


def register(api: Api, pid: int, url: str, events: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"url": url}
    if events is not None:
        body["events"] = events
    response = api.post(f"/api/v1/projects/{pid}/webhooks", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def deliveries(api: Api, hook_id: int) -> list[dict[str, Any]]:
    response = api.get(f"/api/v1/webhooks/{hook_id}/deliveries")
    assert response.status_code == 200, response.text
    return list(response.json())


def round_event(api: Api, pid: int, event: WebhookEvent) -> tuple[int, str | None]:
    """A finished round and its event, emitted as the worker's write does (then committed)."""
    round_id = add_done_round(api, pid, queue=[], scores={})
    with api.app.state.session_factory() as session, session.begin():
        return round_id, emit_round_event(session, round_id=round_id, event=event)


def send_until_finished(api: Api, policy: DeliveryPolicy, *, timeout: float = 15) -> None:
    """Run a sender, as a worker does, until nothing is pending."""
    factory = api.app.state.session_factory
    sender = WebhookSender(session_factory=factory, policy=policy, poll_seconds=0.02)
    sender.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with factory() as session:
                pending = session.scalar(
                    select(WebhookDelivery.id).where(
                        WebhookDelivery.status == DeliveryStatus.pending
                    )
                )
            if pending is None:
                return
            time.sleep(0.02)
        pytest.fail("deliveries still pending")
    finally:
        sender.stop()


# --------------------------------------------------------------------------- the API


def test_an_admin_registers_lists_and_deletes_webhooks_and_sees_the_secret_once(
    api: Api,
) -> None:
    pid = api.project()["id"]
    created = register(api, pid, "https://example.org/hooks/nextlabel", ["round.done"])
    assert created["url"] == "https://example.org/hooks/nextlabel"
    assert created["events"] == ["round.done"]
    assert len(created["secret"]) == 64
    every = register(api, pid, "http://127.0.0.1:9/x")
    assert every["events"] == ["round.done", "round.failed", "labels.exported"]

    listed = api.get(f"/api/v1/projects/{pid}/webhooks").json()
    assert [hook["id"] for hook in listed] == [created["id"], every["id"]]
    assert all("secret" not in hook for hook in listed)
    assert deliveries(api, created["id"]) == []

    gone = api.delete(f"/api/v1/projects/{pid}/webhooks/{created['id']}")
    assert gone.status_code == 204
    assert [hook["id"] for hook in api.get(f"/api/v1/projects/{pid}/webhooks").json()] == [
        every["id"]
    ]
    assert api.get(f"/api/v1/webhooks/{created['id']}/deliveries").status_code == 404


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://example.org/hook", "http:// or https://"),
        ("example.org/hook", "http:// or https://"),
        ("javascript:alert(1)", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("http://exa mple.org/", "printable ASCII"),
        ("https://exämple.org/", "printable ASCII"),
        ("http:///no-host", "names no host"),
        ("http://example.org:99999/", "not valid"),
        ("http://[::1/", "not valid"),
        ("https://user:password@example.org/", "user name or password"),
        ("http://example.org:0/", "port"),
    ],
)
def test_a_url_that_cannot_take_webhooks_is_a_clear_422(api: Api, url: str, says: str) -> None:
    pid = api.project()["id"]
    response = api.post(f"/api/v1/projects/{pid}/webhooks", json={"url": url})
    assert response.status_code == 422, response.text
    assert says in response.text
    assert api.get(f"/api/v1/projects/{pid}/webhooks").json() == []


def test_events_must_be_known_and_are_kept_once_each(api: Api) -> None:
    pid = api.project()["id"]
    unknown = api.post(
        f"/api/v1/projects/{pid}/webhooks", json={"url": "http://a.b/", "events": ["round.won"]}
    )
    assert unknown.status_code == 422
    none = api.post(f"/api/v1/projects/{pid}/webhooks", json={"url": "http://a.b/", "events": []})
    assert none.status_code == 422
    twice = register(api, pid, "http://a.b/", ["labels.exported", "round.done", "round.done"])
    assert twice["events"] == ["round.done", "labels.exported"]


def test_only_admins_manage_webhooks_and_only_where_they_exist(api: Api) -> None:
    pid = api.project()["id"]
    other = api.project("other")["id"]
    hook = register(api, pid, "http://127.0.0.1:9/")
    annotator = api.user("ann", projects=[pid])
    assert api.get(f"/api/v1/projects/{pid}/webhooks", annotator).status_code == 403
    assert (
        api.post(
            f"/api/v1/projects/{pid}/webhooks", annotator, json={"url": "http://a.b/"}
        ).status_code
        == 403
    )
    assert api.get(f"/api/v1/webhooks/{hook['id']}/deliveries", annotator).status_code == 403
    assert api.get("/api/v1/projects/999/webhooks").status_code == 404
    # A hook is deleted through its own project only.
    assert api.delete(f"/api/v1/projects/{other}/webhooks/{hook['id']}").status_code == 404
    assert api.get("/api/v1/webhooks/999/deliveries").status_code == 404


# --------------------------------------------------------------------------- delivery


def test_a_delivery_is_signed_with_the_hooks_secret(api: Api, receiver: Receiver) -> None:
    pid = api.project()["id"]
    hook = register(api, pid, receiver.url)
    round_id, event_id = round_event(api, pid, WebhookEvent.round_done)
    assert event_id is not None
    # Nothing is sent until a sender runs: the row waits (as it would for a stopped worker).
    assert receiver.received == []
    assert [d["status"] for d in deliveries(api, hook["id"])] == ["pending"]

    assert len(deliver_due(api.app.state.session_factory, policy=FAST)) == 1

    (got,) = receiver.received
    expected = "sha256=" + hmac.new(hook["secret"].encode(), got.body, hashlib.sha256).hexdigest()
    assert got.headers["X-Nextlabel-Signature"] == expected
    assert signature_matches(hook["secret"], got.body, got.headers["X-Nextlabel-Signature"])
    assert not signature_matches("another secret", got.body, expected)
    assert got.headers["X-Nextlabel-Event"] == "round.done"
    assert got.headers["X-Nextlabel-Event-Id"] == event_id
    assert got.headers["Content-Type"] == "application/json"
    assert abs(int(got.headers["X-Nextlabel-Timestamp"]) - time.time()) < 60
    body = got.json
    assert (body["id"], body["event"], body["project_id"]) == (event_id, "round.done", pid)
    assert body["data"]["round"]["id"] == round_id
    assert body["data"]["round"]["number"] == 1
    assert body["data"]["round"]["status"] == "done"
    assert body["data"]["round"]["metrics"]["accuracy"] == 0.5

    (delivery,) = deliveries(api, hook["id"])
    assert delivery["status"] == "delivered"
    assert delivery["attempts"] == 1
    assert delivery["last_status_code"] == 200
    assert delivery["last_error"] is None
    assert delivery["event"] == "round.done"
    assert delivery["event_id"] == event_id
    assert delivery["finished_at"] is not None and delivery["next_attempt_at"] is None


def test_the_signature_is_hmac_sha256_of_the_body() -> None:
    # RFC-style known value: HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
    assert sign("key", b"The quick brown fox jumps over the lazy dog") == (
        "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    )


def test_a_failing_receiver_is_retried_with_backoff_then_recorded_as_failed(
    api: Api, receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory(statuses=[500])
    pid = api.project()["id"]
    hook = register(api, pid, receiver.url)
    round_event(api, pid, WebhookEvent.round_done)

    send_until_finished(api, FAST)

    assert len(receiver.received) == FAST.max_attempts
    assert len({got.body for got in receiver.received}) == 1  # the same bytes every time
    assert len({got.headers["X-Nextlabel-Event-Id"] for got in receiver.received}) == 1
    gaps = [b.at - a.at for a, b in zip(receiver.received, receiver.received[1:], strict=False)]
    assert gaps[0] >= FAST.retry_delay(1) and gaps[1] >= FAST.retry_delay(2)
    (delivery,) = deliveries(api, hook["id"])
    assert delivery["status"] == "failed"
    assert delivery["attempts"] == FAST.max_attempts
    assert delivery["last_status_code"] == 500
    assert "500" in delivery["last_error"]
    assert delivery["finished_at"] is not None and delivery["next_attempt_at"] is None


def test_a_receiver_that_recovers_gets_the_event_on_a_retry(
    api: Api, receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory(statuses=[503, 500, 204])
    pid = api.project()["id"]
    hook = register(api, pid, receiver.url)
    round_event(api, pid, WebhookEvent.round_done)
    send_until_finished(api, FAST)
    (delivery,) = deliveries(api, hook["id"])
    assert (delivery["status"], delivery["attempts"], delivery["last_status_code"]) == (
        "delivered",
        3,
        204,
    )


def test_a_redirect_is_not_followed(api: Api, receiver_factory: Callable[..., Receiver]) -> None:
    receiver = receiver_factory(statuses=[302])
    pid = api.project()["id"]
    hook = register(api, pid, receiver.url)
    round_event(api, pid, WebhookEvent.round_done)
    send_until_finished(api, FAST)
    assert len(receiver.received) == FAST.max_attempts  # never the Location
    (delivery,) = deliveries(api, hook["id"])
    assert (delivery["status"], delivery["last_status_code"]) == ("failed", 302)


def test_a_slow_receiver_is_cut_off_and_holds_up_no_other_hook(
    api: Api, receiver_factory: Callable[..., Receiver]
) -> None:
    slow = receiver_factory(delay=3.0)
    fast = receiver_factory()
    pid = api.project()["id"]
    slow_hook = register(api, pid, slow.url)
    fast_hook = register(api, pid, fast.url)
    round_event(api, pid, WebhookEvent.round_done)
    policy = DeliveryPolicy(timeout_seconds=0.5, max_attempts=1)

    started = time.monotonic()
    send_until_finished(api, policy)

    assert time.monotonic() - started < 2.5  # the slow answer was not waited for
    assert fast.received and slow.received
    (fast_delivery,) = deliveries(api, fast_hook["id"])
    assert fast_delivery["status"] == "delivered"
    (slow_delivery,) = deliveries(api, slow_hook["id"])
    assert slow_delivery["status"] == "failed"
    assert slow_delivery["last_status_code"] is None
    assert "timed out" in slow_delivery["last_error"]


def test_an_unreachable_receiver_is_an_error_on_the_delivery(api: Api) -> None:
    pid = api.project()["id"]
    hook = register(api, pid, "http://127.0.0.1:9/nothing-listens")  # discard: refused
    round_event(api, pid, WebhookEvent.round_done)
    send_until_finished(api, FAST)
    (delivery,) = deliveries(api, hook["id"])
    assert delivery["status"] == "failed"
    assert delivery["last_status_code"] is None
    assert "refused" in delivery["last_error"].lower()


def test_one_attempt_is_claimed_by_one_sender(api: Api, receiver: Receiver) -> None:
    pid = api.project()["id"]
    register(api, pid, receiver.url)
    round_event(api, pid, WebhookEvent.round_done)
    factory = api.app.state.session_factory
    with factory() as session:
        delivery_id = session.scalars(select(WebhookDelivery.id)).one()
    first = claim_attempt(factory, delivery_id, policy=FAST)
    assert first is not None and first.number == 1
    # While the claim holds, another sender finds nothing due.
    assert claim_attempt(factory, delivery_id, policy=FAST) is None
    assert deliver_due(factory, policy=FAST) == []


def test_retry_delays_double_up_to_the_maximum(settings: Settings) -> None:
    policy = DeliveryPolicy.from_settings(
        settings.model_copy(update={"webhook_backoff_seconds": 30, "webhook_max_attempts": 5})
    )
    assert policy.max_attempts == 5
    assert [policy.retry_delay(n) for n in (1, 2, 3, 8)] == [30, 60, 120, 3600]
    assert policy.retry_delay(1000) == 3600


# --------------------------------------------------------------------------- the events


def test_a_round_the_lifecycle_fails_sends_round_failed(api: Api, receiver: Receiver) -> None:
    pid = api.project()["id"]
    failed_hook = register(api, pid, receiver.url, ["round.failed"])
    done_hook = register(api, pid, receiver.url, ["round.done"])
    factory = api.app.state.session_factory
    with factory() as session:
        worn_out = Round(
            project_id=pid, status=RoundStatus.queued, strategy="bald", attempts=MAX_ATTEMPTS
        )
        session.add(worn_out)
        session.commit()
        round_id = worn_out.id

    outcome = claim_round(session_factory=factory, round_id=round_id, worker_id="test:1")

    assert getattr(outcome, "status", None) == "failed"
    assert deliveries(api, done_hook["id"]) == []
    deliver_due(factory, policy=FAST)
    (got,) = receiver.received
    assert got.json["event"] == "round.failed"
    assert got.json["data"]["round"]["id"] == round_id
    assert got.json["data"]["round"]["status"] == "failed"
    assert "gave up" in got.json["data"]["round"]["error"]
    assert deliveries(api, failed_hook["id"])[0]["status"] == "delivered"


def test_an_export_sends_labels_exported(api: Api, receiver: Receiver) -> None:
    pid = api.project()["id"]
    items = api.upload_images(pid, 2)
    api.label(items[0], "cat", api.admin_token)
    exported_hook = register(api, pid, receiver.url, ["labels.exported"])
    rounds_hook = register(api, pid, receiver.url, ["round.done", "round.failed"])

    response = api.get(f"/api/v1/projects/{pid}/export", params={"format": "jsonl"})
    assert response.status_code == 200

    assert deliveries(api, rounds_hook["id"]) == []
    deliver_due(api.app.state.session_factory, policy=FAST)
    (got,) = receiver.received
    assert got.json["event"] == "labels.exported"
    assert got.json["project_id"] == pid
    assert got.json["data"]["format"] == "jsonl"
    assert got.json["data"]["exported_by"]["name"] == "root"
    assert signature_matches(
        exported_hook["secret"], got.body, got.headers["X-Nextlabel-Signature"]
    )


def test_an_event_no_hook_takes_writes_nothing(api: Api) -> None:
    pid = api.project()["id"]
    register(api, pid, "http://127.0.0.1:9/", ["labels.exported"])
    _, event_id = round_event(api, pid, WebhookEvent.round_done)
    assert event_id is None
    with api.app.state.session_factory() as session:
        assert session.scalars(select(WebhookDelivery)).all() == []


def test_deleting_a_project_deletes_its_hooks_and_deliveries(api: Api) -> None:
    pid = api.project()["id"]
    hook = register(api, pid, "http://127.0.0.1:9/")
    round_event(api, pid, WebhookEvent.round_done)
    assert len(deliveries(api, hook["id"])) == 1
    assert api.delete(f"/api/v1/projects/{pid}").status_code == 204
    assert api.get(f"/api/v1/webhooks/{hook['id']}/deliveries").status_code == 404
    with api.app.state.session_factory() as session:
        assert session.scalars(select(WebhookDelivery)).all() == []

"""Handing queued rounds to the task broker, so that no round waits for a message never sent.

Guarantees, in order:
- A round is committed as `queued` before anything is published, so the database always
  knows it; publishing never happens inside a request's database work or on the event loop.
- `dispatched_at` records the broker's acceptance. A round still queued with it NULL was never
  handed over (the broker was down); `due_for_dispatch` finds it, and the worker's sweep
  sends it again every few seconds until the broker takes it.
- A message the broker accepted and then lost (a Redis restart without persistence) shows as
  a round queued long after its dispatch while a worker sits idle: sent again too.
- Sending twice is harmless: the round's row decides what runs (core.rounds.claim_round).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.tables import Round, RoundStatus

log = logging.getLogger(__name__)

# How often a worker sweeps for rounds nobody will run (core.rounds.sweep_rounds): the
# bound on how long a round waits once the broker is back.
SWEEP_SECONDS = 5.0
# A round the API queued is left to the API's own send for this long before a sweep sends it.
SEND_GRACE_SECONDS = 2.0
# An accepted message whose round is still queued while a worker is idle was lost after this.
LOST_AFTER_SECONDS = 30.0

Publish = Callable[[int], None]


def due_for_dispatch(session: Session, *, now: datetime, include_lost: bool) -> list[int]:
    """Queued rounds whose message must be sent (again), oldest first.

    Args:
        now: the sweep's clock.
        include_lost: also rounds the broker accepted more than LOST_AFTER_SECONDS ago; only
            an idle worker may say so, since a busy one can't tell lost from waiting.
    """
    now = now.astimezone(UTC)  # SQLite keeps no offset: every stored time is UTC
    never_sent = Round.dispatched_at.is_(None) & (
        Round.created_at < now - timedelta(seconds=SEND_GRACE_SECONDS)
    )
    condition: ColumnElement[bool] = never_sent
    if include_lost:
        lost = Round.dispatched_at < now - timedelta(seconds=LOST_AFTER_SECONDS)
        condition = or_(never_sent, lost)
    query = select(Round.id).where(Round.status == RoundStatus.queued, condition)
    return list(session.scalars(query.order_by(Round.id)))


def mark_dispatched(session: Session, round_id: int, *, when: datetime) -> None:
    """Record the broker's acceptance, unless a worker already claimed the round."""
    session.execute(
        update(Round)
        .where(Round.id == round_id, Round.status == RoundStatus.queued)
        .values(dispatched_at=when)
        .execution_options(synchronize_session=False)
    )


class RoundDispatcher:
    """Publishes round ids and records each acceptance; a broker failure is logged, not raised.

    `send` publishes on the caller's thread (the worker); `send_soon` on one background
    thread of the dispatcher's own, for the API: a label that queues a round answers at
    once, however long the broker takes to refuse. A round already waiting there is not
    queued twice, and an outage is logged once when it starts and once when it ends.
    """

    def __init__(self, *, publish: Publish, session_factory: sessionmaker[Session]) -> None:
        self._publish = publish
        self._session_factory = session_factory
        # Threads start on the first submit; made here so that racing callers share one.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dispatch")
        self._lock = threading.Lock()
        self._pending: set[int] = set()
        self._broker_down = False

    def send(self, round_id: int) -> bool:
        """Publish the round; True once the broker accepted it and that is recorded."""
        try:
            self._publish(round_id)
        except Exception as exc:  # any broker failure: the sweep sends it later
            self._note_outage(round_id, exc)
            return False
        self._note_recovery()
        try:
            with self._session_factory() as session, session.begin():
                mark_dispatched(session, round_id, when=datetime.now(UTC))
        except Exception:
            # Sent, but not recorded: a sweep may send it again, which is harmless.
            log.exception("could not record that round %s was sent", round_id)
        return True

    def send_soon(self, round_id: int) -> Future[bool] | None:
        """Publish on the dispatcher's background thread; returns at once (None: the round
        is already waiting there)."""
        with self._lock:
            if round_id in self._pending:
                return None
            self._pending.add(round_id)
        return self._thread.submit(self._send_pending, round_id)

    def _send_pending(self, round_id: int) -> bool:
        with self._lock:
            self._pending.discard(round_id)
        return self.send(round_id)

    def _note_outage(self, round_id: int, exc: Exception) -> None:
        if self._broker_down:
            log.debug("round %s still not sent: %s", round_id, exc)
            return
        self._broker_down = True
        log.warning(
            "could not send round %s to the task broker (%s); queued rounds wait and are "
            "sent again every few seconds until the broker is back",
            round_id,
            exc,
            extra={"round_id": round_id},
        )

    def _note_recovery(self) -> None:
        if self._broker_down:
            self._broker_down = False
            log.warning("the task broker takes rounds again")

    def drain(self, timeout: float) -> bool:
        """Wait until every send asked for so far has finished; False on timeout."""
        try:
            self._thread.submit(lambda: None).result(timeout)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        """Stop the background thread without waiting: what it had not sent, the sweep will."""
        self._thread.shutdown(wait=False, cancel_futures=True)

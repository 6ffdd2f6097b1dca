"""A round's life: due, open, claim, finish, fail, requeue, recover. No torch: the API opens
rounds here, and the worker claims, fences and recovers them here (worker.round runs them).

The database row of the round is the truth and the only lock:
- the partial unique index `uq_rounds_one_active_per_project` allows one queued or running
  round per project, so processes racing to open one cannot both succeed: the loser's INSERT
  fails and it simply carries on. A round is handed to the broker only after its row is
  committed (core.dispatch);
- claiming moves it queued → running (attempts + 1) with a conditional UPDATE, so two
  deliveries of one task cannot both run it;
- the attempt number is a fencing token: every later write is `WHERE status = 'running' AND
  attempts = <mine>` (`fenced`), so a worker that was given up on (or whose project was
  deleted) writes nothing.

A killed worker leaves its round `running`; `recover_rounds` (run when a worker starts), the
periodic `sweep_rounds` and a redelivered task all rerun it from scratch, and give up after
MAX_ATTEMPTS.

One piece because it is one state machine over one row: opening, claiming, the fence and
recovery each read the transitions the others make, and the guarantees above hold only
together.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core.broker import VISIBILITY_TIMEOUT_SECONDS
from core.db import table_of
from core.dispatch import due_for_dispatch
from core.report import RoundMetrics, stored
from core.tables import (
    ACTIVE_ROUND_STATUSES,
    Label,
    Project,
    Round,
    RoundStatus,
    WebhookEvent,
    is_current,
)
from core.webhooks import emit_round_event

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
# A running round whose worker can't be checked (another host) is presumed dead after this
# long: the broker's visibility timeout, after which Redis redelivers its message anyway.
STALE_RUNNING_SECONDS = VISIBILITY_TIMEOUT_SECONDS
# Hands a queued round to the broker (a RoundDispatcher's `send` in a worker process); a
# result of False means refused. None: nothing to send to (the sweep's tests, benches).
Send = Callable[[int], object] | None


_ACTIVE_ROUND = (
    select(Round)
    .where(Round.project_id == bindparam("project_id"), Round.status.in_(ACTIVE_ROUND_STATUSES))
    .order_by(Round.id.desc())
    .limit(1)
)


def active_round(*, session: Session, project_id: int) -> Round | None:
    """The queued or running round (checked after every label, hence prebuilt)."""
    return session.scalar(_ACTIVE_ROUND, {"project_id": project_id})


def labels_since(
    *, session: Session, project_id: int, watermark: int, cap: int | None = None
) -> int:
    """Current labels in the project with id > watermark (walks ix_labels_project_id).

    `cap` stops counting there: the trigger only needs to know "at least retrain_every".
    """
    matching = select(Label.id).where(
        Label.project_id == project_id, Label.id > watermark, is_current()
    )
    if cap is not None:
        matching = matching.limit(cap)
    count = session.scalar(select(func.count()).select_from(matching.subquery()))
    return count or 0


def _label_watermark(*, session: Session, project_id: int) -> int:
    highest = session.scalar(select(func.max(Label.id)).where(Label.project_id == project_id))
    return highest or 0


_ROUNDS = table_of(Round)
_LABELS = table_of(Label)
_LATEST_WATERMARK = (
    select(_ROUNDS.c.label_watermark)
    .where(_ROUNDS.c.project_id == bindparam("project_id"))
    .order_by(_ROUNDS.c.id.desc())
    .limit(1)
    .scalar_subquery()
)
# Current labels past the latest round's watermark, counted up to `cap`, in one statement
# (it runs after every label): walks ix_labels_project_id from the watermark.
_NEW_LABELS = select(func.count()).select_from(
    select(_LABELS.c.id)
    .where(
        _LABELS.c.project_id == bindparam("project_id"),
        _LABELS.c.id > func.coalesce(_LATEST_WATERMARK, 0),
        is_current(),
    )
    .limit(bindparam("cap"))
    .subquery()
)


def labels_until_retrain(*, session: Session, project: Project) -> int:
    """Labels still to come before `retrain_every` have come since the latest round."""
    return _labels_until_retrain(
        session=session, project_id=project.id, retrain_every=project.retrain_every
    )


def _labels_until_retrain(*, session: Session, project_id: int, retrain_every: int) -> int:
    params = {"project_id": project_id, "cap": retrain_every}
    since = session.scalar(_NEW_LABELS, params) or 0
    return max(retrain_every - since, 0)


def trigger_round_if_due(*, session: Session, project_id: int, retrain_every: int) -> Round | None:
    """Open a round if `retrain_every` labels came since the latest one: one statement
    unless it is due. The caller hands the round to the broker (app.services.dispatch).

    For a caller that has just seen no round active (labelling reads that with the item).
    Checking again is not needed for correctness: if one became active since, the partial
    unique index refuses the second and `open_round` returns None.
    """
    if _labels_until_retrain(session=session, project_id=project_id, retrain_every=retrain_every):
        return None
    # The round is written in a transaction of its own, whatever the caller's read ran in
    # (labelling reads in autocommit mode: `read_outside_transaction`).
    session.commit()
    project = session.get_one(Project, project_id)
    return open_round(session=session, project=project, trigger="labels")


def open_round(*, session: Session, project: Project, trigger: str) -> Round | None:
    """Commit a new queued round for `project`; None if one is already queued or running.

    The one place a round is created (the API's triggers and the worker's follow-up).
    Its label watermark is the project's highest label id, so "labels until retrain"
    counts from here while it waits.
    """
    new_round = Round(
        project_id=project.id,
        status=RoundStatus.queued,
        trigger=trigger,
        strategy=project.strategy,
        labels_used=labels_since(session=session, project_id=project.id, watermark=0),
        label_watermark=_label_watermark(session=session, project_id=project.id),
    )
    session.add(new_round)
    try:
        session.commit()
    except IntegrityError:
        # The partial unique index: another request or process queued one first.
        session.rollback()
        return None
    logger.info(
        "round queued",
        extra={"round_id": new_round.id, "project_id": project.id, "trigger": trigger},
    )
    return new_round


# --------------------------------------------------------------------------- claim


@dataclass(frozen=True)
class RoundOutcome:
    """What happened to a round: done, failed, or skipped (nothing written) and why."""

    round_id: int
    status: str
    reason: str = ""
    next_round_id: int | None = None


@dataclass(frozen=True)
class Claim:
    """A round this worker moved to running; `attempt` is its fencing token."""

    round_id: int
    project_id: int
    attempt: int


class RoundAbandoned(Exception):
    """The round row is gone (project deleted) or no longer ours: stop and write nothing."""


def current_worker_id() -> str:
    """`host:pid`, recorded on a running round so a restarted worker can tell it was orphaned."""
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_round(
    *, session_factory: sessionmaker[Session], round_id: int, worker_id: str
) -> Claim | RoundOutcome:
    """Move the round to running (attempts + 1) in its own transaction, or say why not."""
    now = datetime.now(UTC)
    with session_factory() as session, session.begin():
        rnd = session.get(Round, round_id)
        if rnd is None:
            return RoundOutcome(round_id, "skipped", "round no longer exists")
        if rnd.status in (RoundStatus.done, RoundStatus.failed):
            return RoundOutcome(round_id, "skipped", f"already {rnd.status.value}")
        if rnd.status == RoundStatus.running and not owner_is_dead(rnd, now, worker_id):
            owner = _owner(rnd)
            return RoundOutcome(round_id, "skipped", f"running in live worker {owner}")
        if rnd.attempts >= MAX_ATTEMPTS:
            error = f"gave up after {rnd.attempts} attempts (worker lost each time)"
            _finish_conditionally(session, rnd, RoundStatus.failed, error=error, now=now)
            return RoundOutcome(round_id, "failed", error)
        attempt = rnd.attempts + 1
        claimed = session.execute(
            _unchanged(rnd)
            .values(
                status=RoundStatus.running,
                attempts=attempt,
                started_at=now,
                finished_at=None,
                error=None,
                metrics=stored(RoundMetrics(worker=worker_id)),
                timings={},
            )
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            return RoundOutcome(round_id, "skipped", "claimed by another worker")
        return Claim(round_id, rnd.project_id, attempt)


def _unchanged(rnd: Round) -> Any:
    """An UPDATE of `rnd` that applies only while its status and attempts are as read."""
    return update(Round).where(
        Round.id == rnd.id, Round.status == rnd.status, Round.attempts == rnd.attempts
    )


def _finish_conditionally(
    session: Session, rnd: Round, status: RoundStatus, *, error: str, now: datetime
) -> None:
    finished = session.execute(
        _unchanged(rnd)
        .values(status=status, error=error, finished_at=now)
        .execution_options(synchronize_session=False)
    )
    if status == RoundStatus.failed and finished.rowcount == 1:  # type: ignore[attr-defined]
        emit_round_event(session, round_id=rnd.id, event=WebhookEvent.round_failed)


# --------------------------------------------------------------------------- the fence


def fenced(claim: Claim) -> Any:
    """An UPDATE of the claimed round that applies only while it is still running as ours."""
    return update(Round).where(
        Round.id == claim.round_id,
        Round.status == RoundStatus.running,
        Round.attempts == claim.attempt,
    )


def ensure_still_ours(*, session_factory: sessionmaker[Session], claim: Claim) -> None:
    """Stop early when the project was deleted or the round handed to another attempt."""
    with session_factory() as session:
        row = session.execute(
            select(Round.status, Round.attempts).where(Round.id == claim.round_id)
        ).one_or_none()
    if row is None:
        raise RoundAbandoned("round deleted (its project was deleted)")
    if row.status != RoundStatus.running or row.attempts != claim.attempt:
        raise RoundAbandoned(f"round is {row.status.value}, attempt {row.attempts}: not ours")


def owner_is_dead(rnd: Round, now: datetime, me: str) -> bool:
    """Whether the worker that marked `rnd` running is gone.

    Same host: the recorded pid is this process (so a previous life of it) or no longer runs.
    Another host: it can't be asked, so it is presumed dead once STALE_RUNNING_SECONDS have
    passed since the round started.
    """
    owner = _owner(rnd) or ""
    host, _, pid_text = owner.rpartition(":")
    my_host, _, my_pid = me.rpartition(":")
    if host and host == my_host and pid_text.isdigit():
        return pid_text == my_pid or not pid_alive(int(pid_text))
    started = rnd.started_at
    if started is None:
        return True
    if started.tzinfo is None:  # SQLite hands back naive datetimes
        started = started.replace(tzinfo=UTC)
    return now - started > timedelta(seconds=STALE_RUNNING_SECONDS)


def _owner(rnd: Round) -> str | None:
    """`host:pid` of the worker that claimed the round, from its report."""
    return RoundMetrics.model_validate(rnd.metrics or {}).worker


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) still answers kill(0)
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# --------------------------------------------------------------------------- triggers


def enqueue_follow_up(
    *, session_factory: sessionmaker[Session], project_id: int, send: Send
) -> int | None:
    """Queue the next round when enough labels arrived while this one ran.

    The API triggers rounds as labels arrive, but a label made while a round runs can't
    (one active round per project), so the worker looks once its round is done. "Enough"
    is the API's own rule (`labels_until_retrain`: current labels past the latest round's
    watermark), so the two never disagree.
    """
    with session_factory() as session:
        project = session.get(Project, project_id)
        if project is None or labels_until_retrain(session=session, project=project) > 0:
            return None
        return _open_and_send(session, project, send, trigger="labels")


def _open_and_send(session: Session, project: Project, send: Send, *, trigger: str) -> int | None:
    rnd = open_round(session=session, project=project, trigger=trigger)
    if rnd is None:
        return None
    logger.info("queued round %s for project %s (%s)", rnd.id, project.id, trigger)
    _send(send, rnd.id)  # if the broker refuses it, the sweep sends it later
    return rnd.id


def _send(send: Send, round_id: int) -> bool:
    """Hand the round to the broker; False if it refused (the next sweep tries again)."""
    return send is None or send(round_id) is not False


# --------------------------------------------------------------------------- recovery


def recover_rounds(
    *, session_factory: sessionmaker[Session], worker_id: str, send: Send
) -> list[int]:
    """Make sure no project is blocked by a round nobody will run; returns the rounds sent.

    Run when a worker starts. Rounds left `running` by a dead worker (a previous life of
    this process included) are put back to queued, or failed after MAX_ATTEMPTS; every
    queued round is sent again, because its message may be gone (the SQLite broker never
    redelivers, and a broker restart forgets). A duplicate message is harmless: the round's
    row decides what runs.
    """
    return _sweep(session_factory, worker_id, send, at_start=True, running=None)


def sweep_rounds(
    *,
    session_factory: sessionmaker[Session],
    worker_id: str,
    send: Send,
    running: int | None,
) -> list[int]:
    """The periodic form of `recover_rounds`, run every few seconds beside the rounds.

    Sends the queued rounds the broker never accepted, and, while this worker runs no round
    (`running` is None), those it accepted long ago (lost: an idle worker would have
    received them); requeues rounds whose worker died, a previous life of this process
    included (only `running` is really ours); queues rounds that came due with none active.
    So a broker outage delays a round by one sweep after the broker is back, and never
    strands it. Returns the rounds the broker accepted.
    """
    return _sweep(session_factory, worker_id, send, at_start=False, running=running)


def _sweep(
    session_factory: sessionmaker[Session],
    worker_id: str,
    send: Send,
    *,
    at_start: bool,
    running: int | None,
) -> list[int]:
    now = datetime.now(UTC)
    with session_factory() as session, session.begin():
        in_progress = session.scalars(
            select(Round).where(Round.status == RoundStatus.running).order_by(Round.id)
        ).all()
        orphans = [
            rnd.id
            for rnd in in_progress
            if rnd.id != running and _requeue_if_orphaned(session, rnd, now, worker_id)
        ]
        if at_start:
            queued = session.scalars(
                select(Round.id).where(Round.status == RoundStatus.queued)
            ).all()
        else:
            queued = due_for_dispatch(session, now=now, include_lost=running is None)
    sent = [round_id for round_id in sorted({*orphans, *queued}) if _send(send, round_id)]
    sent += _trigger_pending(session_factory, send)
    if sent:
        logger.info("recovery sent rounds %s", sent)
    return sent


def _requeue_if_orphaned(session: Session, rnd: Round, now: datetime, worker_id: str) -> bool:
    """Put a running round whose worker died back to queued; True if it was."""
    if not owner_is_dead(rnd, now, worker_id):
        return False
    owner = _owner(rnd)
    if rnd.attempts >= MAX_ATTEMPTS:
        error = f"gave up after {rnd.attempts} attempts; last worker {owner} died"
        _finish_conditionally(session, rnd, RoundStatus.failed, error=error, now=now)
        return False
    session.execute(
        _unchanged(rnd)
        .values(
            status=RoundStatus.queued,
            metrics=stored(RoundMetrics(requeued=f"worker {owner} died")),
            # Not handed over since: any worker's sweep sends it, not only an idle one's.
            dispatched_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    return True


def _trigger_pending(session_factory: sessionmaker[Session], send: Send) -> list[int]:
    """Queue a round for projects whose labels reached retrain_every with no round active."""
    sent: list[int] = []
    with session_factory() as session:
        active = select(Round.project_id).where(Round.status.in_(ACTIVE_ROUND_STATUSES))
        projects = session.scalars(select(Project).where(Project.id.not_in(active))).all()
        for project in projects:
            if labels_until_retrain(session=session, project=project) == 0:
                round_id = _open_and_send(session, project, send, trigger="labels")
                if round_id is not None:
                    sent.append(round_id)
    return sent

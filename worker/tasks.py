"""Celery tasks: thin wrappers that take ids and call the pipeline.

Imported only by worker processes (through the Celery app's `include`), because the pipeline
needs torch. One `WorkerContext` per process keeps the decoded-image cache warm between
rounds.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict
from functools import cache
from typing import Any

from celery import Task
from celery.signals import setup_logging, worker_ready, worker_shutdown

from app.db import make_engine, make_session_factory
from app.logging import configure_logging
from app.services.dispatch import SWEEP_SECONDS, RoundDispatcher
from worker.celery_app import ROUND_TASK, NextlabelCelery, celery_app, enqueue_round
from worker.pipeline import WorkerContext, recover_rounds, run_round, sweep_rounds

log = logging.getLogger(__name__)


@cache
def worker_context(app: NextlabelCelery) -> WorkerContext:
    """The context of this worker process, made on first use from the app's settings."""
    dispatcher = RoundDispatcher(
        publish=lambda round_id: enqueue_round(app, round_id),
        session_factory=make_session_factory(make_engine(app.settings.resolved_database_url)),
    )
    return WorkerContext.from_settings(app.settings, enqueue=dispatcher.send)


class RoundSweeper(threading.Thread):
    """Runs `sweep_rounds` every SWEEP_SECONDS beside the rounds this process runs."""

    def __init__(self, context: WorkerContext) -> None:
        super().__init__(name="round-sweeper", daemon=True)
        self.context = context
        self.running_round = threading.Event()  # set while this process runs a round
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(SWEEP_SECONDS):
            try:
                sweep_rounds(self.context, idle=not self.running_round.is_set())
            except Exception:
                # A database hiccup: the next sweep tries again.
                log.exception("round sweep failed")


_sweeper: RoundSweeper | None = None


@celery_app.task(name=ROUND_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
def run_round_task(self: Task, round_id: int) -> dict[str, Any]:
    """Run one round. Safe to deliver twice: the round's row decides what (if anything) runs."""
    app = self.app
    if not isinstance(app, NextlabelCelery):
        raise TypeError("the round task needs the nextlabel Celery app")
    if _sweeper is not None:
        _sweeper.running_round.set()
    try:
        outcome = run_round(round_id, settings=app.settings, context=worker_context(app))
    finally:
        if _sweeper is not None:
            _sweeper.running_round.clear()
    return asdict(outcome)


@setup_logging.connect
def use_nextlabel_logging(**_: Any) -> None:
    """The worker logs like the API (JSON in production); Celery's own setup is skipped."""
    configure_logging(celery_app.settings)


@worker_ready.connect
def recover_on_startup(sender: Any = None, **_: Any) -> None:
    """Requeue rounds a dead worker left running, resend queued ones (see recover_rounds),
    then start the periodic sweep."""
    global _sweeper
    app = getattr(sender, "app", None) or celery_app
    if not isinstance(app, NextlabelCelery):
        return
    context = worker_context(app)
    try:
        sent = recover_rounds(context)
    except Exception:
        # Recovery is a courtesy to stuck projects; a worker that can't do it still works.
        log.exception("round recovery at worker start failed")
        sent = []
    _sweeper = RoundSweeper(context)
    _sweeper.start()
    log.info("nextlabel worker ready", extra={"recovered_rounds": sent})


@worker_shutdown.connect
def stop_sweeping(**_: Any) -> None:
    if _sweeper is not None:
        _sweeper.stopped.set()

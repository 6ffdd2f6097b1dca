"""Celery tasks: thin wrappers that take ids and call the pipeline.

Imported only by worker processes (through the Celery app's `include`), because the pipeline
needs torch. One `WorkerContext` per process keeps the decoded-image cache warm between
rounds.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from functools import cache
from typing import Any

from celery import Task
from celery.signals import setup_logging, worker_ready

from app.logging import configure_logging
from worker.celery_app import ROUND_TASK, NextlabelCelery, celery_app, enqueue_round
from worker.pipeline import WorkerContext, recover_rounds, run_round

log = logging.getLogger(__name__)


@cache
def worker_context(app: NextlabelCelery) -> WorkerContext:
    """The context of this worker process, made on first use from the app's settings."""
    return WorkerContext.from_settings(
        app.settings, enqueue=lambda round_id: enqueue_round(app, round_id)
    )


@celery_app.task(name=ROUND_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
def run_round_task(self: Task, round_id: int) -> dict[str, Any]:
    """Run one round. Safe to deliver twice: the round's row decides what (if anything) runs."""
    app = self.app
    if not isinstance(app, NextlabelCelery):
        raise TypeError("the round task needs the nextlabel Celery app")
    outcome = run_round(round_id, settings=app.settings, context=worker_context(app))
    return asdict(outcome)


@setup_logging.connect
def use_nextlabel_logging(**_: Any) -> None:
    """The worker logs like the API (JSON in production); Celery's own setup is skipped."""
    configure_logging(celery_app.settings)


@worker_ready.connect
def recover_on_startup(sender: Any = None, **_: Any) -> None:
    """Requeue rounds a dead worker left running, and resend queued ones (see recover_rounds)."""
    app = getattr(sender, "app", None) or celery_app
    if not isinstance(app, NextlabelCelery):
        return
    try:
        sent = recover_rounds(worker_context(app))
    except Exception:
        # Recovery is a courtesy to stuck projects; a worker that can't do it still works.
        log.exception("round recovery at worker start failed")
        sent = []
    log.info("nextlabel worker ready", extra={"recovered_rounds": sent})

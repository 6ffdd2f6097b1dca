"""The worker's Celery app: the round task, a thin wrapper that takes an id and calls the
round (worker.round.run), and the signals that recover and sweep rounds (core.rounds) and
start the webhook sender (core.webhooks: due deliveries, sent beside the rounds).

Imported only by worker processes (worker.main), because a round needs torch. One
`WorkerContext` per process keeps the decoded-image cache warm between rounds.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import asdict
from typing import Any

from celery import Task
from celery.signals import setup_logging, worker_ready, worker_shutting_down

from core.broker import (
    EMBED_CHUNK_TASK,
    ROUND_TASK,
    NextlabelCelery,
    enqueue_embedding_chunk,
    enqueue_round,
    make_celery,
)
from core.dispatch import SWEEP_SECONDS, RoundDispatcher
from core.logs import configure_logging
from core.rounds import recover_rounds, sweep_rounds
from core.settings import Settings
from core.webhooks import DeliveryPolicy, WebhookSender
from worker.round.embed import embed_shared_chunk
from worker.round.run import WorkerContext, run_round

log = logging.getLogger(__name__)


def worker_context(app: NextlabelCelery) -> WorkerContext:
    """The context of this worker process, made from the app's settings: its rounds reach
    the broker through a RoundDispatcher, which records each acceptance."""
    context = WorkerContext.from_settings(app.settings)
    dispatcher = RoundDispatcher(
        publish=lambda round_id: enqueue_round(app, round_id),
        session_factory=context.session_factory,
    )
    context.enqueue = dispatcher.send
    context.share_chunk = functools.partial(_offer_chunk, app)
    return context


def _offer_chunk(
    app: NextlabelCelery, project_id: int, space_key: str, item_ids: list[int]
) -> None:
    try:
        enqueue_embedding_chunk(app, project_id, space_key, item_ids)
    except Exception as exc:  # the offering round embeds the chunk itself
        log.warning("could not offer an embedding chunk to other workers: %s", exc)


class RoundSweeper(threading.Thread):
    """Runs `sweep_rounds` every SWEEP_SECONDS beside the rounds this process runs.

    Celery's solo pool (core.broker.worker_argv) runs rounds in this same process, so
    `running_round` is what the process is doing now.
    """

    def __init__(self, context: WorkerContext) -> None:
        super().__init__(name="round-sweeper", daemon=True)
        self.context = context
        self.running_round: int | None = None
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(SWEEP_SECONDS):
            try:
                sweep_rounds(
                    session_factory=self.context.session_factory,
                    worker_id=self.context.worker_id,
                    send=self.context.enqueue,
                    running=self.running_round,
                )
            except Exception:
                # A database hiccup: the next sweep tries again.
                log.exception("round sweep failed")

    def stop(self) -> None:
        self.stopped.set()
        if self.is_alive():
            self.join(SWEEP_SECONDS)


def make_worker_app(settings: Settings) -> NextlabelCelery:
    """The worker process's Celery app: the round task registered, logging set up, and at
    start-up the recovery, then the periodic sweep."""
    app = make_celery(settings)
    sweeper = RoundSweeper(worker_context(app))
    webhooks = WebhookSender(
        session_factory=sweeper.context.session_factory,
        policy=DeliveryPolicy.from_settings(settings),
    )

    @app.task(name=ROUND_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
    def run_round_task(task: Task, round_id: int) -> dict[str, Any]:
        """Run one round; safe to deliver twice: the round's row decides what runs."""
        sweeper.running_round = round_id
        try:
            outcome = run_round(round_id, settings=settings, context=sweeper.context)
        finally:
            sweeper.running_round = None
        return asdict(outcome)

    @app.task(name=EMBED_CHUNK_TASK, acks_late=True, reject_on_worker_lost=True)
    def embed_chunk_task(project_id: int, space_key: str, item_ids: list[int]) -> int:
        """Embed a chunk a round offered; safe twice: the store skips what it holds."""
        setup = sweeper.context.embedding_setup()
        return embed_shared_chunk(setup, project_id, space_key, item_ids)

    @setup_logging.connect(weak=False)
    def use_nextlabel_logging(**_: Any) -> None:
        """The worker logs like the API (JSON in production); Celery's own setup is skipped."""
        configure_logging(settings)

    @worker_ready.connect(weak=False)
    def recover_then_sweep(**_: Any) -> None:
        """Requeue rounds a dead worker left running and resend queued ones
        (see recover_rounds), then start the periodic sweep."""
        try:
            context = sweeper.context
            sent = recover_rounds(
                session_factory=context.session_factory,
                worker_id=context.worker_id,
                send=context.enqueue,
            )
        except Exception:
            # Recovery is a courtesy to stuck projects; a worker that can't do it still works.
            log.exception("round recovery at worker start failed")
            sent = []
        sweeper.start()
        webhooks.start()
        log.info("nextlabel worker ready", extra={"recovered_rounds": sent})

    @worker_shutting_down.connect(weak=False)
    def stop_sweeping(**_: Any) -> None:
        """No new rounds once shutdown starts (a warm one lets the running round finish)."""
        sweeper.stop()
        webhooks.stop()

    return app

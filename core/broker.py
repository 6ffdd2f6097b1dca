"""The broker seam: task names, the Celery app factory, publishing a round, and the worker's
command line. Imports no torch and makes nothing at import: the API makes an app to send
tasks, a worker process (worker.main) makes one and registers the round task on it.

The database row of a round is the truth, so a task that runs twice does no harm; that is what
makes acks_late + reject_on_worker_lost safe here.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from core.settings import Settings

ROUND_TASK = "nextlabel.run_round"
# A chunk of a project's images to embed, offered by a round to other workers.
EMBED_CHUNK_TASK = "nextlabel.embed_chunk"
GPU_QUEUE = "gpu"
VISIBILITY_TIMEOUT_SECONDS = 3600
BROKER_SOCKET_TIMEOUT_SECONDS = 5


class NextlabelCelery(Celery):
    """A Celery app that knows the Settings it was made from, so tasks read the same ones.

    (Kept off `conf`, which `celery inspect conf` and Flower print: Settings hold secrets.)
    """

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__("nextlabel", **kwargs)
        self.settings = settings


def make_celery(settings: Settings) -> NextlabelCelery:
    """A Celery app for `settings`' broker (the embedded SQLite broker lives in the data dir)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Results live in the database (the round row), so a result backend only matters to
    # tools such as Flower; with Redis configured it is the same server.
    backend = None if settings.broker_is_embedded else settings.resolved_broker_url
    celery = NextlabelCelery(
        settings,
        broker=settings.resolved_broker_url,
        backend=backend,
    )
    celery.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_queues=[Queue(GPU_QUEUE)],
        task_default_queue=GPU_QUEUE,
        task_create_missing_queues=False,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # Seconds to wait for a broker that doesn't answer, each try (kombu's default is 4).
        broker_connection_timeout=2,
        worker_hijack_root_logger=False,
        broker_transport_options=_transport_options(settings),
    )
    return celery


def _transport_options(settings: Settings) -> dict[str, Any]:
    if settings.broker_is_embedded:
        # Kombu's SQLAlchemy transport hands every option it doesn't know to create_engine,
        # which rejects these; it polls once a second and never redelivers (the worker's
        # start-up recovery resends what a dead worker held).
        return {}
    # A round can take minutes on a CPU; Redis redelivers only after this long unacked.
    # Socket timeouts: a broker that vanishes without closing the connection (or never
    # answers) would otherwise hold a publish forever; BRPOP answers within the polling
    # interval, far below them.
    return {
        "visibility_timeout": VISIBILITY_TIMEOUT_SECONDS,
        "polling_interval": 0.5,
        "socket_timeout": BROKER_SOCKET_TIMEOUT_SECONDS,
        "socket_connect_timeout": BROKER_SOCKET_TIMEOUT_SECONDS,
    }


# One reconnect (a pooled connection may be from before a broker restart), then give up:
# the round stays queued and the worker's sweep sends it again (app.services.dispatch).
PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}


def enqueue_round(celery: Celery, round_id: int) -> None:
    """Publish round `round_id`; raises if the broker can't take it within a few seconds.

    `ignore_result`: otherwise Celery subscribes the sender to the task's result in the
    result backend (Redis), and with Redis down that subscription alone retried for ~19 s.
    Nobody waits on a result: the round's row is the outcome.
    """
    celery.send_task(
        ROUND_TASK,
        args=[round_id],
        queue=GPU_QUEUE,
        ignore_result=True,
        retry=True,
        retry_policy=PUBLISH_RETRY,
    )


def enqueue_embedding_chunk(
    celery: Celery, project_id: int, space_key: str, item_ids: list[int]
) -> None:
    """Offer a chunk of images to embed to whichever worker is free; raises if the broker
    can't take it (the round that offers it embeds it itself then)."""
    celery.send_task(
        EMBED_CHUNK_TASK,
        args=[project_id, space_key, item_ids],
        queue=GPU_QUEUE,
        ignore_result=True,
        retry=True,
        retry_policy=PUBLISH_RETRY,
    )


def worker_argv(settings: Settings, *, hostname: str) -> list[str]:
    """The worker's Celery arguments: the solo pool, one round at a time, on the gpu queue.

    One process per GPU: rounds hold the model and the pool on the device, so two at once
    would only fight over its memory.
    """
    return [
        "worker",
        "--pool=solo",
        "--concurrency=1",
        "-Q",
        GPU_QUEUE,
        f"--loglevel={settings.log_level}",
        "-n",
        hostname,
        # No gossip/mingle: workers share nothing through the broker but the queue.
        "--without-gossip",
        "--without-mingle",
    ]

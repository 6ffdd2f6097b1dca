"""The Celery instance and its configuration. Imports no torch: the API uses it to send tasks.

The database row of a round is the truth, so a task that runs twice does no harm; that is what
makes acks_late + reject_on_worker_lost safe here.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from app.config import Settings, get_settings

ROUND_TASK = "nextlabel.run_round"
GPU_QUEUE = "gpu"


def make_celery(settings: Settings) -> Celery:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    celery = Celery("nextlabel", broker=settings.resolved_broker_url)
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
        worker_hijack_root_logger=False,
        # A round can take minutes on a CPU; redeliver only after this long unacked.
        broker_transport_options={"visibility_timeout": 3600, "polling_interval": 0.5},
    )
    return celery


def enqueue_round(celery: Celery, round_id: int) -> None:
    celery.send_task(ROUND_TASK, args=[round_id], queue=GPU_QUEUE)


celery_app = make_celery(get_settings())

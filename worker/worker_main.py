"""Start a round worker in this process: what `nextlabel worker` (and embedded `serve`) runs.

Imports no torch itself: Celery imports the task module (and so torch) when the worker starts,
so the CLI can import this module at the top.
"""

from __future__ import annotations

import os
import socket

from app.config import Settings, get_settings
from worker.celery_app import GPU_QUEUE, celery_app


def worker_argv(settings: Settings, *, hostname: str | None = None) -> list[str]:
    """Celery worker arguments: the solo pool, one round at a time, on the gpu queue.

    One process per GPU: rounds hold the model and the pool on the device, so two at once
    would only fight over its memory.
    """
    node = hostname or f"nextlabel-{os.getpid()}@{socket.gethostname()}"
    return [
        "worker",
        "--pool=solo",
        "--concurrency=1",
        "-Q",
        GPU_QUEUE,
        f"--loglevel={settings.log_level}",
        "-n",
        node,
        # No gossip/mingle: workers share nothing through the broker but the queue.
        "--without-gossip",
        "--without-mingle",
    ]


def run_worker(settings: Settings, *, hostname: str | None = None) -> None:
    """Run a worker until it is stopped, using `settings` for the broker and the database."""
    celery_app.settings = settings
    celery_app.conf.broker_url = settings.resolved_broker_url
    if not settings.broker_is_embedded:
        celery_app.conf.result_backend = settings.resolved_broker_url
    celery_app.worker_main(worker_argv(settings, hostname=hostname))


def main() -> None:
    """`python -m worker.worker_main`: a worker configured from NEXTLABEL_* variables."""
    run_worker(get_settings())


if __name__ == "__main__":
    main()

"""A round worker process: `python -m worker.main` (what `nextlabel worker`, the embedded
worker of `nextlabel serve`, the Dockerfile and docker-compose all start).

Makes the Celery app from NEXTLABEL_* settings, registers the round task on it and runs
Celery's worker with core.broker.worker_argv: the one definition of the worker command line.
"""

from __future__ import annotations

import os
import socket

from core.settings import Settings, get_settings


def run_worker(settings: Settings, *, hostname: str | None = None) -> None:
    """Run a worker until it is stopped, using `settings` for the broker and the database."""
    # Imported here: the task module imports torch, which `--help` and tests of this
    # module's argv need not pay for.
    from core.broker import worker_argv
    from worker.tasks import make_worker_app

    node = hostname or f"nextlabel-{os.getpid()}@{socket.gethostname()}"
    make_worker_app(settings).worker_main(worker_argv(settings, hostname=node))


def main() -> None:
    run_worker(get_settings())


if __name__ == "__main__":
    main()

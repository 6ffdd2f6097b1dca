"""The worker's command line has one definition, and it runs one round at a time on gpu."""

from __future__ import annotations

from pathlib import Path

from core.broker import GPU_QUEUE, worker_argv
from core.settings import Settings


def test_the_worker_runs_the_solo_pool_on_the_gpu_queue(tmp_path: Path) -> None:
    argv = worker_argv(Settings(data_dir=tmp_path, log_level="INFO"), hostname="w@h")
    assert argv[0] == "worker" and "--pool=solo" in argv and "--concurrency=1" in argv
    assert argv[argv.index("-Q") + 1] == GPU_QUEUE
    assert argv[argv.index("-n") + 1] == "w@h" and "--loglevel=INFO" in argv

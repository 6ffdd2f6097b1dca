"""Start a throwaway nextlabel service for a simulation, or describe one already running.

A local service is the product's embedded default, exactly as a user starts it:
``nextlabel migrate``, ``create-user`` then ``serve`` on a fresh data directory, which brings
up SQLite, the embedded broker and one worker process beside the API.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
# Tokens are long URL-safe strings; the CLI may print them with a label around them.
_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_\-\.~]{20,}")


def nextlabel_command() -> list[str]:
    """The ``nextlabel`` console script, or the same entry point through this interpreter."""
    script = shutil.which("nextlabel")
    if script:
        return [script]
    return [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main())"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse_token(output: str) -> str:
    """The token printed by ``nextlabel create-user`` (the last token-shaped word)."""
    matches = _TOKEN_PATTERN.findall(output)
    if not matches:
        raise RuntimeError(f"no token in create-user output: {output!r}")
    return str(matches[-1])


@dataclass
class Service:
    """Where a service answers and the admin token to use."""

    url: str
    token: str


@dataclass
class LocalService:
    """``nextlabel serve`` in a subprocess with its own data directory.

    Use as a context manager; the data directory is removed afterwards unless ``keep_data``
    or it was given explicitly.
    """

    data_dir: Path | None = None
    log_path: Path | None = None
    keep_data: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    service: Service | None = None
    _process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None
    _owns_dir: bool = False

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _env(self) -> dict[str, str]:
        assert self.data_dir is not None
        env = dict(os.environ)
        env.update(self.extra_env)
        env["NEXTLABEL_DATA_DIR"] = str(self.data_dir)
        # The embedded default: whatever the caller's shell says, this service is private.
        for variable in ("NEXTLABEL_DATABASE_URL", "NEXTLABEL_BROKER_URL"):
            env.pop(variable, None)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _cli(self, *args: str) -> str:
        completed = subprocess.run(
            [*nextlabel_command(), *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(
                f"nextlabel {' '.join(args)} failed ({completed.returncode}): "
                f"{completed.stdout[-2000:]}{completed.stderr[-2000:]}"
            )
        return completed.stdout

    def start(self) -> Service:
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="nextlabel-sim-"))
            self._owns_dir = not self.keep_data
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # A fresh data directory gets its database from `migrate`: create-user never makes one.
        self._cli("migrate")
        token = parse_token(self._cli("create-user", f"sim-admin-{os.getpid()}", "--role", "admin"))
        port = free_port()
        log_path = self.log_path or self.data_dir / "serve.log"
        self._log = log_path.open("ab")
        logger.info(
            "starting nextlabel serve on port %d (data %s, log %s)", port, self.data_dir, log_path
        )
        self._process = subprocess.Popen(
            [*nextlabel_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=self._env(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own process group: stop() ends the API and the worker it started together.
            start_new_session=True,
        )
        self.service = Service(url=f"http://127.0.0.1:{port}", token=token)
        self._wait_ready(self.service.url)
        return self.service

    def _wait_ready(self, url: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"nextlabel serve exited with {self._process.returncode}")
            try:
                if httpx.get(f"{url}/readyz", timeout=5.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"nextlabel serve not ready after {START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        process = self._process
        if process is not None:
            # The whole group, even if serve itself is gone: its worker must not outlive it.
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                logger.warning("nextlabel serve did not stop in %.0f s; killing", STOP_TIMEOUT_S)
                process.kill()
                process.wait()
            time.sleep(1.0)
            _signal_group(process.pid, signal.SIGKILL)
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._owns_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)

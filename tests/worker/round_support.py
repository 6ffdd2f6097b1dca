"""Helpers for the round tests: a digits project made through the models, labels, services.

Plain functions (fixtures live in conftest.py); imported by the test modules beside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import secrets
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.storage import LocalImageStore
from core.tables import Annotator, Item, Label, Project, Role, Round, RoundStatus, Split

REPO_ROOT = Path(__file__).resolve().parents[2]


def service_unavailable(reason: str) -> None:
    """Skip locally, fail on CI: a CI run must never pass by skipping its real-parts tests."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"required on CI: {reason}")
    pytest.skip(reason)


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def round_row(session: Session, round_id: int) -> Round | None:
    session.expire_all()
    return session.scalar(select(Round).where(Round.id == round_id))


# --------------------------------------------------------------------------- digits


@dataclass
class DigitsProject:
    """A project of real handwritten digits (sklearn's 8×8, upscaled) and its answer key."""

    project_id: int
    truth: dict[int, str]
    pool_ids: list[int]
    validation_ids: list[int]
    annotator_id: int
    labelled: list[int] = field(default_factory=list)


def digit_pngs(count: int, *, offset: int = 0, size: int = 28) -> list[tuple[bytes, str]]:
    """(PNG bytes, digit) for `count` distinct sklearn digits, upscaled to size×size."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    out: list[tuple[bytes, str]] = []
    seen: set[str] = set()
    for image, target in zip(digits.images[offset:], digits.target[offset:], strict=True):
        pixels = np.clip(image * (255.0 / 16.0), 0, 255).astype(np.uint8)
        big = Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        big.save(buffer, format="PNG")
        data = buffer.getvalue()
        key = hashlib.sha256(data).hexdigest()
        if key not in seen:
            seen.add(key)
            out.append((data, str(int(target))))
        if len(out) == count:
            break
    return out


def insert_digits_project(
    session: Session,
    store: LocalImageStore,
    *,
    pool: int = 300,
    validation: int = 200,
    name: str | None = None,
    **settings: object,
) -> DigitsProject:
    """Insert a digits project through the models (what an import would have written)."""
    project = Project(
        name=name or f"digits-{uuid.uuid4().hex[:8]}",
        classes=[str(d) for d in range(10)],
        **{"strategy": "bald", "retrain_every": 10, "mc_samples": 10, "seed": 0, **settings},
    )
    annotator = Annotator(
        name=f"annotator-{uuid.uuid4().hex[:8]}",
        role=Role.annotator,
        token_hash=hashlib.sha256(secrets.token_bytes(16)).hexdigest(),
    )
    session.add_all([project, annotator])
    session.flush()
    rng = np.random.default_rng(project.seed)
    truth: dict[int, str] = {}
    ids: dict[Split, list[int]] = {Split.pool: [], Split.validation: []}
    for n, (data, digit) in enumerate(digit_pngs(pool + validation)):
        split = Split.pool if n < pool else Split.validation
        item = Item(
            project_id=project.id,
            filename=f"digit-{n}.png",
            file_key=store.put(data),
            sha256=hashlib.sha256(data).hexdigest(),
            width=28,
            height=28,
            split=split,
            known_label=digit if split == Split.validation else None,
            label_count=0,
            random_key=int(rng.integers(-(2**62), 2**62)),
        )
        session.add(item)
        session.flush()
        truth[item.id] = digit
        ids[split].append(item.id)
    session.commit()
    return DigitsProject(project.id, truth, ids[Split.pool], ids[Split.validation], annotator.id)


def add_labels(
    session: Session, project: DigitsProject, item_ids: list[int], **overrides: str
) -> list[int]:
    """Label `item_ids` with their true digit (or `overrides[str(item_id)]`); returns label ids."""
    label_ids = []
    for item_id in item_ids:
        label = Label(
            project_id=project.project_id,
            item_id=item_id,
            annotator_id=project.annotator_id,
            label=overrides.get(str(item_id), project.truth[item_id]),
            is_current=True,
            undone=False,
        )
        session.add(label)
        session.execute(
            update(Item).where(Item.id == item_id).values(label_count=Item.label_count + 1)
        )
        session.flush()
        label_ids.append(label.id)
        project.labelled.append(item_id)
    session.commit()
    return label_ids


def balanced_pool_ids(
    project: DigitsProject, per_class: int, classes: list[str] | None = None
) -> list[int]:
    """`per_class` pool items of each digit (or of `classes`), in pool order."""
    wanted = classes or [str(d) for d in range(10)]
    taken: dict[str, int] = {}
    chosen = []
    for item_id in project.pool_ids:
        digit = project.truth[item_id]
        if digit in wanted and taken.get(digit, 0) < per_class:
            taken[digit] = taken.get(digit, 0) + 1
            chosen.append(item_id)
    return chosen


def queue_round(session: Session, project_id: int, *, trigger: str = "manual") -> int:
    rnd = Round(project_id=project_id, status=RoundStatus.queued, trigger=trigger, strategy="bald")
    session.add(rnd)
    session.commit()
    return rnd.id


# --------------------------------------------------------------------------- services


PG_ADMIN_DSN = os.environ.get(
    "NEXTLABEL_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# A Redis database number of our own, so flushing it touches no one else's keys.
REDIS_DB = int(os.environ.get("NEXTLABEL_TEST_REDIS_DB", "11"))


@contextlib.contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database (dropped afterwards); yields its SQLAlchemy URL."""
    import psycopg

    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3)
    except Exception as exc:
        service_unavailable(f"PostgreSQL not reachable at {PG_ADMIN_DSN}: {exc}")
    name = f"nextlabel_wk_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://{PG_ADMIN_DSN.split('://', 1)[1].rsplit('/', 1)[0]}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def own_redis_db(db: int = REDIS_DB) -> Iterator[str]:
    """The machine's Redis on database `db`, flushed before and after; yields its URL."""
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, socket_timeout=3)
    try:
        client.ping()
    except Exception as exc:
        service_unavailable(f"Redis not reachable at {REDIS_HOST}:{REDIS_PORT}: {exc}")
    client.flushdb()
    try:
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
    finally:
        client.flushdb()
        client.close()


def wait_until(
    predicate: Callable[[], Any],
    *,
    timeout: float,
    what: str,
    every: float = 0.25,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> Any:
    """Poll `predicate` until it returns something truthy; fail with the process log if not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(every)
    tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
    pytest.fail(
        f"timed out waiting for {what} (process exit: "
        f"{None if proc is None else proc.poll()})\n{tail}"
    )


def start_process(argv: list[str], *, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start `argv` in the repo root with its output in `log` (read back when a test fails)."""
    handle = log.open("wb")
    return subprocess.Popen(
        argv,
        cwd=REPO_ROOT,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_process(proc: subprocess.Popen[bytes], *, timeout: float = 15) -> None:
    """Stop a process this test started (by its own pid), then reap it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def child_env(**overrides: str) -> dict[str, str]:
    """This environment less any NEXTLABEL_* of the developer's, plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTLABEL_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"
    env.update(overrides)
    return env

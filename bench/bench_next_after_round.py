"""Benchmark `next` on PostgreSQL right after a round, before any statistics exist.

Prints figures; it is not a test. Issue 14, defect 10: with autovacuum off, the first
`next` calls after a round took p50 2.7 s / p99 7.5 s, because without statistics the
planner sorted every prediction of the round joined to its item; after ANALYZE, 5 ms.

For each variant (`before`: app/services/queue.py as of `--before`, loaded from git into a
module of its own; `after`: the working tree's) it builds a fresh PostgreSQL database at
127.0.0.1:5432 with autovacuum off on every table and ANALYZE never run: a project of
`--items` pool items and one done round that wrote a prediction for each of them and
queued the best `--queue` of them. It serves the app with uvicorn in this process and
times `GET /api/v1/projects/{pid}/next` (n=1) over HTTP from one client, `--calls` times,
each followed by a label, cycling through `--annotators` annotators: the first calls take
the round's queue, the rest its predictions by score. It prints p50/p99 of `next` and of
its score-ordered statements alone (the database's share, less exposed to a busy machine),
that statement's plan (EXPLAIN, statistics still absent), and /proc/loadavg.

    python bench/bench_next_after_round.py [--before e86100d] [--items 20000] [--calls 200]

The `before` variant swaps only the queue module into today's `next` route, so it runs only
while the two still fit: since `next` items carry a percentile, the top two classes and a
reason (issue 18) the old module does not, and `--before none` measures `after` alone. The
figures quoted in the README were measured at 547002d, when both variants ran in one go.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import psycopg
import uvicorn
from sqlalchemy import event, insert, select, text

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench_api import pool_item_rows  # noqa: E402

import app.api.queue as queue_route  # noqa: E402
from app.main import create_app  # noqa: E402
from app.schemas import ProjectCreate  # noqa: E402
from app.services.annotators import create_annotator  # noqa: E402
from app.services.projects import create_project  # noqa: E402
from core.db import make_engine, make_session_factory  # noqa: E402
from core.migrate import upgrade_database  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.tables import Item, Prediction, QueueEntry, Role, Round, RoundStatus  # noqa: E402

CLASSES = [str(digit) for digit in range(10)]
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
TABLES = ("items", "predictions", "queue_entries", "leases", "skips", "rounds", "labels")
# The commit before the fix: its `_BY_SCORE` joins and sorts the whole round.
DEFAULT_BEFORE = "e86100d"


@dataclass(frozen=True)
class Fixture:
    url: str
    project_id: int
    tokens: list[str]


@contextmanager
def database() -> Iterator[str]:
    name = f"nl_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def build(url: str, *, items: int, queue: int, annotators: int) -> Fixture:
    """A project right after its first round: no statistics on any table, ever."""
    upgrade_database(url)
    engine = make_engine(url)
    with engine.begin() as connection:
        for table in TABLES:
            connection.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
    with make_session_factory(engine)() as session:
        body = {"name": "bench", "classes": CLASSES, "seed": 1, "retrain_every": 100_000}
        project = create_project(session=session, data=ProjectCreate.model_validate(body))
        tokens = [
            create_annotator(
                session=session, name=f"ann{i:02d}", role=Role.annotator, project_ids=[project.id]
            )[1]
            for i in range(annotators)
        ]
        project_id = project.id
    rng = random.Random(0)
    with engine.begin() as connection:
        connection.execute(insert(Item), pool_item_rows(project_id, range(items), "none"))
        ids = connection.scalars(select(Item.id).where(Item.project_id == project_id)).all()
        round_id = connection.scalar(
            insert(Round)
            .values(project_id=project_id, status=RoundStatus.done, strategy="bald")
            .returning(Round.id)
        )
        scores = {item_id: rng.random() for item_id in ids}
        connection.execute(
            insert(Prediction),
            [
                {
                    "round_id": round_id,
                    "item_id": item_id,
                    "predicted": CLASSES[item_id % 10],
                    "confidence": 0.4,
                    "probabilities": [round(rng.random(), 6) for _ in CLASSES],
                    "score": score,
                }
                for item_id, score in scores.items()
            ],
        )
        best = sorted(scores, key=scores.__getitem__, reverse=True)[:queue]
        connection.execute(
            insert(QueueEntry),
            [
                {
                    "round_id": round_id,
                    "item_id": item_id,
                    "rank": rank,
                    "score": scores[item_id],
                    "strategy": "bald",
                }
                for rank, item_id in enumerate(best)
            ],
        )
    engine.dispose()
    return Fixture(url, project_id, tokens)


def statistics_rows(url: str) -> int:
    dsn = url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(dsn) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stats WHERE tablename = ANY(%s)", (list(TABLES),)
        ).fetchone()
    return int(row[0]) if row else 0


def old_queue_module(revision: str) -> ModuleType:
    source = subprocess.run(
        ["git", "show", f"{revision}:app/services/queue.py"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "queue_before.py"
    # The tables and table_of have moved to core/ since; the query itself is the old one.
    source = source.replace("from app.models import", "from core.tables import")
    source = source.replace(
        "from app.services import annotator_lock, begin_write, is_postgresql, table_of",
        "from app.services import annotator_lock, begin_write, is_postgresql\n"
        "from core.db import table_of",
    )
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("queue_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["queue_before"] = module
    spec.loader.exec_module(module)
    return module


@contextmanager
def queue_of(module: ModuleType | None) -> Iterator[None]:
    """Serve `next` with `module`'s algorithm (None: the working tree's)."""
    saved = (queue_route.next_items, queue_route.visible_queue_project)
    if module is not None:
        queue_route.next_items = module.next_items
        queue_route.visible_queue_project = module.visible_queue_project
    try:
        yield
    finally:
        queue_route.next_items, queue_route.visible_queue_project = saved


@contextmanager
def serve(url: str, data_dir: Path) -> Iterator[tuple[str, Any]]:
    settings = Settings(
        environment="test",
        data_dir=data_dir,
        database_url=url,
        broker_url=None,
        embedded_worker=False,
        log_level="WARNING",
    )
    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ByScore:
    """The score-ordered statements `next` sent on the app's hot engine, and their times
    (from the driver's send to its answer: the database's share of a `next`)."""

    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)


@contextmanager
def recording(app: Any) -> Iterator[ByScore]:
    engine = app.state.hot_session_factory.kw["bind"].sync_engine
    recorded = ByScore()
    started: dict[int, float] = {}

    def before(_conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "predictions" in statement and "FOR NO KEY UPDATE" in statement:
            recorded.sent.append((statement, dict(parameters)))
            started[id(cursor)] = time.perf_counter()

    def after(_conn: Any, cursor: Any, *_: Any) -> None:
        tic = started.pop(id(cursor), None)
        if tic is not None:
            recorded.ms.append((time.perf_counter() - tic) * 1000)

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield recorded
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


def explain(url: str, statement: str, parameters: dict[str, Any]) -> str:
    dsn = url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(dsn) as connection:
        rows = connection.execute(f"EXPLAIN (COSTS OFF) {statement}", parameters).fetchall()
    return "\n".join(f"      {row[0]}" for row in rows if "Filter" not in row[0])


def run(label: str, module: ModuleType | None, args: argparse.Namespace) -> None:
    with database() as url, tempfile.TemporaryDirectory() as data_dir:
        started = time.perf_counter()
        fixture = build(url, items=args.items, queue=args.queue, annotators=args.annotators)
        built = time.perf_counter() - started
        with (
            queue_of(module),
            serve(url, Path(data_dir)) as (base, app),
            recording(app) as by_score,
        ):
            next_ms = annotate(base, fixture, calls=args.calls)
        stats = statistics_rows(url)
        print(f"  {label}: built {args.items:,} items + predictions in {built:.1f} s")
        print(f"    GET next, {len(next_ms)} calls: {figures(next_ms)}")
        print(f"    its score-ordered statements, {len(by_score.ms)}: {figures(by_score.ms)}")
        print(f"    statistics rows on next's tables afterwards: {stats}")
        if by_score.sent:
            print("    the first score-ordered statement's plan (no statistics):")
            print(explain(url, *by_score.sent[0]))


def annotate(base: str, fixture: Fixture, *, calls: int) -> list[float]:
    """`calls` times: GET next (timed), then label the item; annotators take turns."""
    next_ms: list[float] = []
    with httpx.Client(base_url=base, timeout=60) as client:
        for call in range(calls):
            token = fixture.tokens[call % len(fixture.tokens)]
            headers = {"Authorization": f"Bearer {token}"}
            tic = time.perf_counter()
            response = client.get(f"/api/v1/projects/{fixture.project_id}/next", headers=headers)
            next_ms.append((time.perf_counter() - tic) * 1000)
            response.raise_for_status()
            [served] = response.json()
            labelled = client.post(
                f"/api/v1/items/{served['item']['id']}/labels",
                headers=headers,
                json={"label": CLASSES[call % len(CLASSES)]},
            )
            labelled.raise_for_status()
    return next_ms


def figures(samples_ms: list[float]) -> str:
    if not samples_ms:
        return "-"
    values = np.array(samples_ms)
    p50, p99 = np.percentile(values, [50, 99])
    return f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {values.max():.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=DEFAULT_BEFORE, help="git revision for 'before'")
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--queue", type=int, default=20)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--annotators", type=int, default=8)
    args = parser.parse_args()
    print(f"cpus {os.cpu_count()}, load {Path('/proc/loadavg').read_text().strip()}")
    if args.before.lower() != "none":
        run(f"before ({args.before})", old_queue_module(args.before), args)
    run("after (working tree)", None, args)
    print(f"load {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()

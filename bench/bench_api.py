"""Benchmark the API on a 100k-item project: /next latency, label throughput, export time.

One piece because it is one script run by hand, imported by nothing: its stages (build the
database, start the server on it, drive the load, time the export) pass one Fixture and one
Server along and print one report, top to bottom in the order they run.

Prints figures; it is not a test. For each backend (SQLite, then PostgreSQL at
127.0.0.1:5432 if reachable) it builds a fresh database with 100,000 pool items (bulk
inserted; they share one stored PNG but each has its own sha256), starts
`nextlabel serve --workers 2` (`--workers`: uvicorn worker processes) in a subprocess on
127.0.0.1, and runs 16 concurrent clients, each with its own token and keep-alive
connection, looping GET /next then POST the label(s):

- paced: n=1; each client waits about `--think` seconds between items (still far faster
  than people label), so /next latency is the server's, not a queue's;
- saturated: n=1, no waiting, the most labels per second the server gives. Every request
  then also waits behind the others in flight: latency ≈ clients / requests per second;
- browser: what the annotator page does, GET /next?n=6 then POST the six labels one by
  one, no waiting (one /next per six labels, so more labels/s than the strict n=1 pair).

The clients are asyncio tasks on one uvloop thread speaking plain HTTP/1.1 over TCP to the
real server (a lean client: httpx in 16 threads took a fifth of a core at 150 labels/s,
CPU the server then lacks on a 2-core machine). Each phase also prints the server's CPU
time per label (all its processes) and the share of a core the server and the clients
got: on a shared machine, labels/s ≈ share / CPU per label. The share is also shown per
server process: each keep-alive connection stays with the worker that accepted it, and the
split of the 16 varies from phase to phase (one worker may take most of them); a phase
whose busiest worker sits near 100% is capped by that, so throughput varies run to run
while CPU per label does not.
Then it labels the rest of the pool directly in the database and times a streamed export
of the 100,000 current labels (time to the last byte) in each format.

    python bench/bench_api.py [--backends sqlite,postgresql] [--seconds 15] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import uvloop
from PIL import Image
from sqlalchemy import func, insert, select, text, update

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from app.schemas import ProjectCreate  # noqa: E402
from app.services.annotators import create_annotator  # noqa: E402
from app.services.imports import random_key_for  # noqa: E402
from app.services.projects import create_project  # noqa: E402
from core.db import make_engine, make_session_factory  # noqa: E402
from core.migrate import upgrade_database  # noqa: E402
from core.storage import LocalImageStore  # noqa: E402
from core.tables import Annotator, Item, Label, Role, Split, utcnow  # noqa: E402

CLASSES = [str(digit) for digit in range(10)]
CONNECT_SPACING_SECONDS = 0.02
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"


@dataclass
class Fixture:
    url: str
    data_dir: Path
    project_id: int
    tokens: list[str]
    admin_token: str


@dataclass
class LoadResult:
    next_ms: list[float] = field(default_factory=list)
    label_ms: list[float] = field(default_factory=list)
    labels: int = 0
    seconds: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    database_cpu: float = 0.0  # PostgreSQL's processes (0 on SQLite: it runs in the server)
    # Per server process, busiest first: keep-alive connections stay with the worker that
    # accepted them, and one worker often accepts most of the 16, capping it at one core.
    process_cpu: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 3:
            self.error_samples.append(what[:200])


# --- databases --------------------------------------------------------------------------------


@contextmanager
def database(backend: str, workdir: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'nextlabel.db'}"
        return
    name = f"nl_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_reachable() -> bool:
    try:
        with psycopg.connect(PG_ADMIN):
            return True
    except psycopg.Error:
        return False


def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def pool_item_rows(project_id: int, indices: range, file_key: str) -> list[dict[str, Any]]:
    """Rows of synthetic pool items (distinct sha256 per index), for bulk inserts."""
    rows = []
    for index in indices:
        sha256 = hashlib.sha256(f"bench-{index}".encode()).hexdigest()
        rows.append(
            {
                "project_id": project_id,
                "filename": f"item-{index:06d}.png",
                "file_key": file_key,
                "sha256": sha256,
                "width": 28,
                "height": 28,
                "split": Split.pool,
                "label_count": 0,
                "random_key": random_key_for(seed=1, sha256=sha256),
                "created_at": utcnow(),
            }
        )
    return rows


def build(url: str, data_dir: Path, *, items: int, clients: int) -> Fixture:
    upgrade_database(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    file_key = LocalImageStore(data_dir / "images").put(tiny_png())
    with factory() as session:
        project = create_project(
            session=session,
            data=ProjectCreate.model_validate({"name": "bench", "classes": CLASSES, "seed": 1}),
        )
        _, admin_token = create_annotator(session=session, name="admin", role=Role.admin)
        tokens = [
            create_annotator(
                session=session,
                name=f"client{i:02d}",
                role=Role.annotator,
                project_ids=[project.id],
            )[1]
            for i in range(clients)
        ]
        project_id = project.id
    started = time.perf_counter()
    with engine.begin() as connection:
        for start in range(0, items, 10_000):
            stop = min(start + 10_000, items)
            connection.execute(
                insert(Item), pool_item_rows(project_id, range(start, stop), file_key)
            )
        if connection.dialect.name == "postgresql":
            # What autovacuum does within a minute of a bulk load; the bench cannot wait.
            connection.execute(text("ANALYZE"))
    print(f"  built {items:,} items in {time.perf_counter() - started:.1f} s")
    engine.dispose()
    return Fixture(url, data_dir, project_id, tokens, admin_token)


def label_the_rest(fixture: Fixture) -> int:
    """Give every still-unlabelled item one label, in bulk; returns current labels in total."""
    engine = make_engine(fixture.url)
    with engine.begin() as connection:
        annotator_id = connection.scalar(select(Annotator.id).where(Annotator.name == "admin"))
        ids = connection.scalars(
            select(Item.id).where(Item.project_id == fixture.project_id, Item.label_count == 0)
        ).all()
        rng = random.Random(0)
        now = utcnow()
        for start in range(0, len(ids), 10_000):
            chunk = ids[start : start + 10_000]
            connection.execute(
                insert(Label),
                [
                    {
                        "project_id": fixture.project_id,
                        "item_id": item_id,
                        "annotator_id": annotator_id,
                        "label": rng.choice(CLASSES),
                        "created_at": now,
                        "ms_spent": rng.randint(300, 5000),
                        "is_current": True,
                        "undone": False,
                    }
                    for item_id in chunk
                ],
            )
        connection.execute(
            update(Item).where(Item.project_id == fixture.project_id).values(label_count=1)
        )
        if connection.dialect.name == "postgresql":
            connection.execute(text("ANALYZE"))
        total = connection.scalar(
            select(func.count())
            .select_from(Label)
            .where(Label.project_id == fixture.project_id, Label.is_current.is_(True))
        )
    engine.dispose()
    return int(total or 0)


# --- the server -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    base: str
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server and its live worker processes (Linux /proc)."""
        return sum(self.cpu_by_process().values())

    def cpu_by_process(self) -> dict[int, float]:
        return {pid: _cpu_seconds(pid) for pid in _process_tree(self.pid)}


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _postgres_cpu_seconds() -> float:
    """CPU time of every PostgreSQL process on this machine (backends exit and take theirs
    with them, but the pooled connections of a load phase live through it)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().startswith(f"{stat.parent.name} (postgres)"):
                total += _cpu_seconds(int(stat.parent.name))
        except OSError:
            continue
    return total


def _process_tree(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            pids += _process_tree(int(child))
    return pids


@contextmanager
def server(fixture: Fixture, *, workers: int) -> Iterator[Server]:
    port = _free_port()
    env = {
        **os.environ,
        "NEXTLABEL_DATABASE_URL": fixture.url,
        "NEXTLABEL_DATA_DIR": str(fixture.data_dir),
        "NEXTLABEL_EMBEDDED_WORKER": "false",
        "NEXTLABEL_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(REPO_ROOT),
    }
    command = [
        sys.executable, "-m", "app.cli", "serve",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, cwd=REPO_ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, process)
        yield Server(base, process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the server exited")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not start")


# --- load -------------------------------------------------------------------------------------


class HttpConnection:
    """One keep-alive HTTP/1.1 connection, with just enough client for this bench.

    Real HTTP over TCP to the real server, but none of httpx's per-request machinery:
    the load generator shares the 2 cores with the server, so its CPU is kept small.
    Answers must carry Content-Length (every API answer the bench asks for does).
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: str
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.head = head

    @classmethod
    async def open(cls, base: str, token: str) -> HttpConnection:
        host, port = base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        head = f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        return cls(reader, writer, head)

    async def request(self, method: str, path: str, body: bytes | None = None) -> Answer:
        lines = f"{method} {path} HTTP/1.1\r\n{self.head}"
        if body is not None:
            lines += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(lines.encode() + b"\r\n" + (body or b""))
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return Answer(status, await self.reader.readexactly(length))

    def close(self) -> None:
        self.writer.close()


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Traffic:
    """What each client does: `batch` items per GET /next, then one POST per item."""

    name: str
    think: float
    batch: int = 1


async def _annotate(
    http: HttpConnection,
    traffic: Traffic,
    next_path: str,
    result: LoadResult,
    *,
    seed: int,
    measure_from: float,
    stop_at: float,
) -> None:
    rng = random.Random(seed)
    while time.perf_counter() < stop_at:
        t0 = time.perf_counter()
        answer = await http.request("GET", next_path)
        t1 = time.perf_counter()
        served = answer.json() if answer.status == 200 else None
        if not served:
            result.error(f"next: {answer.status} {answer.body[:200]!r}")
            await asyncio.sleep(0.05)
            continue
        if t0 >= measure_from and t1 <= stop_at:
            result.next_ms.append((t1 - t0) * 1000)
        for entry in served:
            label = {"label": rng.choice(CLASSES), "ms_spent": rng.randint(300, 5000)}
            body = json.dumps(label).encode()
            t2 = time.perf_counter()
            posted = await http.request("POST", f"/api/v1/items/{entry['item']['id']}/labels", body)
            t3 = time.perf_counter()
            if t2 >= measure_from and t3 <= stop_at:
                result.label_ms.append((t3 - t2) * 1000)
                result.labels += posted.status == 201
                if posted.status != 201:
                    result.error(f"label: {posted.status} {posted.body[:200]!r}")
            if traffic.think:
                await asyncio.sleep(traffic.think * rng.uniform(0.5, 1.5))


async def _load(
    srv: Server, fixture: Fixture, traffic: Traffic, *, seconds: float, warmup: float
) -> LoadResult:
    result = LoadResult(seconds=seconds)
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + seconds
    next_path = f"/api/v1/projects/{fixture.project_id}/next?n={traffic.batch}"
    connections = []
    for token in fixture.tokens:
        # One at a time, as annotators arrive: connections opened all at once are taken by
        # whichever worker's accept loop wakes first, often all 16 by one of them.
        connections.append(await HttpConnection.open(srv.base, token))
        await asyncio.sleep(CONNECT_SPACING_SECONDS)
    window = {"measure_from": measure_from, "stop_at": stop_at}
    clients = [
        asyncio.create_task(_annotate(http, traffic, next_path, result, seed=i, **window))
        for i, http in enumerate(connections)
    ]
    await asyncio.sleep(max(measure_from - time.perf_counter(), 0))
    cpu_before, client_before = srv.cpu_by_process(), time.process_time()
    # On SQLite the database runs inside the server; PostgreSQL's own processes are counted
    # apart (and not at all on SQLite, where they only vacuum after an earlier phase).
    on_postgres = fixture.url.startswith("postgresql")
    database_before = _postgres_cpu_seconds() if on_postgres else 0.0
    await asyncio.sleep(max(stop_at - time.perf_counter(), 0))
    used = {pid: cpu - cpu_before.get(pid, 0.0) for pid, cpu in srv.cpu_by_process().items()}
    if on_postgres:
        result.database_cpu = _postgres_cpu_seconds() - database_before
    result.server_cpu = sum(used.values())
    result.process_cpu = sorted(used.values(), reverse=True)
    result.client_cpu = time.process_time() - client_before
    await asyncio.gather(*clients)
    for http in connections:
        http.close()
    return result


def run_load(
    srv: Server, fixture: Fixture, traffic: Traffic, *, seconds: float, warmup: float = 2.0
) -> LoadResult:
    """One client per fixture token, all concurrent, on one uvloop event loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_load(srv, fixture, traffic, seconds=seconds, warmup=warmup))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values), q))


def report_load(result: LoadResult, traffic: Traffic, clients: int) -> None:
    rate = result.labels / result.seconds
    pacing = f"think {traffic.think * 1000:.0f} ms" if traffic.think else "no think time"
    print(
        f"  {traffic.name:<10} {clients} clients, next?n={traffic.batch}, {pacing}: "
        f"/next p50 {percentile(result.next_ms, 50):.1f} ms, "
        f"p99 {percentile(result.next_ms, 99):.1f} ms | "
        f"POST label p50 {percentile(result.label_ms, 50):.1f} ms, "
        f"p99 {percentile(result.label_ms, 99):.1f} ms | "
        f"{rate:.0f} labels/s ({result.labels} in {result.seconds:.0f} s, "
        f"{result.errors} errors)"
    )
    if result.labels:
        per_label = result.server_cpu / result.labels * 1000
        unit = "next+label" if traffic.batch == 1 else f"label (+1/{traffic.batch} of a next)"
        processes = " + ".join(f"{cpu / result.seconds:.0%}" for cpu in result.process_cpu)
        print(
            f"             server CPU {per_label:.2f} ms per {unit} "
            f"({result.server_cpu / result.seconds:.0%} of a core = {processes} by process; "
            f"the clients used {result.client_cpu / result.seconds:.0%})"
        )
        if result.database_cpu:
            print(
                f"             PostgreSQL CPU {result.database_cpu / result.labels * 1000:.2f} "
                f"ms per {unit} ({result.database_cpu / result.seconds:.0%} of a core)"
            )
    for sample in result.error_samples:
        print(f"      error: {sample}")


def time_export(base: str, fixture: Fixture, fmt: str) -> tuple[float, int, int]:
    headers = {"Authorization": f"Bearer {fixture.admin_token}"}
    url = f"{base}/api/v1/projects/{fixture.project_id}/export"
    started = time.perf_counter()
    size = 0
    lines = 0
    with httpx.stream("GET", url, params={"format": fmt}, headers=headers, timeout=120) as response:
        response.raise_for_status()
        for chunk in response.iter_bytes():
            size += len(chunk)
            lines += chunk.count(b"\n")
    return time.perf_counter() - started, size, lines


# --- main -------------------------------------------------------------------------------------


def bench(backend: str, args: argparse.Namespace) -> None:
    print(f"\n== {backend} ==")
    with tempfile.TemporaryDirectory(prefix="nl-bench-") as tmp:
        workdir = Path(tmp)
        with database(backend, workdir) as url:
            fixture = build(url, workdir, items=args.items, clients=args.clients)
            print(f"  server: nextlabel serve --workers {args.workers}")
            with server(fixture, workers=args.workers) as srv:
                for traffic in (
                    Traffic("paced", think=args.think),
                    Traffic("saturated", think=0.0),
                    Traffic("browser", think=0.0, batch=args.browser_batch),
                ):
                    result = run_load(srv, fixture, traffic, seconds=args.seconds)
                    report_load(result, traffic, args.clients)
                total = label_the_rest(fixture)
                for fmt in ("csv", "jsonl", "json"):
                    seconds, size, lines = time_export(srv.base, fixture, fmt)
                    print(
                        f"  export {fmt:<5} {total:,} labels: {seconds:.2f} s to the last byte "
                        f"({size / 1e6:.1f} MB, {lines:,} lines)"
                    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=2, help="API processes")
    parser.add_argument("--think", type=float, default=0.25, help="paced phase, per client")
    parser.add_argument(
        "--browser-batch", type=int, default=6, help="browser phase: items per GET /next"
    )
    args = parser.parse_args()
    print(
        f"nextlabel API bench: {args.items:,} items, {args.clients} clients, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )
    for backend in args.backends.split(","):
        if backend == "postgresql" and not postgres_reachable():
            print("\n== postgresql == skipped: not reachable at 127.0.0.1:5432")
            continue
        bench(backend, args)


if __name__ == "__main__":
    main()

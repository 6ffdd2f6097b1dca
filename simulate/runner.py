"""One simulated active-learning run, driven entirely through the REST API.

The synchronous protocol mirrors the BatchBALD paper: label a balanced initial set, train,
acquire the round's b items, retrain on them, repeat until the label budget is spent. The
service does the work; the simulator only labels what ``GET /next`` serves and waits for
the round that its b-th label triggered (``retrain_every = b``). In ``live`` mode the
annotators never wait, as in the product: they keep labelling whatever ``next`` serves while
rounds run in the background, and each finished round is recorded as it lands.
"""

from __future__ import annotations

import csv
import io
import logging
import threading
import time
import uuid
from collections.abc import Callable

import numpy as np

from nextlabel_client import ApiError, Client, Round, RoundDetail
from simulate.annotators import AnnotatorTeam, LabelEvent
from simulate.datasets import Dataset, balanced_initial
from simulate.records import (
    PHASES,
    RoundRecord,
    RunConfig,
    RunResult,
    make_record,
    seconds_between,
)
from simulate.upload import Archives, import_dataset

logger = logging.getLogger(__name__)

# retrain_every while the initial set is labelled, so those labels trigger no round.
NO_AUTO_ROUNDS = 100_000
POLL_S = 0.5


# --- rounds -------------------------------------------------------------------------------


class RoundFailed(RuntimeError):
    pass


def wait_for_round(client: Client, round_id: int, timeout_s: float) -> RoundDetail:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        detail = client.round(round_id)
        if detail.status in ("done", "failed"):
            return detail
        time.sleep(POLL_S)
    raise TimeoutError(f"round {round_id} not finished after {timeout_s:.0f} s")


def wait_until_idle(client: Client, project_id: int, timeout_s: float) -> int:
    """Wait until the project has no queued or running round; return how many were active.

    On frozen features every upload queues a round that embeds the new images, and the
    first one embeds the whole dataset: the protocol's first round must come after those,
    trained on the initial labels, not be one of them.
    """
    deadline = time.monotonic() + timeout_s
    seen: set[int] = set()
    while time.monotonic() < deadline:
        active = [r for r in client.rounds(project_id) if r.status in ("queued", "running")]
        if not active:
            return len(seen)
        seen.update(r.id for r in active)
        time.sleep(POLL_S)
    raise TimeoutError(f"project {project_id}: rounds still active after {timeout_s:.0f} s")


def start_round(client: Client, project_id: int) -> int:
    """Ask for a round now; if one is already queued or running, that one is ours."""
    try:
        return client.start_round(project_id).id
    except ApiError as error:
        if error.status_code != 409:
            raise
    active = [r for r in client.rounds(project_id) if r.status in ("queued", "running")]
    if not active:
        raise RuntimeError("POST /rounds refused but no round is active")
    return max(r.id for r in active)


# --- one run ------------------------------------------------------------------------------


class Simulation:
    """One project, one seed: set up, label the initial set, then run the protocol."""

    def __init__(self, admin: Client, dataset: Dataset, config: RunConfig) -> None:
        self.admin = admin
        self.dataset = dataset
        self.config = config
        self.records: list[RoundRecord] = []
        self.project_id = -1
        # Called with each round as it is recorded: lets a caller watch a long run.
        self.on_round: Callable[[RoundRecord], None] | None = None

    def create_project(self) -> int:
        config = self.config
        project = self.admin.create_project(
            name=(
                f"sim {config.dataset} {config.strategy} b={config.batch_size} "
                f"K={config.mc_samples} seed={config.seed} {config.mode} {uuid.uuid4().hex[:8]}"
            ),
            classes=list(self.dataset.classes),
            strategy=config.strategy,
            query_size=config.batch_size,
            retrain_every=NO_AUTO_ROUNDS,
            # Sync: the round's queue is exactly what gets labelled. Live: the service default
            # (2 × retrain_every) so annotators don't run dry while the next round trains.
            queue_size=None if config.live else config.batch_size,
            mc_samples=config.mc_samples,
            image_size=28,
            image_channels=1,
            network=config.network,
            seed=config.seed,
        )
        self.project_id = project.id
        return project.id

    def truth(self, pool_ids: dict[str, int]) -> dict[int, str]:
        pool = self.dataset.pool
        return {
            pool_ids[name]: self.dataset.classes[int(pool.labels[index])]
            for index, name in enumerate(pool.filenames)
            if name in pool_ids
        }

    def initial_items(self, pool_ids: dict[str, int]) -> list[int]:
        pool = self.dataset.pool
        present = np.array([name in pool_ids for name in pool.filenames])
        positions = np.flatnonzero(present)
        chosen = balanced_initial(
            pool.labels[positions], self.config.initial_per_class, self.config.seed
        )
        return [pool_ids[pool.filenames[positions[i]]] for i in chosen]

    def record(self, round_: Round, observed_s: float | None) -> None:
        record = make_record(self.config, self.project_id, round_, observed_s)
        self.records.append(record)
        if self.on_round is not None:
            self.on_round(record)
        logger.info(
            "project %d round %d %s: %d labels, accuracy %s, worker %.1fs",
            self.project_id,
            round_.id,
            round_.status,
            round_.labels_used,
            "n/a" if record.accuracy is None else f"{record.accuracy:.4f}",
            record.worker_s or float("nan"),
        )
        if round_.status == "failed":
            raise RoundFailed(f"round {round_.id} failed: {round_.error}")

    def run_synchronous(self, team: AnnotatorTeam) -> None:
        config = self.config
        round_id = start_round(self.admin, self.project_id)
        triggered_at = time.monotonic()
        while True:
            done = wait_for_round(self.admin, round_id, config.round_timeout_s)
            self.record(done, time.monotonic() - triggered_at)
            left = config.budget - len(team.events)
            if left <= 0 or team.pool_exhausted:
                return
            batch = team.label(min(config.batch_size, left))
            triggered_at = time.monotonic()
            self.records[-1].served_from_queue = _served_from(done, batch, config.batch_size)
            if not batch:
                return
            enqueued = [e.round_enqueued for e in batch if e.round_enqueued is not None]
            round_id = enqueued[-1] if enqueued else start_round(self.admin, self.project_id)

    def run_live(self, team: AnnotatorTeam) -> None:
        """Annotators label without pause for rounds; finished rounds are recorded as they land."""
        config = self.config
        start_round(self.admin, self.project_id)
        errors: list[BaseException] = []

        def annotate() -> None:
            try:
                team.label(config.budget - len(team.events))
            except BaseException as error:  # surfaced below, in the main thread
                errors.append(error)

        worker = threading.Thread(target=annotate, name="live-annotators", daemon=True)
        worker.start()
        seen: set[int] = set()
        while worker.is_alive():
            self._record_new_rounds(seen)
            time.sleep(POLL_S)
        worker.join()
        if errors:
            raise errors[0]
        self._finish_live(team, seen)

    def _record_new_rounds(self, seen: set[int]) -> None:
        for round_ in sorted(self.admin.rounds(self.project_id), key=lambda r: r.id):
            if round_.id not in seen and round_.status in ("done", "failed"):
                seen.add(round_.id)
                self.record(round_, seconds_between(round_.created_at, round_.finished_at))

    def _finish_live(self, team: AnnotatorTeam, seen: set[int]) -> None:
        """Make sure the last recorded round trained on every label made."""
        deadline = time.monotonic() + self.config.round_timeout_s
        while time.monotonic() < deadline:
            rounds = self.admin.rounds(self.project_id)
            self._record_new_rounds(seen)
            if any(r.status in ("queued", "running") for r in rounds):
                time.sleep(POLL_S)
                continue
            if max((r.labels_used for r in rounds if r.status == "done"), default=0) >= len(
                team.events
            ):
                return
            start_round(self.admin, self.project_id)
        raise TimeoutError("live run: the final round did not finish")

    def apply_curve(self) -> None:
        """Take accuracy and NLL from the public learning curve where the round lacked them."""
        curve = {
            point.round_id: point for point in self.admin.metrics(self.project_id).learning_curve
        }
        for record in self.records:
            point = curve.get(record.round_id)
            if point is None:
                continue
            if record.accuracy is None:
                record.accuracy = point.accuracy
            if record.nll is None:
                record.nll = point.nll


def _served_from(done: Round, batch: list[LabelEvent], b: int) -> int:
    """How many of the labels that followed round ``done`` came from the top b of its queue."""
    return sum(1 for e in batch if e.served_round == done.id and e.rank is not None and e.rank < b)


def count_export(client: Client, project_id: int) -> tuple[int, int]:
    """(rows, distinct items) in the project's CSV export."""
    rows = list(csv.DictReader(io.StringIO(client.export_csv(project_id))))
    key = next((k for k in ("item_id", "item", "id") if rows and k in rows[0]), None)
    distinct = len({row[key] for row in rows}) if key else len(rows)
    return len(rows), distinct


def setup_team(admin: Client, project_id: int, count: int, base_url: str) -> list[Client]:
    """``count`` annotator accounts, members of the project, each with its own client."""
    clients = []
    for index in range(count):
        created = admin.create_annotator(f"sim-{project_id}-{index}-{uuid.uuid4().hex[:6]}")
        admin.add_member(project_id, created.id)
        clients.append(Client(base_url, created.token, transport=admin.transport))
    return clients


def _check_catalog(admin: Client, config: RunConfig) -> None:
    """The strategy and the recorded phases against what the service offers (GET /catalog)."""
    catalog = admin.catalog()
    strategies, phases = catalog.names("strategies"), catalog.names("phases")
    if config.strategy not in strategies:
        raise ValueError(
            f"unknown strategy {config.strategy!r}: the service offers {', '.join(strategies)}"
        )
    networks = catalog.names("networks")
    if config.network not in networks:
        raise ValueError(
            f"unknown network {config.network!r}: the service offers {', '.join(networks)}"
        )
    if tuple(phases) != PHASES[:-1]:
        raise RuntimeError(
            f"the service's round phases {phases} differ from the ones this "
            f"simulator records {list(PHASES[:-1])}: update simulate.records.PHASES and the "
            "RoundRecord columns"
        )


def run_one(
    admin: Client,
    dataset: Dataset,
    archives: Archives,
    config: RunConfig,
    on_round: Callable[[RoundRecord], None] | None = None,
) -> RunResult:
    """Create a project, import, label the initial set, run the protocol, check the export."""
    started = time.monotonic()
    _check_catalog(admin, config)
    sim = Simulation(admin, dataset, config)
    sim.on_round = on_round
    project_id = sim.create_project()
    pool_ids = import_dataset(admin, project_id, dataset, archives)
    import_s = time.monotonic() - started
    logger.info("project %d: imported in %.1f s", project_id, import_s)
    upload_rounds = wait_until_idle(admin, project_id, config.round_timeout_s)
    upload_rounds_s = time.monotonic() - started - import_s
    if upload_rounds:
        logger.info(
            "project %d: %d round(s) the upload queued (embedding) took %.1f s",
            project_id,
            upload_rounds,
            upload_rounds_s,
        )
    clients = setup_team(admin, project_id, config.annotators, admin.base_url)
    try:
        team = AnnotatorTeam(
            clients, project_id, sim.truth(pool_ids), seconds_per_label=config.seconds_per_label
        )
        for number, item_id in enumerate(sim.initial_items(pool_ids)):
            team.label_item(number % len(clients), item_id)
        admin.update_project(project_id, retrain_every=config.batch_size)
        if config.live:
            sim.run_live(team)
        else:
            sim.run_synchronous(team)
        sim.apply_curve()
        exported, distinct = count_export(admin, project_id)
    finally:
        for client in clients:
            client.close()
    labelled = {event.item_id for event in team.events}
    return RunResult(
        config=config,
        project_id=project_id,
        records=sim.records,
        labels_made=len(team.events),
        labels_exported=exported,
        distinct_items_labelled=len(labelled),
        import_s=import_s,
        upload_rounds_s=upload_rounds_s,
        total_s=time.monotonic() - started,
        checks={
            "export_matches_labels": exported == len(team.events) == distinct,
            "no_item_labelled_twice": len(labelled) == len(team.events),
            # Labels `next` served from a round's queue (the rest came from the pool order).
            "labels_from_queue": sum(
                1 for e in team.events if e.served_round is not None and e.rank is not None
            ),
        },
    )

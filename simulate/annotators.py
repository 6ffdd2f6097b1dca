"""Simulated annotators: threads that label through ``GET /next`` and ``POST /labels``.

Each simulated annotator is a real annotator account with its own token, so leases keep
two of them off the same item exactly as they keep two people apart. They know the true
label of every pool item and always give it (a perfect oracle, as in the paper).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from nextlabel_client import Client, Label, NextItem

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelEvent:
    """One label as the simulator made it, with how ``next`` served the item."""

    annotator: int
    item_id: int
    label: str
    rank: int | None
    served_round: int | None
    strategy: str
    round_enqueued: int | None
    at: float


class _Tickets:
    """A shared countdown: each label needs a ticket, so N threads make exactly ``count``."""

    def __init__(self, count: int) -> None:
        self._left = count
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self._left <= 0:
                return False
            self._left -= 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self._left += 1

    def cancel(self) -> None:
        with self._lock:
            self._left = 0


class AnnotatorTeam:
    """N annotators labelling one project; ``truth`` maps item id to its class name."""

    def __init__(
        self,
        clients: Sequence[Client],
        project_id: int,
        truth: Mapping[int, str],
        *,
        seconds_per_label: float = 0.0,
    ) -> None:
        if not clients:
            raise ValueError("a team needs at least one annotator")
        self.clients = list(clients)
        self.project_id = project_id
        self.truth = truth
        self.seconds_per_label = seconds_per_label
        self.events: list[LabelEvent] = []
        self._events_lock = threading.Lock()
        self.pool_exhausted = False

    def label_item(self, annotator: int, item_id: int) -> LabelEvent:
        """Label one item directly by id (the balanced initial set), not through ``next``."""
        reply = self.clients[annotator].label(item_id, self.truth[item_id])
        return self._record(annotator, reply, None)

    def label(self, count: int, stop: Callable[[], bool] | None = None) -> list[LabelEvent]:
        """Make exactly ``count`` labels through ``next`` (fewer only if the pool runs dry).

        With one annotator the items come in the queue's rank order; with several, together
        they take the same top ``count`` items, each leased to one of them.
        """
        tickets = _Tickets(count)
        start = len(self.events)
        with ThreadPoolExecutor(len(self.clients), thread_name_prefix="annotator") as pool:
            futures = [
                pool.submit(self._work, index, tickets, stop) for index in range(len(self.clients))
            ]
            for future in futures:
                future.result()  # re-raises an annotator's error here
        return self.events[start:]

    def _work(self, index: int, tickets: _Tickets, stop: Callable[[], bool] | None) -> None:
        client = self.clients[index]
        while tickets.take():
            if stop is not None and stop():
                tickets.cancel()
                return
            served = client.next_items(self.project_id, n=1)
            if not served:
                # Everything left is labelled or leased to a teammate: this one is done.
                tickets.give_back()
                self.pool_exhausted = True
                return
            if self.seconds_per_label > 0:
                time.sleep(self.seconds_per_label)
            self._label_served(index, served[0])

    def _label_served(self, index: int, served: NextItem) -> None:
        item_id = served.item.id
        reply = self.clients[index].label(
            item_id, self.truth[item_id], ms_spent=int(self.seconds_per_label * 1000)
        )
        self._record(index, reply, served)

    def _record(self, annotator: int, reply: Label, served: NextItem | None) -> LabelEvent:
        if reply.replaced_previous:
            logger.warning("label %s replaced an earlier one: item served twice", reply.id)
        event = LabelEvent(
            annotator=annotator,
            item_id=reply.item_id,
            label=reply.label,
            rank=served.rank if served else None,
            served_round=served.round_id if served else None,
            strategy=served.strategy if served else "initial",
            round_enqueued=reply.round_enqueued,
            at=time.monotonic(),
        )
        with self._events_lock:
            self.events.append(event)
        return event

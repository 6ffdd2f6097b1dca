"""Checking a file of vectors against a project's items, then writing it to the project's
imported space, or refusing it whole.

A key names an item of the project by its sha256 (64 hex digits, any case) or by its file
name exactly as stored (`cat/1.png`). Any problem refuses the whole import, with each one
listed and nothing written: a key that names no item or two of them, a key given twice, two
keys for one item, a vector that is not finite, a row without a vector of the file's
dimension, a dimension other than that of the vectors already imported (unless `replace`).
Coverage is not a problem: teams import in parts, so the items still without a vector are
counted and listed, and rounds leave them out until they have one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import IO

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.schemas import (
    EMBEDDING_LISTED,
    EmbeddingCoverage,
    EmbeddingImportReport,
    EmbeddingProblem,
    EmbeddingSummary,
    UncoveredItem,
)
from app.services.embedding_import.files import KeyedVectors, UnreadableFile, read_vectors
from core.embeddings import EmbeddingSpace, EmbeddingStore, imported_space_key
from core.rounds import open_round
from core.tables import Item, Project

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
ROUND_TRIGGER = "embeddings"
# The network whose rounds read the imported space (core.catalog).
IMPORTED_NETWORK = "embeddings"


@dataclass(frozen=True)
class ItemRef:
    """What a key can name an item by."""

    id: int
    filename: str
    sha256: str


class EmbeddingsRefused(Exception):
    """The import had problems and wrote nothing; `report` lists them."""

    def __init__(self, report: EmbeddingImportReport, *, name: str) -> None:
        first = report.problems[0]
        where = f"{first.key!r}: " if first.key is not None else ""
        super().__init__(
            f"Nothing was imported: {report.problem_count} problem(s) in {name!r} (the first: "
            f"{where}{first.reason})."
        )
        self.report = report


def import_embeddings(
    *,
    session: Session,
    embeddings: EmbeddingStore,
    project: Project,
    source: IO[bytes],
    name: str,
    max_bytes: int,
    dry_run: bool = False,
    replace: bool = False,
) -> EmbeddingImportReport:
    """Check `source` (named `name`, for its format) and, unless `dry_run`, write its vectors.

    `replace` removes the project's imported vectors first, so vectors of another dimension
    (a new model's) may come in. A written import into a project whose network is
    "embeddings" queues a round (`round_queued`): it commits the session.

    Raises:
        EmbeddingsRefused: a problem, and not `dry_run` (which reports them instead).
    """
    space = embeddings.space(imported_space_key(project.id))
    items = project_items(session=session, project_id=project.id)
    try:
        read: KeyedVectors | None = read_vectors(source, name=name, max_bytes=max_bytes)
    except UnreadableFile as exc:
        read = None
        problems = [EmbeddingProblem(key=None, reason=str(exc))]
    shas: list[str] = []
    if read is not None:
        shas, problems = check_vectors(read, items=items, space=space, replace=replace)
    accepted = read is not None and not problems
    report = EmbeddingImportReport(
        dry_run=dry_run,
        vectors=len(read.keys) if read is not None else 0,
        imported=len(shas) if accepted else 0,
        dimension=read.dimension if read is not None else None,
        # What the space would hold: as it is, unless the import is accepted.
        replaced=len(space) if replace and accepted else 0,
        coverage=coverage(
            items,
            covered=_covered(space, items, shas if accepted else [], replace=replace and accepted),
        ),
        problems=problems[:EMBEDDING_LISTED],
        problem_count=len(problems),
        notes=_network_notes(project),
    )
    if problems and not dry_run:
        raise EmbeddingsRefused(report, name=name)
    if read is None or problems or dry_run:
        return report
    report.replaced = space.clear() if replace else 0
    space.put(shas, read.vectors_N_D)
    report.coverage = coverage(items, covered=_covered(space, items, [], replace=False))
    report.round_queued = _queue_round(session=session, project=project, notes=report.notes)
    return report


def embedding_summary(
    *, session: Session, embeddings: EmbeddingStore, project: Project
) -> EmbeddingSummary:
    """The project's imported space: its dimension, size, and which items it covers."""
    space = embeddings.space(imported_space_key(project.id))
    items = project_items(session=session, project_id=project.id)
    return EmbeddingSummary(
        dimension=space.dim,
        vectors=len(space),
        coverage=coverage(items, covered=_covered(space, items, [], replace=False)),
    )


def project_items(*, session: Session, project_id: int) -> list[ItemRef]:
    """Every item of the project (pool and validation), oldest first."""
    query = (
        select(Item.id, Item.filename, Item.sha256)
        .where(Item.project_id == project_id)
        .order_by(Item.id)
    )
    return [ItemRef(*row) for row in session.execute(query)]


def check_vectors(
    read: KeyedVectors, *, items: list[ItemRef], space: EmbeddingSpace, replace: bool
) -> tuple[list[str], list[EmbeddingProblem]]:
    """The sha256 of the item each row names, and every problem, file-wide ones first."""
    problems: list[EmbeddingProblem] = []
    if not read.keys:
        problems.append(EmbeddingProblem(key=None, reason="the file holds no vectors"))
    held = None if replace else space.dim
    if held is not None and read.dimension is not None and read.dimension != held:
        problems.append(
            EmbeddingProblem(
                key=None,
                reason=f"vectors of dimension {read.dimension} do not fit the {held} of the "
                "project's imported vectors: import with replace (replace=true, --replace) "
                "to remove those first",
            )
        )
    shas, key_problems = match_keys(read.keys, items)
    finite_N = np.isfinite(read.vectors_N_D).all(axis=1)
    for row, key in enumerate(read.keys):
        problems += [EmbeddingProblem(key=key, reason=reason) for reason in key_problems[row]]
        if row in read.bad_rows:
            problems.append(EmbeddingProblem(key=key, reason=read.bad_rows[row]))
        elif not finite_N[row]:
            problems.append(EmbeddingProblem(key=key, reason="vector is not finite (NaN or inf)"))
    return [sha for sha in shas if sha is not None], problems


def match_keys(
    keys: list[str], items: list[ItemRef]
) -> tuple[list[str | None], dict[int, list[str]]]:
    """The sha256 of the item each key names (None: none), and each row's key problems."""
    by_sha = {item.sha256: item for item in items}
    by_name: dict[str, list[ItemRef]] = {}
    for ref in items:
        by_name.setdefault(ref.filename, []).append(ref)
    first_row: dict[str, int] = {}
    claimed: dict[int, str] = {}  # item id → the key that named it first
    shas: list[str | None] = []
    problems: dict[int, list[str]] = {row: [] for row in range(len(keys))}
    for row, key in enumerate(keys):
        item, reason = _item_for(key, by_sha, by_name)
        if key in first_row:
            item, reason = None, f"given twice (rows {first_row[key]} and {row})"
        first_row.setdefault(key, row)
        if item is not None and item.id in claimed:
            by = claimed[item.id]
            reason = f"item {item.id} ({item.filename}) already has a vector, by {by!r}"
            item = None
        if item is not None:
            claimed[item.id] = key
        if reason is not None:
            problems[row].append(reason)
        shas.append(item.sha256 if item is not None else None)
    return shas, problems


def _item_for(
    key: str, by_sha: dict[str, ItemRef], by_name: dict[str, list[ItemRef]]
) -> tuple[ItemRef | None, str | None]:
    if not key:
        return None, "an empty key"
    if _SHA256.fullmatch(key) and key.lower() in by_sha:
        return by_sha[key.lower()], None
    named = by_name.get(key, [])
    if len(named) > 1:
        ids = ", ".join(str(item.id) for item in named[:5])
        return None, f"names {len(named)} items (ids {ids}): key them by sha256"
    if not named:
        return None, "names no item of the project (neither a file name nor a sha256)"
    return named[0], None


def _covered(
    space: EmbeddingSpace, items: list[ItemRef], new: list[str], *, replace: bool
) -> set[str]:
    """The sha256 of the items that have a vector once `new` is written."""
    shas = [item.sha256 for item in items]
    held = set() if replace else set(shas) - set(space.missing(shas))
    return held | set(new)


def coverage(items: list[ItemRef], *, covered: set[str]) -> EmbeddingCoverage:
    uncovered = [item for item in items if item.sha256 not in covered]
    return EmbeddingCoverage(
        items=len(items),
        covered=len(items) - len(uncovered),
        uncovered=len(uncovered),
        uncovered_items=[
            UncoveredItem(id=item.id, filename=item.filename)
            for item in uncovered[:EMBEDDING_LISTED]
        ],
    )


def _network_notes(project: Project) -> list[str]:
    network = project.resolved_network
    if network == IMPORTED_NETWORK:
        return []
    return [
        f"the project's network is {network!r}: its rounds learn on imported vectors only "
        f"with network {IMPORTED_NETWORK!r}"
    ]


def _queue_round(*, session: Session, project: Project, notes: list[str]) -> int | None:
    """A round to learn on the new vectors, if the project's rounds read them (commits)."""
    if project.resolved_network != IMPORTED_NETWORK:
        return None
    opened = open_round(session=session, project=project, trigger=ROUND_TRIGGER)
    if opened is None:
        notes.append("a round is already queued or running: the next to start reads the vectors")
        return None
    return opened.id

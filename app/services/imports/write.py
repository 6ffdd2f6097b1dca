"""Storing an import, in batches of one transaction each, so memory stays flat.

`write_import` stores what `plan_import` checked: new items for new images, then the import
account's training labels, batch by batch, and opens the round the new labels made due.
`import_candidates` is the one-pass path for files without labels (the demo's arrays, a
plain zip): each batch is checked, stored and inserted in one go. Both insert items the
same way (`_insert_items`: an image already in the project is a duplicate, even one a
concurrent upload inserted a moment earlier).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from app.images import ImageRejected, inspect_image
from app.schemas import ImportReport, SkippedFile, UploadReport
from app.services import dialect_insert
from app.services.imports.account import import_annotator
from app.services.imports.plan import ImportPlan, ImportRefused, Planned
from app.services.imports.sources import Candidate
from app.services.manifests import LABELS_CSV, LabelUse
from core.rounds import open_round, trigger_round_if_due
from core.storage import ImageStore, content_key
from core.tables import Item, Label, Project, Split, utcnow

BATCH_ITEMS = 500
BATCH_BYTES = 64 * 1024 * 1024
_FILENAME_LENGTH = 500


def random_key_for(*, seed: int, sha256: str) -> int:
    """A signed 64-bit sort key fixed by (project seed, image): seeded random pool order."""
    digest = hashlib.sha256(f"{seed}:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# --- imports with labels: store what plan_import checked ------------------------------------


def write_import(
    *,
    session: Session,
    store: ImageStore,
    project: Project,
    plan: ImportPlan,
    unlabelled_split: Split = Split.pool,
    skip_problems: bool = False,
    progress: Callable[[int], object] | None = None,
) -> ImportReport:
    """Store what `plan_import` checked, in batches of one transaction each; then open the
    round the new training labels made due, if they did (the caller hands it to the broker).

    Raises ImportRefused, writing nothing, if the plan has problems and `skip_problems` is
    not set; with it, the problems are what was left out.
    """
    report = plan.report(dry_run=False)
    if plan.problems and not skip_problems:
        raise ImportRefused(plan.report(dry_run=True))
    labels = any(p.wanted.use == LabelUse.training and p.adds_label for p in plan.files)
    importer = import_annotator(session=session) if labels else None
    added = 0
    for batch in _write_batches(plan.files):
        created, count = _write_batch(
            session=session,
            store=store,
            project=project,
            batch=batch,
            importer=importer,
            unlabelled_split=unlabelled_split,
            skipped=report.skipped,
        )
        report.created += created
        added += count
        if progress is not None:
            progress(len(batch))
    opened = None
    if added:
        opened = trigger_round_if_due(
            session=session, project_id=project.id, retrain_every=project.retrain_every
        )
    if opened is None and report.created and project.learns_on_embeddings:
        # New images on frozen features: a round embeds them (incrementally: only these),
        # checks them for near duplicates and queues them, in seconds.
        opened = open_round(session=session, project=project, trigger="upload")
    report.round_queued = opened.id if opened is not None else None
    return report


def _write_batches(files: list[Planned]) -> Iterator[list[Planned]]:
    batch: list[Planned] = []
    for planned in files:
        batch.append(planned)
        if len(batch) >= BATCH_ITEMS:
            yield batch
            batch = []
    if batch:
        yield batch


def _write_batch(
    *,
    session: Session,
    store: ImageStore,
    project: Project,
    batch: list[Planned],
    importer: int | None,
    unlabelled_split: Split,
    skipped: list[SkippedFile],
) -> tuple[list[int], int]:
    """Items for the batch's new images, then its training labels: one transaction."""
    rows: list[dict[str, Any]] = []
    for planned in batch:
        if planned.existing is not None:
            continue
        data = planned.wanted.entry.read()
        if isinstance(data, SkippedFile) or content_key(data) != planned.sha256:
            skipped.append(
                SkippedFile(name=planned.wanted.entry.name, reason="changed since it was checked")
            )
            continue
        rows.append(_new_item_row(planned, project=project, unlabelled_split=unlabelled_split))
        rows[-1]["file_key"] = store.put(data)
    created = _insert_items(session=session, rows=rows)
    for row in rows:
        if row["sha256"] not in created:  # a concurrent upload of the same image won
            skipped.append(SkippedFile(name=row["filename"], reason="duplicate"))
    to_label = {
        (planned.existing or created[planned.sha256]): str(planned.wanted.label)
        for planned in batch
        if planned.wanted.use == LabelUse.training
        and (planned.existing is not None or planned.sha256 in created)
    }
    added = _insert_labels(
        session=session, project_id=project.id, importer=importer, labels=to_label
    )
    session.commit()
    new_ids = [created[row["sha256"]] for row in rows if row["sha256"] in created]
    return new_ids, added


def _new_item_row(planned: Planned, *, project: Project, unlabelled_split: Split) -> dict[str, Any]:
    want = planned.wanted
    validation = want.use == LabelUse.validation
    split = Split.validation if validation else (Split.pool if want.use else unlabelled_split)
    return {
        "project_id": project.id,
        "filename": want.entry.name[-_FILENAME_LENGTH:],
        "sha256": planned.sha256,
        "width": planned.width,
        "height": planned.height,
        "split": split,
        "known_label": want.label if validation else None,
        "label_count": 0,
        "random_key": random_key_for(seed=project.seed, sha256=planned.sha256),
    }


def _insert_labels(
    *, session: Session, project_id: int, importer: int | None, labels: dict[int, str]
) -> int:
    """The import account's current labels; an item that has one already keeps it (a
    concurrent import's). Counted on the items in the same transaction."""
    if not labels or importer is None:
        return 0
    now = utcnow()
    insert = dialect_insert(session)
    statement = (
        insert(Label)
        .values(
            [
                {
                    "project_id": project_id,
                    "item_id": item_id,
                    "annotator_id": importer,
                    "label": label,
                    "created_at": now,
                    "is_current": True,
                    "undone": False,
                }
                for item_id, label in labels.items()
            ]
        )
        .on_conflict_do_nothing(
            index_elements=["item_id", "annotator_id"], index_where=text("is_current")
        )
        .returning(Label.item_id)
    )
    labelled = list(session.scalars(statement))
    if labelled:
        session.execute(
            update(Item)
            .where(Item.id.in_(labelled))
            .values(label_count=Item.label_count + 1)
            .execution_options(synchronize_session=False)
        )
    return len(labelled)


# --- files without labels: check, store and insert in one pass ------------------------------


@dataclass
class ImportTotals:
    created: list[int] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)

    def add(self, report: UploadReport) -> None:
        self.created.extend(report.created)
        self.skipped.extend(report.skipped)

    def report(self) -> UploadReport:
        return UploadReport(created=self.created, skipped=self.skipped)


def import_candidates(
    *,
    session: Session,
    store: ImageStore,
    project: Project,
    candidates: Iterable[Candidate | SkippedFile],
    max_pixels: int,
) -> UploadReport:
    """Import everything `candidates` yields, committing in batches; SkippedFile passes through."""
    totals = ImportTotals()
    for batch, skipped in batched_candidates(candidates):
        totals.skipped.extend(skipped)
        totals.add(
            import_batch(
                session=session, store=store, project=project, batch=batch, max_pixels=max_pixels
            )
        )
    return totals.report()


def batched_candidates(
    candidates: Iterable[Candidate | SkippedFile],
) -> Iterator[tuple[list[Candidate], list[SkippedFile]]]:
    """Group candidates into batches bounded in count and bytes, so memory stays flat."""
    batch: list[Candidate] = []
    skipped: list[SkippedFile] = []
    size = 0
    for candidate in candidates:
        if isinstance(candidate, SkippedFile):
            skipped.append(candidate)
            continue
        batch.append(candidate)
        size += len(candidate.data)
        if len(batch) >= BATCH_ITEMS or size >= BATCH_BYTES:
            yield batch, skipped
            batch, skipped, size = [], [], 0
    if batch or skipped:
        yield batch, skipped


def import_batch(
    *,
    session: Session,
    store: ImageStore,
    project: Project,
    batch: Sequence[Candidate],
    max_pixels: int,
) -> UploadReport:
    """Validate, store and insert one batch in one transaction."""
    skipped: list[SkippedFile] = []
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    classes = set(project.classes)
    for candidate in batch:
        row_or_reason = _item_row(
            candidate, project=project, classes=classes, max_pixels=max_pixels
        )
        if isinstance(row_or_reason, str):
            skipped.append(SkippedFile(name=candidate.name, reason=row_or_reason))
        elif row_or_reason["sha256"] in seen:
            skipped.append(SkippedFile(name=candidate.name, reason="duplicate"))
        else:
            seen.add(row_or_reason["sha256"])
            row_or_reason["data"] = candidate.data
            rows.append(row_or_reason)
    existing = _existing_hashes(session=session, project_id=project.id, hashes=seen)
    fresh = [row for row in rows if row["sha256"] not in existing]
    skipped += [
        SkippedFile(name=row["filename"], reason="duplicate")
        for row in rows
        if row["sha256"] in existing
    ]
    for row in fresh:
        row["file_key"] = store.put(row.pop("data"))
    created = _insert_items(session=session, rows=fresh)
    # A concurrent upload of the same image wins the unique constraint; ours is a duplicate.
    skipped += [
        SkippedFile(name=row["filename"], reason="duplicate")
        for row in fresh
        if row["sha256"] not in created
    ]
    session.commit()
    return UploadReport(
        created=[created[row["sha256"]] for row in fresh if row["sha256"] in created],
        skipped=skipped,
    )


def _item_row(
    candidate: Candidate, *, project: Project, classes: set[str], max_pixels: int
) -> dict[str, Any] | str:
    """The new Item's column values, or why the candidate is skipped."""
    if "\x00" in candidate.name:
        # PostgreSQL cannot store NUL. The API refuses such an upload's name with a 422 and
        # zipfile cuts member names at NUL; this covers any other caller (or a future one).
        return "the file name contains a NUL character (U+0000), which cannot be stored"
    if candidate.known_label is not None and candidate.known_label not in classes:
        return (
            f"label {candidate.known_label!r} in {LABELS_CSV} is not one of the project's "
            f"classes ({', '.join(project.classes)})"
        )
    try:
        info = inspect_image(candidate.data, max_pixels=max_pixels)
    except ImageRejected as exc:
        return str(exc)
    sha256 = content_key(candidate.data)
    return {
        "project_id": project.id,
        "filename": candidate.name[-_FILENAME_LENGTH:],
        "sha256": sha256,
        "width": info.width,
        "height": info.height,
        "split": candidate.split,
        "known_label": candidate.known_label,
        "label_count": 0,
        "random_key": random_key_for(seed=project.seed, sha256=sha256),
    }


def _existing_hashes(*, session: Session, project_id: int, hashes: set[str]) -> set[str]:
    if not hashes:
        return set()
    query = select(Item.sha256).where(Item.project_id == project_id, Item.sha256.in_(hashes))
    return set(session.scalars(query))


def _insert_items(*, session: Session, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Insert rows, ignoring ones whose sha256 is already in the project; sha256 -> new id."""
    if not rows:
        return {}
    insert = dialect_insert(session)
    statement = (
        insert(Item)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["project_id", "sha256"])
        .returning(Item.sha256, Item.id)
    )
    return {sha256: item_id for sha256, item_id in session.execute(statement)}

"""Import images into a project: from uploads, zips, folders and arrays, in batches.

The API and `nextlabel import` both feed `Candidate`s to `import_candidates`, so a file gets
the same checks whichever way it arrives: decodable image within the pixel limit, not a
duplicate (same sha256) of an image already in the project, and a known label that is one
of the project's classes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import posixpath
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.images import ImageRejected, encode_png, inspect_image
from app.schemas import SkippedFile, UploadReport
from app.services import Invalid, TooLarge, dialect_insert
from core.storage import ImageStore, content_key
from core.tables import Item, Project, Split

LABELS_CSV = "labels.csv"
BATCH_ITEMS = 500
BATCH_BYTES = 64 * 1024 * 1024
# Below this size a high compression ratio is normal (flat test images, tiny PNGs).
_RATIO_FLOOR_BYTES = 1024 * 1024
_FILENAME_LENGTH = 500


@dataclass(frozen=True)
class Candidate:
    """One file offered for import."""

    name: str
    data: bytes
    split: Split = Split.pool
    known_label: str | None = None


@dataclass(frozen=True)
class ZipLimits:
    max_members: int
    max_ratio: int
    max_total_bytes: int | None


@dataclass
class ImportTotals:
    created: list[int] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)

    def add(self, report: UploadReport) -> None:
        self.created.extend(report.created)
        self.skipped.extend(report.skipped)

    def report(self) -> UploadReport:
        return UploadReport(created=self.created, skipped=self.skipped)


def random_key_for(*, seed: int, sha256: str) -> int:
    """A signed 64-bit sort key fixed by (project seed, image): seeded random pool order."""
    digest = hashlib.sha256(f"{seed}:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


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


# --- zips -----------------------------------------------------------------------------------


def open_zip(fileobj: Any, *, size: int, limits: ZipLimits) -> zipfile.ZipFile:
    """Open a zip and refuse it whole if it could be a zip bomb; nothing is read yet."""
    try:
        archive = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise Invalid(f"The zip file cannot be read: {exc}.") from None
    members = archive.infolist()
    if len(members) > limits.max_members:
        raise TooLarge(
            f"The zip holds {len(members):,} entries; the limit is {limits.max_members:,}."
        )
    total = sum(info.file_size for info in members)
    if limits.max_total_bytes is not None and total > limits.max_total_bytes:
        raise TooLarge(
            f"The zip expands to {total:,} bytes; the limit is {limits.max_total_bytes:,}."
        )
    if total > _RATIO_FLOOR_BYTES and total > limits.max_ratio * max(size, 1):
        raise TooLarge(_bomb_message(total / max(size, 1), limits))
    for info in members:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > _RATIO_FLOOR_BYTES and ratio > limits.max_ratio:
            raise TooLarge(_bomb_message(ratio, limits, name=info.filename))
    return archive


def _bomb_message(ratio: float, limits: ZipLimits, *, name: str | None = None) -> str:
    where = f" ({name!r})" if name else ""
    return (
        f"The zip expands {ratio:,.0f}× when unpacked{where}, more than the "
        f"{limits.max_ratio}× allowed: refusing it as a possible zip bomb. Nothing was imported."
    )


def is_unsafe_path(name: str) -> bool:
    """Absolute paths, drive letters and `..` components: names that escape a folder."""
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":"):
        return True
    return ".." in normalized.split("/")


def _ignored(name: str) -> bool:
    # Folders, and metadata macOS adds to zips: not files anyone meant to upload.
    base = posixpath.basename(name.rstrip("/"))
    return name.endswith("/") or name.startswith("__MACOSX/") or base.startswith("._")


def iter_zip(
    archive: zipfile.ZipFile, *, split: Split = Split.pool
) -> Iterator[Candidate | SkippedFile]:
    """Candidates from a checked zip; files listed in labels.csv become validation items."""
    labels, label_problems = _zip_labels(archive)
    yield from label_problems
    found: set[str] = set()
    for info in archive.infolist():
        name = info.filename
        if _ignored(name) or posixpath.basename(name).lower() == LABELS_CSV:
            continue
        if is_unsafe_path(name):
            yield SkippedFile(name=name, reason="unsafe path")
            continue
        data_or_error = _read_member(archive, info)
        if isinstance(data_or_error, SkippedFile):
            yield data_or_error
            continue
        key = name if name in labels else posixpath.basename(name)
        if key in labels:
            found.add(key)
            yield Candidate(name, data_or_error, Split.validation, labels[key])
        else:
            yield Candidate(name, data_or_error, split)
    for missing in sorted(set(labels) - found):
        yield SkippedFile(name=missing, reason=f"listed in {LABELS_CSV} but not in the zip")


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes | SkippedFile:
    if info.flag_bits & 0x1:
        return SkippedFile(name=info.filename, reason="encrypted zip entry")
    try:
        # ZipExtFile never returns more than the declared size, and a lying header fails
        # the CRC check: reading cannot expand past what open_zip accepted.
        with archive.open(info) as member:
            return member.read()
    except (
        zipfile.BadZipFile,
        zlib.error,
        OSError,
        ValueError,
        EOFError,
        NotImplementedError,
    ) as exc:
        return SkippedFile(name=info.filename, reason=f"corrupt zip entry: {exc}")


def _zip_labels(archive: zipfile.ZipFile) -> tuple[dict[str, str], list[SkippedFile]]:
    entries = [
        info
        for info in archive.infolist()
        if posixpath.basename(info.filename).lower() == LABELS_CSV and not _ignored(info.filename)
    ]
    if not entries:
        return {}, []
    shallowest = min(entries, key=lambda info: info.filename.count("/"))
    data = _read_member(archive, shallowest)
    if isinstance(data, SkippedFile):
        return {}, [data]
    return parse_labels_csv(data.decode("utf-8-sig", errors="replace"))


def parse_labels_csv(text: str) -> tuple[dict[str, str], list[SkippedFile]]:
    """`filename,label` rows (an optional header row is recognised); name -> label."""
    labels: dict[str, str] = {}
    problems: list[SkippedFile] = []
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        if number == 1 and [c.lower() for c in cells[:2]] == ["filename", "label"]:
            continue
        if len(cells) < 2 or not cells[0] or not cells[1]:
            problems.append(
                SkippedFile(name=f"{LABELS_CSV}:{number}", reason="expected 'filename,label'")
            )
            continue
        labels[cells[0].replace("\\", "/")] = cells[1]
    return labels, problems


# --- folders and arrays (the CLI) -------------------------------------------------------------


def iter_folder(root: Path, *, split: Split = Split.pool) -> Iterator[Candidate | SkippedFile]:
    """Every file under `root` (sorted); a labels.csv at the top marks validation items."""
    labels: dict[str, str] = {}
    csv_path = root / LABELS_CSV
    if csv_path.is_file():
        labels, problems = parse_labels_csv(csv_path.read_text("utf-8-sig", errors="replace"))
        yield from problems
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        if name == LABELS_CSV or _ignored(name):
            continue
        key = name if name in labels else path.name
        if key in labels:
            yield Candidate(name, path.read_bytes(), Split.validation, labels[key])
        else:
            yield Candidate(name, path.read_bytes(), split)


def iter_arrays(
    *,
    images: Any,
    labels: Any | None,
    class_names: Sequence[str] | None,
    stem: str,
    split: Split,
) -> Iterator[Candidate | SkippedFile]:
    """PNG candidates from uint8 images [N, H, W] or [N, H, W, C].

    Labels travel only with validation items: a pool item's answer would show in the UI.
    """
    N = images.shape[0]
    for index in range(N):
        pixels = images[index]
        if pixels.ndim == 3 and pixels.shape[-1] == 1:
            pixels = pixels[..., 0]
        known = None
        if labels is not None and split == Split.validation:
            value = labels[index]
            known = class_names[int(value)] if class_names is not None else str(value)
        yield Candidate(f"{stem}-{index:06d}.png", encode_png(pixels), split, known)

"""Import images, and labels for them, into a project: from uploads, zips, folders, arrays.

The API and `nextlabel import` both describe what they offer as a `Listing` (files, the
manifests among them) and hand it to `plan_import`, then `write_import`, so a file gets the
same checks whichever way it arrives: a decodable image within the pixel limit, not a
duplicate (same sha256) of an image already in the project, and a label, if it has one
(from a manifest, a class folder, or the file itself), that is one of the project's classes.

Labels become training labels (current labels of the import account, which the first round
trains on) or validation labels (a validation item's known label). `plan_import` is the dry
run; `write_import` refuses, writing nothing, while the plan has problems that would lose a
label, unless told to skip them. Files without a label that cannot be imported (not images,
duplicates) are skipped and reported, as they always were.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import posixpath
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from app.images import ImageRejected, encode_png, inspect_image
from app.schemas import ImportReport, SkippedFile, UploadReport
from app.services import Conflict, Invalid, TooLarge, dialect_insert
from app.services.manifests import (
    LABELS_CSV,
    LabelUse,
    Manifest,
    ManifestRow,
    class_folder,
    is_manifest_name,
    parse_manifest,
    top_folders,
    uses_class_folders,
)
from core.rounds import trigger_round_if_due
from core.storage import ImageStore, content_key
from core.tables import Annotator, Item, Label, Project, Role, Split, is_current, utcnow

BATCH_ITEMS = 500
BATCH_BYTES = 64 * 1024 * 1024
# Below this size a high compression ratio is normal (flat test images, tiny PNGs).
_RATIO_FLOOR_BYTES = 1024 * 1024
_FILENAME_LENGTH = 500
# Files operating systems leave in folders (Finder, Explorer): never images anyone meant.
_OS_LITTER = frozenset({".ds_store", "thumbs.db", "desktop.ini"})


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
    return (
        name.endswith("/")
        or name.startswith("__MACOSX/")
        or base.startswith("._")
        or base.lower() in _OS_LITTER
    )


# --- listings: what an import offers, before anything is read ------------------------------


@dataclass(frozen=True)
class Entry:
    """One file offered for import.

    `read` is called twice: once to check the file, once to store it, so an import that
    refuses has read everything and written nothing, and memory holds one batch at a time.
    `label` is a label the file carries itself (an .npz's y); manifests and class folders
    give the rest.
    """

    name: str
    read: Callable[[], bytes | SkippedFile]
    label: str | None = None


@dataclass
class Listing:
    """Everything one import offers: files, manifests, and what was left out on sight."""

    entries: list[Entry] = field(default_factory=list)
    manifests: list[Manifest] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    problems: list[SkippedFile] = field(default_factory=list)

    def extend(self, other: Listing) -> None:
        self.entries += other.entries
        self.manifests += other.manifests
        self.skipped += other.skipped
        self.problems += other.problems


def zip_listing(archive: zipfile.ZipFile) -> Listing:
    """A checked zip's files and manifests (each manifest names files relative to its folder)."""
    listing = Listing()
    for info in archive.infolist():
        name = info.filename
        if _ignored(name):
            continue
        if is_unsafe_path(name):
            listing.skipped.append(SkippedFile(name=name, reason="unsafe path"))
            continue
        if is_manifest_name(name):
            data = _read_member(archive, info)
            if isinstance(data, SkippedFile):
                listing.problems.append(data)
            else:
                listing.manifests.append(parse_manifest(data, name=name))
            continue
        listing.entries.append(Entry(name, functools.partial(_read_member, archive, info)))
    return listing


def iter_zip(
    archive: zipfile.ZipFile, *, split: Split = Split.pool
) -> Iterator[Candidate | SkippedFile]:
    """A zip's files as candidates, without labels (see `plan_import` for those)."""
    listing = zip_listing(archive)
    yield from listing.skipped
    for entry in listing.entries:
        data = entry.read()
        yield data if isinstance(data, SkippedFile) else Candidate(entry.name, data, split)


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


def folder_listing(root: Path) -> Listing:
    """Every file under `root`, sorted; manifests anywhere in it name files relative to
    their own folder."""
    listing = Listing()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        if _ignored(name):
            continue
        if is_manifest_name(name):
            listing.manifests.append(parse_manifest(path.read_bytes(), name=name))
            continue
        listing.entries.append(Entry(name, functools.partial(_read_path, path, name)))
    return listing


def _read_path(path: Path, name: str) -> bytes | SkippedFile:
    try:
        return path.read_bytes()
    except OSError as exc:
        return SkippedFile(name=name, reason=f"cannot be read: {exc.strerror or exc}")


def arrays_listing(
    *, images: Any, labels: Any | None, class_names: Sequence[str] | None, stem: str
) -> Listing:
    """PNG entries from uint8 images [N, H, W] or [N, H, W, C], each with its label from y."""
    N = images.shape[0]
    entries = []
    for index in range(N):
        known = None
        if labels is not None:
            value = labels[index]
            known = class_names[int(value)] if class_names is not None else str(value)
        read = functools.partial(_array_png, images, index)
        entries.append(Entry(f"{stem}-{index:06d}.png", read, known))
    return Listing(entries=entries)


def _array_png(images: Any, index: int) -> bytes:
    pixels = images[index]
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    return encode_png(pixels)


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


# --- imports with labels: resolve, check (dry run), then write ------------------------------
#
# An import runs in two passes over its Listing. `plan_import` reads and checks every file
# and writes nothing: the dry run is that pass alone. `write_import` stores the plan in
# batches, each in one transaction. Every problem that would lose a label is found by the
# first pass, so an import that refuses has written nothing; a crash during the second
# leaves whole batches, and running the same import again completes it (it is idempotent).

IMPORT_ANNOTATOR = "import"
# No token hashes to this (hashes are 64 hex digits): the import account cannot log in.
_IMPORT_TOKEN_HASH = "none: labels imported from files"
_LOOKUP_CHUNK = 500


class ImportRefused(Invalid):
    """The import found problems that would lose labels and wrote nothing."""

    def __init__(self, report: ImportReport) -> None:
        count = len(report.problems)
        super().__init__(
            f"The import has {count} problem{'s' if count != 1 else ''}; nothing was "
            "imported. Fix them, or import the rest with skip_problems "
            "(the CLI's --skip-problems)."
        )
        self.report = report


@dataclass(frozen=True)
class _Wanted:
    entry: Entry
    label: str | None
    use: LabelUse | None  # None: no label, the item goes to the unlabelled split


@dataclass
class _Planned:
    wanted: _Wanted
    sha256: str
    width: int
    height: int
    existing: int | None = None  # the item already holding this image
    adds_label: bool = True  # False: already here with this label (or unlabelled)


@dataclass
class ImportPlan:
    files: list[_Planned] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    problems: list[SkippedFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unchanged: int = 0

    def report(self, *, dry_run: bool) -> ImportReport:
        training: collections.Counter[str] = collections.Counter()
        validation: collections.Counter[str] = collections.Counter()
        unlabelled = 0
        for planned in self.files:
            label, use = planned.wanted.label, planned.wanted.use
            if use == LabelUse.training and planned.adds_label and label is not None:
                training[label] += 1
            elif use == LabelUse.validation and planned.existing is None and label is not None:
                validation[label] += 1
            elif use is None and planned.existing is None:
                unlabelled += 1
        return ImportReport(
            dry_run=dry_run,
            created=[],
            skipped=list(self.skipped),
            images=len(self.files) + self.unchanged,
            new_items=sum(1 for p in self.files if p.existing is None),
            training=dict(sorted(training.items())),
            validation=dict(sorted(validation.items())),
            unlabelled=unlabelled,
            unchanged=self.unchanged,
            problems=list(self.problems),
            notes=list(self.notes),
        )


def plan_import(
    *,
    session: Session,
    project: Project,
    listing: Listing,
    labels_as: LabelUse | None,
    max_pixels: int,
    progress: Callable[[int], object] | None = None,
) -> ImportPlan:
    """Read and check every file of `listing`, and decide what importing it would do.

    Labels come from manifests, class folders and the files themselves; `labels_as`
    decides whether they train or validate, where a manifest row's own split does not
    (unset: labels.csv validates, as it always has, and everything else trains). Writes
    nothing; `progress` is called with 1 per file read.
    """
    plan = ImportPlan(skipped=list(listing.skipped), problems=list(listing.problems))
    wanted = _resolve_labels(listing, project=project, labels_as=labels_as, plan=plan)
    seen: dict[str, _Planned] = {}
    for want in wanted:
        checked = _check_file(want, max_pixels=max_pixels)
        if progress is not None:
            progress(1)
        if isinstance(checked, SkippedFile):
            _reject(plan, want, checked.reason)
            continue
        first = seen.get(checked.sha256)
        if first is None:
            seen[checked.sha256] = checked
            plan.files.append(checked)
        elif (first.wanted.label, first.wanted.use) == (want.label, want.use):
            plan.skipped.append(SkippedFile(name=want.entry.name, reason="duplicate"))
        else:
            _reject(plan, want, f"the same image as {first.wanted.entry.name!r}, labelled apart")
    _compare_with_project(session=session, project=project, plan=plan)
    return plan


def _reject(plan: ImportPlan, want: _Wanted, reason: str) -> None:
    """A file not imported: a problem if it carried a label, skipped (as always) if not."""
    if want.use is None:
        plan.skipped.append(SkippedFile(name=want.entry.name, reason=reason))
    else:
        plan.problems.append(
            SkippedFile(
                name=want.entry.name,
                reason=f"{reason} (labelled {want.label!r} for {want.use.value})",
            )
        )


def _check_file(want: _Wanted, *, max_pixels: int) -> _Planned | SkippedFile:
    name = want.entry.name
    if "\x00" in name:
        return SkippedFile(name=name, reason="the file name contains a NUL character (U+0000)")
    data = want.entry.read()
    if isinstance(data, SkippedFile):
        return data
    try:
        info = inspect_image(data, max_pixels=max_pixels)
    except ImageRejected as exc:
        return SkippedFile(name=name, reason=str(exc))
    return _Planned(want, content_key(data), info.width, info.height)


def _resolve_labels(
    listing: Listing, *, project: Project, labels_as: LabelUse | None, plan: ImportPlan
) -> list[_Wanted]:
    """Each file with its label and use; rows and files that cannot be matched: problems."""
    names = [entry.name for entry in listing.entries]
    rows = _match_manifests(listing, names=names, plan=plan)
    folders = uses_class_folders(names, project.classes)
    if not folders and not rows and any(entry.label is None for entry in listing.entries):
        tops = [t for t in top_folders(names) if t.lower() not in ("__macosx",)]
        if tops:
            plan.notes.append(
                f"The files are in folders ({', '.join(tops[:10])}) but none is named after "
                f"a class ({', '.join(project.classes)}): they come in without labels. Name "
                "the folders exactly as the classes to import their labels."
            )
    wanted = []
    for index, entry in enumerate(listing.entries):
        want = _wanted(
            entry, row=rows.get(index), folders=folders, project=project, labels_as=labels_as
        )
        if want.use is not None and want.label not in project.classes:
            plan.problems.append(
                SkippedFile(name=entry.name, reason=_unknown_class(want, project=project))
            )
            continue
        wanted.append(want)
    return wanted


def _wanted(
    entry: Entry,
    *,
    row: tuple[ManifestRow, Manifest] | None,
    folders: bool,
    project: Project,
    labels_as: LabelUse | None,
) -> _Wanted:
    """The file's label and use: a manifest row's, else its class folder's, else its own.

    The use: the row's split, else its train/ or val/ folder, else `labels_as`, else the
    default (labels.csv validates, anything else trains).
    """
    folder = class_folder(entry.name, project.classes) if folders else None
    folder_use = folder.use if folder is not None else None
    if row is not None:
        manifest_row, manifest = row
        use = manifest_row.use or folder_use or labels_as or manifest.default_use
        return _Wanted(entry, manifest_row.label, use)
    if folder is not None:
        return _Wanted(entry, folder.label, folder_use or labels_as or LabelUse.training)
    if entry.label is not None:
        return _Wanted(entry, entry.label, labels_as or LabelUse.training)
    return _Wanted(entry, None, None)


def _unknown_class(want: _Wanted, *, project: Project) -> str:
    return (
        f"label {want.label!r} is not one of the project's classes ({', '.join(project.classes)})"
    )


def _match_manifests(
    listing: Listing, *, names: list[str], plan: ImportPlan
) -> dict[int, tuple[ManifestRow, Manifest]]:
    """Entry index -> its manifest row: by path (relative to the manifest's folder, or to
    the top), else by base name when exactly one file has it."""
    by_path: dict[str, list[int]] = collections.defaultdict(list)
    by_base: dict[str, list[int]] = collections.defaultdict(list)
    for index, name in enumerate(names):
        by_path[name].append(index)
        by_base[posixpath.basename(name)].append(index)
    matched: dict[int, tuple[ManifestRow, Manifest]] = {}
    for manifest in listing.manifests:
        plan.problems += [SkippedFile(name=p.where, reason=p.reason) for p in manifest.problems]
        for row in manifest.rows:
            relative = posixpath.join(manifest.folder, row.filename)
            found = by_path.get(relative) or by_path.get(row.filename)
            if not found and "/" not in row.filename:
                found = by_base.get(row.filename)
            if not found:
                reason = f"listed in {row.where} but not among the files imported"
                plan.problems.append(SkippedFile(name=row.filename, reason=reason))
            elif len(found) > 1:
                which = ", ".join(names[i] for i in found[:3])
                reason = f"{row.where} names {len(found)} files ({which}): give the path"
                plan.problems.append(SkippedFile(name=row.filename, reason=reason))
            elif found[0] in matched and matched[found[0]][0].label != row.label:
                earlier = matched[found[0]][0]
                reason = f"{row.where} says {row.label!r} but {earlier.where} {earlier.label!r}"
                plan.problems.append(SkippedFile(name=names[found[0]], reason=reason))
            else:
                matched[found[0]] = (row, manifest)
    return matched


def _compare_with_project(*, session: Session, project: Project, plan: ImportPlan) -> None:
    """Mark files whose image the project already holds: unchanged, a label to add, or a
    problem (it holds the image with another label, or for the other use)."""
    importer = _import_annotator_id(session=session)
    keep: list[_Planned] = []
    for start in range(0, len(plan.files), _LOOKUP_CHUNK):
        chunk = plan.files[start : start + _LOOKUP_CHUNK]
        existing = _existing_items(
            session=session, project_id=project.id, importer=importer, hashes=chunk
        )
        for planned in chunk:
            found = existing.get(planned.sha256)
            verdict = None if found is None else _against_existing(planned, found)
            if verdict is None:
                keep.append(planned)
            elif verdict == "unchanged":
                plan.unchanged += 1
            elif verdict == "duplicate":
                plan.skipped.append(SkippedFile(name=planned.wanted.entry.name, reason="duplicate"))
            elif verdict == "label":
                keep.append(planned)
            else:
                _reject(plan, planned.wanted, verdict)
    plan.files = keep


@dataclass(frozen=True)
class _Existing:
    item_id: int
    split: Split
    known_label: str | None
    imported_label: str | None  # the import account's current label on it


def _against_existing(planned: _Planned, found: _Existing) -> str | None:
    """'unchanged', 'duplicate', 'label' (add the training label to the item), or a problem."""
    label, use = planned.wanted.label, planned.wanted.use
    planned.existing = found.item_id
    if use is None:
        return "duplicate"
    if use == LabelUse.validation:
        if found.split == Split.validation and found.known_label == label:
            return "unchanged"
        return f"already in the project as {_describe(found)}"
    if found.split == Split.validation:
        return f"already in the project as {_describe(found)}"
    if found.imported_label == label:
        return "unchanged"
    if found.imported_label is None:
        return "label"
    return f"already in the project as {_describe(found)}"


def _describe(found: _Existing) -> str:
    if found.split == Split.validation:
        return f"a validation item labelled {found.known_label!r} (item {found.item_id})"
    if found.imported_label is not None:
        return f"an item imported as {found.imported_label!r} (item {found.item_id})"
    return f"item {found.item_id}"


def _existing_items(
    *, session: Session, project_id: int, importer: int | None, hashes: list[_Planned]
) -> dict[str, _Existing]:
    query = select(Item.id, Item.sha256, Item.split, Item.known_label).where(
        Item.project_id == project_id, Item.sha256.in_({p.sha256 for p in hashes})
    )
    rows = session.execute(query).all()
    imported: dict[int, str] = {}
    if importer is not None and rows:
        imported = dict(
            session.execute(
                select(Label.item_id, Label.label).where(
                    Label.item_id.in_([row.id for row in rows]),
                    Label.annotator_id == importer,
                    is_current(),
                )
            ).all()
        )
    return {
        row.sha256: _Existing(row.id, row.split, row.known_label, imported.get(row.id))
        for row in rows
    }


def _import_annotator_id(*, session: Session) -> int | None:
    return session.scalar(select(Annotator.id).where(Annotator.token_hash == _IMPORT_TOKEN_HASH))


def import_annotator(*, session: Session) -> int:
    """The account imported training labels are by: named "import", with no token, so
    exports and the dashboard show those labels as imported. Created on first use."""
    found = _import_annotator_id(session=session)
    if found is not None:
        return found
    insert = dialect_insert(session)
    session.execute(
        insert(Annotator)
        .values(
            name=IMPORT_ANNOTATOR,
            role=Role.annotator,
            token_hash=_IMPORT_TOKEN_HASH,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing()
    )
    session.commit()
    found = _import_annotator_id(session=session)
    if found is None:
        raise Conflict(
            f"An annotator named {IMPORT_ANNOTATOR!r} exists: rename it so imported labels "
            "can be attributed to the import account."
        )
    return found


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
    if added:
        opened = trigger_round_if_due(
            session=session, project_id=project.id, retrain_every=project.retrain_every
        )
        report.round_queued = opened.id if opened is not None else None
    return report


def _write_batches(files: list[_Planned]) -> Iterator[list[_Planned]]:
    batch: list[_Planned] = []
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
    batch: list[_Planned],
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


def _new_item_row(
    planned: _Planned, *, project: Project, unlabelled_split: Split
) -> dict[str, Any]:
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

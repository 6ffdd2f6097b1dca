"""The dry run of an import: what importing a `Listing` would do, found without writing.

An import runs in two passes over its Listing. `plan_import` reads and checks every file
and writes nothing: the dry run is that pass alone. `write_import` (imports.write) stores the
plan in batches, each in one transaction. Every problem that would lose a label is found by
this first pass, so an import that refuses has written nothing; a crash during the second
leaves whole batches, and running the same import again completes it (it is idempotent).

This module owns the `ImportPlan`: each file's label and use, resolved from manifests,
class folders and the file itself; the checks on every file (decodable, within the pixel
limit, not a duplicate within the import); and the comparison with what the project already
holds (unchanged, a label to add, or a problem).
"""

from __future__ import annotations

import collections
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.images import ImageRejected, inspect_image
from app.schemas import ImportReport, SkippedFile
from app.services import Invalid
from app.services.imports.account import import_annotator_id
from app.services.imports.sources import Entry, Listing
from app.services.manifests import (
    LabelUse,
    Manifest,
    ManifestRow,
    class_folder,
    top_folders,
    uses_class_folders,
)
from core.storage import content_key
from core.tables import Item, Label, Project, Split, is_current

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
class Wanted:
    """A file with the label and use the import gives it."""

    entry: Entry
    label: str | None
    use: LabelUse | None  # None: no label, the item goes to the unlabelled split


@dataclass
class Planned:
    """A wanted file that passed the checks: what `write_import` stores."""

    wanted: Wanted
    sha256: str
    width: int
    height: int
    existing: int | None = None  # the item already holding this image
    adds_label: bool = True  # False: already here with this label (or unlabelled)


@dataclass
class ImportPlan:
    files: list[Planned] = field(default_factory=list)
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
    seen: dict[str, Planned] = {}
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


def _reject(plan: ImportPlan, want: Wanted, reason: str) -> None:
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


def _check_file(want: Wanted, *, max_pixels: int) -> Planned | SkippedFile:
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
    return Planned(want, content_key(data), info.width, info.height)


def _resolve_labels(
    listing: Listing, *, project: Project, labels_as: LabelUse | None, plan: ImportPlan
) -> list[Wanted]:
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
) -> Wanted:
    """The file's label and use: a manifest row's, else its class folder's, else its own.

    The use: the row's split, else its train/ or val/ folder, else `labels_as`, else the
    default (labels.csv validates, anything else trains).
    """
    folder = class_folder(entry.name, project.classes) if folders else None
    folder_use = folder.use if folder is not None else None
    if row is not None:
        manifest_row, manifest = row
        use = manifest_row.use or folder_use or labels_as or manifest.default_use
        return Wanted(entry, manifest_row.label, use)
    if folder is not None:
        return Wanted(entry, folder.label, folder_use or labels_as or LabelUse.training)
    if entry.label is not None:
        return Wanted(entry, entry.label, labels_as or LabelUse.training)
    return Wanted(entry, None, None)


def _unknown_class(want: Wanted, *, project: Project) -> str:
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
    importer = import_annotator_id(session=session)
    keep: list[Planned] = []
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


def _against_existing(planned: Planned, found: _Existing) -> str | None:
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
    *, session: Session, project_id: int, importer: int | None, hashes: list[Planned]
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

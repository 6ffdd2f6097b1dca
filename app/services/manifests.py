"""Where imported labels come from: a manifest (CSV or JSONL) or the ImageFolder layout.

A manifest names files and their labels, one per row: `filename,label[,split]` in CSV (an
optional header row is recognised) or `{"filename": ..., "label": ..., "split": ...}` per
line in JSONL. The ImageFolder layout (torchvision's, and most training scripts') puts each
class in a folder of its own, optionally under a `train/` or `val/` folder.

Nothing here reads images or the database: this turns names and manifest text into
(label, use) per file, and every row it cannot use into a problem with its line number.
"""

from __future__ import annotations

import csv
import enum
import io
import json
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# A labels.csv is what a zip always carried (today's meaning: validation items); the
# others are new. Matched on the file's base name, case-insensitively.
LABELS_CSV = "labels.csv"
MANIFEST_NAMES = frozenset({LABELS_CSV, "labels.jsonl", "manifest.csv", "manifest.jsonl"})
# Folder names that say which use the classes below them are for (ImageFolder trees often
# come as train/<class>/... and val/<class>/...).
_SPLIT_FOLDERS = {
    "train": "training",
    "training": "training",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
}
_SPLIT_WORDS = {**_SPLIT_FOLDERS, "pool": "training"}


class LabelUse(enum.StrEnum):
    """What an imported label becomes."""

    training = "training"  # a current label by the import account: the model trains on it
    validation = "validation"  # a validation item's known label: the model is scored on it


@dataclass(frozen=True)
class ManifestRow:
    filename: str
    label: str
    use: LabelUse | None  # the row's own split column, if it had one
    where: str  # "labels.csv:3", for messages


@dataclass(frozen=True)
class RowProblem:
    where: str
    reason: str


@dataclass(frozen=True)
class Manifest:
    name: str
    folder: str  # the manifest's folder, "" at the top: its file names are relative to it
    rows: list[ManifestRow]
    problems: list[RowProblem]

    @property
    def default_use(self) -> LabelUse:
        """A labels.csv marks validation items, as it always has; other manifests train."""
        is_legacy = posixpath.basename(self.name).lower() == LABELS_CSV
        return LabelUse.validation if is_legacy else LabelUse.training


def is_manifest_name(name: str) -> bool:
    return posixpath.basename(name.replace("\\", "/")).lower() in MANIFEST_NAMES


def parse_manifest(data: bytes, *, name: str) -> Manifest:
    """Rows and row problems of a manifest file (JSONL when the name ends in .jsonl)."""
    text = data.decode("utf-8-sig", errors="replace")
    normalized = name.replace("\\", "/")
    base = posixpath.basename(normalized)
    if base.lower().endswith(".jsonl"):
        rows, problems = _jsonl_rows(text, base=base)
    else:
        rows, problems = _csv_rows(text, base=base)
    unique, duplicates = _without_duplicates(rows)
    return Manifest(
        name=normalized,
        folder=posixpath.dirname(normalized),
        rows=unique,
        problems=problems + duplicates,
    )


def _csv_rows(text: str, *, base: str) -> tuple[list[ManifestRow], list[RowProblem]]:
    rows: list[ManifestRow] = []
    problems: list[RowProblem] = []
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        if number == 1 and [c.lower() for c in cells[:2]] == ["filename", "label"]:
            continue
        where = f"{base}:{number}"
        split = cells[2] if len(cells) > 2 else ""
        parsed = _row(where, filename=cells[0] if cells else "", label=_cell(cells, 1), split=split)
        if isinstance(parsed, RowProblem):
            problems.append(parsed)
        else:
            rows.append(parsed)
    return rows, problems


def _cell(cells: Sequence[str], index: int) -> str:
    return cells[index] if len(cells) > index else ""


def _jsonl_rows(text: str, *, base: str) -> tuple[list[ManifestRow], list[RowProblem]]:
    rows: list[ManifestRow] = []
    problems: list[RowProblem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{base}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(RowProblem(where, f"not a JSON object: {exc.msg}"))
            continue
        if not isinstance(record, dict):
            problems.append(RowProblem(where, "not a JSON object"))
            continue
        parsed = _row(
            where,
            filename=str(record.get("filename") or ""),
            label=str(record.get("label") or ""),
            split=str(record.get("split") or ""),
        )
        if isinstance(parsed, RowProblem):
            problems.append(parsed)
        else:
            rows.append(parsed)
    return rows, problems


def _row(where: str, *, filename: str, label: str, split: str) -> ManifestRow | RowProblem:
    if not filename or not label:
        return RowProblem(where, "expected a file name and a label (filename,label[,split])")
    use: LabelUse | None = None
    if split:
        word = _SPLIT_WORDS.get(split.lower())
        if word is None:
            return RowProblem(where, f"split {split!r} is neither training nor validation")
        use = LabelUse(word)
    return ManifestRow(filename.replace("\\", "/"), label, use, where)


def _without_duplicates(
    rows: Iterable[ManifestRow],
) -> tuple[list[ManifestRow], list[RowProblem]]:
    """The first row per file name; every later row naming it again is a problem."""
    first: dict[str, ManifestRow] = {}
    problems: list[RowProblem] = []
    for row in rows:
        earlier = first.get(row.filename)
        if earlier is None:
            first[row.filename] = row
        elif (earlier.label, earlier.use) == (row.label, row.use):
            problems.append(RowProblem(row.where, f"duplicate row: repeats {earlier.where}"))
        else:
            problems.append(
                RowProblem(
                    row.where,
                    f"duplicate row: {row.filename!r} is {row.label!r} here but "
                    f"{earlier.label!r} in {earlier.where}",
                )
            )
    return list(first.values()), problems


# --- the ImageFolder layout -------------------------------------------------------------------


@dataclass(frozen=True)
class FolderLabel:
    label: str
    use: LabelUse | None  # from a train/ or val/ folder above the class folder


def class_folder(name: str, classes: Sequence[str]) -> FolderLabel | None:
    """The class an ImageFolder path names (`cat/x.png`, `train/cat/x.png`), if it names one.

    A file directly in the top folder, or in a split folder, has no class folder: None.
    """
    parts = name.split("/")[:-1]
    if parts and parts[0].lower() in _SPLIT_FOLDERS and parts[0] not in classes:
        use = LabelUse(_SPLIT_FOLDERS[parts[0].lower()])
        return FolderLabel(parts[1], use) if len(parts) > 1 else None
    return FolderLabel(parts[0], None) if parts else None


def uses_class_folders(names: Iterable[str], classes: Sequence[str]) -> bool:
    """Whether the tree is an ImageFolder one: some folder at the top names a class."""
    known = set(classes)
    for name in names:
        found = class_folder(name, classes)
        if found is not None and found.label in known:
            return True
    return False


def top_folders(names: Iterable[str]) -> list[str]:
    return sorted({name.split("/")[0] for name in names if "/" in name})

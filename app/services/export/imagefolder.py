"""The ImageFolder export: a zip of the labelled images in train/<class>/ and val/<class>/
folders, with a manifest the import reads back and a list of the items left out, streamed
in chunks without ever seeking."""

from __future__ import annotations

import collections
import contextlib
import csv
import posixpath
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from app.services.export import common
from app.services.export.common import ZIP_CHUNK_BYTES, ZipSink, zip_time
from app.services.manifests import is_manifest_name
from core.storage import ImageStore
from core.tables import Item, Label, Split, is_current, utcnow

IMAGEFOLDER_MANIFEST = "manifest.csv"
IMAGEFOLDER_EXCLUDED = "excluded.csv"
MANIFEST_COLUMNS = ("filename", "label", "split")
EXCLUDED_COLUMNS = ("item_id", "filename", "sha256", "reason")
# The top folders, in the words the import reads back (app.services.manifests): labelled
# pool items train, validation items' known labels validate.
TRAIN_FOLDER = "train"
VAL_FOLDER = "val"
# Kept in memory until then, spilled to a temporary file past it.
_SPOOL_BYTES = 1024 * 1024
# Characters a path segment cannot hold on some file system (or that would make it a path),
# and `%` so that percent-encoding them stays reversible.
_PATH_SPECIALS = frozenset('/\\%:*?"<>|')
# Base names the import passes over as operating-system litter (app.services.imports).
_LITTER = frozenset({"thumbs.db", "desktop.ini"})


@dataclass(frozen=True)
class ExportedItem:
    """A labelled pool item or a validation item with a known label, and its label."""

    item_id: int
    filename: str
    sha256: str
    file_key: str
    created_at: datetime
    split: Split
    label: str | None  # None: annotators are tied (see `votes`)
    votes: dict[str, int]


def resolve_label(votes: Mapping[str, int]) -> str | None:
    """The label most current labels give; None when the most are tied between labels."""
    ranked = collections.Counter(votes).most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def labelled_pages(
    *, session_factory: sessionmaker[Session], project_id: int, page_size: int | None = None
) -> Iterator[list[ExportedItem]]:
    """Pages, in id order, of pool items with current labels (resolved by majority) and
    validation items with known labels."""
    page_size = page_size or common.PAGE_SIZE  # read now, so tests can shrink it
    last_id = 0
    while True:
        with session_factory() as session:
            items = session.execute(_labelled_items(project_id, last_id, page_size)).all()
            votes = _votes(session, [row.id for row in items if row.split == Split.pool])
        if not items:
            return
        last_id = items[-1].id
        yield [_exported(row, votes.get(row.id, {})) for row in items]
        if len(items) < page_size:
            return


def _labelled_items(project_id: int, after_id: int, limit: int) -> Any:
    labelled_pool = and_(Item.split == Split.pool, Item.label_count > 0)
    known = and_(Item.split == Split.validation, Item.known_label.is_not(None))
    return (
        select(
            Item.id,
            Item.filename,
            Item.sha256,
            Item.file_key,
            Item.created_at,
            Item.split,
            Item.known_label,
        )
        .where(Item.project_id == project_id, Item.id > after_id, or_(labelled_pool, known))
        .order_by(Item.id)
        .limit(limit)
    )


def _votes(session: Session, item_ids: list[int]) -> dict[int, dict[str, int]]:
    if not item_ids:
        return {}
    rows = session.execute(
        select(Label.item_id, Label.label, func.count())
        .where(Label.item_id.in_(item_ids), is_current())
        .group_by(Label.item_id, Label.label)
    ).all()
    votes: dict[int, dict[str, int]] = collections.defaultdict(dict)
    for item_id, label, count in rows:
        votes[item_id][label] = count
    return votes


def _exported(row: Any, votes: dict[str, int]) -> ExportedItem:
    if row.split == Split.validation:
        label, votes = row.known_label, {row.known_label: 1}
    else:
        label = resolve_label(votes)
    return ExportedItem(
        row.id, row.filename, row.sha256, row.file_key, row.created_at, row.split, label, votes
    )


def imagefolder_zip(
    *,
    pages: Iterable[list[ExportedItem]],
    store: ImageStore,
    classes: Sequence[str],
    chunk_bytes: int = ZIP_CHUNK_BYTES,
) -> Iterator[bytes]:
    """A zip in the ImageFolder layout, as byte chunks of about `chunk_bytes`.

    `train/<class>/<file>` holds labelled pool items (the majority of their current labels),
    `val/<class>/<file>` validation items' known labels; `manifest.csv` (filename,label,split)
    lists every image, so importing the zip into a project with these classes gives each
    image the same label and use, whatever its folder is named. Items left out (annotators
    tied, a label that is no longer a class, an image missing from the store) are listed in
    `excluded.csv`, written only when there are some. The zip goes to a stream that never
    seeks (data descriptors), so memory holds one image, one chunk, the names used so far,
    and the manifest up to a spill threshold.
    """
    sink = ZipSink()
    names = _Names()
    left_out = 0
    with contextlib.ExitStack() as stack:
        manifest_file = stack.enter_context(_spool())
        excluded_file = stack.enter_context(_spool())
        manifest = csv.writer(manifest_file, lineterminator="\n")
        manifest.writerow(MANIFEST_COLUMNS)
        excluded = csv.writer(excluded_file, lineterminator="\n")
        excluded.writerow(EXCLUDED_COLUMNS)
        archive = stack.enter_context(zipfile.ZipFile(sink, "w", allowZip64=True))
        for page in pages:
            for item in page:
                placed = _add_image(archive, item, store=store, classes=classes, names=names)
                if isinstance(placed, LeftOut):
                    excluded.writerow((item.item_id, item.filename, item.sha256, placed.reason))
                    left_out += 1
                else:
                    manifest.writerow((placed, item.label, _split_folder(item.split)))
                if sink.size >= chunk_bytes:
                    yield sink.take()
        yield from _add_text(archive, IMAGEFOLDER_MANIFEST, manifest_file, sink, chunk_bytes)
        if left_out:
            yield from _add_text(archive, IMAGEFOLDER_EXCLUDED, excluded_file, sink, chunk_bytes)
    yield sink.take()


@dataclass(frozen=True)
class LeftOut:
    reason: str


def _add_image(
    archive: zipfile.ZipFile,
    item: ExportedItem,
    *,
    store: ImageStore,
    classes: Sequence[str],
    names: _Names,
) -> str | LeftOut:
    """Write the item's image to the archive and answer its path, or why it is left out."""
    if item.label is None and not item.votes:
        return LeftOut("no current label")
    if item.label is None:
        tally = ", ".join(f"{label} {count}" for label, count in sorted(item.votes.items()))
        return LeftOut(f"annotators are tied ({tally})")
    if item.label not in classes:
        return LeftOut(f"label {item.label!r} is not one of the project's classes")
    try:
        data = store.get(item.file_key)
    except (OSError, ValueError) as exc:
        return LeftOut(f"the image cannot be read from the store ({type(exc).__name__})")
    folder = f"{_split_folder(item.split)}/{path_segment(item.label)}"
    path = names.claim(folder, item.filename, item_id=item.item_id)
    info = zipfile.ZipInfo(path, date_time=zip_time(item.created_at))
    info.compress_type = zipfile.ZIP_STORED  # image formats are compressed already
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)
    return path


def _split_folder(split: Split) -> str:
    return TRAIN_FOLDER if split == Split.pool else VAL_FOLDER


def _add_text(
    archive: zipfile.ZipFile, name: str, spool: IO[str], sink: ZipSink, chunk_bytes: int
) -> Iterator[bytes]:
    """Copy a spooled text file into the archive, deflated."""
    spool.seek(0)
    info = zipfile.ZipInfo(name, date_time=zip_time(utcnow()))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    with archive.open(info, "w") as target:
        while text := spool.read(_SPOOL_BYTES):
            target.write(text.encode("utf-8"))
            if sink.size >= chunk_bytes:
                yield sink.take()


def path_segment(name: str) -> str:
    """`name` as one folder or file name on any file system, reversibly: path separators,
    characters Windows refuses, control characters and `%` itself are percent-encoded, and
    so are the dots of a name of dots only (`.`, `..`). Ordinary names are unchanged."""
    encoded = "".join(
        f"%{ord(char):02X}" if char in _PATH_SPECIALS or not char.isprintable() else char
        for char in name
    )
    if encoded and not encoded.strip("."):
        encoded = encoded.replace(".", "%2E")
    return encoded


class _Names:
    """Unique file names per folder, compared as case-insensitive file systems do.

    An image keeps its base name unless the import would not read it back as an image
    (hidden files, operating-system litter, manifest names) or an earlier image in its
    folder has it: then the item id goes in front (`17-x.png`).
    """

    def __init__(self) -> None:
        self._used: set[str] = set()

    def claim(self, folder: str, filename: str, *, item_id: int) -> str:
        base = path_segment(posixpath.basename(filename.replace("\\", "/")))
        if not base or base.startswith(".") or base.lower() in _LITTER or is_manifest_name(base):
            base = f"{item_id}-{base or 'image'}"
        path = f"{folder}/{base}"
        while path.casefold() in self._used:
            base = f"{item_id}-{base}"
            path = f"{folder}/{base}"
        self._used.add(path.casefold())
        return path


def _spool() -> IO[str]:
    """A text file kept in memory up to `_SPOOL_BYTES`, then on disk."""
    return tempfile.SpooledTemporaryFile(
        max_size=_SPOOL_BYTES, mode="w+", encoding="utf-8", newline=""
    )

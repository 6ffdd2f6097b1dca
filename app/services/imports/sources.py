"""What an import offers, before anything is read: uploads, zips, folders and .npz arrays.

Each source becomes a `Listing`: its files as `Entry`s (a name and a way to read it, so the
plan can check a file and the write store it without holding the import in memory), the
manifests found among them, parsed, and whatever was left out on sight (unsafe paths, what
operating systems leave in folders). Zips are refused whole here if they could be zip bombs.
The older unlabelled path (the demo's arrays, a plain zip) yields `Candidate`s instead.
Nothing here touches the database.
"""

from __future__ import annotations

import functools
import posixpath
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.images import encode_png
from app.schemas import SkippedFile
from app.services import Invalid, TooLarge
from app.services.manifests import Manifest, is_manifest_name, parse_manifest
from core.tables import Split

# Below this size a high compression ratio is normal (flat test images, tiny PNGs).
_RATIO_FLOOR_BYTES = 1024 * 1024
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

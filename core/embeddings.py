"""Embeddings stored once per (image content, backbone, preprocessing), shared by every round
and project.

A *space* is one backbone with its weights and preprocessing, named by a key the backbone
computes (worker.engine.backbones); vectors from two spaces never mix. Within a space a
vector is keyed by the sha256 of the image bytes (core.storage.content_key), so the same
photo uploaded to two projects is embedded once.

On disk, under `<data_dir>/embeddings/<digest of the space key>/`:
- `space.json`: the full space key, the vector dimension and a generation (a random id,
  new each time the space is started afresh: after `clear`, readers that indexed the old
  shards see a new generation and index again);
- shards, each written whole by one `put`: `<seq>.vectors.npy` ([n, D] float32), then
  `<seq>.keys.npy` ([n] sha256 hex); the keys file appears last, atomically, so a reader
  never sees half a shard. A later shard overrides an earlier one for the same key (an
  imported vector replaced by a new import).

`clear` empties a space (an imported space whose vectors a new model replaces, maybe with
another dimension): the directory is renamed away in one step, then deleted.

Vectors are read through memory maps, so a round reads only the rows it asks for. numpy only:
the API writes imported embeddings here, and it never imports torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_KEY_DTYPE = "S64"


def imported_space_key(project_id: int) -> str:
    """The space of the vectors a team imported for one project (network "embeddings")."""
    return f"imported/project-{project_id}"


class EmbeddingSpaceMismatch(ValueError):
    """Vectors whose dimension differs from the space's."""


@dataclass(frozen=True)
class Found:
    """The vectors of the requested keys that the store holds, in request order.

    Attributes:
        vectors_N_D: float32 rows of the found keys (the rows of `missing` left out).
        found_positions: the position in the request of each row of `vectors_N_D`.
        missing: requested keys the space has no vector for.
    """

    vectors_N_D: np.ndarray
    found_positions: np.ndarray
    missing: list[str]


class EmbeddingStore:
    """Every space under one root directory (`Settings.embedding_dir`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._spaces: dict[str, EmbeddingSpace] = {}
        self._lock = threading.Lock()

    def space(self, space_key: str) -> EmbeddingSpace:
        """The space named `space_key`, opened once per process."""
        with self._lock:
            if space_key not in self._spaces:
                self._spaces[space_key] = EmbeddingSpace(
                    self.root / space_dir_name(space_key), space_key
                )
            return self._spaces[space_key]


def space_dir_name(space_key: str) -> str:
    """A file-system-safe, fixed-length directory name for a space key."""
    return hashlib.blake2b(space_key.encode(), digest_size=16).hexdigest()


class EmbeddingSpace:
    """The vectors of one space; safe to share between threads and processes."""

    def __init__(self, directory: Path, space_key: str) -> None:
        self.directory = directory
        self.space_key = space_key
        self._lock = threading.Lock()
        # key -> (shard sequence, row); shards already indexed.
        self._index: dict[bytes, tuple[int, int]] = {}
        self._shards: dict[int, np.ndarray] = {}
        self._dim: int | None = None
        # The generation of space.json the index was built from; None: no space.json seen.
        self._generation: str | None = None

    @property
    def dim(self) -> int | None:
        """The vector dimension, None while the space is empty."""
        with self._lock:
            self._refresh()
            return self._dim

    def __len__(self) -> int:
        with self._lock:
            self._refresh()
            return len(self._index)

    def missing(self, keys: Sequence[str]) -> list[str]:
        """The keys (in order, without repeats) that have no vector yet."""
        with self._lock:
            self._refresh()
            seen: set[str] = set()
            out = []
            for key in keys:
                if key not in seen and key.encode() not in self._index:
                    seen.add(key)
                    out.append(key)
            return out

    def get(self, keys: Sequence[str]) -> Found:
        """The vectors of `keys` that the space holds, reading only those rows."""
        with self._lock:
            self._refresh()
            located = [self._index.get(key.encode()) for key in keys]
            positions = np.array(
                [i for i, at in enumerate(located) if at is not None], dtype=np.int64
            )
            dim = self._dim or 0
            vectors = np.empty((len(positions), dim), dtype=np.float32)
            by_shard: dict[int, list[tuple[int, int]]] = {}
            for out_row, position in enumerate(positions.tolist()):
                at = located[position]
                assert at is not None
                by_shard.setdefault(at[0], []).append((out_row, at[1]))
            for shard, pairs in by_shard.items():
                out_rows, rows = (
                    np.array(column, dtype=np.int64) for column in zip(*pairs, strict=True)
                )
                vectors[out_rows] = self._shards[shard][rows]
            missing = [key for key, at in zip(keys, located, strict=True) if at is None]
            return Found(vectors, positions, missing)

    def put(self, keys: Sequence[str], vectors_N_D: np.ndarray) -> None:
        """Store one shard of vectors; keys already present are overridden by these.

        Raises:
            EmbeddingSpaceMismatch: the dimension differs from the space's.
            ValueError: keys and rows disagree in number, or a vector is not finite.
        """
        vectors = np.ascontiguousarray(vectors_N_D, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(keys):
            raise ValueError(f"{len(keys)} keys for vectors of shape {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise ValueError("vectors must be finite")
        if not keys:
            return
        with self._lock:
            self._refresh()
            self._claim_dimension(vectors.shape[1])
            sequence = self._next_sequence()
            _write_atomically(self.directory / f"{sequence:012d}.vectors.npy", vectors)
            _write_atomically(
                self.directory / f"{sequence:012d}.keys.npy", np.array(keys, dtype=_KEY_DTYPE)
            )
            self._refresh()

    def clear(self) -> int:
        """Remove every vector and the dimension; the number of vectors removed.

        The directory is renamed away first (one atomic step: a reader sees the whole space
        or none of it), then deleted; readers in other processes notice on their next call,
        since the directory, or its generation, is gone. A `put` in another process at the
        same moment may be lost with the rest or fail: clear a space nobody else writes.
        """
        with self._lock:
            self._refresh()
            removed = len(self._index)
            self._forget()
            if not self.directory.is_dir():
                return removed
            doomed = self.directory.with_name(f"{self.directory.name}.cleared-{uuid.uuid4().hex}")
            os.replace(self.directory, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
            return removed

    def _forget(self) -> None:
        """Drop the index (and the memory maps) of shards that may be gone."""
        self._index = {}
        self._shards = {}
        self._dim = None
        self._generation = None

    def _claim_dimension(self, dim: int) -> None:
        if self._dim is not None and self._dim != dim:
            raise EmbeddingSpaceMismatch(
                f"vectors of dimension {dim} do not fit this space's {self._dim}"
            )
        if self._dim is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            meta = {"space_key": self.space_key, "dim": dim, "generation": uuid.uuid4().hex}
            path = self.directory / "space.json"
            # Exclusively: two processes starting the space at once agree on one generation.
            _create_text_once(path, json.dumps(meta))
            self._dim = _read_dim(path)
            if self._dim != dim:
                raise EmbeddingSpaceMismatch(
                    f"vectors of dimension {dim} do not fit this space's {self._dim}"
                )

    def _next_sequence(self) -> int:
        # Another process may write the same sequence number at the same time: O_EXCL on a
        # marker file makes each number one writer's.
        sequence = max(self._shards, default=-1) + 1
        while True:
            marker = self.directory / f"{sequence:012d}.claim"
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                return sequence
            except FileExistsError:
                sequence += 1

    def _refresh(self) -> None:
        """Index the shards other processes (or we) wrote since the last look, in order;
        start over when the space was cleared since (another generation, or none)."""
        meta = _read_meta(self.directory / "space.json")
        generation = None if meta is None else str(meta.get("generation", ""))
        if generation != self._generation:
            self._forget()
            self._generation = generation
        if meta is None:
            return
        self._dim = int(meta["dim"])
        new = sorted(
            int(path.name.split(".")[0])
            for path in self.directory.glob("*.keys.npy")
            if int(path.name.split(".")[0]) not in self._shards
        )
        for sequence in new:
            stem = self.directory / f"{sequence:012d}"
            try:
                keys = np.load(f"{stem}.keys.npy")
                self._shards[sequence] = np.load(f"{stem}.vectors.npy", mmap_mode="r")
            except FileNotFoundError:
                # Cleared (by another process) while we looked: as empty as it now is.
                self._forget()
                return
            for row, key in enumerate(keys.tolist()):
                previous = self._index.get(key)
                if previous is None or previous[0] < sequence:
                    self._index[key] = (sequence, row)


def _read_dim(path: Path) -> int:
    return int(json.loads(path.read_text())["dim"])


def _read_meta(path: Path) -> dict[str, Any] | None:
    """space.json's fields; None while there is none (a new or cleared space)."""
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return meta


def _write_atomically(path: Path, array: np.ndarray) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
        np.save(handle, array)
        temp_name = handle.name
    os.replace(temp_name, path)


def _create_text_once(path: Path, text: str) -> None:
    """Write `path` whole, unless it exists: a hard link never replaces a file."""
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, suffix=".tmp", delete=False, encoding="utf-8"
    ) as handle:
        handle.write(text)
        temp_name = handle.name
    try:
        os.link(temp_name, path)
    except FileExistsError:
        pass
    except OSError:
        # A file system without hard links: check, then replace. Two processes starting
        # the space at that moment may both write; the loser's readers re-index once.
        if not path.exists():
            os.replace(temp_name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)

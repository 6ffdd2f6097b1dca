"""Files under the data directory: content-addressed images behind a small interface, and
each round's exported model.

Image keys are the sha256 of the bytes, so a re-upload of the same image stores nothing new
and an S3-compatible store can implement the same four methods later. Models are kept per
round (`ModelStore`), the newest few per project.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

MODEL_FILE = "model.pt"
MODEL_CARD_FILE = "model_card.json"
# Rounds whose models a project keeps: the API serves the newest done one; the others cover
# a newer round that saved its model and then failed to finish, and a download under way.
MODELS_KEPT_PER_PROJECT = 3


class ImageStore(Protocol):
    def put(self, data: bytes) -> str: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...


def content_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalImageStore:
    """Files under root/ab/cd/<sha256>, written atomically (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, key: str) -> Path:
        if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"not a storage key: {key!r}")
        return self.root / key[:2] / key[2:4] / key

    def put(self, data: bytes) -> str:
        key = content_key(data)
        path = self.path_for(key)
        if path.exists():
            return key
        write_atomically(path, data)
        return key

    def get(self, key: str) -> bytes:
        return self.path_for(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.path_for(key).exists()

    def delete(self, key: str) -> None:
        self.path_for(key).unlink(missing_ok=True)


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename: readers see the old
    file or the whole new one, never part of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
        handle.write(data)
        temp_name = handle.name
    os.replace(temp_name, path)


@dataclass(frozen=True)
class StoredModel:
    """A round's saved model: its TorchScript file and its model card."""

    project_id: int
    round_id: int
    model_path: Path
    card_path: Path


class ModelStore:
    """Each round's exported model under root/<project id>/<round id>/: model.pt, then
    model_card.json.

    The card is written last, each file atomically, so a round whose card is there has its
    whole model; the worker writes, the API only reads (it needs no torch: the files are
    bytes to it).
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def directory(self, project_id: int, round_id: int) -> Path:
        return self.root / str(project_id) / str(round_id)

    def put(self, project_id: int, round_id: int, *, model: bytes, card: bytes) -> StoredModel:
        """Save (or replace, when a round runs again) round `round_id`'s model and card."""
        folder = self.directory(project_id, round_id)
        write_atomically(folder / MODEL_FILE, model)
        write_atomically(folder / MODEL_CARD_FILE, card)
        return StoredModel(project_id, round_id, folder / MODEL_FILE, folder / MODEL_CARD_FILE)

    def get(self, project_id: int, round_id: int) -> StoredModel | None:
        """The round's model, or None when it saved none (or it was pruned)."""
        folder = self.directory(project_id, round_id)
        stored = StoredModel(project_id, round_id, folder / MODEL_FILE, folder / MODEL_CARD_FILE)
        if stored.card_path.is_file() and stored.model_path.is_file():
            return stored
        return None

    def round_ids(self, project_id: int) -> list[int]:
        """Rounds of the project with a folder here, newest (highest id) first."""
        folder = self.root / str(project_id)
        if not folder.is_dir():
            return []
        ids = (int(entry.name) for entry in folder.iterdir() if entry.name.isdecimal())
        return sorted(ids, reverse=True)

    def drop_project(self, project_id: int) -> None:
        """Delete every model of a deleted project (a new project may get its id on SQLite)."""
        shutil.rmtree(self.root / str(project_id), ignore_errors=True)

    def prune(self, project_id: int, *, keep: int | None = None) -> list[int]:
        """Delete all but the newest `keep` (default MODELS_KEPT_PER_PROJECT) rounds' models
        of the project; the ids deleted.

        A download already reading a deleted model finishes: an open file outlives its name.
        """
        kept = MODELS_KEPT_PER_PROJECT if keep is None else keep  # read now: tests lower it
        dropped = self.round_ids(project_id)[kept:]
        for round_id in dropped:
            shutil.rmtree(self.directory(project_id, round_id))
        return dropped

"""Decode stored images into one uint8 pixel tensor per round, with a cache between rounds.

Pixels are a pure function of (image bytes, image settings), and stored images are content
addressed (`Item.file_key` is the sha256 of the bytes), so the cache is keyed by file key:
an item id reused by SQLite after a deletion can never be served another image's pixels.

Two layers, so neither a new round nor a restarted worker decodes 60k PNGs again:
- in process: one `_Pixels` block per (project, image settings), grown as items arrive;
- on disk: the same block as one `.npz` under `settings.cache_dir`, replaced atomically.

An image that fails to decode is reported back (item id → reason) and left out; the caller
records it on `Item.decode_error` so it is never asked for again.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from core.model_card import Preprocessing
from core.storage import ImageStore

log = logging.getLogger(__name__)

_MODES: dict[int, Literal["L", "RGB"]] = {1: "L", 3: "RGB"}
_KEY_DTYPE = "S64"  # a sha256 hex digest, as bytes


@dataclass(frozen=True)
class ImageSpec:
    """How a project's images become network inputs: square `size`, 1 (L) or 3 (RGB) channels."""

    size: int
    channels: int

    def __post_init__(self) -> None:
        if self.channels not in _MODES:
            raise ValueError(f"image_channels must be 1 or 3, not {self.channels}")
        if self.size < 1:
            raise ValueError(f"image_size must be positive, not {self.size}")


@dataclass(frozen=True)
class ItemImage:
    """One image to decode: the item it belongs to and its storage key."""

    item_id: int
    file_key: str


@dataclass(frozen=True)
class DecodedImages:
    """Decoded pixels in request order, failures left out.

    Attributes:
        item_ids: the item of each row of `pixels_N_C_H_W`.
        pixels_N_C_H_W: uint8 on the CPU; divide by 255 on the device for float inputs.
        failures: item id → why it could not be decoded.
        decoded: how many images were decoded now (the rest came from a cache).
    """

    item_ids: list[int]
    pixels_N_C_H_W: torch.Tensor
    failures: dict[int, str]
    decoded: int


def decode_image(data: bytes, spec: ImageSpec, *, max_pixels: int) -> np.ndarray:
    """Decode, convert and resize one image to uint8 [C, H, W].

    The image is squashed to a square rather than cropped: labellers see the whole image, so
    the model should too.

    Raises:
        ValueError: the image is larger than `max_pixels` (a decompression bomb guard that,
            unlike Pillow's global MAX_IMAGE_PIXELS, is per call) or cannot be read.
    """
    with Image.open(io.BytesIO(data)) as opened:
        width, height = opened.size
        if width * height > max_pixels:
            raise ValueError(f"{width}×{height} pixels is more than the limit of {max_pixels}")
        mode = _MODES[spec.channels]
        # draft() lets JPEG decode at a reduced scale: far cheaper for large photos.
        opened.draft(mode, (spec.size, spec.size))
        image = opened.convert(mode)
    if image.size != (spec.size, spec.size):
        image = image.resize((spec.size, spec.size), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[None, :, :]
    else:
        pixels = np.ascontiguousarray(pixels.transpose(2, 0, 1))
    return pixels


def preprocessing_of(spec: ImageSpec) -> Preprocessing:
    """What `decode_image` and the round's scaling do, step by step, for a model card: the
    recipe that turns an image file into the exported model's input."""
    mode, size = _MODES[spec.channels], spec.size
    return Preprocessing(
        image_size=size,
        channels=spec.channels,
        mode=mode,
        resize=f"squash to {size}x{size} (no crop; the aspect ratio is not kept), bilinear",
        scale="uint8 pixels / 255 as float32: values in [0, 1]; the model normalises itself",
        input_layout=f"float32 [N, {spec.channels}, {size}, {size}] (N images, channels first)",
        steps=[
            f"Pillow: Image.open(file); image.draft({mode!r}, ({size}, {size})) (only JPEG "
            "uses it: it decodes at a reduced scale no smaller than the target)",
            f"image.convert({mode!r})",
            f"if image.size != ({size}, {size}): "
            f"image.resize(({size}, {size}), Image.Resampling.BILINEAR)",
            "numpy.asarray(image, dtype=uint8): [H, W] for L, [H, W, 3] for RGB; "
            "to channels first [C, H, W]",
            "float32 / 255, then stack into [N, C, H, W]",
        ],
    )


@dataclass
class _Pixels:
    """A project's decoded images for one ImageSpec: row i of `pixels` belongs to `keys[i]`."""

    keys: np.ndarray  # [M] S64
    pixels: np.ndarray  # [M, C, H, W] uint8
    index: dict[str, int]

    @classmethod
    def empty(cls, spec: ImageSpec) -> _Pixels:
        shape = (0, spec.channels, spec.size, spec.size)
        return cls(np.empty(0, dtype=_KEY_DTYPE), np.empty(shape, dtype=np.uint8), {})

    @classmethod
    def from_arrays(cls, keys: np.ndarray, pixels: np.ndarray) -> _Pixels:
        index = {key.decode(): row for row, key in enumerate(keys.tolist())}
        return cls(keys, pixels, index)

    def extended(self, keys: list[str], pixels: list[np.ndarray]) -> _Pixels:
        new_keys = np.concatenate([self.keys, np.array(keys, dtype=_KEY_DTYPE)])
        new_pixels = np.concatenate([self.pixels, np.stack(pixels)])
        return _Pixels.from_arrays(new_keys, new_pixels)


class ImageCache:
    """Decoded pool images shared by the rounds of one worker process.

    Args:
        cache_dir: where the on-disk layer lives; None keeps the cache in memory only.
        max_pixels: images with more pixels are refused (recorded as decode failures).
        threads: decoding threads; Pillow releases the GIL while it decodes and resizes.
        max_projects: in-memory blocks kept (least recently used are dropped first).
    """

    def __init__(
        self,
        cache_dir: Path | None,
        *,
        max_pixels: int,
        threads: int | None = None,
        max_projects: int = 4,
    ) -> None:
        self.cache_dir = cache_dir
        self.max_pixels = max_pixels
        self.threads = threads or min(4, os.cpu_count() or 1)
        self.max_projects = max_projects
        self._blocks: OrderedDict[tuple[int, ImageSpec], _Pixels] = OrderedDict()
        self._lock = threading.Lock()

    def load(
        self,
        *,
        project_id: int,
        items: Sequence[ItemImage],
        spec: ImageSpec,
        store: ImageStore,
    ) -> DecodedImages:
        """Pixels for `items` in order; decodes only images neither cache layer holds."""
        with self._lock:
            block = self._block(project_id, spec)
            missing = _unique_missing(items, block)
            decoded, failures = self._decode(missing, spec, store)
            if decoded:
                block = block.extended(list(decoded), list(decoded.values()))
                self._remember(project_id, spec, block)
                self._write_disk(project_id, spec, block)
        item_failures = {
            it.item_id: failures[it.file_key] for it in items if it.file_key in failures
        }
        kept = [it for it in items if it.file_key not in failures]
        rows = np.array([block.index[it.file_key] for it in kept], dtype=np.int64)
        pixels = torch.from_numpy(block.pixels[rows])
        return DecodedImages([it.item_id for it in kept], pixels, item_failures, len(decoded))

    def clear_memory(self) -> None:
        """Drop the in-process layer (the disk layer stays): what a restarted worker sees."""
        with self._lock:
            self._blocks.clear()

    def _block(self, project_id: int, spec: ImageSpec) -> _Pixels:
        key = (project_id, spec)
        block = self._blocks.get(key)
        if block is None:
            block = self._read_disk(project_id, spec) or _Pixels.empty(spec)
            self._remember(project_id, spec, block)
        self._blocks.move_to_end(key)
        return block

    def _remember(self, project_id: int, spec: ImageSpec, block: _Pixels) -> None:
        self._blocks[(project_id, spec)] = block
        self._blocks.move_to_end((project_id, spec))
        while len(self._blocks) > self.max_projects:
            self._blocks.popitem(last=False)

    def _decode(
        self, missing: list[str], spec: ImageSpec, store: ImageStore
    ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        if not missing:
            return {}, {}

        def one(file_key: str) -> np.ndarray | str:
            try:
                return decode_image(store.get(file_key), spec, max_pixels=self.max_pixels)
            except Exception as exc:  # any unreadable image is skipped, never fatal
                return f"{type(exc).__name__}: {exc}"[:500]

        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            results = list(pool.map(one, missing))
        decoded = {k: r for k, r in zip(missing, results, strict=True) if isinstance(r, np.ndarray)}
        failures = {k: r for k, r in zip(missing, results, strict=True) if isinstance(r, str)}
        if failures:
            log.warning("images failed to decode", extra={"count": len(failures)})
        return decoded, failures

    def _disk_path(self, project_id: int, spec: ImageSpec) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"pixels-p{project_id}-s{spec.size}-c{spec.channels}.npz"

    def _read_disk(self, project_id: int, spec: ImageSpec) -> _Pixels | None:
        path = self._disk_path(project_id, spec)
        if path is None or not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                keys, pixels = data["keys"], data["pixels"]
        except Exception:
            # A cache is only a cache: a damaged file costs one decode, never a round.
            log.warning("ignoring unreadable image cache %s", path, exc_info=True)
            return None
        expected = (spec.channels, spec.size, spec.size)
        if pixels.shape[1:] != expected or len(keys) != len(pixels):
            return None
        return _Pixels.from_arrays(keys, pixels)

    def _write_disk(self, project_id: int, spec: ImageSpec, block: _Pixels) -> None:
        path = self._disk_path(project_id, spec)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        # Temp file + rename: a worker killed mid-write leaves the old cache, not half a file.
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as handle:
            np.savez(handle, keys=block.keys, pixels=block.pixels)
            temp_name = handle.name
        os.replace(temp_name, path)


def _unique_missing(items: Sequence[ItemImage], block: _Pixels) -> list[str]:
    seen: set[str] = set()
    missing: list[str] = []
    for item in items:
        if item.file_key not in block.index and item.file_key not in seen:
            seen.add(item.file_key)
            missing.append(item.file_key)
    return missing

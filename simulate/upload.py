"""A dataset uploaded into a project as the product's users would: zips of PNGs.

The pool goes up unlabelled; the test set goes up with a labels.csv, which makes its items
validation items. The zips are built once per dataset (`Archives`) and reused for every
seed of a grid.
"""

from __future__ import annotations

import csv
import io
import logging
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from nextlabel_client import Client
from simulate.datasets import Dataset, Split, png_bytes

logger = logging.getLogger(__name__)

UPLOAD_CHUNK = 1_000


def _chunks(count: int, size: int) -> Iterator[range]:
    for start in range(0, count, size):
        yield range(start, min(start + size, count))


def build_zip(
    split: Split, indices: Sequence[int], classes: Sequence[str], labelled: bool
) -> bytes:
    """A zip of PNGs; with ``labelled``, a labels.csv that makes them validation items."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for index in indices:
            archive.writestr(split.filenames[index], png_bytes(split.images[index]))
        if labelled:
            rows = io.StringIO()
            writer = csv.writer(rows, lineterminator="\n")
            writer.writerow(["filename", "label"])
            for index in indices:
                writer.writerow([split.filenames[index], classes[int(split.labels[index])]])
            archive.writestr("labels.csv", rows.getvalue())
    return buffer.getvalue()


@dataclass(frozen=True)
class Archives:
    """A dataset as upload-ready zips (~1,000 files each), built once and reused per seed."""

    pool: tuple[bytes, ...]
    test: tuple[bytes, ...]

    @classmethod
    def build(cls, dataset: Dataset) -> Archives:
        pool = tuple(
            build_zip(dataset.pool, chunk, dataset.classes, labelled=False)
            for chunk in _chunks(len(dataset.pool), UPLOAD_CHUNK)
        )
        test = tuple(
            build_zip(dataset.test, chunk, dataset.classes, labelled=True)
            for chunk in _chunks(len(dataset.test), UPLOAD_CHUNK)
        )
        return cls(pool, test)


def import_dataset(
    client: Client, project_id: int, dataset: Dataset, archives: Archives
) -> dict[str, int]:
    """Upload pool and test set; return pool file name -> item id for what was created."""
    for kind, zips in (("pool", archives.pool), ("test", archives.test)):
        for number, data in enumerate(zips):
            report = client.upload_zip(project_id, f"{kind}-{number:03d}.zip", data)
            for skipped in report.skipped:
                logger.warning("upload skipped %s: %s", skipped.name, skipped.reason)
    pool_ids = {item.filename: item.id for item in client.iter_items(project_id, "unlabelled")}
    validation = list(client.iter_items(project_id, "validation"))
    if len(validation) != len(dataset.test):
        raise RuntimeError(
            f"{len(validation)} validation items imported, expected {len(dataset.test)}"
        )
    if len(pool_ids) != len(dataset.pool):
        logger.warning("%d of %d pool items imported", len(pool_ids), len(dataset.pool))
    return pool_ids

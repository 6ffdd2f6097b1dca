"""What every export shares: the formats a request may name, their media types, the page
size, the CSV writer that turns pages of rows into text chunks, and the sink a zip is
streamed through.

Rows are read in keyset pages (id > last id) with a short-lived session per page rather
than one long server-side cursor: a slow download then holds no connection and no snapshot,
and 100k labels stream in a few hundred KB of memory.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

# What `format` names: the labels in one of three encodings, or another export.
ExportKind = Literal["csv", "json", "jsonl", "imagefolder", "predictions", "model"]
MEDIA_TYPES: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "jsonl": "application/x-ndjson",
    "imagefolder": "application/zip",
    "model": "application/zip",
}
PAGE_SIZE = 5000
# Bytes a zip gathers before handing a chunk to the response.
ZIP_CHUNK_BYTES = 1024 * 1024


def render_csv(pages: Iterable[Sequence[Sequence[Any]]], *, header: Sequence[str]) -> Iterator[str]:
    """Text chunks of a CSV: the header, then one chunk per page."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for page in pages:
        writer.writerows(page)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()


class ZipSink(io.RawIOBase):
    """A write-only stream that gathers bytes for the next chunk.

    It cannot seek or tell, so zipfile writes each entry's sizes after its data (data
    descriptors) and counts offsets itself.
    """

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self.size += len(chunk)
        return len(chunk)

    def take(self) -> bytes:
        chunk = b"".join(self._parts)
        self._parts.clear()
        self.size = 0
        return chunk


def zip_time(moment: datetime) -> tuple[int, int, int, int, int, int]:
    # Zip timestamps are local-time fields from 1980 on; UTC, as every time nextlabel writes.
    utc = moment.astimezone(UTC) if moment.tzinfo else moment
    return max(utc.timetuple()[:6], (1980, 1, 1, 0, 0, 0))

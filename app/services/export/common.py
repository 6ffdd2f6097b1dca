"""What every export shares: the formats a request may name, their media types, the page
size, and the CSV writer that turns pages of rows into text chunks.

Rows are read in keyset pages (id > last id) with a short-lived session per page rather
than one long server-side cursor: a slow download then holds no connection and no snapshot,
and 100k labels stream in a few hundred KB of memory.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

# What `format` names: the labels in one of three encodings, or another export.
ExportKind = Literal["csv", "json", "jsonl", "imagefolder", "predictions"]
MEDIA_TYPES: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "jsonl": "application/x-ndjson",
    "imagefolder": "application/zip",
}
PAGE_SIZE = 5000


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

"""How far a project's embedding has got: one row per project (core.tables.EmbeddingProgress).

Whoever embeds a chunk (a round's embed phase or a chunk task on another worker) adds to the
row in its own short transaction, and only while the row is for the same space: a chunk of a
space the project has since left counts for nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core.tables import EmbeddingProgress


def start_embedding(
    session_factory: sessionmaker[Session],
    *,
    project_id: int,
    space_key: str,
    total: int,
    reused: int,
) -> None:
    """(Re)start the project's row for `space_key`: `total` images, `reused` already stored."""
    now = datetime.now(UTC)
    with session_factory() as session, session.begin():
        row = session.get(EmbeddingProgress, project_id, with_for_update=True)
        if row is None:
            row = EmbeddingProgress(project_id=project_id, duplicates_checked_through=0)
            session.add(row)
        row.space_key = space_key
        row.total = total
        row.reused = reused
        row.embedded = 0
        row.failed = 0
        row.state = "done" if reused >= total else "embedding"
        row.error = None
        row.started_at = now
        row.updated_at = now
        row.finished_at = now if reused >= total else None


def add_embedded(
    session_factory: sessionmaker[Session],
    *,
    project_id: int,
    space_key: str,
    embedded: int,
    failed: int = 0,
) -> None:
    """Count a chunk's images toward the project's progress in `space_key`."""
    with session_factory() as session, session.begin():
        session.execute(
            update(EmbeddingProgress)
            .where(
                EmbeddingProgress.project_id == project_id,
                EmbeddingProgress.space_key == space_key,
            )
            .values(
                embedded=EmbeddingProgress.embedded + embedded,
                failed=EmbeddingProgress.failed + failed,
                updated_at=datetime.now(UTC),
            )
        )


def finish_embedding(
    session_factory: sessionmaker[Session],
    *,
    project_id: int,
    space_key: str,
    error: str | None = None,
) -> None:
    """Mark the project's embedding in `space_key` done, or failed with `error`."""
    now = datetime.now(UTC)
    with session_factory() as session, session.begin():
        session.execute(
            update(EmbeddingProgress)
            .where(
                EmbeddingProgress.project_id == project_id,
                EmbeddingProgress.space_key == space_key,
            )
            .values(
                state="failed" if error else "done",
                error=error[:4000] if error else None,
                updated_at=now,
                finished_at=now,
            )
        )


@dataclass(frozen=True)
class ProgressView:
    """What the dashboard shows: done of total, the rate and the time left."""

    state: str
    space_key: str
    total: int
    done: int
    reused: int
    embedded: int
    failed: int
    images_per_second: float | None
    seconds_left: float | None
    error: str | None
    started_at: datetime
    finished_at: datetime | None


def view_progress(row: EmbeddingProgress, *, now: datetime | None = None) -> ProgressView:
    """The row with its rate (images embedded per second since the start) and time left."""
    now = now or datetime.now(UTC)
    started = _utc(row.started_at)
    ended = _utc(row.finished_at) if row.finished_at else now
    elapsed = (ended - started).total_seconds()
    rate = row.embedded / elapsed if row.embedded and elapsed > 0 else None
    done = min(row.total, row.reused + row.embedded + row.failed)
    left = None
    if row.state == "embedding" and rate:
        left = round((row.total - done) / rate, 1)
    return ProgressView(
        state=row.state,
        space_key=row.space_key,
        total=row.total,
        done=done,
        reused=row.reused,
        embedded=row.embedded,
        failed=row.failed,
        images_per_second=round(rate, 2) if rate else None,
        seconds_left=left,
        error=row.error,
        started_at=started,
        finished_at=_utc(row.finished_at) if row.finished_at else None,
    )


def _utc(moment: datetime) -> datetime:
    # SQLite keeps no offset: every stored time is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

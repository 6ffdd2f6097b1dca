"""rounds.dispatched_at: when the broker last accepted the round's message

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 01:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rounds") as batch:
        batch.add_column(sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
    # Rounds that ran before this column existed were handed over; queued ones stay NULL, so
    # the worker's sweep sends them.
    op.execute("UPDATE rounds SET dispatched_at = created_at WHERE status <> 'queued'")


def downgrade() -> None:
    # recreate="never": on SQLite, rebuilding `rounds` would drop the table, and its foreign
    # keys' ON DELETE actions would delete every queue entry and prediction with it.
    with op.batch_alter_table("rounds", recreate="never") as batch:
        batch.drop_column("dispatched_at")

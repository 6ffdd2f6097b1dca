"""Frozen backbones, cold start and near-duplicates: project settings, item flags and the
embedding progress of each project

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-12 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # recreate="never": SQLite adds the columns in place; rebuilding `projects` or `items`
    # would fire ON DELETE CASCADE and empty every project (see 0003).
    with op.batch_alter_table("projects", recreate="never") as batch:
        batch.add_column(sa.Column("custom_backbone", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("custom_weights", sa.String(length=1000), nullable=True))
        batch.add_column(
            sa.Column(
                "cold_start",
                sa.String(length=32),
                nullable=False,
                server_default=sa.text("'typiclust'"),
            )
        )
        batch.add_column(
            sa.Column(
                "near_duplicates",
                sa.String(length=16),
                nullable=False,
                server_default=sa.text("'flag'"),
            )
        )
        batch.add_column(sa.Column("near_duplicate_distance", sa.Float(), nullable=True))
    with op.batch_alter_table("items", recreate="never") as batch:
        batch.add_column(sa.Column("near_duplicate_of", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("near_duplicate_distance", sa.Float(), nullable=True))
        batch.add_column(
            sa.Column(
                "duplicate_skipped", sa.Boolean(), nullable=False, server_default=sa.text("false")
            )
        )
    op.create_table(
        "embedding_progress",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("space_key", sa.String(length=300), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("reused", sa.Integer(), nullable=False),
        sa.Column("embedded", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duplicates_checked_through", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("project_id"),
    )


def downgrade() -> None:
    op.drop_table("embedding_progress")
    with op.batch_alter_table("items", recreate="never") as batch:
        batch.drop_column("duplicate_skipped")
        batch.drop_column("near_duplicate_distance")
        batch.drop_column("near_duplicate_of")
    with op.batch_alter_table("projects", recreate="never") as batch:
        batch.drop_column("near_duplicate_distance")
        batch.drop_column("near_duplicates")
        batch.drop_column("cold_start")
        batch.drop_column("custom_weights")
        batch.drop_column("custom_backbone")

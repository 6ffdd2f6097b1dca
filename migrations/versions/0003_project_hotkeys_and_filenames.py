"""projects.hotkeys and projects.show_filenames: keys an admin set, file names for annotators

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing projects keep automatic keys and hide file names from annotators, as new
    # ones do by default. recreate="never": SQLite adds the columns in place; a rebuild of
    # `projects` would fire ON DELETE CASCADE and empty every project (see downgrade).
    with op.batch_alter_table("projects", recreate="never") as batch:
        batch.add_column(
            sa.Column("hotkeys", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
        batch.add_column(
            sa.Column(
                "show_filenames", sa.Boolean(), nullable=False, server_default=sa.text("false")
            )
        )


def downgrade() -> None:
    # recreate="never": on SQLite, rebuilding `projects` would drop the table, and its foreign
    # keys' ON DELETE actions would delete every item, label and round with it.
    with op.batch_alter_table("projects", recreate="never") as batch:
        batch.drop_column("show_filenames")
        batch.drop_column("hotkeys")

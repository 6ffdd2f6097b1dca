"""The one migration matches the models on both backends, and upgrading is idempotent."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect

from app.db import make_engine
from app.migrate import alembic_config, upgrade_database


def test_migration_matches_models_and_reruns_cleanly(database_url: str) -> None:
    upgrade_database(database_url)  # already at head: a no-op
    command.check(alembic_config(database_url))  # raises if models and migration differ
    engine = make_engine(database_url)
    try:
        inspector = inspect(engine)
        indexes = {index["name"] for index in inspector.get_indexes("leases")}
        label_indexes = {index["name"]: index for index in inspector.get_indexes("labels")}
    finally:
        engine.dispose()
    assert "ix_leases_annotator_expires" in indexes
    by_key = label_indexes["uq_labels_idempotency_key"]
    assert by_key["unique"] and by_key["column_names"] == ["annotator_id", "idempotency_key"]

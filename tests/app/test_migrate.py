"""The one migration matches the models on both backends, and upgrading is idempotent."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect, text

from core.db import make_engine
from core.migrate import alembic_config, upgrade_database
from tests.app.conftest import Api
from tests.app.test_labelling import add_done_round


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


def test_downgrading_dispatched_at_keeps_every_other_row(api: Api) -> None:
    """0002 down and up again: only the column goes (a table rebuild on SQLite would have
    fired the foreign keys' ON DELETE CASCADE and emptied queues and predictions)."""
    pid = api.project()["id"]
    items = api.upload_images(pid, 3)
    add_done_round(api, pid, queue=items[:2], scores={i: 1.0 for i in items})
    database_url = api.app.state.settings.resolved_database_url
    engine = make_engine(database_url)
    try:
        command.downgrade(alembic_config(database_url), "0001")
        assert "dispatched_at" not in {c["name"] for c in inspect(engine).get_columns("rounds")}
        command.upgrade(alembic_config(database_url), "head")
        with engine.connect() as connection:
            queued = connection.execute(text("SELECT count(*) FROM queue_entries")).scalar()
            predicted = connection.execute(text("SELECT count(*) FROM predictions")).scalar()
        assert (queued, predicted) == (2, 3)
    finally:
        engine.dispose()

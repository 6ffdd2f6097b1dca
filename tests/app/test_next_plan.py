"""`next` by prediction score: the plan PostgreSQL runs, with and without statistics.

Right after a round writes its predictions PostgreSQL has no statistics on them until
autovacuum or ANALYZE gets there (never, with autovacuum off). The score-ordered query must
walk ix_predictions_round_score in order either way, never sort the round: a sort of every
prediction joined to its item took seconds on 20k items (issue 14, defect 10). The plan is
read with EXPLAIN on the very statement and parameters `next` sent.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.services.imports import random_key_for
from core.tables import Item, Prediction, Round, RoundStatus, Split, utcnow
from tests.app.conftest import Api

POOL = 20_000
# Labelled items at the front of a round's order, in the test that walks past them.
FRONT = 100
# Every table `next` reads: none of them gets statistics behind the test's back.
_TABLES = ("items", "predictions", "queue_entries", "leases", "skips", "rounds", "labels")


@dataclass(frozen=True)
class Sent:
    statement: str
    parameters: dict[str, Any]


def add_items(api: Api, project_id: int, count: int, *, first: int = 0) -> list[int]:
    """`count` pool items inserted in bulk (an upload of 20k images would take minutes)."""
    rows = []
    for index in range(first, first + count):
        sha256 = f"{project_id:08d}{index:056d}"
        rows.append(
            {
                "project_id": project_id,
                "filename": f"item-{index:06d}.png",
                "file_key": "none",
                "sha256": sha256,
                "width": 8,
                "height": 8,
                "split": Split.pool,
                "label_count": 0,
                "random_key": random_key_for(seed=0, sha256=sha256),
                "created_at": utcnow(),
            }
        )
    with api.app.state.session_factory() as session:
        session.execute(insert(Item), rows)
        session.commit()
        ids = session.scalars(
            select(Item.id).where(Item.project_id == project_id).order_by(Item.id)
        ).all()
    return list(ids)[-count:]


def add_round(api: Api, project_id: int, scores: dict[int, float]) -> int:
    """A done round whose queue is used up: `next` goes straight to the scores."""
    with api.app.state.session_factory() as session:
        done = Round(project_id=project_id, status=RoundStatus.done, strategy="bald")
        session.add(done)
        session.flush()
        rows = [
            {
                "round_id": done.id,
                "item_id": item_id,
                "predicted": "dog",
                "confidence": 0.6,
                "probabilities": [0.3, 0.6, 0.1],
                "score": score,
            }
            for item_id, score in scores.items()
        ]
        session.execute(insert(Prediction), rows)
        session.commit()
        return done.id


def _hot_engine(api: Api) -> AsyncEngine:
    factory: async_sessionmaker[AsyncSession] = api.app.state.hot_session_factory
    engine = factory.kw["bind"]
    assert isinstance(engine, AsyncEngine)
    return engine


@pytest.fixture
def by_score_sent(api: Api) -> Iterator[list[Sent]]:
    """The score-ordered statements `next` sends (they alone read predictions FOR UPDATE)."""
    engine = _hot_engine(api).sync_engine
    sent: list[Sent] = []

    def before_execute(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "predictions" in statement and "FOR NO KEY UPDATE" in statement:
            sent.append(Sent(statement, dict(parameters)))

    event.listen(engine, "before_cursor_execute", before_execute)
    yield sent
    event.remove(engine, "before_cursor_execute", before_execute)


def _dsn(api: Api) -> str:
    url = _hot_engine(api).url.set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def _plan(dsn: str, sent: Sent) -> dict[str, Any]:
    with psycopg.connect(dsn) as connection:
        row = connection.execute(f"EXPLAIN (FORMAT JSON) {sent.statement}", sent.parameters)
        [[explained]] = row.fetchall()
    plan: dict[str, Any] = explained[0]["Plan"]
    return plan


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _describe(plan: dict[str, Any], depth: int = 0) -> str:
    relation = f" on {plan['Relation Name']}" if "Relation Name" in plan else ""
    index = f" using {plan['Index Name']}" if "Index Name" in plan else ""
    lines = [f"{'  ' * depth}{plan['Node Type']}{relation}{index}"]
    lines += [_describe(child, depth + 1) for child in plan.get("Plans", [])]
    return "\n".join(lines)


def assert_walks_the_score_index(plan: dict[str, Any]) -> None:
    """Predictions read by one backward walk of ix_predictions_round_score, nothing sorted,
    the items looked up by key: the work stops with the items asked for."""
    shown = _describe(plan)
    nodes = list(_nodes(plan))
    assert not [node for node in nodes if "Sort" in node["Node Type"]], shown
    scans = [node for node in nodes if node.get("Relation Name") == "predictions"]
    assert [
        (node["Node Type"], node.get("Index Name"), node.get("Scan Direction")) for node in scans
    ] == [("Index Scan", "ix_predictions_round_score", "Backward")], shown
    items = [node for node in nodes if node.get("Relation Name") == "items"]
    assert [node.get("Index Name") for node in items] == ["items_pkey"], shown


def _statistics(dsn: str) -> int:
    with psycopg.connect(dsn) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stats WHERE tablename = ANY(%s)", (list(_TABLES),)
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])
def test_next_walks_the_score_index_with_and_without_statistics(
    api: Api, by_score_sent: list[Sent]
) -> None:
    with api.app.state.session_factory() as session:
        for table in _TABLES:
            session.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
        session.commit()
    pid = api.project()["id"]
    ann = api.user("ann", projects=[pid])
    ids = add_items(api, pid, POOL)
    rng = random.Random(0)
    scores = {item_id: rng.random() for item_id in ids}
    round_id = add_round(api, pid, scores)
    dsn = _dsn(api)
    assert _statistics(dsn) == 0

    [served] = api.next(pid, ann)

    best = max(scores, key=scores.__getitem__)
    assert (served["item"]["id"], served["round_id"], served["score"]) == (
        best,
        round_id,
        scores[best],
    )
    [sent] = by_score_sent
    assert_walks_the_score_index(_plan(dsn, sent))
    # Once analysed, the same plan.
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("ANALYZE")
    assert _statistics(dsn) > 0
    assert_walks_the_score_index(_plan(dsn, sent))


def test_next_walks_past_a_front_of_labelled_items(api: Api) -> None:
    """What a round's first labels leave: the best items labelled. `next` serves the best
    of the rest, then the random pool; an older round's predictions play no part."""
    pid = api.project()["id"]
    ann = api.user("ann", projects=[pid])
    older = add_items(api, pid, 30)
    add_round(api, pid, {item_id: 100.0 + i for i, item_id in enumerate(older)})
    ids = add_items(api, pid, FRONT + 4, first=len(older))
    round_id = add_round(api, pid, {item_id: -float(i) for i, item_id in enumerate(ids)})
    with api.app.state.session_factory() as session:
        session.execute(update(Item).where(Item.id.in_(ids[:FRONT])).values(label_count=1))
        session.commit()

    served = api.next(pid, ann, n=6)

    assert [s["item"]["id"] for s in served[:4]] == ids[FRONT:]
    assert {(s["round_id"], s["strategy"]) for s in served[:4]} == {(round_id, "bald")}
    assert [s["score"] for s in served[:4]] == [-float(i) for i in range(FRONT, FRONT + 4)]
    # The round used up: the seeded random pool, here the older round's items, unranked.
    assert {s["item"]["id"] for s in served[4:]} <= set(older)
    assert {(s["round_id"], s["score"], s["strategy"]) for s in served[4:]} == {
        (None, None, "random")
    }

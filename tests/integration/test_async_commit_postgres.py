"""Projection batches on PostgreSQL commit without waiting for the WAL flush, unless
they wrote to the outbox (derived events, dead letters), which goes to Kafka next."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from events.log import LogRecord
from producers.synthetic import SyntheticTouchpoints
from projections.store import SqlProjectionStore
from projections.tables import outbox
from tests.projection_harness import TOPIC, as_records

pytestmark = pytest.mark.integration


def _commit_settings(engine: sa.Engine) -> list[str]:
    """``synchronous_commit`` as each transaction of ``engine`` sees it at its commit."""
    seen: list[str] = []

    @sa.event.listens_for(engine, "commit")
    def _at_commit(conn: sa.Connection) -> None:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.execute("SHOW synchronous_commit")
        row = cursor.fetchone()
        assert row is not None
        seen.append(row[0])
        cursor.close()

    return seen


def _outbox_size(store: SqlProjectionStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar_one())


@pytest.mark.parametrize(("async_commit", "plain"), [(True, "off"), (False, "on")])
def test_plain_batches_commit_async_and_batches_with_outbox_rows_durably(
    engine: sa.Engine, schema: str, async_commit: bool, plain: str
) -> None:
    store = SqlProjectionStore(engine, schema=schema, async_commit=async_commit)
    store.create()
    seen = _commit_settings(store.engine)
    events = list(SyntheticTouchpoints(customers=5, seed=3).events(20))
    records = as_records(events)

    assert store.apply_batch(TOPIC, records[:10]) == 10
    assert _outbox_size(store) == 0
    assert seen == [plain]

    bad = LogRecord(TOPIC, 0, 10, 0, None, b"{not json")  # a dead letter: the outbox
    assert store.apply_batch(TOPIC, [bad]) == 1
    assert _outbox_size(store) == 1
    assert seen == [plain, "on"]

    rest: list[Any] = [
        LogRecord(TOPIC, 0, r.offset + 1, 0, r.key, r.value, r.headers) for r in records[10:]
    ]
    assert store.apply_batch(TOPIC, rest) == 10
    assert seen == [plain, "on", plain]
    assert store.checkpoints(TOPIC) == {0: 21}

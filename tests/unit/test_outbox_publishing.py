"""publish_outbox: leftovers at start, derived rows at once, no query after a batch that
derived nothing, and rows written elsewhere within ``OUTBOX_RECHECK_S``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa

import projections.store as store_module
from events.log import LogRecord, OutgoingRecord
from producers.synthetic import SyntheticTouchpoints
from projections.sql import create_engine_for
from projections.store import SqlProjectionStore
from tests.projection_harness import TOPIC, as_records

Published = list[tuple[str, OutgoingRecord]]


def _store(path: Path, published: Published) -> SqlProjectionStore:
    def publish(target: str, records: Sequence[OutgoingRecord]) -> None:
        published.extend((target, r) for r in records)

    store = SqlProjectionStore(create_engine_for(None, path), publish=publish)
    store.create()
    return store


def _statements(store: SqlProjectionStore) -> list[str]:
    seen: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


def _dead_letter(offset: int) -> LogRecord:
    return LogRecord(TOPIC, 0, offset, 0, None, b"{not json")


def test_outbox_is_queried_only_when_it_may_hold_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "projections.sqlite3"
    first: Published = []
    writer = _store(path, first)
    writer.apply_batch(TOPIC, [_dead_letter(0)])  # left in the outbox: never published

    published: Published = []
    store = _store(path, published)
    statements = _statements(store)
    assert store.publish_outbox() == 1  # a new store drains what an earlier one left
    assert [target for target, _ in published] == ["deadletters"]

    events = list(SyntheticTouchpoints(customers=3, seed=5).events(5))
    plain = as_records(events, start=1)
    assert store.apply_batch(TOPIC, plain) == 5
    statements.clear()
    assert store.publish_outbox() == 0
    assert statements == []  # nothing derived: no transaction

    writer.apply_batch(TOPIC, [_dead_letter(6)])  # another worker's row, found later
    assert store.publish_outbox() == 0
    monkeypatch.setattr(store_module, "OUTBOX_RECHECK_S", 0.0)
    assert store.publish_outbox() == 1
    monkeypatch.undo()

    assert store.apply_batch(TOPIC, [_dead_letter(7)]) == 1  # derived here: published now
    assert store.publish_outbox() == 1
    assert [target for target, _ in published] == ["deadletters"] * 3
    assert first == []

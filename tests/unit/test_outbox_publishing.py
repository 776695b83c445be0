"""publish_outbox: leftovers at start, derived rows at once, no query after a batch that
derived nothing, and rows written elsewhere within ``OUTBOX_RECHECK_S``; and
``BackgroundOutbox``, which publishes from a thread of its own."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa

import projections.store as store_module
from events.log import LogRecord, OutgoingRecord
from producers.synthetic import SyntheticTouchpoints
from projections.processing import BackgroundOutbox
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


def test_a_batch_committed_while_a_pass_finds_the_outbox_empty_is_looked_for_again(
    tmp_path: Path,
) -> None:
    """A publisher on another thread (``BackgroundOutbox``) may find the outbox empty
    just before a batch that derived events commits: the next pass must not skip."""
    published: Published = []
    store = _store(tmp_path / "projections.sqlite3", published)
    assert store.publish_outbox() == 0  # the start's look

    def batch_commits_meanwhile(*args: object) -> None:
        if "outbox.seq" in str(args[2]):
            store._derived_batches += 1  # what apply_batch does once a derived batch commits

    sa.event.listen(store.engine, "before_cursor_execute", batch_commits_meanwhile)
    store._derived_batches += 1
    assert store.publish_outbox() == 0
    sa.event.remove(store.engine, "before_cursor_execute", batch_commits_meanwhile)
    statements = _statements(store)
    store.publish_outbox()
    assert any("outbox.seq" in s for s in statements)


class _Outbox:
    """A projector whose outbox publishing is counted, and fails while ``failing``."""

    def __init__(self, failing: int = 0) -> None:
        self.failing = failing
        self.passes = 0
        self.applied: list[int] = []
        self.lock = threading.Lock()

    def checkpoints(self, topic: str) -> dict[int, int]:
        return {}

    def apply_batch(self, topic: str, records: Sequence[LogRecord]) -> int:
        self.applied.append(len(records))
        return len(records)

    def publish_outbox(self) -> int:
        with self.lock:
            self.passes += 1
            if self.failing:
                self.failing -= 1
                raise RuntimeError("broker unavailable")
        return 1


def _until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_background_outbox_publishes_after_each_batch_off_the_batch_loop() -> None:
    inner = _Outbox()
    outbox = BackgroundOutbox(inner, recheck_s=60)
    try:
        assert _until(lambda: inner.passes == 1)  # a previous run's rows, at start
        assert outbox.publish_outbox() == 0  # the batch loop no longer publishes
        assert outbox.apply_batch(TOPIC, [_dead_letter(0), _dead_letter(1)]) == 2
        assert _until(lambda: inner.passes == 2)
        time.sleep(0.1)
        assert inner.passes == 2  # nothing more without a batch (recheck_s is long)
    finally:
        outbox.close()
    assert inner.passes == 3  # a last pass at close
    assert not outbox._thread.is_alive()


def test_background_outbox_retries_a_failed_pass_and_stops_when_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(BackgroundOutbox, "FIRST_RETRY_S", 0.01)
    inner = _Outbox(failing=3)
    outbox = BackgroundOutbox(inner, recheck_s=60)
    assert _until(lambda: inner.passes == 4)  # three failures, then a pass that worked
    inner.failing = 10**6  # the broker is gone for good: close does not wait for it
    outbox.apply_batch(TOPIC, [_dead_letter(0)])
    outbox.close(timeout=5)
    assert not outbox._thread.is_alive()

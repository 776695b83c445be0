"""The embedded SQLite log passes the EventLog contract, plus its own durability checks."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest

from events import EventLog
from events.sqlite import SqliteEventLog
from producers.synthetic import SyntheticTouchpoints
from tests.contract.event_log import EventLogContract, MakeLog


class TestSqliteEventLog(EventLogContract):
    @pytest.fixture
    def make_log(self, tmp_path: Path) -> Iterator[MakeLog]:
        opened: list[EventLog] = []

        def make(topic: str, partitions: int) -> EventLog:
            log = SqliteEventLog(tmp_path / "log.sqlite3", topic, partitions=partitions)
            opened.append(log)
            return log

        yield make
        for log in opened:
            log.close()


def _append_from_another_process(path: Path, seed: int) -> None:
    log = SqliteEventLog(path, "shared", partitions=3)
    events = list(SyntheticTouchpoints(customers=20, seed=seed).events(200))
    for start in range(0, 200, 20):
        log.append(events[start : start + 20])
    log.close()


def test_processes_appending_concurrently_get_dense_distinct_offsets(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite3"
    SqliteEventLog(path, "shared", partitions=3).close()
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_append_from_another_process, args=(path, s)) for s in (1, 2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    log = SqliteEventLog(path, "shared", partitions=3)
    records = list(log.read())
    assert len(records) == 400
    for partition, end in log.end_offsets().items():
        offsets = [r.offset for r in records if r.partition == partition]
        assert offsets == list(range(end)), "offsets must be dense and unique per partition"
    log.close()

"""The closed loop, two full cycles, on the embedded log and SQLite projections
(the same scenario runs on Kafka + PostgreSQL in tests/integration)."""

from __future__ import annotations

from pathlib import Path

from events.sqlite import SqliteEventLog
from projections.sql import create_engine_for
from projections.store import SqlProjectionStore, outbox_publisher
from tests.closed_loop import Clock, rebuild_matches, run_two_cycles


def test_two_cycles_of_the_closed_loop_and_a_rebuild_reproduce_them(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "log.sqlite3", "crm.events", partitions=4)
    dead = SqliteEventLog(tmp_path / "log.sqlite3", "crm.deadletters", partitions=1)
    clock = Clock()
    store = SqlProjectionStore(
        create_engine_for(None, tmp_path / "live.sqlite3"),
        publish=outbox_publisher(log, dead),
        clock=clock,
    )
    store.create()

    def fresh() -> SqlProjectionStore:
        rebuilt = SqlProjectionStore(create_engine_for(None, tmp_path / "r.sqlite3"), live=False)
        rebuilt.create()
        return rebuilt

    figures = run_two_cycles(log, store, clock, customers_n=300)
    assert figures["responders"] > 0 and figures["converters"] > 0
    assert rebuild_matches(log, store, fresh) > 1_000

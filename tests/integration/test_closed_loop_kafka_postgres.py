"""Two full cycles of the closed loop on real Kafka and PostgreSQL, then a replay of the
whole topic into a fresh schema that must reproduce every loop table row for row."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from crm.devservices.testing import TestServices
from events.kafka import KafkaEventLog
from projections.store import SqlProjectionStore, outbox_publisher
from tests.closed_loop import Clock, rebuild_matches, run_two_cycles

pytestmark = pytest.mark.integration


def test_two_cycles_on_kafka_and_postgres_and_a_replay_reproduces_them(
    services: TestServices, engine: sa.Engine
) -> None:
    name = uuid.uuid4().hex[:8]
    event_log = KafkaEventLog(services.kafka_bootstrap, f"loop-{name}", partitions=4)
    dead = KafkaEventLog(services.kafka_bootstrap, f"loop-{name}-dlq", partitions=1)
    clock = Clock()
    store = SqlProjectionStore(
        engine, schema=f"loop_{name}", publish=outbox_publisher(event_log, dead), clock=clock
    )
    store.create()

    def fresh() -> SqlProjectionStore:
        rebuilt = SqlProjectionStore(engine, schema=f"loop_{name}_replay", live=False)
        rebuilt.create()
        return rebuilt

    try:
        figures = run_two_cycles(event_log, store, clock, customers_n=500)
        assert figures["responders"] > 0 and figures["converters"] > 0
        assert rebuild_matches(event_log, store, fresh) > 2_000
    finally:
        event_log.close()
        dead.close()
        with engine.begin() as conn:
            for schema in (f"loop_{name}", f"loop_{name}_replay"):
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))

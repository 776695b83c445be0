"""Projection throughput: from a Kafka topic into PostgreSQL.

A fresh topic gets one segment definition and then ``ctx.sizes.events`` realistic
touchpoint events (``ctx.sizes.customers`` people, history over the past year).

* Baseline: a bare kafka-python consumer decoding each record with
  ``events.codec.decode_event`` and COPYing it into one table (see ``bench.pipeline``).
* Ours: a fresh ``SqlProjectionStore`` schema caught up with ``projections.runner.catch_up``
  until nothing is left: identity resolution, customer 360, timeline, facts, campaign
  attribution and segment evaluation, with derived events (segment entries) published
  back to the log through the outbox and applied too.

Events/s counts the source events (the derived ones are extra work, not extra credit).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import sqlalchemy as sa

from bench.core import BenchContext, Figure
from bench.pipeline import chunks, delete_topics, drop_schemas, past_year, rate, raw_copy_load
from events.kafka import KafkaEventLog
from projections import planning
from projections.processing import BATCH_SIZE
from projections.runner import catch_up
from projections.sql import create_engine_for
from projections.store import SqlProjectionStore, outbox_publisher

SECTION = "projection"
TARGET = "≥ 15,000 ev/s and ≥ 0.5 of COPY"
SEGMENT_RULE = {"field": "order_count", "op": "ge", "value": 1}


def run(ctx: BenchContext) -> list[Figure]:
    n, customers = ctx.sizes.events, ctx.sizes.customers
    topic, deadletters = ctx.name("projection"), ctx.name("projection_dead")
    schema, copy_schema = ctx.name("projection"), ctx.name("projection_copy")
    event_log = KafkaEventLog(ctx.kafka_bootstrap, topic, client_id="loopcrm-bench")
    dead_log = KafkaEventLog(ctx.kafka_bootstrap, deadletters, client_id="loopcrm-bench")
    engine = create_engine_for(ctx.database_url, ctx.workdir / "unused.sqlite3")
    try:
        store = SqlProjectionStore(
            engine, schema=schema, publish=outbox_publisher(event_log, dead_log)
        )
        store.create()
        planning.define_segment(
            event_log,
            store,
            segment_id="buyers",
            name="Buyers",
            rule=SEGMENT_RULE,
            now=datetime.now(UTC),
        )
        catch_up(event_log, store)  # the definition is active before the first touchpoint
        ctx.log(f"appending {n:,} events ({customers:,} customers) to {topic}")
        for chunk in chunks(past_year(customers, seed=23).events(n), 5_000):
            event_log.append(chunk)

        ctx.log("baseline: raw consumer + decode + COPY")
        copied = raw_copy_load(ctx.kafka_bootstrap, topic, ctx.database_url, copy_schema)
        ctx.log(f"COPY: {copied.records:,} records in {copied.seconds:.1f} s")

        ctx.log("ours: catch_up into a fresh SqlProjectionStore schema")
        applied, rounds = 0, 0
        started = time.perf_counter()
        while True:
            done = catch_up(event_log, store, batch_size=BATCH_SIZE)  # as `crm process`
            if done == 0:
                break
            applied += done
            rounds += 1
        seconds = time.perf_counter() - started
        ctx.log(f"projections: {applied:,} records in {seconds:.1f} s ({rounds} rounds)")
        segment_rows = _count(store, f'SELECT count(*) FROM "{schema}".customer_segments')
    finally:
        event_log.close()
        dead_log.close()
        engine.dispose()
        drop_schemas(ctx.database_url, schema, copy_schema)
        delete_topics(ctx.kafka_bootstrap, [topic, deadletters])
    return [
        Figure(
            SECTION,
            "catch_up into SqlProjectionStore",
            rate(n, seconds),
            "ev/s",
            copied.per_second,
            "consume + decode + COPY",
            TARGET,
            f"{n:,} events in {seconds:.1f} s; {applied - n:,} derived records "
            f"applied too; {segment_rows:,} segment rows; batch {BATCH_SIZE:,}",
        ),
    ]


def _count(store: SqlProjectionStore, sql: str) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())

"""Replay: rebuild every projection from a log of ``ctx.sizes.replay_events`` events.

The log is generated in chunks and appended with ``KafkaEventLog`` in batches of 5,000;
then ``projections.replay.rebuild`` (what ``crm replay`` runs) builds a fresh schema and
switches it in. The baseline is re-measured on the same log: a bare consumer decoding
every record and COPYing it into one table (see ``bench.pipeline``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bench.core import BenchContext, Figure
from bench.pipeline import chunks, delete_topics, drop_schemas, past_year, rate, raw_copy_load
from events.kafka import KafkaEventLog
from projections.identity import DEFAULT_SHARED_THRESHOLD
from projections.replay import BATCH_SIZE as REPLAY_BATCH
from projections.replay import ReplaySource, rebuild

SECTION = "replay"
APPEND_BATCH = 5_000
EVENTS_PER_CUSTOMER = 10


def run(ctx: BenchContext) -> list[Figure]:
    n = ctx.sizes.replay_events
    customers = max(ctx.sizes.customers, n // EVENTS_PER_CUSTOMER)
    topic = ctx.name("replay")
    schema, copy_schema = ctx.name("replay"), ctx.name("replay_copy")
    event_log = KafkaEventLog(ctx.kafka_bootstrap, topic, client_id="loopcrm-bench")
    try:
        ctx.log(f"building a log of {n:,} events ({customers:,} customers) in {topic}")
        appending = _progress(ctx, "appended", n)
        started = time.perf_counter()
        for chunk in chunks(past_year(customers, seed=31).events(n), APPEND_BATCH):
            event_log.append(chunk)
            appending(len(chunk))
        ctx.log(f"log built in {time.perf_counter() - started:.1f} s")

        ctx.log("baseline: raw consumer + decode + COPY on the same log")
        copied = raw_copy_load(
            ctx.kafka_bootstrap,
            topic,
            ctx.database_url,
            copy_schema,
            progress=_progress(ctx, "copied", n),
        )
        drop_schemas(ctx.database_url, copy_schema)
        ctx.log(f"COPY: {copied.records:,} records in {copied.seconds:.1f} s")

        ctx.log("ours: projections.replay.rebuild into a fresh schema")
        source = ReplaySource(
            ctx.database_url, schema, ctx.workdir / "unused.sqlite3", DEFAULT_SHARED_THRESHOLD
        )
        result = rebuild(
            event_log, source, batch_size=REPLAY_BATCH, progress=_progress(ctx, "replayed", n)
        )
        ctx.log(f"rebuild: {result.records:,} records in {result.seconds:.1f} s")
    finally:
        event_log.close()
        drop_schemas(ctx.database_url, schema, copy_schema)
        delete_topics(ctx.kafka_bootstrap, [topic])
    target = "≤ 60 s for 1M events" + ("" if n == 1_000_000 else f" (≤ {60 * n / 1e6:.1f} s here)")
    notes = f"{n:,} events, {customers:,} customers, batch {REPLAY_BATCH:,}"
    return [
        Figure(
            SECTION,
            f"rebuild of {n:,} events",
            result.seconds,
            "s",
            copied.seconds,
            "consume + decode + COPY",
            target,
            notes + "; ratio > 1 means slower than the baseline",
        ),
        Figure(
            SECTION,
            "rebuild throughput",
            rate(result.records, result.seconds),
            "ev/s",
            copied.per_second,
            "consume + decode + COPY",
            "≥ 16,667 ev/s",
            notes,
        ),
    ]


def _progress(ctx: BenchContext, verb: str, total: int) -> Callable[[int], None]:
    """A counter that logs every tenth of ``total``."""
    done = 0
    step = max(1, total // 10)
    mark = step

    def advance(count: int) -> None:
        nonlocal done, mark
        done += count
        if done >= mark:
            ctx.log(f"  {verb} {done:,} / {total:,} ({100 * done / max(total, 1):.0f}%)")
            while mark <= done:
                mark += step

    return advance

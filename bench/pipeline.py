"""Helpers the ingest, projection and replay sections share: synthetic history, topics,
schemas, and the raw "consume + decode + COPY" baseline.

The baseline is what a hand-written loader would do with the same log: a kafka-python
consumer with the same fetch settings as :class:`events.kafka.KafkaEventLog`, each record
decoded with :func:`events.codec.decode_event` (the same validation the projections pay
for) and bulk-loaded with ``COPY`` into one table keyed by ``event_id``.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from events.codec import decode_event
from producers.synthetic import SyntheticTouchpoints
from schemas import Envelope


def past_year(customers: int, seed: int = 7) -> SyntheticTouchpoints:
    """A seeded population whose touchpoints are dated within the past year."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=365)
    return SyntheticTouchpoints(customers=customers, seed=seed, start=start, days=365)


def chunks(events: Iterable[Envelope], size: int) -> Iterator[list[Envelope]]:
    chunk: list[Envelope] = []
    for event in events:
        chunk.append(event)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def engine_for(database_url: str) -> Engine:
    return sa.create_engine(
        sa.engine.make_url(database_url).set(drivername="postgresql+psycopg2"), poolclass=NullPool
    )


def drop_schemas(database_url: str, *schemas: str) -> None:
    """Each in its own transaction: dropping many at once locks every table of them all,
    more than PostgreSQL's lock table may hold."""
    engine = engine_for(database_url)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for schema in schemas:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        engine.dispose()


def delete_topics(bootstrap: str, topics: Iterable[str]) -> None:
    """Best effort: a benchmark's topics are deleted when it is done with them."""
    wanted = list(topics)
    if not wanted:
        return
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="loopcrm-bench-admin")
    except KafkaError:
        return
    try:
        existing = set(admin.list_topics())
        doomed = [t for t in wanted if t in existing]
        if doomed:
            admin.delete_topics(doomed)
    except KafkaError:
        pass
    finally:
        admin.close()


@dataclass(frozen=True)
class LoadResult:
    records: int
    seconds: float

    @property
    def per_second(self) -> float:
        return rate(self.records, self.seconds)


COPY_COLUMNS = "event_id, type, occurred_at, customer_key, payload"


def raw_copy_load(
    bootstrap: str,
    topic: str,
    database_url: str,
    schema: str,
    *,
    progress: Callable[[int], None] | None = None,
) -> LoadResult:
    """Read ``topic`` from the beginning, decode every record, COPY it into one table."""
    engine = engine_for(database_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        conn.execute(
            sa.text(
                f'CREATE TABLE "{schema}".events (event_id uuid PRIMARY KEY, type text NOT NULL, '
                "occurred_at timestamptz NOT NULL, customer_key text, payload jsonb NOT NULL)"
            )
        )
    raw = engine.raw_connection()
    started = time.perf_counter()
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id="loopcrm-bench-raw",
        group_id=None,
        enable_auto_commit=False,
        max_poll_records=5_000,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    loaded = 0
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = {tp: int(o) for tp, o in consumer.end_offsets(tps).items()}
        pending = {tp for tp in tps if ends[tp] > 0}
        cursor: Any = raw.cursor()
        sql = f'COPY "{schema}".events ({COPY_COLUMNS}) FROM STDIN WITH (FORMAT csv)'
        while pending:
            batches = consumer.poll(timeout_ms=500)
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            count = 0
            for tp, messages in batches.items():
                for m in messages:
                    if m.offset >= ends[tp]:
                        break
                    event = decode_event(m.value)
                    payload = event.payload.__pydantic_serializer__.to_json(event.payload)
                    writer.writerow(
                        (
                            str(event.event_id),
                            event.type,
                            event.occurred_at.isoformat(),
                            m.key.decode() if m.key else "",
                            payload.decode(),
                        )
                    )
                    count += 1
            if count:
                buffer.seek(0)
                cursor.copy_expert(sql, buffer)
                loaded += count
                if progress is not None:
                    progress(count)
            for tp in list(pending):
                if consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        raw.commit()
        seconds = time.perf_counter() - started
    finally:
        consumer.close()
        raw.close()
        engine.dispose()
    return LoadResult(loaded, seconds)

"""The peer benchmark: the same events through the ``eventsourcing`` library (PyPI).

Both sides get the same synthetic touchpoint events (``SyntheticTouchpoints``, seed 1),
on the same machine, in the same run, against the same PostgreSQL server:

* **eventsourcing append**: one aggregate per LoopCRM partition key (a hash of the
  event's first identifier, so the same per-key ordering Kafka gives LoopCRM), id
  ``uuid5(key)``. Each domain event (``Started`` for the key's first event, ``Touched``
  after) carries the event's full wire JSON as a dict. Events are appended in log
  order, 1,000 at a time: each chunk triggers its events on the (in-memory) aggregates
  and saves every touched aggregate with one ``Application.save(*aggregates)``, which
  the library writes as one transaction (one ``executemany``). This is the library's
  largest batch; LoopCRM's Kafka append also goes 1,000 events a batch. Aggregates are
  kept in memory rather than re-read from the store, which favours the peer.
* **eventsourcing projection**: per-key counters (events, orders, revenue net of
  refunds, last seen) in a PostgreSQL table, each change committed with its tracking
  record in the same transaction. Measured two ways, and the *faster* is the baseline:
  the library's ``ProjectionRunner`` (subscription to the application's notification
  log; one transaction per event, as its ``Projection.process_event`` works), and a
  batched follower on the library's own API (``select_notifications`` 20,000 at a time,
  ``mapper.to_domain_event``, one transaction per 20,000 events with one tracking
  record: the same batch size as LoopCRM's ``catch_up``).
* **LoopCRM projection**: the same events appended to a fresh Kafka topic with
  ``KafkaEventLog`` (1,000 a batch), then ``projections.runner.catch_up`` into a fresh
  ``SqlProjectionStore`` schema: identity resolution, the customer 360, the timeline,
  segments and campaigns — far more work per event than the peer's counters.

The peer gets a fresh database ``bench_<run_id>_peer`` (dropped at the end); LoopCRM a
fresh schema and topic (dropped at the end).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib.metadata import version
from typing import Any

import orjson
import psycopg2
import sqlalchemy as sa
from eventsourcing.application import Application
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresFactory, PostgresTrackingRecorder
from eventsourcing.projection import Projection, ProjectionRunner
from eventsourcing.utils import Environment
from psycopg.sql import SQL, Identifier

from bench.core import BenchContext, Figure
from bench.pipeline import delete_topics
from events.codec import encode_event, partition_key
from events.kafka import KafkaEventLog
from producers.synthetic import SyntheticTouchpoints
from projections.runner import catch_up
from projections.sql import create_engine_for
from projections.store import SqlProjectionStore
from schemas import Envelope

SECTION = "peer"
APPEND_BATCH = 1_000
PROJECTION_BATCH = 20_000  # projections.runner.catch_up's default
_NAMESPACE = uuid.UUID("0b6c1f5e-3d2a-4f7b-9a41-6c8e2d5f7a90")
_TIMEOUT_S = 1_800.0


# -- the peer's domain: one event stream (aggregate) per partition key -----------------


class CustomerStream(Aggregate):
    """A key's events; it folds nothing, it only orders and versions them."""

    class Started(Aggregate.Created):
        envelope: dict[str, Any]

    class Touched(Aggregate.Event):
        envelope: dict[str, Any]

    def __init__(self, envelope: dict[str, Any]) -> None:
        pass

    @classmethod
    def start(cls, key: str, envelope: dict[str, Any]) -> CustomerStream:
        return cls._create(cls.Started, id=uuid.uuid5(_NAMESPACE, key), envelope=envelope)

    def touch(self, envelope: dict[str, Any]) -> None:
        self.trigger_event(self.Touched, envelope=envelope)


class PeerCrm(Application[uuid.UUID]):
    """The peer application; its events table is ``peercrm_events``."""

    name = "PeerCrm"


# -- the peer's projection: per-key counters with tracking in the same transaction -----


@dataclass
class _Delta:
    events: int = 0
    orders: int = 0
    revenue: Decimal = Decimal(0)
    last_seen: str = ""

    def add(self, envelope: dict[str, Any]) -> None:
        self.events += 1
        payload = envelope.get("payload") or {}
        if envelope["type"] == "order.placed":
            self.orders += 1
            self.revenue += Decimal(payload["total"])
        elif envelope["type"] == "order.returned":
            self.revenue -= Decimal(payload["refund_amount"])
        self.last_seen = max(self.last_seen, envelope["occurred_at"])


class CustomerCounters(PostgresTrackingRecorder):
    """The materialised view: a counters table beside the library's tracking table."""

    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        table = self.tracking_table_name.removesuffix("_tracking") + "_counters"
        self.counters = Identifier(self.datastore.schema or "public", table)
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {0} (customer uuid PRIMARY KEY, "
                "event_count bigint NOT NULL, order_count bigint NOT NULL, "
                "revenue numeric NOT NULL, last_seen timestamptz NOT NULL)"
            ).format(self.counters)
        )
        self.upsert = SQL(
            "INSERT INTO {0} AS c VALUES (%s, %s, %s, %s, %s) ON CONFLICT (customer) DO UPDATE "
            "SET event_count = c.event_count + excluded.event_count, "
            "order_count = c.order_count + excluded.order_count, "
            "revenue = c.revenue + excluded.revenue, "
            "last_seen = greatest(c.last_seen, excluded.last_seen)"
        ).format(self.counters)

    def apply(self, deltas: dict[uuid.UUID, _Delta], tracking: Tracking) -> None:
        """Upsert the counters and record ``tracking``, in one transaction."""
        rows = [(k, d.events, d.orders, d.revenue, d.last_seen) for k, d in deltas.items()]
        with self.datastore.transaction(commit=True) as curs:
            curs.executemany(self.upsert, rows)
            self._insert_tracking(curs, tracking)
        self.after_apply(tracking)

    def after_apply(self, tracking: Tracking) -> None:
        pass

    def totals(self) -> tuple[int, int, Decimal]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                SQL(
                    "SELECT coalesce(sum(event_count), 0) AS e, coalesce(sum(order_count), 0) "
                    "AS o, coalesce(sum(revenue), 0) AS r FROM {0}"
                ).format(self.counters)
            )
            row = curs.fetchone()
            assert row is not None
            return int(row["e"]), int(row["o"]), Decimal(row["r"])


class CountersProjection(Projection[CustomerCounters]):
    """The library's idiom: one ``process_event`` (one transaction) per event."""

    name = "peer_counters"

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.insert_tracking(tracking)

    @process_event.register
    def _started(self, domain_event: CustomerStream.Started, tracking: Tracking) -> None:
        self._count(domain_event.originator_id, domain_event.envelope, tracking)

    @process_event.register
    def _touched(self, domain_event: CustomerStream.Touched, tracking: Tracking) -> None:
        self._count(domain_event.originator_id, domain_event.envelope, tracking)

    def _count(self, key: uuid.UUID, envelope: dict[str, Any], tracking: Tracking) -> None:
        delta = _Delta()
        delta.add(envelope)
        self.view.apply({key: delta}, tracking)


# -- running it -----------------------------------------------------------------------


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _pg_params(url: str) -> dict[str, Any]:
    parsed = sa.engine.make_url(url)
    return {
        "host": parsed.host or "127.0.0.1",
        "port": parsed.port or 5432,
        "user": parsed.username or "postgres",
        "password": parsed.password or "",
        "dbname": parsed.database or "postgres",
    }


@contextlib.contextmanager
def _fresh_database(url: str, name: str) -> Iterator[dict[str, Any]]:
    params = _pg_params(url)
    admin = psycopg2.connect(**params)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield {**params, "dbname": name}
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _library_env(params: dict[str, Any]) -> dict[str, str]:
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_HOST": str(params["host"]),
        "POSTGRES_PORT": str(params["port"]),
        "POSTGRES_USER": str(params["user"]),
        "POSTGRES_PASSWORD": str(params["password"]),
        "POSTGRES_DBNAME": str(params["dbname"]),
        "POSTGRES_SCHEMA": "public",
    }


def _peer_append(env: dict[str, str], items: list[tuple[str, dict[str, Any]]]) -> float:
    """Append in log order, one ``save`` (one transaction) per 1,000 events; ev/s."""
    app = PeerCrm(env=env)
    try:
        streams: dict[str, CustomerStream] = {}
        start = time.perf_counter()
        for chunk in _chunks(items, APPEND_BATCH):
            touched: dict[str, CustomerStream] = {}
            for key, envelope in chunk:
                stream = streams.get(key)
                if stream is None:
                    stream = streams[key] = CustomerStream.start(key, envelope)
                else:
                    stream.touch(envelope)
                touched[key] = stream
            app.save(*touched.values())
        elapsed = time.perf_counter() - start
        stored = app.recorder.max_notification_id() or 0
        if stored != len(items):
            raise AssertionError(f"eventsourcing stored {stored} of {len(items)} events")
        return len(items) / elapsed
    finally:
        app.close()


def _peer_runner_projection(
    env: dict[str, str], target: int, expected: tuple[int, int, Decimal]
) -> float:
    """The library's ``ProjectionRunner``, from construction to caught up; ev/s."""
    done = threading.Event()
    finished: list[float] = []

    class View(CustomerCounters):
        def after_apply(self, tracking: Tracking) -> None:
            if tracking.notification_id >= target and not done.is_set():
                finished.append(time.perf_counter())
                done.set()

    # Create the view's tables first, so the timed part is the processing.
    with contextlib.closing(PostgresFactory(Environment(CountersProjection.name, env))) as factory:
        factory.tracking_recorder(View)
    start = time.perf_counter()
    runner = ProjectionRunner(
        application_class=PeerCrm,
        projection_class=CountersProjection,
        view_class=View,
        env=env,
    )
    with runner:
        deadline = time.monotonic() + _TIMEOUT_S
        while not done.wait(0.2):
            if runner.is_interrupted.is_set() or time.monotonic() > deadline:
                break
        runner.wait(target, timeout=1.0)  # re-raises a processing error
    if not finished:
        raise AssertionError("the eventsourcing projection did not catch up")
    try:
        _check(runner.view, expected)
    finally:
        runner.view.datastore.close()
    return target / (finished[0] - start)


def _peer_batched_projection(
    env: dict[str, str], target: int, expected: tuple[int, int, Decimal]
) -> float:
    """A follower on the library's API, PROJECTION_BATCH events a transaction; ev/s."""
    name = "peer_counters_batched"
    factory = PostgresFactory(Environment(name, env))
    view = factory.tracking_recorder(CustomerCounters)
    start = time.perf_counter()
    app = PeerCrm(env=env)
    try:
        position = view.max_tracking_id(app.name) or 0
        while position < target:
            notifications = app.recorder.select_notifications(
                start=position, limit=PROJECTION_BATCH, inclusive_of_start=False
            )
            if not notifications:
                break
            deltas: dict[uuid.UUID, _Delta] = {}
            for notification in notifications:
                domain_event = app.mapper.to_domain_event(notification)
                if isinstance(domain_event, CustomerStream.Started | CustomerStream.Touched):
                    key = domain_event.originator_id
                    deltas.setdefault(key, _Delta()).add(domain_event.envelope)
            position = notifications[-1].id
            view.apply(deltas, Tracking(app.name, position))
        elapsed = time.perf_counter() - start
    finally:
        app.close()
    try:
        if position < target:
            raise AssertionError("the batched eventsourcing projection did not catch up")
        _check(view, expected)
    finally:
        factory.close()
    return target / elapsed


def _check(view: CustomerCounters, expected: tuple[int, int, Decimal]) -> None:
    if view.totals() != expected:
        raise AssertionError(f"peer counters {view.totals()} != expected {expected}")


def _loopcrm_projection(ctx: BenchContext, events: list[Envelope]) -> tuple[float, float, int]:
    """Append to a fresh topic, then ``catch_up`` into a fresh schema; ev/s twice."""
    topic, schema = ctx.name("peer_log"), ctx.name("peer_crm")
    event_log = KafkaEventLog(ctx.kafka_bootstrap, topic)
    engine = create_engine_for(ctx.database_url, None)  # type: ignore[arg-type]
    try:
        start = time.perf_counter()
        for chunk in _chunks(events, APPEND_BATCH):
            event_log.append(chunk)
        append_rate = len(events) / (time.perf_counter() - start)
        store = SqlProjectionStore(engine, schema=schema)
        store.create()
        start = time.perf_counter()
        applied = catch_up(event_log, store)
        project_rate = applied / (time.perf_counter() - start)
        if applied != len(events):
            raise AssertionError(f"LoopCRM applied {applied} of {len(events)} records")
        timeline = store.overview()["timeline events"]
        return append_rate, project_rate, timeline
    finally:
        event_log.close()
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()
        delete_topics(ctx.kafka_bootstrap, [topic])


def _expected(items: list[tuple[str, dict[str, Any]]]) -> tuple[int, int, Decimal]:
    total = _Delta()
    for _, envelope in items:
        total.add(envelope)
    return total.events, total.orders, total.revenue


def run(ctx: BenchContext) -> list[Figure]:
    sizes = ctx.sizes
    start_at = datetime.now(UTC) - timedelta(days=366)
    events = list(
        SyntheticTouchpoints(customers=sizes.customers, seed=1, start=start_at, days=365).events(
            sizes.peer_events
        )
    )
    # The wire JSON each side stores, and LoopCRM's partition key as the aggregate key.
    items = [(partition_key(e).decode(), orjson.loads(encode_event(e))) for e in events]
    keys = len({key for key, _ in items})
    expected = _expected(items)
    versions = ", ".join(
        f"{p} {version(p)}" for p in ("eventsourcing", "psycopg", "kafka-python", "sqlalchemy")
    )
    ctx.log(f"peer: {len(events):,} events over {keys:,} keys ({versions})")

    with _fresh_database(ctx.database_url, ctx.name("peer")) as params:
        env = _library_env(params)
        append_rate = _peer_append(env, items)
        ctx.log(f"peer: eventsourcing append {append_rate:,.0f} ev/s")
        runner_rate = _peer_runner_projection(env, len(items), expected)
        ctx.log(f"peer: eventsourcing ProjectionRunner {runner_rate:,.0f} ev/s")
        batched_rate = _peer_batched_projection(env, len(items), expected)
        ctx.log(f"peer: eventsourcing batched follower {batched_rate:,.0f} ev/s")

    ours_append, ours_rate, timeline = _loopcrm_projection(ctx, events)
    ctx.log(f"peer: LoopCRM projection {ours_rate:,.0f} ev/s (append {ours_append:,.0f} ev/s)")

    peer_rate = max(runner_rate, batched_rate)
    peer_how = "batched follower" if batched_rate >= runner_rate else "ProjectionRunner"
    common = (
        f"{len(events):,} SyntheticTouchpoints events (seed 1) over {keys:,} keys; {versions}; "
        "PostgreSQL on this machine, fresh database/schema each"
    )
    return [
        Figure(
            SECTION,
            "eventsourcing append",
            append_rate,
            "ev/s",
            notes=(
                f"{common}. One aggregate per LoopCRM partition key; each domain event carries "
                f"the event's wire JSON; one Application.save of every touched aggregate per "
                f"{APPEND_BATCH:,} events (one transaction). LoopCRM's Kafka append of the same "
                f"events, {APPEND_BATCH:,} a batch, acks=all: {ours_append:,.0f} ev/s."
            ),
        ),
        Figure(
            SECTION,
            "eventsourcing projection",
            peer_rate,
            "ev/s",
            notes=(
                f"{common}. Per-key counters (events, orders, net revenue, last seen) with "
                "tracking records in the same transaction, start to caught up. "
                f"ProjectionRunner (one transaction per event): {runner_rate:,.0f} ev/s; "
                f"batched follower on select_notifications ({PROJECTION_BATCH:,} per "
                f"transaction): {batched_rate:,.0f} ev/s; the figure is the faster "
                f"({peer_how}). Counter totals checked against the events."
            ),
        ),
        Figure(
            SECTION,
            "LoopCRM projection vs eventsourcing projection",
            ours_rate,
            "ev/s",
            baseline=peer_rate,
            baseline_name=f"eventsourcing projection ({peer_how})",
            target="≥ 3× the peer",  # noqa: RUF001
            notes=(
                f"{common}. LoopCRM: catch_up from a fresh Kafka topic (6 partitions) into a "
                f"fresh SqlProjectionStore schema, {PROJECTION_BATCH:,} records a transaction "
                "with checkpoints; it does identity resolution, the customer 360, the timeline "
                f"({timeline:,} rows) and segment checks, far more per event than the peer's "
                "counters."
            ),
        ),
    ]

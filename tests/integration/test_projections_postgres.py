"""The single customer view on real Kafka + PostgreSQL: the specification, concurrent
workers on overlapping customers, and replay (blue/green and as-of) row for row."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from auth.store import SqlApiKeyStore
from crm.devservices.testing import TestServices
from events.kafka import KafkaEventLog
from privacy.keystore import SqlKeyStore
from producers.synthetic import SyntheticTouchpoints
from projections.replay import RETAIN, ReplaySource, rebuild
from projections.runner import catch_up
from projections.store import SqlProjectionStore, outbox_publisher
from projections.tables import metadata
from tests.projection_harness import TOPIC, as_records, expected, projected
from tests.unit.test_live_customers import check_live_customers

ROW_TABLES = [
    "customers",
    "timeline",
    "identity_nodes",
    "identity_edges",
    "customer_aliases",
    "checkpoints",
]


def _store(engine: sa.Engine, schema: str, **kwargs: Any) -> SqlProjectionStore:
    store = SqlProjectionStore(engine, schema=schema, **kwargs)
    store.create()
    return store


def _apply_concurrently(store: SqlProjectionStore, work: list[tuple[list[Any], int]]) -> None:
    """One thread per (records, batch size), each applying its records in batches."""
    errors: list[BaseException] = []

    def apply(records: list[Any], size: int) -> None:
        try:
            for start in range(0, len(records), size):
                store.apply_batch(TOPIC, records[start : start + size])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=apply, args=job) for job in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors


def _rows(engine: sa.Engine, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    mapped = engine.execution_options(schema_translate_map={None: schema})
    out = {}
    with mapped.connect() as conn:
        for name in ROW_TABLES:
            table = metadata.tables[name]
            key = [c for c in table.primary_key.columns]
            out[name] = [tuple(r) for r in conn.execute(sa.select(table).order_by(*key))]
    return out


def test_postgres_store_meets_the_specification(engine: sa.Engine) -> None:
    events = list(SyntheticTouchpoints(customers=150, seed=21).events(3_000))
    store = _store(engine, f"spec_{uuid.uuid4().hex[:8]}")
    records = as_records(events + events[:300])  # with duplicates
    for start in range(0, len(records), 250):
        store.apply_batch(TOPIC, records[start : start + 250])
    assert projected(store) == expected(events, store.shared_threshold)


def test_concurrent_workers_on_shared_customers_match_one_worker(engine: sa.Engine) -> None:
    """Two workers own different partitions whose events link the same customers."""
    events = list(SyntheticTouchpoints(customers=120, seed=8).events(4_000))
    store = _store(engine, f"conc_{uuid.uuid4().hex[:8]}")
    parts = [as_records(events[i::2], partition=i) for i in (0, 1)]
    _apply_concurrently(store, [(parts[0], 100), (parts[1], 100)])
    assert projected(store) == expected(events, store.shared_threshold)
    assert store.checkpoints(TOPIC) == {0: len(parts[0]), 1: len(parts[1])}


def test_a_batch_touching_more_identifiers_than_the_lock_table_holds(
    engine: sa.Engine,
) -> None:
    """One advisory lock per identifier would overflow PostgreSQL's shared lock table
    (max_locks_per_transaction x max_connections) on a big catch-up batch."""
    with engine.connect() as conn:
        per_tx = int(conn.execute(sa.text("SHOW max_locks_per_transaction")).scalar_one())
        connections = int(conn.execute(sa.text("SHOW max_connections")).scalar_one())
    capacity = per_tx * connections
    events = list(SyntheticTouchpoints(customers=capacity, seed=4).events(capacity + 2_000))
    identifiers = {
        (kind, value)
        for event in events
        if event.identifiers is not None
        for kind, value in event.identifiers.present()
    }
    assert len(identifiers) > capacity
    store = _store(engine, f"big_{uuid.uuid4().hex[:8]}")
    store.apply_batch(TOPIC, as_records(events))
    assert projected(store) == expected(events, store.shared_threshold)


def test_big_and_small_batches_of_concurrent_workers_match_one_worker(
    engine: sa.Engine,
) -> None:
    """A worker catching up (batches over FINE_LOCKS_MAX: the exclusive batch lock) and
    one applying small batches (shared lock + one per identifier) on linked customers."""
    events = list(SyntheticTouchpoints(customers=600, seed=9).events(6_000))
    store = _store(engine, f"mixed_{uuid.uuid4().hex[:8]}")
    parts = [as_records(events[i::2], partition=i) for i in (0, 1)]
    _apply_concurrently(store, [(parts[0], 2_000), (parts[1], 50)])
    assert projected(store) == expected(events, store.shared_threshold)
    assert store.checkpoints(TOPIC) == {0: len(parts[0]), 1: len(parts[1])}


@pytest.mark.parametrize("retain", [RETAIN, 150], ids=["retained", "written-when-150-kept"])
def test_replay_rebuilds_identical_projections_and_as_of_state(
    services: TestServices,
    engine: sa.Engine,
    capsys: pytest.CaptureFixture[str],
    retain: int,
) -> None:
    """A rebuild keeps customers in memory between batches: all of them (the default
    limit is above this log's), or writing them whenever more than 150 are kept."""
    topic = f"replay-{uuid.uuid4().hex[:8]}"
    schema = f"live_{uuid.uuid4().hex[:8]}"
    event_log = KafkaEventLog(services.kafka_bootstrap, topic, partitions=4)
    dead = KafkaEventLog(services.kafka_bootstrap, f"{topic}-dlq", partitions=1)
    store = _store(engine, schema, publish=outbox_publisher(event_log, dead))
    source = ReplaySource(services.database_url, schema, None, store.shared_threshold)  # type: ignore[arg-type]
    try:
        generator = SyntheticTouchpoints(customers=400, seed=4)
        events = list(generator.events(12_000))
        first, second = events[:6_000], events[6_000:]
        for start in range(0, len(first), 500):
            event_log.append(first[start : start + 500])
        time.sleep(0.05)
        cut = datetime.now(UTC)
        time.sleep(0.05)
        for start in range(0, len(second), 500):
            event_log.append(second[start : start + 500])
        while catch_up(event_log, store, batch_size=300):  # live, in small batches,
            pass  # until its own merge events are read back too
        live = _rows(engine, schema)

        result = rebuild(event_log, source, batch_size=5_000, retain=retain)
        assert result.switched and result.target == schema
        assert _rows(engine, schema) == live, "the rebuild differs from the live projections"

        as_of = rebuild(event_log, source, as_of=cut, retain=retain)
        assert not as_of.switched
        as_of_store = SqlProjectionStore(engine, schema=as_of.target)
        want = expected(first, store.shared_threshold)
        assert projected(as_of_store) == want
        with capsys.disabled():
            print(
                f"\n[figures] replay of {result.records:,} records into PostgreSQL: "
                f"{result.seconds:.1f}s ({result.records / result.seconds:,.0f} ev/s)"
            )
    finally:
        event_log.close()
        dead.close()


def _hold_timeline_row(conn: sa.Connection, schema: str, event_id: str) -> None:
    """Insert (not commit) a timeline row under ``event_id``: a COPY of that id waits
    until ``conn`` commits (then fails on the duplicate) or rolls back."""
    conn.execute(
        sa.text(
            f'INSERT INTO "{schema}".timeline (event_id, customer_id, occurred_at, type, '
            "channel, source_system, nodes, event) "
            "VALUES (:e, 'held', now(), 't', 'web', 's', '[]', '{}')"
        ),
        {"e": event_id},
    )


def _in_thread(work: Any) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def _timeline_count(engine: sa.Engine, schema: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f'SELECT count(*) FROM "{schema}".timeline')).scalar_one())


def test_a_rebuild_goes_on_while_its_timeline_is_written(engine: sa.Engine, schema: str) -> None:
    """A rebuild's batch returns before PostgreSQL has its timeline rows (a thread COPYs
    them); the next batch drops the events those rows hold, and waits for them before
    it reads or changes the timeline. Its result is the projection of the events."""
    events = list(SyntheticTouchpoints(customers=60, seed=8).events(1_200))
    store = _store(engine, schema, live=False, retain=RETAIN)
    first = as_records(events[:600])
    again = as_records(events[500:], start=600)  # 100 events of the first batch again
    with engine.connect() as holder:
        _hold_timeline_row(holder, schema, str(events[599].event_id))
        applying, errors = _in_thread(lambda: store.apply_batch(TOPIC, first))
        applying.join(30)
        assert not applying.is_alive(), "the batch waited for its timeline to be written"
        assert not errors, errors
        assert _timeline_count(engine, schema) == 0
        following, errors = _in_thread(lambda: store.apply_batch(TOPIC, again))
        following.join(2)
        assert following.is_alive(), "the next batch did not wait for the timeline"
        holder.rollback()
    following.join(60)
    assert not errors, errors
    store.write_retained()
    assert _timeline_count(engine, schema) == len(events)
    assert projected(store) == expected(events, store.shared_threshold)


def test_a_rebuild_stops_when_its_timeline_cannot_be_written(
    engine: sa.Engine, schema: str
) -> None:
    events = list(SyntheticTouchpoints(customers=30, seed=9).events(400))
    store = _store(engine, schema, live=False, retain=RETAIN)
    with engine.connect() as holder:
        _hold_timeline_row(holder, schema, str(events[199].event_id))
        applying, errors = _in_thread(lambda: store.apply_batch(TOPIC, as_records(events[:200])))
        applying.join(30)
        assert not applying.is_alive() and not errors, errors
        holder.commit()  # the COPY now fails on the duplicate key
    with pytest.raises(RuntimeError, match="writing the rebuild's timeline failed"):
        store.apply_batch(TOPIC, as_records(events[200:], start=200))
    with pytest.raises(RuntimeError, match="start the rebuild again"):
        store.apply_batch(TOPIC, as_records(events[200:], start=200))


def test_processes_starting_at_once_on_a_fresh_database_all_create_their_schema(
    engine: sa.Engine, schema: str
) -> None:
    """Workers scaled out (and an API beside them) create the same schema and tables at
    the same moment: none of them may fail on PostgreSQL's catalog unique violations."""
    makers = [
        lambda: _store(engine, schema),
        lambda: SqlKeyStore(engine, b"k" * 32, schema=schema),
        lambda: SqlApiKeyStore(engine, schema),
    ]
    start = threading.Barrier(3 * len(makers))
    errors: list[BaseException] = []

    def make(factory: Any) -> None:
        start.wait()
        try:
            factory()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=make, args=(m,)) for m in makers * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names(schema=schema))
    assert {"customers", "timeline", "checkpoints"} <= tables


def test_aliases_lead_to_the_live_customer_on_postgres(engine: sa.Engine, schema: str) -> None:
    check_live_customers(_store(engine, schema))


def test_a_process_starting_beside_a_batch_in_progress_does_not_wait_for_it(
    engine: sa.Engine, schema: str
) -> None:
    """A worker (or the API) starting while another worker's batch holds its tables
    creates nothing on an up-to-date schema, so it neither waits for that batch nor
    deadlocks with it (``CREATE INDEX IF NOT EXISTS`` would lock every table)."""
    _start_every_store(engine, schema)
    with engine.connect() as batch, batch.begin():
        names = ", ".join(f'"{schema}"."{t.name}"' for t in metadata.sorted_tables)
        batch.execute(sa.text(f"LOCK TABLE {names} IN ROW EXCLUSIVE MODE"))
        started: list[str] = []
        errors: list[BaseException] = []

        def start() -> None:
            try:
                _start_every_store(engine, schema)
                started.append("all")
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=start, daemon=True)
        thread.start()
        thread.join(10)
        assert not errors, errors
        assert started == ["all"], "starting waited for the batch in progress"


def _start_every_store(engine: sa.Engine, schema: str) -> None:
    """What a worker and the API create at start: projections, data keys, API keys."""
    _store(engine, schema)
    SqlKeyStore(engine, b"k" * 32, schema=schema)
    SqlApiKeyStore(engine, schema)


INDEX = "timeline_by_customer"  # stands for an index a later release adds


def _index_state(engine: sa.Engine, schema: str) -> bool | None:
    """Whether ``INDEX`` is valid, or None when it is missing."""
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :schema AND c.relname = :name"
            ),
            {"schema": schema, "name": INDEX},
        ).scalar_one_or_none()


def test_an_index_missing_from_a_live_schema_is_built_while_workers_write(
    engine: sa.Engine, schema: str
) -> None:
    """Upgrading beside busy workers: the missing index is built without blocking their
    writes (a plain ``CREATE INDEX`` queues every new writer of the table behind it
    until a batch in progress ends and the whole build is done)."""
    store = _store(engine, schema)
    store.apply_batch(TOPIC, as_records(list(SyntheticTouchpoints(customers=20).events(200))))
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP INDEX "{schema}"."{INDEX}"'))
    timeline = f'"{schema}"."timeline"'
    errors: list[BaseException] = []
    with engine.connect() as batch, batch.begin():  # a worker's batch in progress
        batch.execute(sa.text(f"LOCK TABLE {timeline} IN ROW EXCLUSIVE MODE"))
        starting = threading.Thread(
            target=lambda: _collect(errors, lambda: _store(engine, schema)), daemon=True
        )
        starting.start()
        _wait_until_running(engine, "CREATE INDEX")  # and waiting for the batch to end
        with engine.connect() as other, other.begin():  # the next batch of another worker
            other.execute(sa.text("SET LOCAL lock_timeout = '3s'"))
            other.execute(sa.text(f"UPDATE {timeline} SET customer_id = customer_id"))
        assert starting.is_alive(), "a concurrent build waits for the batch in progress"
    starting.join(30)
    assert not errors, errors
    assert _index_state(engine, schema) is True


def test_an_index_left_invalid_by_a_failed_build_is_built_again(
    engine: sa.Engine, schema: str
) -> None:
    _store(engine, schema)
    with engine.begin() as conn:  # what a killed CREATE INDEX CONCURRENTLY leaves
        conn.execute(
            sa.text(
                "UPDATE pg_index SET indisvalid = false WHERE indexrelid = CAST(:name AS regclass)"
            ),
            {"name": f'"{schema}"."{INDEX}"'},
        )
    assert _index_state(engine, schema) is False
    _store(engine, schema)
    assert _index_state(engine, schema) is True


def test_processes_starting_at_once_build_a_missing_index_once(
    engine: sa.Engine, schema: str
) -> None:
    _store(engine, schema)
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP INDEX "{schema}"."{INDEX}"'))
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def make() -> None:
        start.wait()
        _collect(errors, lambda: _store(engine, schema))

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert _index_state(engine, schema) is True


def _wait_until_running(engine: sa.Engine, statement: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            running = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE state = 'active' AND query LIKE :pattern"
                ),
                {"pattern": f"{statement}%"},
            ).scalar_one()
            conn.rollback()
            if running:
                return
            time.sleep(0.05)
    raise AssertionError(f"no {statement} ran within {timeout} s")


def _collect(errors: list[BaseException], call: Any) -> None:
    try:
        call()
    except BaseException as exc:
        errors.append(exc)

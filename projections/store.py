"""The projection store: applies batches of log records to SQL projections.

One batch is one transaction holding the projection rows *and* the checkpoints
``(topic, partition, next_offset)``; records below a checkpoint are skipped, so a
redelivered batch changes nothing (exactly-once effect). Within the transaction:

1. records are decoded; undecodable ones become dead letters (outbox, with the reason);
2. events already in the timeline are dropped (the timeline is the dedupe record);
3. identity resolution (``projections.identity``) maps each event to a customer,
   merging customers an event links, and splitting one when a shared identifier is
   detected; merges are appended to the log as ``identity.merged`` (via the outbox);
4. each event is folded into its customer's 360 state and added to the timeline;
5. live (not in a rebuild), the closed loop's decisions follow (``projections.loop``):
   orders are attributed to campaigns and changed customers are checked against the
   active segment rules; the resulting events are applied in place *and* published
   (outbox), so their return trip through the log is a no-op (timeline dedupe) and a
   rebuild, which only reads the log, reproduces the same projections;
6. definitions (segments, campaigns, assessment runs) are projected into their tables,
   and each changed customer's rows (facts columns, current segments, campaigns) are
   rewritten from its state.

Concurrent workers (PostgreSQL) take advisory locks on the identifiers and customers a
batch touches, in sorted order, and re-check the mapping after locking. A batch touching
more than ``FINE_LOCKS_MAX`` of them takes one exclusive batch lock instead (small
batches hold it shared): PostgreSQL's lock table holds only ``max_locks_per_transaction``
x ``max_connections`` locks (6,400 by default) for the whole server, and a catch-up
batch of 10,000 events over as many customers would need more.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from events.codec import decode_json, to_record
from events.gcpause import collection_paused
from events.log import EventLog, LogRecord, OutgoingRecord
from privacy.crypto import IdentifierHasher, redact, sealed_kid
from projections import identity as ident
from projections import loop
from projections.customer import CustomerState
from projections.facts import facts_of
from projections.queries import live_customer, live_customers
from projections.segment_rules import predicate
from projections.sql import (
    RawJson,
    advisory_key,
    chunks,
    copy_in,
    copy_statement,
    create_missing_indexes,
    create_schema,
    insert_for,
    insert_fresh,
    insert_ignore,
    insert_new,
    is_postgres,
    lock_keys,
    one_of,
    qualified_name,
    replace_values,
    upsert,
    upsert_fresh,
)
from projections.tables import (
    assessment_runs,
    campaigns,
    checkpoints,
    customer_aliases,
    customer_campaigns,
    customer_segments,
    customers,
    deferred_events,
    identity_edges,
    identity_nodes,
    metadata,
    notify_on_checkpoints,
    outbox,
    segment_definitions,
    segment_history,
    timeline,
)
from schemas import (
    AssessmentCompleted,
    CampaignLaunched,
    Channel,
    CustomerErased,
    CustomerErasureRequested,
    Envelope,
    EventPayload,
    EventValidationError,
    Identifiers,
    IdentityMerged,
    IdentitySplit,
    LinkingIdentifier,
    OrderPlaced,
    SegmentDefined,
    SegmentEntered,
    SegmentExited,
    SegmentRetired,
    Source,
    new_event,
    parse_event,
)
from schemas.rules import parse_rule

if TYPE_CHECKING:
    from privacy.protect import Protector

log = logging.getLogger(__name__)

DERIVED_NAMESPACE = uuid.UUID("6f1c8f4e-8a7d-4a53-9f0e-3c9b2d7e5a10")
SYSTEM_SOURCE = Source(system="loopcrm-projections", channel=Channel.SYSTEM)
IGNORED_TYPES = frozenset({"identity.split"})  # history of the projection itself
SWITCH_LOCK = "crm:replay-switch"
BATCH_LOCK = "crm:projection-batch"
FINE_LOCKS_MAX = 1_000
OUTBOX_RECHECK_S = 5.0  # how often publish_outbox looks for rows it did not write
OUTBOX_PAGE = 1_000
_RETRYABLE = ("40P01", "40001")  # deadlock detected, serialization failure
_DEFINITIONS = (SegmentDefined, SegmentRetired, CampaignLaunched, AssessmentCompleted)
_TICK = timedelta(milliseconds=1)


@dataclass
class _Node:
    customer_id: str | None
    shared: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    dirty: bool = False
    value: str | None = None
    new: bool = False
    """Not stored yet: its row is COPYed in rather than upserted."""


@dataclass
class _Retained:
    """What a rebuild keeps in memory from one batch to the next (``retain``).

    A rebuild's schema has no readers until it is switched in, so its customers need
    not be written after every batch: they stay here, are folded on by later batches,
    and are written once, when the cache outgrows ``limit`` and at the end of the
    rebuild (``SqlProjectionStore.write_retained``). Identity nodes stay too (their
    rows are still written by every batch: splits and erasures read them back).
    """

    limit: int
    nodes: dict[str, _Node] = field(default_factory=dict)
    customers: dict[str, _Customer] = field(default_factory=dict)
    broken: bool = False
    """A batch failed after changing retained states in place: nothing they hold can be
    trusted, so the store refuses further batches (the rebuild starts again)."""
    timeline: _TimelineWriter | None = None
    """PostgreSQL: writes each batch's timeline while the next batch is decoded."""
    moved: dict[str, str] = field(default_factory=dict)
    """Merged customer -> its survivor, for the nodes still naming the merged one: a node
    is re-pointed when a batch reads it (``current``), not by a walk over all nodes
    after every batch with merges (hundreds of thousands: ~5 s of a rebuild of 1M
    events). Never holds a customer that exists: ``repoint`` empties it first."""

    def current(self, customer_id: str | None) -> str | None:
        while customer_id in self.moved:
            customer_id = self.moved[customer_id]
        return customer_id

    def repoint(self, drop: Collection[str] = ()) -> None:
        """Point every node at its customer's survivor, and forget the merges; and the
        nodes of the customers in ``drop`` (in the same walk over them all)."""
        if not self.moved and not drop:
            return
        dropped = []
        for name, node in self.nodes.items():
            if node.customer_id in self.moved:
                node.customer_id = self.current(node.customer_id)
            if node.customer_id in drop:
                dropped.append(name)
        for name in dropped:
            del self.nodes[name]
        self.moved.clear()


class _TimelineWriter:
    """A rebuild's timeline rows of a batch, COPYed by a thread on a connection of its
    own while the next batch goes on; ``wait`` returns once they are committed, or
    raises what failed.

    The timeline's COPY was a rebuild's longest wait: ~22 s of 174 for 1,000,000 events,
    PostgreSQL working and the rebuild idle. A rebuild's schema has no readers, and a
    rebuild that fails starts again in a new one, so a batch's timeline need not commit
    with the batch. The thread only waits on PostgreSQL (the COPY's text is made before;
    made in the thread, it held the GIL against the rebuild, which then took longer).
    While it runs, the next batch is decoded and its events checked against what the
    timeline holds or ``pending`` will add; ``_Batch._process`` waits for it before
    anything reads or changes the timeline.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.pending: set[str] = set()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        self.wait()
        if not rows:
            return
        sql, text = copy_statement(conn, timeline, rows)
        self.pending = {row["event_id"] for row in rows}
        self._thread = threading.Thread(
            target=self._write, args=(sql, text), name="loopcrm-timeline-writer"
        )
        self._thread.start()

    def _write(self, sql: str, text: str) -> None:
        try:
            raw = self.engine.raw_connection()
            try:
                cursor = raw.cursor()
                copy_in(cursor, sql, text)
                cursor.close()
                raw.commit()
            finally:
                raw.close()
        except BaseException as exc:  # raised by ``wait``
            self._error = exc

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self.pending = set()
        if self._error is not None:
            raise RuntimeError("writing the rebuild's timeline failed") from self._error


@dataclass
class _Customer:
    anchor: str
    state: CustomerState
    new: bool
    dirty: bool = False
    stored: Any = None
    """The stored state's segments and campaigns (JSON): their rows are rewritten only
    when these change."""
    facts: dict[str, Any] | None = None
    """``facts_of(state)`` while the state has not changed since (segment evaluation
    computes them; the customer row reuses them)."""


Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SqlProjectionStore:
    """Customer 360, timeline and identity projections in PostgreSQL or SQLite."""

    def __init__(
        self,
        engine: Engine,
        *,
        schema: str | None = "crm",
        shared_threshold: int = ident.DEFAULT_SHARED_THRESHOLD,
        publish: Callable[[str, Sequence[OutgoingRecord]], None] | None = None,
        live: bool = True,
        clock: Clock = _utcnow,
        protector: Protector | None = None,
        async_commit: bool = True,
        retain: int = 0,
    ) -> None:
        """``live=False`` for a rebuild: it must not wait for the replay switch lock, and
        takes no closed-loop decisions (they are in the log already). ``clock`` is "now"
        for segment rules such as "within the last 90 days". ``protector`` opens sealed
        personal data, hashes personal identifiers and destroys keys on erasure; without
        it identifiers are matched as they come (tests of plain events).

        ``async_commit`` (PostgreSQL): a batch that derived no events commits without
        waiting for its WAL flush (``synchronous_commit = off``). The projections are
        rebuilt from the log: if PostgreSQL crashes, it loses the last few hundred ms of
        such batches together with their checkpoints, never half a batch, and the
        processor applies them again. A batch with derived events or dead letters
        commits durably, because its outbox goes to Kafka right after.

        ``retain`` (a rebuild only): keep up to that many customers' states in memory
        between batches and write them once (see ``_Retained``); 0 writes every batch's
        customers in its own transaction, as live."""
        if retain and live:
            raise ValueError("only a rebuild (live=False) may retain customers between batches")
        self._retained = _Retained(retain) if retain else None
        if self._retained is not None and is_postgres(engine):
            self._retained.timeline = _TimelineWriter(engine)
        self.live = live
        self.async_commit = async_commit
        self.protector = protector
        self.schema = schema if is_postgres(engine) else None
        self.engine = engine.execution_options(schema_translate_map={None: self.schema})
        self.shared_threshold = shared_threshold
        self.clock = clock
        self._publish = publish
        # Batches that derived events, counted once committed (1: a previous run's rows
        # may be waiting), how many of them the outbox was last found empty after, and
        # when (see ``publish_outbox``). A count, not a flag: a publisher on another
        # thread finding the outbox empty must not clear a batch committed meanwhile.
        self._derived_batches = 1
        self._outbox_done = 0
        self._outbox_checked = 0.0

    # -- lifecycle --------------------------------------------------------------------

    def create(self) -> None:
        """Create the schema, tables and indexes if missing (idempotent).

        An index added in a later release is built on an existing schema too, while
        workers go on writing (``create_missing_indexes``). On an up-to-date schema it
        takes no lock on a table, so a process starting beside busy workers (another
        worker, the API) neither waits for their batches nor deadlocks with them."""
        with self.engine.begin() as conn:
            create_schema(conn, self.schema)
            metadata.create_all(conn)
            if is_postgres(conn):
                notify_on_checkpoints(conn, self.schema)
        added = create_missing_indexes(self.engine, self.schema, metadata.sorted_tables)
        if added:
            log.info("created missing indexes: %s", ", ".join(added))

    def checkpoints(self, topic: str) -> dict[int, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(checkpoints.c.partition, checkpoints.c.next_offset).where(
                    checkpoints.c.topic == topic
                )
            )
            return {int(p): int(o) for p, o in rows}

    def resolve(self, customer_id: str) -> str | None:
        """The live customer id for ``customer_id`` (itself, or where its merges led)."""
        with self.engine.connect() as conn:
            return live_customer(conn, customer_id)

    def customer_for(self, kind: str, value: str) -> str | None:
        """The customer an identifier belongs to (``value`` as typed: it is normalised
        and, for a personal kind, hashed; ``ValueError`` if it is not valid)."""
        if self.protector is not None:
            value = self.protector.hasher.lookup(kind, value)
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(identity_nodes.c.customer_id).where(
                    identity_nodes.c.node == ident.node(kind, value)
                )
            ).scalar_one_or_none()

    def overview(self) -> dict[str, int]:
        """Headline counts of the single customer view."""
        queries = {
            "customers": sa.select(sa.func.count()).select_from(customers),
            "customers with orders": sa.select(sa.func.count()).where(customers.c.order_count > 0),
            "identifiers": sa.select(sa.func.count()).select_from(identity_nodes),
            "shared identifiers (not linking)": sa.select(sa.func.count()).where(
                identity_nodes.c.shared
            ),
            "merged ids (aliases)": sa.select(sa.func.count()).select_from(customer_aliases),
            "timeline events": sa.select(sa.func.count()).select_from(timeline),
        }
        with self.engine.connect() as conn:
            return {label: int(conn.execute(q).scalar_one()) for label, q in queries.items()}

    # -- applying ---------------------------------------------------------------------

    def apply_batch(self, topic: str, records: Sequence[LogRecord]) -> int:
        """Apply records in one transaction with their checkpoints; returns records applied."""
        for attempt in range(10):
            try:
                with collection_paused():
                    return self._apply_once(topic, records)
            except DBAPIError as exc:
                code = getattr(exc.orig, "pgcode", None)
                if code not in _RETRYABLE or attempt == 9 or self._retained:
                    raise
                log.info("batch conflicted with another worker (%s); retrying", code)
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def _apply_once(self, topic: str, records: Sequence[LogRecord]) -> int:
        """One attempt. The batch's objects are freed when this returns, before
        ``collection_paused`` collects the young generations (which would otherwise
        walk all of them: 33 ms for 5,000 events)."""
        with self._retaining(), self.engine.begin() as conn:
            batch = self._batch(conn)
            applied = batch.run(topic, records)
            retained = self._retained
            if retained and len(retained.customers) > retained.limit:
                batch.write_customers()
                retained.nodes.clear()
                retained.customers.clear()
                retained.moved.clear()
            if not batch.derived and self.async_commit and is_postgres(conn):
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
        if batch.derived:  # committed
            self._derived_batches += 1
        return applied

    def write_retained(self) -> int:
        """Write the customers a rebuild kept in memory (``retain``); returns how many."""
        retained = self._retained
        if retained is None:
            return 0
        with self._retaining():
            if retained.timeline is not None:
                retained.timeline.wait()
            with self.engine.begin() as conn:
                return self._batch(conn).write_customers()

    @contextmanager
    def _retaining(self) -> Iterator[None]:
        """Mark the retained states broken if a transaction that changed them fails."""
        retained = self._retained
        if retained is None:
            yield
            return
        if retained.broken:
            raise RuntimeError(
                "an earlier batch of this rebuild failed after changing the customers it "
                "keeps in memory; start the rebuild again"
            )
        try:
            yield
        except BaseException:
            retained.broken = True
            raise

    def _batch(self, conn: Connection) -> _Batch:
        return _Batch(
            conn,
            self.shared_threshold,
            self.live,
            self.clock,
            self.protector,
            self.schema or "",
            self._retained,
        )

    def apply_deferred(self, batch_size: int = 2_000) -> int:
        """Apply the events a rebuild set aside (see ``_Batch._defer``); returns how many."""
        applied = 0
        while True:
            with self._retaining(), self.engine.begin() as conn:
                rows = conn.execute(
                    sa.select(deferred_events)
                    .order_by(deferred_events.c.log_partition, deferred_events.c.log_offset)
                    .limit(batch_size)
                ).all()
                if not rows:
                    return applied
                self._batch(conn).run_deferred(rows)
                for row in rows:
                    conn.execute(
                        sa.delete(deferred_events).where(
                            deferred_events.c.log_partition == row.log_partition,
                            deferred_events.c.log_offset == row.log_offset,
                        )
                    )
            self._derived_batches += 1  # they may have derived events (a rebuild's are few)
            applied += len(rows)

    def publish_outbox(self) -> int:
        """Append pending derived events and dead letters to the log; returns how many.

        After a batch that derived nothing it skips the query (a transaction per batch),
        unless ``OUTBOX_RECHECK_S`` passed since the outbox was last found empty: rows
        can also come from elsewhere (another worker that failed before publishing,
        the live outbox a replay carries over)."""
        if self._publish is None:
            return 0
        now, derived = time.monotonic(), self._derived_batches
        if derived == self._outbox_done and now - self._outbox_checked < OUTBOX_RECHECK_S:
            return 0
        published = 0
        while True:
            with self.engine.begin() as conn:
                rows = conn.execute(
                    sa.select(outbox)
                    .order_by(outbox.c.seq)
                    .limit(OUTBOX_PAGE)
                    .with_for_update(skip_locked=True)
                    if is_postgres(conn)
                    else sa.select(outbox).order_by(outbox.c.seq).limit(OUTBOX_PAGE)
                ).all()
                if not rows:
                    self._outbox_done, self._outbox_checked = derived, now
                    return published
                by_target: dict[str, list[OutgoingRecord]] = defaultdict(list)
                for row in rows:
                    headers = tuple((k, v.encode()) for k, v in row.headers)
                    by_target[row.target].append(OutgoingRecord(row.key, row.value, headers))
                for target, batch in by_target.items():
                    self._publish(target, batch)
                conn.execute(sa.delete(outbox).where(outbox.c.seq.in_([r.seq for r in rows])))
                published += len(rows)
            if len(rows) < OUTBOX_PAGE:  # no other rows were visible: no need to look again
                self._outbox_done, self._outbox_checked = derived, now
                return published


def outbox_publisher(
    events_log: EventLog, deadletters_log: EventLog
) -> Callable[[str, Sequence[OutgoingRecord]], None]:
    logs = {"events": events_log, "deadletters": deadletters_log}

    def publish(target: str, records: Sequence[OutgoingRecord]) -> None:
        logs[target].append_records(records)

    return publish


class _Batch:
    """The unit of work of one batch: loaded rows, pending changes, and the rules.

    Pass 1 links: it stores the batch's new identity edges, updates neighbour counts,
    marks shared identifiers and splits the customers they had joined. Pass 2 resolves
    each event to its customer (merging customers an event links) and folds it in.
    """

    def __init__(
        self,
        conn: Connection,
        threshold: int,
        live: bool,
        clock: Clock,
        protector: Protector | None = None,
        lock_space: str = "",
        retained: _Retained | None = None,
    ) -> None:
        self.conn = conn
        self.retained = retained
        self.lock_space = lock_space  # the schema: batches of other schemas never wait
        self.protector = protector
        # redaction hashes identifiers; without a key store, with a throwaway key
        self.hasher = protector.hasher if protector else IdentifierHasher(os.urandom(32))
        self.plain: dict[str, str] = {}  # node -> plain value seen in this batch
        self.erasure_requests: list[tuple[str, Envelope]] = []
        self.erased: set[str] = set()  # customers erased in this batch: redact their rows
        self.kid_of: dict[str, str] = {}  # event id -> data key that sealed it
        self.told: set[str] = set()  # survivors of merges told in this batch
        self.absorbed: set[str] = set()  # erased customers that merged with others
        self.shred: set[str] = set()  # data keys of events of erased customers
        self.live = live
        self.clock = clock
        self.definitions: list[Envelope] = []
        self.orders: list[tuple[str, Envelope]] = []
        self.history_rows: list[dict[str, Any]] = []
        self.threshold = threshold
        self.nodes: dict[str, _Node] = retained.nodes if retained else {}
        self.customers: dict[str, _Customer] = retained.customers if retained else {}
        self.direct: dict[str, str] = {}
        self.touched: dict[str, None] = {}  # the identity nodes the batch read, in order
        self.alias_rows: list[dict[str, Any]] = []
        self.redirect: dict[str, str] = {}
        self.locked: set[str] = set()
        self.exclusive = False  # holds BATCH_LOCK exclusively: no finer locks needed
        self.timeline_rows: list[dict[str, Any]] = []
        self.outbox_rows: list[dict[str, Any]] = []
        self.derived = False  # rows went to the outbox: commit durably

    def run(self, topic: str, records: Sequence[LogRecord]) -> int:
        if self.live and is_postgres(self.conn):
            self.conn.execute(
                sa.text("SELECT pg_advisory_xact_lock_shared(:k)"),
                {"k": advisory_key(SWITCH_LOCK)},
            )
        done = self._lock_checkpoints(topic, {r.partition for r in records})
        fresh = [r for r in records if r.offset >= done.get(r.partition, 0)]
        if not fresh:
            return 0
        events = self._drop_known(self._decode(fresh))
        if not self.live:
            events = self._defer(events)
        self._process(events)
        ends: dict[int, int] = {}
        for r in fresh:
            ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
        upsert(
            self.conn,
            checkpoints,
            [{"topic": topic, "partition": p, "next_offset": o} for p, o in ends.items()],
            ["topic", "partition"],
        )
        return len(fresh)

    def run_deferred(self, rows: Sequence[Any]) -> None:
        """Apply events ``_defer`` set aside (rows of ``deferred_events``), in log order."""
        events = [
            (LogRecord("", row.log_partition, row.log_offset, 0, None, b""), event)
            for row, event in zip(rows, self._open([row.event for row in rows]), strict=True)
        ]
        self._process(self._drop_known(events))

    def _open(self, raws: Sequence[dict[str, Any]]) -> list[Envelope]:
        """Events from stored JSON (timeline, deferred), personal data opened if possible."""
        datas = [dict(raw) for raw in raws]
        if self.protector is not None:
            self.protector.open_all(datas)
        return [parse_event(data) for data in datas]

    def _nodes(self, event: Envelope) -> list[str]:
        """The event's identity nodes, personal identifiers as keyed hashes."""
        if event.identifiers is None:
            return []
        nodes = []
        for kind, value in event.identifiers.present():
            hashed = self.protector.node_value(kind, value) if self.protector else value
            name = ident.node(kind, hashed)
            if hashed != value:
                self.plain[name] = value
            nodes.append(name)
        return nodes

    def _process(self, events: list[tuple[LogRecord, Envelope]]) -> None:
        self._timeline_written()
        node_lists = [self._nodes(e) for _, e in events]
        self._load(node_lists)
        to_split = self._link(node_lists)
        if to_split:
            self._flush()
            self._timeline_written()
            self._forget(self._split(sorted(to_split), events[0][1]))
            self._load(node_lists, reload=True)
        self._write_definitions()
        for (record, event), event_nodes in zip(events, node_lists, strict=True):
            self._apply(self._resolve(event_nodes, event), event, event_nodes, record)
        if self.live:
            self._decide()
        self._flush()

    def _defer(self, events: list[tuple[LogRecord, Envelope]]) -> list[tuple[LogRecord, Envelope]]:
        """In a rebuild, set aside events that name their customer only by id.

        A rebuild reads partitions in any order, so such an event (a derived one, e.g.
        ``customer.assessed``) may come before the touchpoint events that make its
        customer; live, it always came after. Applied once the rebuild has read up to
        a position (``SqlProjectionStore.apply_deferred``), they resolve as they did live.
        """
        kept, deferred = [], []
        for record, event in events:
            nodes = ident.nodes_of(event.identifiers)
            if nodes and all(ident.kind_of(n) == "customer_id" for n in nodes):
                deferred.append(
                    {
                        "log_partition": record.partition,
                        "log_offset": record.offset,
                        # as read from the log (no re-serialising); derived events are dumped
                        "event": event.model_dump(mode="json")
                        if record is None or not record.value
                        else RawJson(record.value.decode()),
                    }
                )
            else:
                kept.append((record, event))
        insert_ignore(self.conn, deferred_events, deferred, ["log_partition", "log_offset"])
        return kept

    def _lock_checkpoints(self, topic: str, partitions: set[int]) -> dict[int, int]:
        """The batch's partitions' next offsets, their rows created if missing and locked
        until the batch commits (in partition order: every worker locks alike)."""
        if is_postgres(self.conn):
            # one round trip, written by hand (SQLAlchemy compiles a multi-row INSERT
            # anew for each batch): DO UPDATE locks an existing row as UPDATE would
            result = self.conn.exec_driver_sql(
                f"INSERT INTO {qualified_name(self.conn, checkpoints)} AS c "
                "(topic, partition, next_offset) "
                "SELECT %(topic)s, p, 0 FROM unnest(%(partitions)s::int[]) AS p ORDER BY p "
                "ON CONFLICT (topic, partition) DO UPDATE SET next_offset = c.next_offset "
                "RETURNING partition, next_offset",
                {"topic": topic, "partitions": sorted(partitions)},
            )
            return {int(p): int(o) for p, o in result}
        rows = [{"topic": topic, "partition": p, "next_offset": 0} for p in sorted(partitions)]
        insert_ignore(self.conn, checkpoints, rows, ["topic", "partition"])
        query = sa.select(checkpoints.c.partition, checkpoints.c.next_offset).where(
            checkpoints.c.topic == topic, checkpoints.c.partition.in_(sorted(partitions))
        )
        return {int(p): int(o) for p, o in self.conn.execute(query)}

    def _decode(self, records: Sequence[LogRecord]) -> list[tuple[LogRecord, Envelope]]:
        datas: list[tuple[LogRecord, dict[str, Any]]] = []
        for record in records:
            try:
                datas.append((record, decode_json(record.value)))
            except EventValidationError as exc:
                self.outbox_rows.append(_dead_letter(record, str(exc)))
        kids = [sealed_kid(data) for _, data in datas]
        if self.protector is not None:
            self.protector.open_all([data for _, data in datas])
        decoded = []
        for (record, data), kid in zip(datas, kids, strict=True):
            try:
                event = parse_event(data)
            except EventValidationError as exc:
                self.outbox_rows.append(_dead_letter(record, str(exc)))
                continue
            if kid is not None:
                self.kid_of[str(event.event_id)] = kid
            if isinstance(event.payload, IdentityMerged):
                self.alias_rows.append(
                    {
                        "alias": event.payload.merged_id,
                        "customer_id": event.payload.survivor_id,
                        "occurred_at": event.occurred_at,
                        "event_id": str(event.event_id),
                    }
                )
            elif isinstance(event.payload, _DEFINITIONS):
                self.definitions.append(event)
            elif event.identifiers is not None and event.type not in IGNORED_TYPES:
                decoded.append((record, event))  # else: not about one customer, or history
        return decoded

    def _drop_known(
        self, events: list[tuple[LogRecord, Envelope]]
    ) -> list[tuple[LogRecord, Envelope]]:
        keys = [str(event.event_id) for _, event in events]
        known = self._known_ids(keys)
        result = []
        for (record, event), key in zip(events, keys, strict=True):
            if key not in known:
                known.add(key)
                result.append((record, event))
        return result

    # -- loading, with locks ----------------------------------------------------------

    def _load(self, node_lists: list[list[str]], *, reload: bool = False) -> None:
        """Lock and read the nodes, aliases and customers the batch touches.

        Locks nodes first, then the customers they point to, and re-reads the nodes
        until no new customer appears (another worker may have merged meanwhile).
        Customers that new ones would be named after are read too, in one query.
        """
        names: set[str] = set()
        direct: set[str] = set()
        for n in {n for nodes in node_lists for n in nodes}:
            kind, _, value = n.partition(":")
            if kind == "customer_id":
                direct.add(value)
            else:
                names.add(n)
        self.touched.update(dict.fromkeys(names))
        if not reload:
            self._lock_batch(len(names) + len(direct))
            self._lock(f"node:{n}" for n in names)
        while True:
            self._read_nodes(names)
            live = live_customers(self.conn, direct, self.customers)
            self.direct = {d: live[d] or d for d in sorted(direct)}
            wanted = {c for n in names if (c := self.nodes[n].customer_id)}
            wanted |= set(self.direct.values())
            if wanted <= self.locked:
                break
            self._lock(f"customer:{c}" for c in wanted - self.locked)
            self.locked |= wanted
        self._read_customers(self.locked | {ident.customer_id_for(n) for n in names})

    def _lock_batch(self, touched: int) -> None:
        """The batch lock: exclusive when the batch touches more than ``FINE_LOCKS_MAX``
        identifiers and customers, else shared (then ``_lock`` takes the finer ones)."""
        if not is_postgres(self.conn):
            return
        self.exclusive = touched > FINE_LOCKS_MAX
        mode = "" if self.exclusive else "_shared"
        self.conn.execute(
            sa.text(f"SELECT pg_advisory_xact_lock{mode}(:k)"),
            {"k": advisory_key(f"{self.lock_space}:{BATCH_LOCK}")},
        )

    def _lock(self, names: Iterable[str]) -> None:
        if not self.exclusive:
            lock_keys(self.conn, (f"{self.lock_space}:{name}" for name in names))

    def _read_nodes(self, names: set[str]) -> None:
        if self.retained is not None:
            kept = self.nodes
            for name in names:
                if (node := kept.get(name)) is not None:
                    node.customer_id = self.retained.current(node.customer_id)
            # not ``names - kept.keys()``: that walks every retained node
            names = {name for name in names if name not in kept}
        for chunk in chunks(sorted(names)):
            for row in self.conn.execute(
                sa.select(identity_nodes).where(one_of(self.conn, identity_nodes.c.node, chunk))
            ):
                self.nodes[row.node] = _Node(
                    row.customer_id,
                    row.shared,
                    {"account_id": row.n_account_id, "email": row.n_email, "phone": row.n_phone},
                    value=row.value,
                )
        for name in names:
            self.nodes.setdefault(name, _Node(None, dirty=True, new=True))

    def _read_customers(self, ids: set[str]) -> None:
        missing = sorted(i for i in ids if i not in self.customers)  # not a walk of them all
        for chunk in chunks(missing):
            for cid, anchor, state in self.conn.execute(
                sa.select(customers.c.customer_id, customers.c.anchor, customers.c.state).where(
                    one_of(self.conn, customers.c.customer_id, chunk)
                )
            ):
                self.customers[cid] = _Customer(
                    anchor,
                    CustomerState.from_json(state),
                    new=False,
                    stored=(state.get("segments"), state.get("campaigns")),
                )

    # -- pass 1: links ----------------------------------------------------------------

    def _link(self, node_lists: list[list[str]]) -> set[str]:
        """Store new edges, count strong neighbours; return customers to split."""
        candidates = sorted({edge for nodes in node_lists for edge in ident.edges_of(nodes)})
        to_split: set[str] = set()
        for a, b in self._insert_new_edges(candidates):
            kind = ident.kind_of(b)
            if kind not in ident.STRONG_KINDS:
                continue
            node = self.nodes[a]
            node.counts[kind] = node.counts.get(kind, 0) + 1
            node.dirty = True
            if not node.shared and ident.is_shared(node.counts, self.threshold):
                node.shared = True
                own = ident.customer_id_for(a)
                if node.customer_id and node.customer_id != own:
                    to_split.add(node.customer_id)
                elif node.customer_id is None:  # new: it is its own customer from the start
                    self._assign(a, self._customer(own, a))
        return to_split

    def _insert_new_edges(self, edges: list[tuple[str, str]]) -> list[tuple[str, str]]:
        rows = [{"a": a, "b": b} for a, b in edges]
        return [(a, b) for a, b in insert_new(self.conn, identity_edges, rows, ["a", "b"])]

    def _split(self, customer_ids: list[str], trigger: Envelope) -> set[str]:
        """Recompute the customers whose links ran through an identifier now known as
        shared; returns the customers whose rows it rewrote (those and their parts).

        All of a batch's splits together, a statement per table for them all: a rebuild
        of 1M events splits ~1,900 customers in its first batches, and a statement per
        part per table made each split ~8 ms."""
        conn = self.conn
        # each customer is split on its own nodes, shared nodes and edges
        owner_of: dict[str, str] = {}  # node -> the customer split
        nodes_of: dict[str, list[str]] = defaultdict(list)
        shares: dict[str, set[str]] = defaultdict(set)
        for chunk in chunks(customer_ids):
            for node, was_shared, cid in conn.execute(
                sa.select(
                    identity_nodes.c.node, identity_nodes.c.shared, identity_nodes.c.customer_id
                ).where(one_of(conn, identity_nodes.c.customer_id, chunk))
            ):
                owner_of[node] = cid
                nodes_of[cid].append(node)
                if was_shared:
                    shares[cid].add(node)
        edges: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for chunk in chunks(sorted(owner_of)):
            for a, b in conn.execute(
                sa.select(identity_edges.c.a, identity_edges.c.b).where(
                    one_of(conn, identity_edges.c.a, chunk)
                )
            ):
                if owner_of.get(b) == owner_of[a]:
                    edges[owner_of[a]].add((a, b))
        owners: dict[str, dict[str, str]] = {}  # customer -> its nodes' parts
        parts: dict[str, dict[str, str]] = {}  # customer -> its parts' anchors
        for customer_id in customer_ids:
            names = sorted(nodes_of[customer_id])
            owners[customer_id], parts[customer_id] = owner, part = {}, {}
            for component in ident.components(names, edges[customer_id], shares[customer_id]):
                anchor = ident.smallest(component)
                part[ident.customer_id_for(anchor)] = anchor
                owner.update(dict.fromkeys(component, ident.customer_id_for(anchor)))
        anchors = {cid: anchor for split in parts.values() for cid, anchor in split.items()}
        self._lock(f"customer:{c}" for c in anchors)
        states: dict[str, CustomerState] = {cid: CustomerState.empty() for cid in anchors}
        moves: dict[str, str] = {}  # event -> its part
        recorded = [
            row
            for chunk in chunks(customer_ids)
            for row in conn.execute(
                sa.select(
                    timeline.c.event_id, timeline.c.customer_id, timeline.c.nodes, timeline.c.event
                ).where(one_of(conn, timeline.c.customer_id, chunk))
            )
        ]
        opened = self._open([row.event for row in recorded])
        for (event_id, customer_id, event_nodes, _), event in zip(recorded, opened, strict=True):
            home = ident.home_node(event_nodes, shares[customer_id])
            if home is None:  # named by id only (a derived event): keep following that id
                named = [n.partition(":")[2] for n in event_nodes]
                cid = next((n for n in named if n in parts[customer_id]), customer_id)
            else:
                cid = owners[customer_id].get(home, customer_id)
            states.setdefault(cid, CustomerState.empty()).apply(event)
            if cid != customer_id:
                moves[event_id] = cid
        for table in (timeline, segment_history):
            replace_values(conn, table.c.customer_id, moves, key=table.c.event_id)
        node_parts = {node: cid for owner in owners.values() for node, cid in owner.items()}
        replace_values(conn, identity_nodes.c.customer_id, node_parts, key=identity_nodes.c.node)
        for chunk in chunks(customer_ids):
            conn.execute(sa.delete(customers).where(one_of(conn, customers.c.customer_id, chunk)))
        emptied = [(cid, CustomerState.empty()) for cid in customer_ids]
        _rewrite_customer_rows(conn, [*emptied, *states.items()])
        upsert(
            conn,
            customers,
            [
                _customer_row(
                    cid, _Customer(anchors.get(cid, ident.node("customer_id", cid)), state, True)
                )
                for cid, state in states.items()
            ],
            ["customer_id"],
        )
        for customer_id in customer_ids:
            into = sorted(parts[customer_id])
            self.outbox_rows.append(_split_event(customer_id, into, shares[customer_id], trigger))
        self.locked |= anchors.keys()
        return {*customer_ids, *anchors}

    def _forget(self, rewritten: set[str]) -> None:
        """Drop the loaded customers (and a rebuild's retained nodes) that splits rewrote
        in the database, to be read again. A split refolds its customer from the timeline
        (complete after ``_flush``), so a retained state of it that was never written is
        replaced, not lost; the other retained customers are untouched by it."""
        if not self.retained:
            self.customers.clear()
            return
        for customer_id in rewritten:
            self.customers.pop(customer_id, None)
        self.retained.repoint(drop=rewritten)  # a split may bring back a merged customer

    # -- pass 2: resolve and apply ----------------------------------------------------

    def _find(self, customer_id: str) -> str:
        while customer_id in self.redirect:
            customer_id = self.redirect[customer_id]
        return customer_id

    def _customer(self, customer_id: str, anchor: str) -> str:
        """The customer (loaded), or a new one; ``_load`` already read every candidate."""
        if customer_id not in self.customers:
            if self.retained is not None and customer_id in self.retained.moved:
                self.retained.repoint()  # a merged customer is back: ``moved`` must not name it
            self.customers[customer_id] = _Customer(
                anchor, CustomerState.empty(), new=True, dirty=True
            )
        return customer_id

    def _resolve(self, event_nodes: list[str], event: Envelope) -> str:
        linkable_all = [n for n in event_nodes if ident.kind_of(n) != "customer_id"]
        direct = [
            self._find(self.direct[n.partition(":")[2]])
            for n in event_nodes
            if ident.kind_of(n) == "customer_id"
        ]
        linkable = [n for n in linkable_all if not self.nodes[n].shared]
        if linkable:
            return self._join(linkable, direct, event)
        if linkable_all:  # seen only through shared identifiers: that identifier's own customer
            home = ident.smallest(linkable_all)
            customer_id = self._customer(ident.customer_id_for(home), home)
            self._assign(home, customer_id)
            return customer_id
        target = direct[0]
        if target not in self.customers:
            self._read_customers({target})
        return self._customer(target, ident.node("customer_id", target))

    def _join(self, linkable: list[str], direct: list[str], event: Envelope) -> str:
        components = {self._find(c) for n in linkable if (c := self.nodes[n].customer_id)}
        for d in direct:
            if d not in self.customers:
                self._read_customers({d})
            components.add(self._customer(d, ident.node("customer_id", d)))
        anchors = {self.customers[c].anchor: c for c in components}
        unassigned = [n for n in linkable if self.nodes[n].customer_id is None]
        smallest = ident.smallest([*anchors, *unassigned])
        survivor = anchors.get(smallest) or self._customer(
            ident.customer_id_for(smallest), smallest
        )
        for other in sorted(components - {survivor}):
            self._merge(other, survivor, linkable, event)
        for n in linkable:
            self._assign(n, survivor)
        keeper = self.customers[survivor]
        if ident.kind_of(keeper.anchor) == "customer_id":
            # first seen through a derived event naming it by id (a rebuild reads
            # partitions in any order): name it by the identifier its id comes from
            own = ident.smallest(linkable)
            if ident.customer_id_for(own) == survivor:
                keeper.anchor, keeper.dirty = own, True
        return survivor

    def _assign(self, name: str, customer_id: str) -> None:
        node = self.nodes[name]
        if node.customer_id != customer_id:
            node.customer_id = customer_id
            node.dirty = True

    def _merge(self, merged: str, survivor: str, linking: list[str], event: Envelope) -> None:
        gone = self.customers.pop(merged)
        keeper = self.customers[survivor]
        if (keeper.state.erased is None) != (gone.state.erased is None):
            self.erased.add(survivor)  # the other one's rows lose their personal data too
            self.absorbed.add(survivor)  # ... and, live, the keys of its events
        keeper.state.merge_from(gone.state)
        keeper.dirty, keeper.facts = True, None
        told = merged in self.told
        self.redirect[merged] = survivor
        if gone.new and not told:
            return  # never stored nor named by a merge: nothing to redirect or tell
        self.told.add(survivor)
        self.outbox_rows.append(_merged_event(survivor, merged, linking, event))

    def _apply(
        self, customer_id: str, event: Envelope, event_nodes: list[str], record: LogRecord | None
    ) -> None:
        customer = self.customers[customer_id]
        customer.state.apply(event)
        customer.dirty, customer.facts = True, None
        if customer.state.erased is not None and self.live:
            kid = self.kid_of.get(str(event.event_id))
            if kid is not None:  # arrived after the erasure: its data key goes too
                self.shred.add(kid)
        payload = event.payload
        if isinstance(payload, CustomerErasureRequested) and self.live:
            self.erasure_requests.append((customer_id, event))
        elif isinstance(payload, CustomerErased):
            self.erased.add(customer_id)
        if isinstance(payload, OrderPlaced):
            self.orders.append((customer_id, event))
        elif isinstance(payload, SegmentEntered | SegmentExited):
            self.history_rows.append(
                {
                    "event_id": str(event.event_id),
                    "segment_id": payload.segment_id,
                    "version": payload.version,
                    "customer_id": customer_id,
                    "entered": isinstance(payload, SegmentEntered),
                    "occurred_at": event.occurred_at,
                }
            )
        self.timeline_rows.append(
            {
                "event_id": str(event.event_id),
                "customer_id": customer_id,
                "occurred_at": event.occurred_at,
                "type": event.type,
                "channel": event.source.channel.value,
                "source_system": event.source.system,
                "nodes": event_nodes,
                "event": self._timeline_event(customer.state, event, record),
                "log_partition": None if record is None else record.partition,
                "log_offset": None if record is None else record.offset,
            }
        )

    def _timeline_event(
        self, state: CustomerState, event: Envelope, record: LogRecord | None
    ) -> Any:
        """The event as read from the log (sealed; no re-serialising), derived events
        dumped, and with no personal data at all once the customer is erased."""
        if state.erased is not None:
            return redact(event.model_dump(mode="json"), self.hasher)
        if record is None or not record.value:
            return event.model_dump(mode="json")
        return RawJson(record.value.decode())

    # -- closed-loop decisions (live only) --------------------------------------------

    def _decide(self) -> None:
        """Carry out erasure requests, attribute the batch's orders, then re-check
        changed customers' segments."""
        self._erase_requested()
        for customer_id in sorted({self._find(c) for c in self.absorbed}):
            self.shred |= self._kids_of(customer_id)
        self.absorbed = set()
        if self.shred and self.protector is not None:
            self.protector.destroy(self.shred)
        self.shred = set()
        conversions = self._attributions()
        known = self._known_ids(str(event_id) for event_id, _, _ in conversions)
        for event_id, customer_id, payload in conversions:
            if str(event_id) not in known:
                known.add(str(event_id))
                self._apply_derived(customer_id, payload, event_id, self.clock())
        active = self._active_segments()
        if not active:
            return
        now = self.clock()
        for customer_id, customer in sorted(self.customers.items()):
            if not customer.dirty:
                continue
            state = customer.state
            facts = facts_of(state)
            wanted = loop.evaluate(active, facts, erased=state.erased is not None)
            changes = loop.segment_changes(customer_id, loop.memberships(state), wanted)
            customer.facts = facts
            for change in changes:
                kind = "entered" if isinstance(change, SegmentEntered) else "exited"
                name = f"segment.{kind}:{change.segment_id}:{change.version}:{customer_id}"
                event_id = uuid.uuid5(DERIVED_NAMESPACE, f"{name}:{state.event_count}")
                current = state.segments.get(change.segment_id)
                at = now if current is None else max(now, current.stamp[0] + _TICK)
                self._apply_derived(customer_id, change, event_id, at)

    def _erase_requested(self) -> None:
        """Destroy the data keys of every event of each customer asked to be erased,
        then append ``customer.erased``."""
        requests, self.erasure_requests = self.erasure_requests, []
        for customer_id, request in requests:
            customer_id = self._find(customer_id)
            event_id = uuid.uuid5(DERIVED_NAMESPACE, f"customer.erased:{request.event_id}")
            if str(event_id) in self._known_ids([str(event_id)]):
                continue
            destroyed = 0
            if self.protector is not None:
                destroyed = self.protector.destroy(self._kids_of(customer_id))
            payload = request.payload
            assert isinstance(payload, CustomerErasureRequested)
            erased = CustomerErased(
                request_id=request.event_id, keys_destroyed=destroyed, reason=payload.reason
            )
            self._apply_derived(customer_id, erased, event_id, self.clock())
            log.info("customer %s erased: %d data keys destroyed", customer_id, destroyed)

    def _kids_of(self, customer_id: str) -> set[str]:
        """The data keys that sealed the customer's events: stored (also under the ids
        merged into it in this batch, not re-pointed yet) and in this batch."""
        ids = sorted({customer_id, *(m for m in self.redirect if self._find(m) == customer_id)})
        stored = self.conn.execute(
            sa.select(timeline.c.event["pii"]["kid"].as_string())
            .where(timeline.c.customer_id.in_(ids))
            .distinct()
        ).scalars()
        kids = {kid for kid in stored if kid}
        for row in self.timeline_rows:
            if self._find(row["customer_id"]) == customer_id:
                kid = self.kid_of.get(row["event_id"])
                if kid is not None:
                    kids.add(kid)
        return kids

    def _attributions(self) -> list[tuple[uuid.UUID, str, EventPayload]]:
        if not self.orders:
            return []
        wanted = {
            campaign_id
            for customer_id, _ in self.orders
            for campaign_id in self.customers[self._find(customer_id)].state.campaigns
        }
        windows: dict[str, loop.CampaignWindow] = {}
        for chunk in chunks(sorted(wanted)):
            for campaign_id, days in self.conn.execute(
                sa.select(campaigns.c.campaign_id, campaigns.c.attribution_window_days).where(
                    campaigns.c.campaign_id.in_(chunk)
                )
            ):
                windows[campaign_id] = loop.CampaignWindow(campaign_id, timedelta(days=days))
        found: list[tuple[uuid.UUID, str, EventPayload]] = []
        for customer_id, event in self.orders:
            customer_id = self._find(customer_id)
            order = event.payload
            assert isinstance(order, OrderPlaced)
            conversion = loop.attribute(
                customer_id,
                self.customers[customer_id].state,
                order,
                event.occurred_at,
                windows,
            )
            if conversion is not None:
                name = f"conversion.attributed:{event.source.system}:{order.order_id}"
                found.append((uuid.uuid5(DERIVED_NAMESPACE, name), customer_id, conversion))
        self.orders = []
        return found

    @property
    def _timeline_writer(self) -> _TimelineWriter | None:
        return self.retained.timeline if self.retained is not None else None

    def _timeline_written(self) -> None:
        if (writer := self._timeline_writer) is not None:
            writer.wait()

    def _known_ids(self, event_ids: Iterable[str]) -> set[str]:
        """Which of ``event_ids`` the timeline holds (applied before), or is being
        written (``_TimelineWriter``)."""
        wanted = set(event_ids)
        writer = self._timeline_writer
        known = wanted & writer.pending if writer is not None else set()
        for chunk in chunks(sorted(wanted - known)):
            known.update(
                self.conn.execute(
                    sa.select(timeline.c.event_id).where(
                        one_of(self.conn, timeline.c.event_id, chunk)
                    )
                ).scalars()
            )
        return known

    def _active_segments(self) -> list[loop.ActiveSegment]:
        now = self.clock()
        return [
            loop.ActiveSegment(sid, version, predicate(parse_rule(rule), now))
            for sid, version, rule in self.conn.execute(active_segments_query())
        ]

    def _apply_derived(
        self, customer_id: str, payload: EventPayload, event_id: uuid.UUID, at: datetime
    ) -> None:
        event = new_event(
            payload,
            source=SYSTEM_SOURCE,
            identifiers=Identifiers(customer_id=customer_id),
            occurred_at=at,
            event_id=event_id,
        )
        self._apply(customer_id, event, ident.nodes_of(event.identifiers), None)
        self.outbox_rows.append(_outbox_row(event))

    # -- definitions ------------------------------------------------------------------

    def _write_definitions(self) -> None:
        """Project segment, campaign and assessment-run events (idempotent upserts)."""
        for event in self.definitions:
            p = event.payload
            if isinstance(p, SegmentDefined):
                insert_ignore(
                    self.conn,
                    segment_definitions,
                    [
                        {
                            "segment_id": p.segment_id,
                            "version": p.version,
                            "name": p.name,
                            "description": p.description,
                            "rule": p.rule,
                            "defined_at": event.occurred_at,
                            "event_id": str(event.event_id),
                        }
                    ],
                    ["segment_id", "version"],
                )
            elif isinstance(p, SegmentRetired):
                self.conn.execute(
                    sa.update(segment_definitions)
                    .where(
                        segment_definitions.c.segment_id == p.segment_id,
                        segment_definitions.c.version <= p.version,
                        segment_definitions.c.retired_at.is_(None),
                    )
                    .values(retired_at=event.occurred_at)
                )
            elif isinstance(p, CampaignLaunched):
                row = p.model_dump(mode="json")
                row.update(launched_at=event.occurred_at, event_id=str(event.event_id))
                insert_ignore(self.conn, campaigns, [row], ["campaign_id"])
            elif isinstance(p, AssessmentCompleted):
                insert_ignore(
                    self.conn,
                    assessment_runs,
                    [
                        {
                            "run_id": p.run_id,
                            "as_of": p.as_of,
                            "completed_at": event.occurred_at,
                            "customers": p.customers,
                            "summary": p.summary,
                            "event_id": str(event.event_id),
                        }
                    ],
                    ["run_id"],
                )
        self.definitions = []

    # -- writing ----------------------------------------------------------------------

    def _flush(self) -> None:
        """Write everything pending; the batch may go on (nodes and customers stay loaded).

        Customers kept in memory by a rebuild (``retained``) wait for ``write_customers``."""
        conn = self.conn
        survivors = {merged: self._find(merged) for merged in self.redirect}
        if self.retained is not None:  # retained nodes outlive the batch's redirects
            self.retained.moved.update(survivors)
        # one statement per table for all the batch's merges (not one per merge)
        for table in (identity_nodes, timeline, segment_history):
            replace_values(conn, table.c.customer_id, survivors)
        for chunk in chunks(sorted(survivors), 500):
            for table in (customers, customer_segments, customer_campaigns):
                conn.execute(sa.delete(table).where(table.c.customer_id.in_(chunk)))
        self._write_aliases()
        for name, plain in self.plain.items():
            node = self.nodes.get(name)
            if node is not None and node.value != plain:
                node.value, node.dirty = plain, True
        self.plain = {}
        # only nodes a batch read can change: not every node a rebuild retains
        names = self.nodes if self.retained is None else self.touched
        dirty_nodes = [
            (name, n)
            for name in names
            if (n := self.nodes.get(name)) is not None and n.dirty and n.customer_id
        ]
        for _, node in dirty_nodes:
            owner = self.customers.get(self._find(node.customer_id or ""))
            if owner is not None and owner.state.erased is not None:
                node.value = None
        upsert_fresh(
            conn,
            identity_nodes,
            [
                (
                    node.new,
                    {
                        "node": name,
                        "customer_id": self._find(node.customer_id or ""),
                        "shared": node.shared,
                        "n_account_id": node.counts.get("account_id", 0),
                        "n_email": node.counts.get("email", 0),
                        "n_phone": node.counts.get("phone", 0),
                        "value": node.value,
                    },
                )
                for name, node in dirty_nodes
            ],
            ["node"],
        )
        for _, node in dirty_nodes:
            node.dirty = node.new = False
        if not self.retained:
            self.write_customers()
        for rows in (self.timeline_rows, self.history_rows):
            for row in rows:
                row["customer_id"] = self._find(row["customer_id"])
        writer = self._timeline_writer
        if writer is not None and not self.erased:
            writer.submit(conn, self.timeline_rows)
        else:
            self._timeline_written()
            insert_fresh(conn, timeline, self.timeline_rows, ["event_id"])
        insert_ignore(conn, segment_history, self.history_rows, ["event_id"])
        self._redact_erased()
        if self.outbox_rows:
            conn.execute(sa.insert(outbox), self.outbox_rows)
            self.derived = True
        self.redirect.clear()
        self.timeline_rows, self.outbox_rows, self.alias_rows = [], [], []
        self.history_rows = []

    def write_customers(self) -> int:
        """Write the changed customers' rows and states, a chunk at a time (a rebuild's
        retained customers would otherwise all have their rows in memory at once)."""
        conn = self.conn
        dirty = [(cid, c) for cid, c in self.customers.items() if c.dirty]
        for chunk in chunks(dirty, 10_000):
            rows = [_customer_row(cid, c) for cid, c in chunk]
            pairs = [(c.new, row) for (_, c), row in zip(chunk, rows, strict=True)]
            upsert_fresh(conn, customers, pairs, ["customer_id"])
            changes = _RowChanges()
            for (cid, customer), row in zip(chunk, rows, strict=True):
                now = (row["state"]["segments"], row["state"]["campaigns"])
                changes.add(cid, customer, now)
                customer.stored = now
                customer.dirty = customer.new = False
            changes.write(conn)
        return len(dirty)

    def _redact_erased(self) -> None:
        """Leave no personal data of the customers erased in this batch: their plain
        identifier values, and the personal fields of every event of their timeline."""
        erased, self.erased = sorted({self._find(c) for c in self.erased}), set()
        if not erased:
            return
        conn = self.conn
        conn.execute(
            sa.update(identity_nodes)
            .where(identity_nodes.c.customer_id.in_(erased))
            .values(value=None)
        )
        if self.retained is not None:
            self.retained.repoint()
        for node in self.nodes.values():
            if node.customer_id in erased:
                node.value = None
        rows = conn.execute(
            sa.select(timeline.c.event_id, timeline.c.event).where(
                timeline.c.customer_id.in_(erased)
            )
        ).all()
        for event_id, raw in rows:
            data = dict(raw)
            cleaned = redact(dict(raw), self.hasher)
            if cleaned != data:
                conn.execute(
                    sa.update(timeline).where(timeline.c.event_id == event_id).values(event=cleaned)
                )

    def _write_aliases(self) -> None:
        if not self.alias_rows:
            return
        stmt = insert_for(self.conn, customer_aliases)
        newer = sa.tuple_(stmt.excluded.occurred_at, stmt.excluded.event_id) > sa.tuple_(
            customer_aliases.c.occurred_at, customer_aliases.c.event_id
        )
        self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["alias"],
                set_={c: stmt.excluded[c] for c in ("customer_id", "occurred_at", "event_id")},
                where=newer,
            ),
            self.alias_rows,
        )


def _customer_row(customer_id: str, customer: _Customer) -> dict[str, Any]:
    state = customer.state
    return {
        **(customer.facts if customer.facts is not None else facts_of(state)),
        "customer_id": customer_id,
        "anchor": customer.anchor,
        "display_name": state.display_name,
        "erased_at": None if state.erased is None else state.erased[0],
        "revenue_by_currency": {c: str(v) for c, v in sorted(state.revenue_by_currency.items())},
        "state": state.to_json(),
    }


def _rewrite_customer_rows(conn: Connection, states: list[tuple[str, CustomerState]]) -> None:
    """Replace every current-segment and campaign row of ``states``' customers."""
    ids = sorted({cid for cid, _ in states})
    for table in (customer_segments, customer_campaigns):
        for chunk in chunks(ids):
            conn.execute(sa.delete(table).where(one_of(conn, table.c.customer_id, chunk)))
    segment_rows = [
        _segment_row(cid, sid, m) for cid, state in states for sid, m in state.segments.items()
    ]
    campaign_rows = [
        _campaign_row(cid, campaign_id, c)
        for cid, state in states
        for campaign_id, c in state.campaigns.items()
    ]
    insert_ignore(conn, customer_segments, segment_rows, _SEGMENT_KEY)
    insert_ignore(conn, customer_campaigns, campaign_rows, _CAMPAIGN_KEY)


_SEGMENT_KEY = ("customer_id", "segment_id")
_CAMPAIGN_KEY = ("customer_id", "campaign_id")


def _segment_row(cid: str, segment_id: str, m: Any) -> dict[str, Any]:
    return {
        "customer_id": cid,
        "segment_id": segment_id,
        "version": m.version,
        "member": m.member,
        "since": m.stamp[0],
    }


def _campaign_row(cid: str, campaign_id: str, c: Any) -> dict[str, Any]:
    return {
        "customer_id": cid,
        "campaign_id": campaign_id,
        "target_group": None if c.group is None else c.group.value,
        "targeted_at": None if c.group is None else c.group.at,
        "rfm_segment": c.rfm_segment,
        "sent": c.sent,
        "delivered": c.delivered,
        "opened": c.opened,
        "clicked": c.clicked,
        "bounced": c.bounced,
        "unsubscribed": c.unsubscribed,
        "conversions": c.conversions,
        "revenue": {k: str(v) for k, v in sorted(c.converted_revenue.items())},
    }


class _RowChanges:
    """The current-segment and campaign rows that differ from the stored ones.

    A customer's rows follow from its state's ``segments`` and ``campaigns`` records, so
    only the records whose JSON changed since the customer was read are written, and
    those that went are deleted: a message event changes one campaign's counters, and
    rewriting all of the customer's rows (delete, then insert every one) was ~9% of a
    live batch of 200 events.
    """

    def __init__(self) -> None:
        self.upserts: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
        self.deletes: tuple[list[tuple[str, str]], list[tuple[str, str]]] = ([], [])

    def add(self, cid: str, customer: _Customer, now: tuple[Any, Any]) -> None:
        # a new customer has no rows; a loaded or written one knows what it stored
        before = ({}, {}) if customer.new else customer.stored
        state = customer.state
        kinds: list[tuple[dict[str, Any], Callable[[str, str, Any], dict[str, Any]]]] = [
            (state.segments, _segment_row),
            (state.campaigns, _campaign_row),
        ]
        for i, (records, make) in enumerate(kinds):
            old, new = before[i] or {}, now[i]
            if old == new:
                continue
            self.upserts[i].extend(
                make(cid, key, records[key]) for key, value in new.items() if old.get(key) != value
            )
            self.deletes[i].extend((cid, key) for key in old.keys() - new.keys())

    def write(self, conn: Connection) -> None:
        tables = ((customer_segments, _SEGMENT_KEY), (customer_campaigns, _CAMPAIGN_KEY))
        for (table, key), rows, gone in zip(tables, self.upserts, self.deletes, strict=True):
            pairs = sa.tuple_(*(table.c[k] for k in key))
            for chunk in chunks(sorted(gone), 1_000):
                conn.execute(sa.delete(table).where(pairs.in_(chunk)))
            upsert(conn, table, rows, key)


@functools.cache
def active_segments_query() -> sa.Select[tuple[str, int, Any]]:
    """(segment_id, version, rule) of the latest version of every segment not retired."""
    d = segment_definitions
    latest = (
        sa.select(d.c.segment_id, sa.func.max(d.c.version).label("version"))
        .group_by(d.c.segment_id)
        .subquery()
    )
    return (
        sa.select(d.c.segment_id, d.c.version, d.c.rule)
        .join(
            latest, sa.and_(d.c.segment_id == latest.c.segment_id, d.c.version == latest.c.version)
        )
        .where(d.c.retired_at.is_(None))
        .order_by(d.c.segment_id)
    )


def _merged_event(
    survivor: str, merged: str, linking: list[str], trigger: Envelope
) -> dict[str, Any]:
    payload = IdentityMerged(
        survivor_id=survivor,
        merged_id=merged,
        linking_identifiers=[
            LinkingIdentifier(kind=ident.kind_of(n), value=n.partition(":")[2]) for n in linking
        ],
        reason="identifiers seen together in one event",
    )
    return _outbox_event(payload, survivor, f"identity.merged:{survivor}:{merged}", trigger)


def _outbox_event(
    payload: IdentityMerged | IdentitySplit, customer_id: str, name: str, trigger: Envelope
) -> dict[str, Any]:
    """A derived event as an outbox row; its id is a function of ``name`` (idempotent)."""
    event = new_event(
        payload,
        source=SYSTEM_SOURCE,
        identifiers=Identifiers(customer_id=customer_id),
        occurred_at=trigger.occurred_at,
        event_id=uuid.uuid5(DERIVED_NAMESPACE, name),
        causation_id=trigger.event_id,
    )
    return _outbox_row(event)


def _outbox_row(event: Envelope) -> dict[str, Any]:
    record = to_record(event)
    headers = [[k, v.decode()] for k, v in record.headers]
    return {"target": "events", "key": record.key, "value": record.value, "headers": headers}


def _split_event(
    customer_id: str, into: list[str], shared: set[str], trigger: Envelope
) -> dict[str, Any]:
    return _outbox_event(
        IdentitySplit(
            customer_id=customer_id,
            into=into,
            shared_kinds=sorted({ident.kind_of(n) for n in shared}),
            reason="an identifier it was linked through is shared by several people",
        ),
        customer_id,
        f"identity.split:{customer_id}:{','.join(into)}",
        trigger,
    )


def _dead_letter(record: LogRecord, reason: str) -> dict[str, Any]:
    headers = [[k, v.decode("utf-8", "replace")] for k, v in record.headers]
    headers += [
        ["crm-error", reason[:2_000]],
        ["crm-origin", f"{record.topic}/{record.partition}/{record.offset}"],
    ]
    return {"target": "deadletters", "key": record.key, "value": record.value, "headers": headers}

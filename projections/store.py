"""The projection store: applies batches of log records to SQL projections.

One batch is one transaction holding the projection rows *and* the checkpoints
``(topic, partition, next_offset)``; records below a checkpoint are skipped, so a
redelivered batch changes nothing (exactly-once effect). Within the transaction:

1. records are decoded; undecodable ones become dead letters (outbox, with the reason);
2. events already in the timeline are dropped (the timeline is the dedupe record);
3. identity resolution (``projections.identity``) maps each event to a customer,
   merging customers an event links, and splitting one when a shared identifier is
   detected; merges are appended to the log as ``identity.merged`` (via the outbox);
4. each event is folded into its customer's 360 state and added to the timeline.

Concurrent workers (PostgreSQL) take advisory locks on the identifiers and customers a
batch touches, in sorted order, and re-check the mapping after locking.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from events.codec import decode_event, to_record
from events.log import EventLog, LogRecord, OutgoingRecord
from projections import identity as ident
from projections.customer import CustomerState
from projections.queries import live_customer
from projections.sql import (
    advisory_key,
    chunks,
    insert_for,
    insert_ignore,
    insert_new,
    is_postgres,
    lock_keys,
    upsert,
)
from projections.tables import (
    checkpoints,
    customer_aliases,
    customers,
    identity_edges,
    identity_nodes,
    metadata,
    outbox,
    timeline,
)
from schemas import (
    Channel,
    Envelope,
    EventValidationError,
    Identifiers,
    IdentityMerged,
    IdentitySplit,
    LinkingIdentifier,
    Source,
    new_event,
    parse_event,
)

log = logging.getLogger(__name__)

DERIVED_NAMESPACE = uuid.UUID("6f1c8f4e-8a7d-4a53-9f0e-3c9b2d7e5a10")
IGNORED_TYPES = frozenset({"identity.split"})  # history of the projection itself
SWITCH_LOCK = "crm:replay-switch"
_RETRYABLE = ("40P01", "40001")  # deadlock detected, serialization failure


@dataclass
class _Node:
    customer_id: str | None
    shared: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    dirty: bool = False


@dataclass
class _Customer:
    anchor: str
    state: CustomerState
    new: bool
    dirty: bool = False


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
    ) -> None:
        """``live=False`` for a rebuild, which must not wait for the replay switch lock."""
        self.live = live
        self.schema = schema if is_postgres(engine) else None
        self.engine = engine.execution_options(schema_translate_map={None: self.schema})
        self.shared_threshold = shared_threshold
        self._publish = publish

    # -- lifecycle --------------------------------------------------------------------

    def create(self) -> None:
        """Create the schema and tables if missing (idempotent)."""
        with self.engine.begin() as conn:
            if self.schema:
                conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
            metadata.create_all(conn)

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
        """The customer an identifier (normalised ``value``) belongs to."""
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
                with self.engine.begin() as conn:
                    return _Batch(conn, self.shared_threshold, self.live).run(topic, records)
            except DBAPIError as exc:
                code = getattr(exc.orig, "pgcode", None)
                if code not in _RETRYABLE or attempt == 9:
                    raise
                log.info("batch conflicted with another worker (%s); retrying", code)
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def publish_outbox(self) -> int:
        """Append pending derived events and dead letters to the log; returns how many."""
        if self._publish is None:
            return 0
        published = 0
        while True:
            with self.engine.begin() as conn:
                rows = conn.execute(
                    sa.select(outbox)
                    .order_by(outbox.c.seq)
                    .limit(1_000)
                    .with_for_update(skip_locked=True)
                    if is_postgres(conn)
                    else sa.select(outbox).order_by(outbox.c.seq).limit(1_000)
                ).all()
                if not rows:
                    return published
                by_target: dict[str, list[OutgoingRecord]] = defaultdict(list)
                for row in rows:
                    headers = tuple((k, v.encode()) for k, v in row.headers)
                    by_target[row.target].append(OutgoingRecord(row.key, row.value, headers))
                for target, batch in by_target.items():
                    self._publish(target, batch)
                conn.execute(sa.delete(outbox).where(outbox.c.seq.in_([r.seq for r in rows])))
                published += len(rows)


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

    def __init__(self, conn: Connection, threshold: int, live: bool) -> None:
        self.conn = conn
        self.live = live
        self.threshold = threshold
        self.nodes: dict[str, _Node] = {}
        self.customers: dict[str, _Customer] = {}
        self.direct: dict[str, str] = {}
        self.alias_rows: list[dict[str, Any]] = []
        self.redirect: dict[str, str] = {}
        self.locked: set[str] = set()
        self.timeline_rows: list[dict[str, Any]] = []
        self.outbox_rows: list[dict[str, Any]] = []

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
        node_lists = [ident.nodes_of(e.identifiers) for _, e in events]
        self._load(node_lists)
        to_split = self._link(node_lists)
        if to_split:
            self._flush()
            for customer_id in sorted(to_split):
                self._split(customer_id, events[0][1])
            self.customers.clear()
            self._load(node_lists, reload=True)
        for (record, event), event_nodes in zip(events, node_lists, strict=True):
            self._apply(self._resolve(event_nodes, event), event, event_nodes, record)
        self._flush()
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

    def _lock_checkpoints(self, topic: str, partitions: set[int]) -> dict[int, int]:
        insert_ignore(
            self.conn,
            checkpoints,
            [{"topic": topic, "partition": p, "next_offset": 0} for p in sorted(partitions)],
            ["topic", "partition"],
        )
        query = sa.select(checkpoints.c.partition, checkpoints.c.next_offset).where(
            checkpoints.c.topic == topic, checkpoints.c.partition.in_(sorted(partitions))
        )
        if is_postgres(self.conn):
            query = query.order_by(checkpoints.c.partition).with_for_update()
        return {int(p): int(o) for p, o in self.conn.execute(query)}

    def _decode(self, records: Sequence[LogRecord]) -> list[tuple[LogRecord, Envelope]]:
        decoded = []
        for record in records:
            try:
                event = decode_event(record.value)
            except EventValidationError as exc:
                self.outbox_rows.append(_dead_letter(record, str(exc)))
                continue
            if isinstance(event.payload, IdentityMerged):
                self.alias_rows.append(
                    {
                        "alias": event.payload.merged_id,
                        "customer_id": event.payload.survivor_id,
                        "occurred_at": event.occurred_at,
                        "event_id": str(event.event_id),
                    }
                )
            elif event.identifiers is not None and event.type not in IGNORED_TYPES:
                decoded.append((record, event))  # else: not about one customer, or history
        return decoded

    def _drop_known(
        self, events: list[tuple[LogRecord, Envelope]]
    ) -> list[tuple[LogRecord, Envelope]]:
        ids = sorted({str(e.event_id) for _, e in events})
        known: set[str] = set()
        for chunk in chunks(ids):
            known.update(
                self.conn.execute(
                    sa.select(timeline.c.event_id).where(timeline.c.event_id.in_(chunk))
                ).scalars()
            )
        result = []
        for record, event in events:
            key = str(event.event_id)
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
        names = {n for nodes in node_lists for n in nodes if ident.kind_of(n) != "customer_id"}
        direct = {
            n.partition(":")[2]
            for nodes in node_lists
            for n in nodes
            if ident.kind_of(n) == "customer_id"
        }
        if not reload:
            lock_keys(self.conn, (f"node:{n}" for n in names))
        while True:
            self._read_nodes(names)
            self.direct = {d: live_customer(self.conn, d) or d for d in sorted(direct)}
            wanted = {n.customer_id for n in self.nodes.values() if n.customer_id}
            wanted |= set(self.direct.values())
            if wanted <= self.locked:
                break
            lock_keys(self.conn, (f"customer:{c}" for c in wanted - self.locked))
            self.locked |= wanted
        self._read_customers(self.locked | {ident.customer_id_for(n) for n in names})

    def _read_nodes(self, names: set[str]) -> None:
        for chunk in chunks(sorted(names)):
            for row in self.conn.execute(
                sa.select(identity_nodes).where(identity_nodes.c.node.in_(chunk))
            ):
                self.nodes[row.node] = _Node(
                    row.customer_id,
                    row.shared,
                    {"account_id": row.n_account_id, "email": row.n_email, "phone": row.n_phone},
                )
        for name in names:
            self.nodes.setdefault(name, _Node(None, dirty=True))

    def _read_customers(self, ids: set[str]) -> None:
        missing = sorted(ids - self.customers.keys())
        for chunk in chunks(missing):
            for cid, anchor, state in self.conn.execute(
                sa.select(customers.c.customer_id, customers.c.anchor, customers.c.state).where(
                    customers.c.customer_id.in_(chunk)
                )
            ):
                self.customers[cid] = _Customer(anchor, CustomerState.from_json(state), new=False)

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

    def _split(self, customer_id: str, trigger: Envelope) -> None:
        """Recompute a customer whose links ran through an identifier now known as shared."""
        conn = self.conn
        rows = conn.execute(
            sa.select(identity_nodes.c.node, identity_nodes.c.shared).where(
                identity_nodes.c.customer_id == customer_id
            )
        ).all()
        names = sorted(r.node for r in rows)
        shared = {r.node for r in rows if r.shared}
        edges: set[tuple[str, str]] = set()
        for chunk in chunks(names):
            edges.update(
                (a, b)
                for a, b in conn.execute(
                    sa.select(identity_edges.c.a, identity_edges.c.b).where(
                        identity_edges.c.a.in_(chunk), identity_edges.c.b.in_(names)
                    )
                )
            )
        owner: dict[str, str] = {}
        anchors: dict[str, str] = {}
        for component in ident.components(names, edges, shared):
            anchor = ident.smallest(component)
            anchors[ident.customer_id_for(anchor)] = anchor
            owner.update(dict.fromkeys(component, ident.customer_id_for(anchor)))
        lock_keys(conn, (f"customer:{c}" for c in anchors))
        states: dict[str, CustomerState] = {cid: CustomerState.empty() for cid in anchors}
        moves: dict[str, list[str]] = defaultdict(list)
        for event_id, event_nodes, raw in conn.execute(
            sa.select(timeline.c.event_id, timeline.c.nodes, timeline.c.event).where(
                timeline.c.customer_id == customer_id
            )
        ):
            cid = owner.get(ident.home_node(event_nodes, shared) or "", customer_id)
            states.setdefault(cid, CustomerState.empty()).apply(parse_event(raw))
            moves[cid].append(event_id)
        for cid, event_ids in moves.items():
            for chunk in chunks(event_ids):
                conn.execute(
                    sa.update(timeline)
                    .where(timeline.c.event_id.in_(chunk))
                    .values(customer_id=cid)
                )
        for cid in anchors:
            members = [n for n, owner_id in owner.items() if owner_id == cid]
            for chunk in chunks(members):
                conn.execute(
                    sa.update(identity_nodes)
                    .where(identity_nodes.c.node.in_(chunk))
                    .values(customer_id=cid)
                )
        conn.execute(sa.delete(customers).where(customers.c.customer_id == customer_id))
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
        self.outbox_rows.append(_split_event(customer_id, sorted(anchors), shared, trigger))
        self.locked |= anchors.keys()

    # -- pass 2: resolve and apply ----------------------------------------------------

    def _find(self, customer_id: str) -> str:
        while customer_id in self.redirect:
            customer_id = self.redirect[customer_id]
        return customer_id

    def _customer(self, customer_id: str, anchor: str) -> str:
        """The customer (loaded), or a new one; ``_load`` already read every candidate."""
        if customer_id not in self.customers:
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
        return survivor

    def _assign(self, name: str, customer_id: str) -> None:
        node = self.nodes[name]
        if node.customer_id != customer_id:
            node.customer_id = customer_id
            node.dirty = True

    def _merge(self, merged: str, survivor: str, linking: list[str], event: Envelope) -> None:
        gone = self.customers.pop(merged)
        keeper = self.customers[survivor]
        keeper.state.merge_from(gone.state)
        keeper.dirty = True
        self.redirect[merged] = survivor
        if gone.new:
            return  # never stored: nothing to redirect, no history to tell
        self.outbox_rows.append(_merged_event(survivor, merged, linking, event))

    def _apply(
        self, customer_id: str, event: Envelope, event_nodes: list[str], record: LogRecord
    ) -> None:
        customer = self.customers[customer_id]
        customer.state.apply(event)
        customer.dirty = True
        self.timeline_rows.append(
            {
                "event_id": str(event.event_id),
                "customer_id": customer_id,
                "occurred_at": event.occurred_at,
                "type": event.type,
                "channel": event.source.channel.value,
                "source_system": event.source.system,
                "nodes": event_nodes,
                "event": event.model_dump(mode="json"),
                "log_partition": record.partition,
                "log_offset": record.offset,
            }
        )

    # -- writing ----------------------------------------------------------------------

    def _flush(self) -> None:
        """Write everything pending; the batch may go on (nodes and customers stay loaded)."""
        conn = self.conn
        by_target: dict[str, list[str]] = defaultdict(list)
        for merged in self.redirect:
            by_target[self._find(merged)].append(merged)
        for target, merged_ids in by_target.items():
            for table in (identity_nodes, timeline):
                conn.execute(
                    sa.update(table)
                    .where(table.c.customer_id.in_(merged_ids))
                    .values(customer_id=target)
                )
            conn.execute(sa.delete(customers).where(customers.c.customer_id.in_(merged_ids)))
        self._write_aliases()
        dirty_nodes = [(name, n) for name, n in self.nodes.items() if n.dirty and n.customer_id]
        upsert(
            conn,
            identity_nodes,
            [
                {
                    "node": name,
                    "customer_id": self._find(node.customer_id or ""),
                    "shared": node.shared,
                    "n_account_id": node.counts.get("account_id", 0),
                    "n_email": node.counts.get("email", 0),
                    "n_phone": node.counts.get("phone", 0),
                }
                for name, node in dirty_nodes
            ],
            ["node"],
        )
        for _, node in dirty_nodes:
            node.dirty = False
        dirty = [(cid, c) for cid, c in self.customers.items() if c.dirty]
        upsert(conn, customers, [_customer_row(cid, c) for cid, c in dirty], ["customer_id"])
        for _, customer in dirty:
            customer.dirty = customer.new = False
        for row in self.timeline_rows:
            row["customer_id"] = self._find(row["customer_id"])
        insert_ignore(conn, timeline, self.timeline_rows, ["event_id"])
        if self.outbox_rows:
            conn.execute(sa.insert(outbox), self.outbox_rows)
        self.redirect.clear()
        self.timeline_rows, self.outbox_rows, self.alias_rows = [], [], []

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
    summary = customer.state.summary()
    return {
        "customer_id": customer_id,
        "anchor": customer.anchor,
        "display_name": summary.get("display_name"),
        "order_count": summary.get("order_count", 0),
        "revenue": summary.get("revenue_by_currency", {}),
        "first_order_at": summary.get("first_order_at"),
        "last_order_at": summary.get("last_order_at"),
        "open_ticket_count": summary.get("open_ticket_count", 0),
        "preferred_channel": summary.get("preferred_channel"),
        "first_seen": summary.get("first_seen"),
        "last_seen": summary.get("last_seen"),
        "event_count": summary.get("event_count", 0),
        "state": customer.state.to_json(),
    }


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
        source=Source(system="loopcrm-projections", channel=Channel.SYSTEM),
        identifiers=Identifiers(customer_id=customer_id),
        occurred_at=trigger.occurred_at,
        event_id=uuid.uuid5(DERIVED_NAMESPACE, name),
        causation_id=trigger.event_id,
    )
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

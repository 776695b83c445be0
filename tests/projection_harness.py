"""Helpers shared by the projection tests: feed events to a store, read the results,
and compute the same results at once from the set of events (the specification)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from events.codec import to_record
from events.log import LogRecord
from privacy.crypto import IdentifierHasher
from projections.customer import CustomerState, fold
from projections.identity import node, nodes_of, resolve_all
from projections.store import SqlProjectionStore
from projections.tables import customer_campaigns, customer_segments, customers, timeline
from schemas import Envelope

TOPIC = "crm.events"


def as_records(events: Sequence[Envelope], partition: int = 0, start: int = 0) -> list[LogRecord]:
    """Log records for events, at consecutive offsets of one partition."""
    records = []
    for offset, event in enumerate(events, start=start):
        out = to_record(event)
        records.append(LogRecord(TOPIC, partition, offset, 0, out.key, out.value, out.headers))
    return records


def apply_in_batches(
    store: SqlProjectionStore, records: Sequence[LogRecord], sizes: Iterable[int]
) -> None:
    position, sizes_iter = 0, iter(sizes)
    while position < len(records):
        size = max(1, next(sizes_iter, 500))
        store.apply_batch(TOPIC, records[position : position + size])
        position += size


def projected(store: SqlProjectionStore) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """(event id -> customer id, customer id -> 360 state JSON) for customers with events."""
    with store.engine.connect() as conn:
        owners = {
            e: c for e, c in conn.execute(sa.select(timeline.c.event_id, timeline.c.customer_id))
        }
        states = {
            cid: state
            for cid, state, count in conn.execute(
                sa.select(customers.c.customer_id, customers.c.state, customers.c.event_count)
            )
            if count
        }
    return owners, states


_CAMPAIGN_COUNTS = (
    "sent",
    "delivered",
    "opened",
    "clicked",
    "bounced",
    "unsubscribed",
    "conversions",
)


def membership_rows(store: SqlProjectionStore) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    """(the current-segment and campaign rows as stored, the same rows as each customer's
    state JSON says they should be): equal when the rows follow the states."""
    with store.engine.connect() as conn:
        stored = {
            ("segment", r.customer_id, r.segment_id, r.version, r.member)
            for r in conn.execute(sa.select(customer_segments))
        } | {
            ("campaign", r.customer_id, r.campaign_id, *(r._mapping[c] for c in _CAMPAIGN_COUNTS))
            for r in conn.execute(sa.select(customer_campaigns))
        }
        states = conn.execute(sa.select(customers.c.customer_id, customers.c.state)).all()
    wanted = set()
    for cid, state in states:
        wanted |= {
            ("segment", cid, sid, m["version"], m["member"]) for sid, m in state["segments"].items()
        }
        wanted |= {
            ("campaign", cid, key, *(c[name] for name in _CAMPAIGN_COUNTS))
            for key, c in state["campaigns"].items()
        }
    return stored, wanted


def expected(
    events: Sequence[Envelope], threshold: int, hasher: IdentifierHasher | None = None
) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """The same two maps computed at once from the set of events (with ``hasher``: as a
    store with a protector sees them, personal identifiers as keyed hashes)."""
    unique = {str(e.event_id): e for e in events}

    def nodes(event: Envelope) -> list[str]:
        if hasher is None or event.identifiers is None:
            return nodes_of(event.identifiers)
        return [node(k, hasher.hash(k, v)) for k, v in event.identifiers.present()]

    owners = resolve_all({eid: nodes(e) for eid, e in unique.items()}, threshold)
    by_customer: dict[str, list[Envelope]] = defaultdict(list)
    for eid, cid in owners.items():
        by_customer[cid].append(unique[eid])
    states = {cid: fold(evs, CustomerState.empty()).to_json() for cid, evs in by_customer.items()}
    return owners, states

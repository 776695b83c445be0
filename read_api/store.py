"""Queries of the read API over the projection tables (PostgreSQL or SQLite).

Every read takes the checkpoints first and the rows after, on one connection: the
reported freshness is a lower bound of what the rows include.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from projections.queries import live_customer
from read_api import cursor
from read_api.tables import checkpoints, customers, identity_nodes, timeline

SUMMARY_COLUMNS = (
    "customer_id",
    "display_name",
    "order_count",
    "revenue_by_currency",
    "first_order_at",
    "last_order_at",
    "open_ticket_count",
    "preferred_channel",
    "first_seen",
    "last_seen",
    "event_count",
)


class CustomerSort(StrEnum):
    LAST_SEEN = "last_seen"
    FIRST_SEEN = "first_seen"
    ORDER_COUNT = "order_count"
    EVENT_COUNT = "event_count"


_KEY_TYPES: dict[CustomerSort, type] = {
    CustomerSort.LAST_SEEN: datetime,
    CustomerSort.FIRST_SEEN: datetime,
    CustomerSort.ORDER_COUNT: int,
    CustomerSort.EVENT_COUNT: int,
}


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    next_cursor: str | None
    positions: dict[int, int]


@dataclass(frozen=True)
class Customer:
    row: dict[str, Any]
    identifiers: list[tuple[str, str, bool]]
    resolved_from: str | None
    positions: dict[int, int]


class ReadStore:
    """Read-only access to the projections of ``topic`` in ``schema`` (PostgreSQL)."""

    def __init__(self, engine: Engine, topic: str, *, schema: str | None = "crm") -> None:
        self.topic = topic
        self.schema = schema if engine.dialect.name == "postgresql" else None
        self.engine = engine.execution_options(schema_translate_map={None: self.schema})

    def ping(self) -> None:
        """Raise unless the database answers and the projection tables exist."""
        with self.engine.connect() as conn:
            conn.execute(sa.select(sa.func.count()).select_from(checkpoints)).scalar_one()

    def positions(self) -> dict[int, int]:
        with self.engine.connect() as conn:
            return self._positions(conn)

    def _positions(self, conn: Connection) -> dict[int, int]:
        rows = conn.execute(
            sa.select(checkpoints.c.partition, checkpoints.c.next_offset).where(
                checkpoints.c.topic == self.topic
            )
        )
        return {int(p): int(o) for p, o in rows}

    def search(
        self,
        *,
        node: str | None,
        name_prefix: str | None,
        sort: CustomerSort,
        descending: bool,
        limit: int,
        after: str | None,
    ) -> Page:
        """Customers with at least one event, ordered by (sort key, customer id)."""
        key_col, id_col = customers.c[sort.value], customers.c.customer_id
        kind = f"customers:{'-' if descending else ''}{sort.value}"
        query = sa.select(*(customers.c[c] for c in SUMMARY_COLUMNS)).where(
            customers.c.event_count > 0
        )
        if node is not None:
            owners = sa.select(identity_nodes.c.customer_id).where(identity_nodes.c.node == node)
            query = query.where(id_col.in_(owners.scalar_subquery()))
        if name_prefix:
            pattern = _escape_like(name_prefix.lower()) + "%"
            query = query.where(sa.func.lower(customers.c.display_name).like(pattern, escape="\\"))
        if after is not None:
            key, last_id = cursor.decode(after, kind, _KEY_TYPES[sort])
            if descending:
                query = query.where(
                    sa.or_(key_col < key, sa.and_(key_col == key, id_col < last_id))
                )
            else:
                query = query.where(
                    sa.or_(key_col > key, sa.and_(key_col == key, id_col > last_id))
                )
        order = (key_col.desc(), id_col.desc()) if descending else (key_col.asc(), id_col.asc())
        query = query.order_by(*order).limit(limit + 1)
        with self.engine.connect() as conn:
            positions = self._positions(conn)
            rows = [_summary(r) for r in conn.execute(query).mappings()]
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            next_cursor = cursor.encode(kind, last[sort.value], last["customer_id"])
        return Page(rows, next_cursor, positions)

    def customer(self, customer_id: str) -> Customer | None:
        """The live customer ``customer_id`` is or was merged into; None if unknown."""
        with self.engine.connect() as conn:
            positions = self._positions(conn)
            live = live_customer(conn, customer_id)
            if live is None:
                return None
            row = (
                conn.execute(sa.select(customers).where(customers.c.customer_id == live))
                .mappings()
                .one()
            )
            nodes = conn.execute(
                sa.select(identity_nodes.c.node, identity_nodes.c.shared)
                .where(identity_nodes.c.customer_id == live)
                .order_by(identity_nodes.c.node)
            ).all()
        identifiers = []
        for node, shared in nodes:
            kind, _, value = str(node).partition(":")
            identifiers.append((kind, value, bool(shared)))
        return Customer(
            {**_summary(row), "state": row["state"]},
            identifiers,
            None if live == customer_id else customer_id,
            positions,
        )

    def timeline(
        self,
        customer_id: str,
        *,
        channel: str | None,
        event_type: str | None,
        limit: int,
        after: str | None,
    ) -> tuple[str | None, Page]:
        """(live id or None, newest-first page of its events)."""
        kind = f"timeline:{customer_id}:{channel or ''}:{event_type or ''}"
        key = cursor.decode(after, kind, datetime) if after is not None else None
        with self.engine.connect() as conn:
            positions = self._positions(conn)
            live = live_customer(conn, customer_id)
            if live is None:
                return None, Page([], None, positions)
            at, event_id = timeline.c.occurred_at, timeline.c.event_id
            query = sa.select(
                event_id,
                at,
                timeline.c.type,
                timeline.c.channel,
                timeline.c.source_system,
                timeline.c.event,
            ).where(timeline.c.customer_id == live)
            if channel:
                query = query.where(timeline.c.channel == channel)
            if event_type:
                query = query.where(timeline.c.type == event_type)
            if key is not None:
                query = query.where(sa.or_(at < key[0], sa.and_(at == key[0], event_id < key[1])))
            query = query.order_by(at.desc(), event_id.desc()).limit(limit + 1)
            rows = [dict(r) for r in conn.execute(query).mappings()]
        for r in rows:
            r["occurred_at"] = _utc(r["occurred_at"])
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = cursor.encode(kind, rows[-1]["occurred_at"], rows[-1]["event_id"])
        return live, Page(rows, next_cursor, positions)


def _summary(row: RowMapping | Mapping[str, Any]) -> dict[str, Any]:
    out = {c: row[c] for c in SUMMARY_COLUMNS}
    for c in ("first_order_at", "last_order_at", "first_seen", "last_seen"):
        out[c] = _utc(out[c])
    out["revenue"] = {k: str(v) for k, v in (out.pop("revenue_by_currency") or {}).items()}
    return out


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes (the store writes UTC)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")

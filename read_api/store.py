"""Queries of the read API over the projection tables (PostgreSQL or SQLite).

Every read takes the checkpoints first and the rows after, on one connection: the
reported freshness is a lower bound of what the rows include.

Personal data: identity nodes of personal kinds hold keyed hashes (their plain value is
in ``identity_nodes.value`` until the customer is erased) and timeline events are
stored sealed; with a ``Protector`` the store opens them for display, never once the
customer is erased, and never hands out the sealed blob (``pii``) itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from privacy.protect import Protector
from privacy.subject import export_subject
from projections.queries import live_customer
from read_api import cursor
from read_api.tables import (
    assessment_runs,
    campaigns,
    checkpoints,
    customer_campaigns,
    customer_segments,
    customers,
    identity_nodes,
    segment_definitions,
    segment_history,
    timeline,
)
from schemas.identifiers import HASHED_KINDS, is_identifier_hash

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

    def __init__(
        self,
        engine: Engine,
        topic: str,
        *,
        schema: str | None = "crm",
        protector: Protector | None = None,
    ) -> None:
        self.topic = topic
        self.protector = protector
        self._customer_query: sa.Select[Any] | None = None
        self._members_queries: dict[bool, sa.Select[Any]] = {}  # by "has a cursor"
        self.schema = schema if engine.dialect.name == "postgresql" else None
        self.engine = (
            engine
            if self.schema is None or engine.get_execution_options().get("search_path") == schema
            else engine.execution_options(schema_translate_map={None: self.schema})
        )

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
        segment: str | None = None,
        rfm_segment: str | None = None,
        value_tier: str | None = None,
    ) -> Page:
        """Customers with at least one event, ordered by (sort key, customer id).

        ``segment`` keeps current members of that segment; ``rfm_segment`` and
        ``value_tier`` keep customers with that fact (from the latest assessment)."""
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
        if segment is not None:
            members = sa.select(customer_segments.c.customer_id).where(
                customer_segments.c.segment_id == segment, customer_segments.c.member
            )
            query = query.where(id_col.in_(members.scalar_subquery()))
        if rfm_segment is not None:
            query = query.where(customers.c.rfm_segment == rfm_segment)
        if value_tier is not None:
            query = query.where(customers.c.value_tier == value_tier)
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
        """The live customer ``customer_id`` is or was merged into; None if unknown.

        One statement reads the checkpoints, the customer row and its identity nodes
        (one snapshot, one round trip: this is the API's hottest read)."""
        with self.engine.connect() as conn:
            positions, row, nodes = self._customer_with_nodes(conn, customer_id)
            live: str | None = customer_id
            if row is None:  # merged away (or unknown): follow its aliases
                live = live_customer(conn, customer_id)
                if live is None:
                    return None
                _, row, nodes = self._customer_with_nodes(conn, live)
                if row is None:
                    return None
        erased_at = _utc(row["erased_at"])
        identifiers = []
        for node, plain, shared in sorted(nodes):
            kind, _, value = str(node).partition(":")
            shown = _shown_identifier(kind, value, plain, erased=erased_at is not None)
            if shown is not None:
                identifiers.append((kind, shown, bool(shared)))
        summary = _summary(row)
        if erased_at is not None:
            summary["display_name"] = None
        return Customer(
            {**summary, "erased_at": erased_at, "state": row["state"]},
            identifiers,
            None if live == customer_id else customer_id,
            positions,
        )

    def _customer_with_nodes(
        self, conn: Connection, customer_id: str
    ) -> tuple[dict[int, int], RowMapping | None, list[Any]]:
        """(positions, the customer's row or None, its nodes as [node, value, shared])."""
        if self._customer_query is None:
            self._customer_query = self._build_customer_query(conn.dialect.name == "postgresql")
        row = conn.execute(self._customer_query, {"customer_id": customer_id}).mappings().one()
        found = row if row["customer_id"] is not None else None
        return (
            _positions_of(row["_positions"]),
            found,
            (row["_nodes"] or []) if found is not None else [],
        )

    def _positions_column(self, pg: bool) -> sa.Label[Any]:
        """The checkpoints of ``topic`` as one JSON object column (``_positions``)."""
        object_agg = sa.func.json_object_agg if pg else sa.func.json_group_object
        return (
            sa.select(object_agg(checkpoints.c.partition, checkpoints.c.next_offset, type_=sa.JSON))
            .where(checkpoints.c.topic == self.topic)
            .scalar_subquery()
            .label("_positions")
        )

    def _build_customer_query(self, pg: bool) -> sa.Select[Any]:
        json_array = sa.func.json_build_array if pg else sa.func.json_array
        array_agg = sa.func.json_agg if pg else sa.func.json_group_array
        nodes = (
            sa.select(
                array_agg(
                    json_array(
                        identity_nodes.c.node, identity_nodes.c.value, identity_nodes.c.shared
                    ),
                    type_=sa.JSON,
                )
            )
            .where(identity_nodes.c.customer_id == customers.c.customer_id)
            .scalar_subquery()
        )
        one = sa.select(sa.literal(1).label("one")).subquery()
        found = one.outerjoin(customers, customers.c.customer_id == sa.bindparam("customer_id"))
        return sa.select(
            self._positions_column(pg), nodes.label("_nodes"), *customers.c
        ).select_from(found)

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
            erased = (
                conn.execute(
                    sa.select(customers.c.erased_at).where(customers.c.customer_id == live)
                ).scalar_one_or_none()
                is not None
            )
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
            rows = _dicts(conn.execute(query))
        for r in rows:
            r["occurred_at"] = _utc(r["occurred_at"])
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = cursor.encode(kind, rows[-1]["occurred_at"], rows[-1]["event_id"])
        self._open([r["event"] for r in rows], erased=erased)
        return live, Page(rows, next_cursor, positions)

    def _open(self, events: list[dict[str, Any]], *, erased: bool) -> None:
        """Open sealed events for display (one key lookup for the page); drop ``pii``."""
        if self.protector is not None and not erased:
            self.protector.open_all(events)
        for event in events:
            event.pop("pii", None)

    def export(self, customer_id: str, *, now: datetime) -> dict[str, Any] | None:
        """Everything held about the customer ``customer_id`` resolves to (None: unknown),
        personal data opened unless erased (``privacy.subject.export_subject``)."""
        with self.engine.connect() as conn:
            return export_subject(conn, customer_id, self.protector, now=now)

    def resolve(self, customer_id: str) -> str | None:
        """The live customer ``customer_id`` is or was merged into; None if unknown."""
        with self.engine.connect() as conn:
            return live_customer(conn, customer_id)

    # --- the closed loop: segments, campaigns, assessments -----------------------------

    def segments(self) -> tuple[list[dict[str, Any]], dict[int, int]]:
        """The latest version of every segment, active or retired, with its member count."""
        with self.engine.connect() as conn:
            positions = self._positions(conn)
            rows = _latest_segments(conn, None)
        return rows, positions

    def segment(
        self, segment_id: str
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]], dict[int, int]]:
        """(latest version or None if unknown, every version oldest first, positions)."""
        with self.engine.connect() as conn:
            positions = self._positions(conn)
            latest = _latest_segments(conn, segment_id)
            versions = [
                _segment_version(r)
                for r in conn.execute(
                    sa.select(segment_definitions)
                    .where(segment_definitions.c.segment_id == segment_id)
                    .order_by(segment_definitions.c.version)
                ).mappings()
            ]
        return (latest[0] if latest else None), versions, positions

    def segment_members(
        self, segment_id: str, *, limit: int, after: str | None
    ) -> tuple[int, Page] | None:
        """(latest version, its current members by customer id); None if unknown."""
        kind = f"segment-members:{segment_id}"
        last_id = cursor.decode(after, kind, int)[1] if after is not None else None
        paged = last_id is not None
        query = self._members_queries.get(paged)
        if query is None:
            pg = self.engine.dialect.name == "postgresql"
            query = self._members_queries[paged] = self._build_members_query(pg, paged)
        params = {"segment_id": segment_id, "after": last_id, "n": limit + 1}
        with self.engine.connect() as conn:
            rows = _dicts(conn.execute(query, params))
            if rows:  # one round trip: the page carries the version and the positions
                positions, version = _positions_of(rows[0]["_positions"]), rows[0]["_version"]
                for r in rows:
                    del r["_positions"], r["_version"]
            else:
                positions, version = self._positions(conn), _latest_version(conn, segment_id)
                if version is None:
                    return None
        for r in rows:
            r["since"] = _utc(r["since"])
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = cursor.encode(kind, version, rows[-1]["customer_id"])
        return version, Page(rows, next_cursor, positions)

    def _build_members_query(self, pg: bool, paged: bool) -> sa.Select[Any]:
        """At most ``:n`` current members of the latest version of ``:segment_id`` (if
        ``paged``, after ``:after``), each row with ``_positions`` and ``_version``."""
        cs, c, sd = customer_segments, customers, segment_definitions
        version = (
            sa.select(sa.func.max(sd.c.version))
            .where(sd.c.segment_id == sa.bindparam("segment_id"))
            .scalar_subquery()
        )
        query = (
            sa.select(
                self._positions_column(pg),
                version.label("_version"),
                cs.c.customer_id,
                cs.c.since,
                c.c.display_name,
                c.c.rfm_segment,
                c.c.value_tier,
            )
            .join(c, c.c.customer_id == cs.c.customer_id)
            .where(
                cs.c.segment_id == sa.bindparam("segment_id"), cs.c.version == version, cs.c.member
            )
        )
        if paged:
            query = query.where(cs.c.customer_id > sa.bindparam("after"))
        return query.order_by(cs.c.customer_id).limit(sa.bindparam("n", type_=sa.Integer))

    def segment_history(self, segment_id: str, *, limit: int, after: str | None) -> Page | None:
        """Entered/exited events of the segment, newest first; None if the segment is unknown."""
        kind = f"segment-history:{segment_id}"
        key = cursor.decode(after, kind, datetime) if after is not None else None
        with self.engine.connect() as conn:
            positions = self._positions(conn)
            if _latest_version(conn, segment_id) is None:
                return None
            sh = segment_history
            at, event_id = sh.c.occurred_at, sh.c.event_id
            query = sa.select(event_id, at, sh.c.customer_id, sh.c.version, sh.c.entered).where(
                sh.c.segment_id == segment_id
            )
            if key is not None:
                query = query.where(sa.or_(at < key[0], sa.and_(at == key[0], event_id < key[1])))
            query = query.order_by(at.desc(), event_id.desc()).limit(limit + 1)
            rows = _dicts(conn.execute(query))
        for r in rows:
            r["occurred_at"] = _utc(r["occurred_at"])
            r["change"] = "entered" if r.pop("entered") else "exited"
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = cursor.encode(kind, rows[-1]["occurred_at"], rows[-1]["event_id"])
        return Page(rows, next_cursor, positions)

    def customer_segments(
        self, customer_id: str
    ) -> tuple[str | None, list[dict[str, Any]], dict[int, int]]:
        """(live id or None, the customer's memberships by segment id, positions)."""
        with self.engine.connect() as conn:
            positions = self._positions(conn)
            live = live_customer(conn, customer_id)
            if live is None:
                return None, [], positions
            cs = customer_segments
            rows = _dicts(
                conn.execute(
                    sa.select(cs.c.segment_id, cs.c.version, cs.c.member, cs.c.since)
                    .where(cs.c.customer_id == live)
                    .order_by(cs.c.segment_id)
                )
            )
            names = {r["segment_id"]: r for r in _latest_segments(conn, None, with_counts=False)}
        for r in rows:
            r["since"] = _utc(r["since"])
            latest = names.get(r["segment_id"])
            r["name"] = latest["name"] if latest else None
            r["segment_status"] = latest["status"] if latest else None
        return live, rows, positions

    def customer_campaigns(
        self, customer_id: str
    ) -> tuple[str | None, list[dict[str, Any]], dict[int, int]]:
        """(live id or None, the customer's campaigns newest launch first, positions)."""
        with self.engine.connect() as conn:
            positions = self._positions(conn)
            live = live_customer(conn, customer_id)
            if live is None:
                return None, [], positions
            cc, c = customer_campaigns, campaigns
            rows = _dicts(
                conn.execute(
                    sa.select(
                        cc,
                        c.c.name,
                        c.c.channel,
                        c.c.launched_at,
                    )
                    .outerjoin(c, c.c.campaign_id == cc.c.campaign_id)
                    .where(cc.c.customer_id == live)
                )
            )
        out = []
        for r in rows:
            r.pop("customer_id")
            for col in ("targeted_at", "launched_at"):
                r[col] = _utc(r[col])
            r["revenue"] = {k: str(v) for k, v in (r["revenue"] or {}).items()}
            out.append(r)
        epoch = datetime.min.replace(tzinfo=UTC)
        out.sort(key=lambda r: (r["launched_at"] or epoch, r["campaign_id"]), reverse=True)
        return live, out, positions

    def campaigns(self) -> tuple[list[dict[str, Any]], dict[int, int]]:
        """Every campaign, newest launch first."""
        with self.engine.connect() as conn:
            positions = self._positions(conn)
            rows = [
                _campaign(r)
                for r in conn.execute(
                    sa.select(campaigns).order_by(
                        campaigns.c.launched_at.desc(), campaigns.c.campaign_id
                    )
                ).mappings()
            ]
        return rows, positions

    def campaign(
        self, campaign_id: str
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]], dict[int, int]]:
        """(the campaign or None, its targeted customers' rows, positions)."""
        with self.engine.connect() as conn:
            positions = self._positions(conn)
            found = (
                conn.execute(sa.select(campaigns).where(campaigns.c.campaign_id == campaign_id))
                .mappings()
                .first()
            )
            if found is None:
                return None, [], positions
            cc = customer_campaigns
            rows = _dicts(
                conn.execute(
                    sa.select(cc)
                    .where(cc.c.campaign_id == campaign_id, cc.c.target_group.is_not(None))
                    .order_by(cc.c.customer_id)
                )
            )
        return _campaign(found), rows, positions

    def assessments(self, *, limit: int, after: str | None) -> Page:
        """Assessment runs without their summaries, newest first (completed_at, run id)."""
        kind = "assessments"
        key = cursor.decode(after, kind, datetime) if after is not None else None
        ar = assessment_runs
        at, run_id = ar.c.completed_at, ar.c.run_id
        query = sa.select(run_id, ar.c.as_of, at, ar.c.customers)
        if key is not None:
            query = query.where(sa.or_(at < key[0], sa.and_(at == key[0], run_id < key[1])))
        query = query.order_by(at.desc(), run_id.desc()).limit(limit + 1)
        with self.engine.connect() as conn:
            positions = self._positions(conn)
            rows = [_run(r) for r in conn.execute(query).mappings()]
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = cursor.encode(kind, rows[-1]["completed_at"], rows[-1]["run_id"])
        return Page(rows, next_cursor, positions)

    def assessment(self, run_id: str | None) -> tuple[dict[str, Any] | None, dict[int, int]]:
        """The run ``run_id`` (the newest when None) with its summary; None if there is none."""
        ar = assessment_runs
        query = sa.select(ar.c.run_id, ar.c.as_of, ar.c.completed_at, ar.c.customers, ar.c.summary)
        if run_id is None:
            query = query.order_by(ar.c.completed_at.desc(), ar.c.run_id.desc()).limit(1)
        else:
            query = query.where(ar.c.run_id == run_id)
        with self.engine.connect() as conn:
            positions = self._positions(conn)
            row = conn.execute(query).mappings().first()
        return (None if row is None else _run(row)), positions


def _positions_of(column: Mapping[str, Any] | None) -> dict[int, int]:
    """A ``_positions`` JSON column as {partition: next offset}."""
    return {int(p): int(o) for p, o in (column or {}).items()}


def _latest_version(conn: Connection, segment_id: str) -> int | None:
    version = conn.execute(
        sa.select(sa.func.max(segment_definitions.c.version)).where(
            segment_definitions.c.segment_id == segment_id
        )
    ).scalar_one_or_none()
    return None if version is None else int(version)


def _latest_segments(
    conn: Connection, segment_id: str | None, *, with_counts: bool = True
) -> list[dict[str, Any]]:
    sd = segment_definitions
    latest = sa.select(
        sd.c.segment_id.label("sid"),
        sa.func.max(sd.c.version).label("latest"),
        sa.func.count().label("versions"),
    ).group_by(sd.c.segment_id)
    if segment_id is not None:
        latest = latest.where(sd.c.segment_id == segment_id)
    sub = latest.subquery()
    query = (
        sa.select(sd, sub.c.versions)
        .join(sub, sa.and_(sd.c.segment_id == sub.c.sid, sd.c.version == sub.c.latest))
        .order_by(sd.c.segment_id)
    )
    rows = [
        {**_segment_version(r), "versions": int(r["versions"])}
        for r in conn.execute(query).mappings()
    ]
    counts: dict[tuple[str, int], int] = {}
    if with_counts and rows:
        cs = customer_segments
        count_query = (
            sa.select(cs.c.segment_id, cs.c.version, sa.func.count())
            .where(cs.c.member)
            .group_by(cs.c.segment_id, cs.c.version)
        )
        if segment_id is not None:
            count_query = count_query.where(cs.c.segment_id == segment_id)
        counts = {(sid, int(v)): int(n) for sid, v, n in conn.execute(count_query)}
    for r in rows:
        r["status"] = "retired" if r["retired_at"] is not None else "active"
        r["member_count"] = counts.get((r["segment_id"], r["version"]), 0)
    return rows


def _segment_version(row: RowMapping | Mapping[str, Any]) -> dict[str, Any]:
    return {
        "segment_id": row["segment_id"],
        "version": int(row["version"]),
        "name": row["name"],
        "description": row["description"],
        "rule": row["rule"],
        "defined_at": _utc(row["defined_at"]),
        "retired_at": _utc(row["retired_at"]),
    }


def _dicts(result: sa.Result[Any]) -> list[dict[str, Any]]:
    """The rows as dicts, the column names read once (``dict(row_mapping)`` builds a
    keys view per row: ~14 us, 0.7 ms of a 50-row page)."""
    keys = list(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result]


def _campaign(row: RowMapping | Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out.pop("event_id", None)
    out["launched_at"] = _utc(out["launched_at"])
    return out


def _run(row: RowMapping | Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["as_of"], out["completed_at"] = _utc(out["as_of"]), _utc(out["completed_at"])
    return out


def _summary(row: RowMapping | Mapping[str, Any]) -> dict[str, Any]:
    out = {c: row[c] for c in SUMMARY_COLUMNS}
    for c in ("first_order_at", "last_order_at", "first_seen", "last_seen"):
        out[c] = _utc(out[c])
    out["revenue"] = {k: str(v) for k, v in (out.pop("revenue_by_currency") or {}).items()}
    return out


def _shown_identifier(kind: str, value: str, plain: str | None, *, erased: bool) -> str | None:
    """How an identifier node is shown in the 360: account and customer ids as they are,
    personal ones by their plain value (None, i.e. not shown, once erased or when only
    the keyed hash is known). A node that is no hash comes from plain events (a store
    without a protector) and is its own plain value."""
    if kind not in HASHED_KINDS:
        return value
    if erased:
        return None
    if plain is not None:
        return plain
    return None if is_identifier_hash(value) else value


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes (the store writes UTC)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")

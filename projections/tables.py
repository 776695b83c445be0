"""Projection tables (SQLAlchemy Core), the same on PostgreSQL and SQLite.

Tables have no schema in their definition: on PostgreSQL the store maps them into a
named schema (``crm`` by default, a fresh one during a replay) with SQLAlchemy's
``schema_translate_map``, which is what makes blue/green rebuilds possible.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()
Json = JSON().with_variant(JSONB(), "postgresql")
Timestamp = DateTime(timezone=True)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
)

# Every event of every customer; also the dedupe record (a second insert of an
# event id is a no-op) and the source for recomputing a customer after a split.
timeline = Table(
    "timeline",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("occurred_at", Timestamp, nullable=False),
    Column("type", String(100), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("source_system", String(100), nullable=False),
    Column("nodes", Json, nullable=False),
    Column("event", Json, nullable=False),
    Column("log_partition", Integer, nullable=False),
    Column("log_offset", BigInteger, nullable=False),
    Index("timeline_by_customer", "customer_id", "occurred_at", "event_id"),
)

identity_nodes = Table(
    "identity_nodes",
    metadata,
    Column("node", Text, primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("shared", Boolean, nullable=False, default=False),
    Column("n_account_id", Integer, nullable=False, default=0),
    Column("n_email", Integer, nullable=False, default=0),
    Column("n_phone", Integer, nullable=False, default=0),
    Index("identity_nodes_by_customer", "customer_id"),
)

identity_edges = Table(
    "identity_edges",
    metadata,
    Column("a", Text, primary_key=True),
    Column("b", Text, primary_key=True),
)

customers = Table(
    "customers",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("anchor", Text, nullable=False),
    Column("display_name", Text),
    Column("order_count", Integer, nullable=False, default=0),
    Column("revenue", Json, nullable=False),
    Column("first_order_at", Timestamp),
    Column("last_order_at", Timestamp),
    Column("open_ticket_count", Integer, nullable=False, default=0),
    Column("preferred_channel", String(32)),
    Column("first_seen", Timestamp),
    Column("last_seen", Timestamp),
    Column("event_count", Integer, nullable=False, default=0),
    Column("state", Json, nullable=False),
)

# A projection of the ``identity.merged`` events in the log (not of how a batch happened
# to merge), so a rebuild reproduces it; an id resolves by following aliases to a live
# customer. Latest merge of an id wins by (occurred_at, event_id).
customer_aliases = Table(
    "customer_aliases",
    metadata,
    Column("alias", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("occurred_at", Timestamp, nullable=False),
    Column("event_id", String(36), nullable=False),
    Index("customer_aliases_by_customer", "customer_id"),
)

# Derived events and dead letters, written in the batch's transaction and published
# to the log afterwards (at least once; event ids are deterministic, so consumers dedupe).
outbox = Table(
    "outbox",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("target", String(16), nullable=False),  # events | deadletters
    Column("key", LargeBinary),
    Column("value", LargeBinary, nullable=False),
    Column("headers", Json, nullable=False),
)

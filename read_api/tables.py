"""The projection tables as the read API sees them: only the columns it reads.

No schema in the definitions: ``ReadStore`` maps them into the projection schema with
``schema_translate_map`` (PostgreSQL), as the projection store does.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, Column, DateTime, Integer, MetaData, String, Table
from sqlalchemy import Text as TextType
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

customers = Table(
    "customers",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("display_name", TextType),
    Column("order_count", Integer, nullable=False),
    Column("revenue", Json, nullable=False),
    Column("first_order_at", Timestamp),
    Column("last_order_at", Timestamp),
    Column("open_ticket_count", Integer, nullable=False),
    Column("preferred_channel", String(32)),
    Column("first_seen", Timestamp),
    Column("last_seen", Timestamp),
    Column("event_count", Integer, nullable=False),
    Column("state", Json, nullable=False),
)

timeline = Table(
    "timeline",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("occurred_at", Timestamp, nullable=False),
    Column("type", String(100), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("source_system", String(100), nullable=False),
    Column("event", Json, nullable=False),
)

identity_nodes = Table(
    "identity_nodes",
    metadata,
    Column("node", TextType, primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("shared", Boolean, nullable=False),
)

customer_aliases = Table(
    "customer_aliases",
    metadata,
    Column("alias", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False),
)

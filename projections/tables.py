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
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection

from projections.segment_rules import fact_columns

metadata = MetaData()
Json = JSON().with_variant(JSONB(), "postgresql")
Document = JSON()
"""A JSON document only ever written and read whole (an event, a customer's state):
PostgreSQL's ``json`` keeps the text as written, where ``jsonb`` parses every write
into its binary form and prints every read back to text."""
Timestamp = DateTime(timezone=True)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
)

CHECKPOINT_CHANNEL = "loopcrm_checkpoints"
"""PostgreSQL: every transaction that writes ``checkpoints`` sends a notification on
this channel whose payload is the schema's name, when it commits (a statement trigger,
``notify_on_checkpoints``). The read API listens, so a request waiting for positions
wakes when the batch that reaches them commits instead of at its next poll."""


def notify_on_checkpoints(conn: Connection, schema: str | None) -> None:
    """Add the notifying trigger to ``schema``'s checkpoints if it is missing (PostgreSQL;
    run under ``create_schema``'s lock). Whoever writes checkpoints (a worker of any
    version, a rebuild) notifies; a schema renamed by a replay's switch notifies its
    new name."""
    prefix = f'"{schema}".' if schema else ""
    if conn.execute(
        text(
            "SELECT 1 FROM pg_trigger WHERE tgrelid = CAST(:t AS regclass) "
            "AND tgname = 'checkpoints_notify'"
        ),
        {"t": f"{prefix}checkpoints"},
    ).first():
        return
    conn.execute(
        text(
            f"CREATE OR REPLACE FUNCTION {prefix}notify_checkpoints() RETURNS trigger "
            f"LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('{CHECKPOINT_CHANNEL}', "
            "TG_TABLE_SCHEMA); RETURN NULL; END $$"
        )
    )
    conn.execute(
        text(
            f"CREATE TRIGGER checkpoints_notify AFTER INSERT OR UPDATE ON {prefix}checkpoints "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {prefix}notify_checkpoints()"
        )
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
    Column("event", Document, nullable=False),
    # NULL for derived events the processor applied in place before publishing them
    Column("log_partition", Integer),
    Column("log_offset", BigInteger),
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
    # the plain value of a personal identifier (the node holds its keyed hash), for the
    # customer 360; NULL once the customer is erased (and when only the hash is known)
    Column("value", Text),
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
    Column("revenue_by_currency", Json, nullable=False),
    Column("state", Document, nullable=False),
    Column("erased_at", Timestamp),
    # The customer's facts (``projections.facts``), one column per rule field
    # (``schemas.rules.FIELDS``: order_count, last_seen, rfm_segment, ...): what the read
    # API lists and segment rules are evaluated over in SQL.
    *fact_columns(),
    Index("customers_by_rfm_segment", "rfm_segment"),
    Index("customers_by_value_tier", "value_tier"),
    # the read API's default customer list (newest activity first, keyset pages); the
    # other sorts scan: an index per sort would slow every batch's upsert (~15% for 4)
    Index("customers_by_last_seen", "last_seen", "customer_id"),
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

# Events a rebuild sets aside until it has read up to a position (``_Batch._defer``).
deferred_events = Table(
    "deferred_events",
    metadata,
    Column("log_partition", Integer, primary_key=True),
    Column("log_offset", BigInteger, primary_key=True),
    Column("event", Document, nullable=False),
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

# --- the closed loop: segments, campaigns, assessments ---------------------------------

# Projections of ``segment.defined`` / ``segment.retired``: every version of every segment.
segment_definitions = Table(
    "segment_definitions",
    metadata,
    Column("segment_id", String(128), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("name", Text, nullable=False),
    Column("description", Text),
    Column("rule", Json, nullable=False),
    Column("defined_at", Timestamp, nullable=False),
    Column("retired_at", Timestamp),
    Column("event_id", String(36), nullable=False),
)

# Every ``segment.entered`` / ``segment.exited`` event: membership history, re-pointed
# to the survivor when customers merge (like the timeline).
segment_history = Table(
    "segment_history",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("segment_id", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("entered", Boolean, nullable=False),
    Column("occurred_at", Timestamp, nullable=False),
    Index("segment_history_by_segment", "segment_id", "occurred_at"),
    Index("segment_history_by_customer", "customer_id"),
)

# Current membership per customer and segment, as folded into the customer 360
# (latest by (version, stamp)); rewritten with the customer's row.
customer_segments = Table(
    "customer_segments",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("segment_id", String(128), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("member", Boolean, nullable=False),
    Column("since", Timestamp, nullable=False),
    Index("customer_segments_members", "segment_id", "version", "member", "customer_id"),
)

# Projection of ``campaign.launched``.
campaigns = Table(
    "campaigns",
    metadata,
    Column("campaign_id", String(128), primary_key=True),
    Column("name", Text, nullable=False),
    Column("segment_id", String(128), nullable=False),
    Column("segment_version", Integer, nullable=False),
    Column("channel", String(32), nullable=False),
    Column("offer", Text),
    Column("control_share", Float, nullable=False),
    Column("attribution_window_days", Integer, nullable=False),
    Column("launched_at", Timestamp, nullable=False),
    Column("audience_size", Integer),
    Column("excluded_no_consent", Integer),
    Column("event_id", String(36), nullable=False),
)

# A customer's exposure to and response to one campaign, as folded into its 360;
# rewritten with the customer's row (so merges add up). The campaign results read this.
customer_campaigns = Table(
    "customer_campaigns",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("campaign_id", String(128), primary_key=True),
    Column("target_group", String(16)),
    Column("targeted_at", Timestamp),
    Column("rfm_segment", String(64)),
    Column("sent", Integer, nullable=False),
    Column("delivered", Integer, nullable=False),
    Column("opened", Integer, nullable=False),
    Column("clicked", Integer, nullable=False),
    Column("bounced", Integer, nullable=False),
    Column("unsubscribed", Integer, nullable=False),
    Column("conversions", Integer, nullable=False),
    Column("revenue", Json, nullable=False),
    Index("customer_campaigns_by_campaign", "campaign_id", "target_group"),
)

# Projection of ``assessment.completed``: one row per run with its summary.
assessment_runs = Table(
    "assessment_runs",
    metadata,
    Column("run_id", String(128), primary_key=True),
    Column("as_of", Timestamp, nullable=False),
    Column("completed_at", Timestamp, nullable=False),
    Column("customers", Integer, nullable=False),
    Column("summary", Json, nullable=False),
    Column("event_id", String(36), nullable=False),
)

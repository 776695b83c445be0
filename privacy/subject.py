"""Data subjects' rights over the projections: erasure requests and access exports.

* ``request_erasure`` appends ``customer.erasure_requested``; the processor (live)
  destroys the customer's data keys, appends ``customer.erased`` and redacts every
  projection (``projections.store``). The request itself carries no personal data.
* ``export_subject`` gathers everything held about one customer (GDPR art. 15):
  profile, identifiers, consents, every event of their timeline with its personal
  data opened, segments, campaigns and merged ids, as one JSON-compatible dict.

Both read projection tables only (through ``projections.tables``/``queries``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from events.log import EventLog
from privacy.protect import Protector
from projections.queries import live_customer
from projections.tables import (
    customer_aliases,
    customer_campaigns,
    customer_segments,
    customers,
    identity_nodes,
    segment_history,
    timeline,
)
from schemas import Channel, CustomerErasureRequested, Envelope, Identifiers, Source, new_event
from schemas.identifiers import HASHED_KINDS

EXPORT_FORMAT: Final = 1
PRIVACY_SOURCE: Final = Source(system="loopcrm-privacy", channel=Channel.SYSTEM)


def request_erasure(
    event_log: EventLog,
    customer_id: str,
    *,
    now: datetime,
    reason: str | None = None,
    requested_by: str | None = None,
) -> Envelope:
    """Append an erasure request for ``customer_id`` (a live or merged id)."""
    event = new_event(
        CustomerErasureRequested(reason=reason, requested_by=requested_by),
        source=PRIVACY_SOURCE,
        identifiers=Identifiers(customer_id=customer_id),
        occurred_at=now,
    )
    event_log.append([event])
    return event


def export_subject(
    conn: Connection, customer_id: str, protector: Protector | None, *, now: datetime
) -> dict[str, Any] | None:
    """Everything held about the customer ``customer_id`` resolves to (None: unknown)."""
    live = live_customer(conn, customer_id)
    if live is None:
        return None
    row = conn.execute(
        sa.select(customers.c.state, customers.c.erased_at).where(customers.c.customer_id == live)
    ).one()
    state = row.state
    identifiers = []
    for node, value, shared in conn.execute(
        sa.select(identity_nodes.c.node, identity_nodes.c.value, identity_nodes.c.shared)
        .where(identity_nodes.c.customer_id == live)
        .order_by(identity_nodes.c.node)
    ):
        kind, _, key = node.partition(":")
        plain = key if kind not in HASHED_KINDS else value
        if plain is not None:
            identifiers.append({"kind": kind, "value": plain, "shared": shared})
    raws = [
        dict(raw)
        for (raw,) in conn.execute(
            sa.select(timeline.c.event)
            .where(timeline.c.customer_id == live)
            .order_by(timeline.c.occurred_at, timeline.c.event_id)
        )
    ]
    if protector is not None and row.erased_at is None:
        protector.open_all(raws)
    for raw in raws:
        raw.pop("pii", None)
    return {
        "format": EXPORT_FORMAT,
        "exported_at": now.isoformat(),
        "customer_id": live,
        "merged_ids": sorted(
            conn.execute(
                sa.select(customer_aliases.c.alias).where(customer_aliases.c.customer_id == live)
            ).scalars()
        ),
        "erased_at": None if row.erased_at is None else row.erased_at.isoformat(),
        "profile": {k: v["value"] for k, v in state["profile"].items()},
        "attributes": {k: v["value"] for k, v in state["attributes"].items()},
        "identifiers": identifiers,
        "consents": {
            channel: {purpose: v["value"] for purpose, v in purposes.items()}
            for channel, purposes in state["consents"].items()
        },
        "segments": [
            {"segment_id": sid, "version": version, "member": member, "since": since.isoformat()}
            for sid, version, member, since in conn.execute(
                sa.select(
                    customer_segments.c.segment_id,
                    customer_segments.c.version,
                    customer_segments.c.member,
                    customer_segments.c.since,
                )
                .where(customer_segments.c.customer_id == live)
                .order_by(customer_segments.c.segment_id)
            )
        ],
        "segment_history": [
            {
                "segment_id": r.segment_id,
                "version": r.version,
                "entered": r.entered,
                "at": r.occurred_at.isoformat(),
            }
            for r in conn.execute(
                sa.select(segment_history)
                .where(segment_history.c.customer_id == live)
                .order_by(segment_history.c.occurred_at, segment_history.c.event_id)
            )
        ],
        "campaigns": [
            {
                "campaign_id": r.campaign_id,
                "group": r.target_group,
                "targeted_at": None if r.targeted_at is None else r.targeted_at.isoformat(),
                "sent": r.sent,
                "opened": r.opened,
                "clicked": r.clicked,
                "unsubscribed": r.unsubscribed,
                "conversions": r.conversions,
                "revenue": r.revenue,
            }
            for r in conn.execute(
                sa.select(customer_campaigns)
                .where(customer_campaigns.c.customer_id == live)
                .order_by(customer_campaigns.c.campaign_id)
            )
        ],
        "assessment": None if state.get("assessment") is None else state["assessment"]["value"],
        "events": raws,
    }

"""Planning and tracking in the closed loop: segments, campaign launches, campaign results.

Every decision is appended to the log as an event (DESIGN §3.4); the tables these
functions read are projections of those events. The functions take the log and the
projection store and are called by thin entrypoints (CLI, demo, tests).

* ``define_segment`` / ``retire_segment`` append ``segment.defined`` (a new version) /
  ``segment.retired``; ``evaluate_segments`` evaluates every active rule in SQL over all
  customers and appends the ``segment.entered`` / ``segment.exited`` events that bring
  membership up to date (rules such as "within the last 90 days" change with time, not
  only with events; the processor handles changes caused by events, incrementally).
* ``launch_campaign`` snapshots the audience of a segment version *now* (the rule in SQL),
  leaves out customers without marketing consent for the channel (withdrawn; with the
  opt-in policy also never given) and erased customers, assigns each to
  treatment or control by a hash of (campaign, customer), and appends
  ``campaign.launched`` then one ``campaign.customer_targeted`` per customer.
* ``campaign_results`` reads the per-customer campaign rows: funnel, rates, revenue and
  uplift of treatment over control (conversion rate, Newcombe interval; revenue per
  customer, Welch interval), overall and per RFM segment at targeting.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from events.log import EventLog
from projections import loop
from projections.campaign_results import Funnel, compute
from projections.runner import catch_up
from projections.segment_rules import to_sql
from projections.store import DERIVED_NAMESPACE, SqlProjectionStore, active_segments_query
from projections.tables import (
    campaigns,
    customer_campaigns,
    customer_segments,
    customers,
    segment_definitions,
)
from projections.uplift import MeanUplift, Uplift
from schemas import (
    CampaignCustomerTargeted,
    CampaignLaunched,
    Channel,
    Envelope,
    EventPayload,
    Identifiers,
    SegmentDefined,
    SegmentEntered,
    SegmentExited,
    SegmentRetired,
    Source,
    TargetGroup,
    new_event,
)
from schemas.rules import parse_rule, rule_to_json

PLANNING_SOURCE = Source(system="loopcrm-planning", channel=Channel.SYSTEM)
APPEND_BATCH = 5_000
CONSENT_FACTS = {
    Channel.EMAIL: "email_marketing_consent",
    Channel.SMS: "sms_marketing_consent",
    Channel.PUSH: "push_marketing_consent",
}


class PlanningError(ValueError):
    """A request the current projections cannot honour (unknown segment, relaunch, ...)."""


_TARGETABLE = (customers.c.event_count > 0, customers.c.erased_at.is_(None))
"""Customers segments and campaigns may pick: known from events, and not erased."""


def settle(event_log: EventLog, store: SqlProjectionStore, max_rounds: int = 50) -> int:
    """Apply the log until nothing is left, derived events included; returns records applied.

    Safe next to a running processor: batches lock their checkpoints.
    """
    total = 0
    for _ in range(max_rounds):
        applied = catch_up(event_log, store)
        total += applied
        if applied == 0:
            return total
    return total


# --- segments --------------------------------------------------------------------------


def define_segment(
    event_log: EventLog,
    store: SqlProjectionStore,
    *,
    segment_id: str,
    name: str,
    rule: Mapping[str, Any],
    now: datetime,
    description: str | None = None,
) -> Envelope:
    """Append a new version of ``segment_id``; raises ``RuleError`` for a bad rule."""
    canonical = rule_to_json(parse_rule(rule))
    with store.engine.connect() as conn:
        latest = conn.execute(
            sa.select(sa.func.max(segment_definitions.c.version)).where(
                segment_definitions.c.segment_id == segment_id
            )
        ).scalar_one_or_none()
    version = (latest or 0) + 1
    payload = SegmentDefined(
        segment_id=segment_id, version=version, name=name, description=description, rule=canonical
    )
    event = _system_event(payload, now, f"segment.defined:{segment_id}:{version}")
    event_log.append([event])
    return event


def retire_segment(
    event_log: EventLog, store: SqlProjectionStore, *, segment_id: str, now: datetime
) -> Envelope:
    with store.engine.connect() as conn:
        latest = conn.execute(
            sa.select(sa.func.max(segment_definitions.c.version)).where(
                segment_definitions.c.segment_id == segment_id
            )
        ).scalar_one_or_none()
    if latest is None:
        raise PlanningError(f"no segment {segment_id!r} is defined")
    event = _system_event(
        SegmentRetired(segment_id=segment_id, version=latest),
        now,
        f"segment.retired:{segment_id}:{latest}",
    )
    event_log.append([event])
    return event


@dataclass(frozen=True)
class SegmentEvaluation:
    segment_id: str
    version: int
    members: int
    entered: int
    exited: int


def evaluate_segments(
    event_log: EventLog,
    store: SqlProjectionStore,
    *,
    now: datetime,
    segment_ids: Iterable[str] | None = None,
) -> list[SegmentEvaluation]:
    """Full evaluation of the active segments (all, or ``segment_ids``) as of ``now``.

    Appends the membership changes; members of retired segments are exited.
    """
    wanted_ids = None if segment_ids is None else set(segment_ids)
    results: list[SegmentEvaluation] = []
    events: list[Envelope] = []
    with store.engine.connect() as conn:
        active = [
            (sid, version, rule)
            for sid, version, rule in conn.execute(active_segments_query())
            if wanted_ids is None or sid in wanted_ids
        ]
        for sid, version, rule in active:
            matching = _matching(conn, rule, now)
            current = _current_members(conn, sid)
            changes = _changes(sid, version, matching, current)
            events += [_membership_event(change, now) for change in changes]
            entered = sum(1 for c in changes if c.event_type == "segment.entered")
            results.append(
                SegmentEvaluation(sid, version, len(matching), entered, len(changes) - entered)
            )
        for sid in sorted(_retired_with_members(conn) - {a[0] for a in active}):
            if wanted_ids is not None and sid not in wanted_ids:
                continue
            current = _current_members(conn, sid)
            changes = _changes(sid, None, set(), current)
            events += [_membership_event(change, now) for change in changes]
            results.append(SegmentEvaluation(sid, 0, 0, 0, len(changes)))
    for start in range(0, len(events), APPEND_BATCH):
        event_log.append(events[start : start + APPEND_BATCH])
    return results


def _matching(conn: sa.Connection, rule: Mapping[str, Any], now: datetime) -> set[str]:
    condition = to_sql(parse_rule(rule), customers, now)
    query = sa.select(customers.c.customer_id).where(condition, *_TARGETABLE)
    return set(conn.execute(query).scalars())


def _current_members(conn: sa.Connection, segment_id: str) -> dict[str, tuple[int, bool]]:
    rows = conn.execute(
        sa.select(customer_segments.c.customer_id, customer_segments.c.version).where(
            customer_segments.c.segment_id == segment_id, customer_segments.c.member
        )
    )
    return {cid: (int(version), True) for cid, version in rows}


def _retired_with_members(conn: sa.Connection) -> set[str]:
    retired = sa.select(segment_definitions.c.segment_id).where(
        segment_definitions.c.retired_at.is_not(None)
    )
    return set(
        conn.execute(
            sa.select(customer_segments.c.segment_id)
            .where(customer_segments.c.member, customer_segments.c.segment_id.in_(retired))
            .distinct()
        ).scalars()
    )


def _changes(
    segment_id: str,
    version: int | None,
    matching: set[str],
    current: Mapping[str, tuple[int, bool]],
) -> list[SegmentEntered | SegmentExited]:
    """Membership events from ``current`` to ``matching``; ``version`` None: the segment
    is retired and every member leaves it."""
    changes: list[SegmentEntered | SegmentExited] = []
    for cid in sorted(matching | current.keys()):
        held = current.get(cid)
        retiring = (held[0] if held else 0, False)
        wanted = retiring if version is None else (version, cid in matching)
        member_of = {segment_id: held} if held else {}
        changes += loop.segment_changes(cid, member_of, {segment_id: wanted})
    return changes


def _membership_event(change: SegmentEntered | SegmentExited, now: datetime) -> Envelope:
    name = (
        f"{change.event_type}:{change.segment_id}:{change.version}:{change.customer_id}"
        f":evaluation:{now.isoformat()}"
    )
    return _customer_event(change, change.customer_id, now, name)


# --- campaigns -------------------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    launched: Envelope
    audience: int
    treatment: int
    control: int
    excluded_no_consent: int


def launch_campaign(
    event_log: EventLog,
    store: SqlProjectionStore,
    *,
    campaign_id: str,
    name: str,
    segment_id: str,
    channel: Channel,
    now: datetime,
    control_share: float = 0.1,
    attribution_window_days: int = 14,
    offer: str | None = None,
    consent_policy: str = "opt_out",
) -> Launch:
    """Snapshot the audience of ``segment_id``'s active version now and append the launch.

    Customers without marketing consent for ``channel`` are left out and counted:
    those who withdrew it (or unsubscribed), and with ``consent_policy="opt_in"`` also
    those who never granted it. Erased customers are never in an audience.
    """
    if consent_policy not in ("opt_out", "opt_in"):
        raise PlanningError(f"consent policy must be opt_out or opt_in, not {consent_policy!r}")
    with store.engine.connect() as conn:
        if conn.execute(
            sa.select(campaigns.c.campaign_id).where(campaigns.c.campaign_id == campaign_id)
        ).first():
            raise PlanningError(f"campaign {campaign_id!r} was launched already")
        active = {sid: (v, rule) for sid, v, rule in conn.execute(active_segments_query())}
        if segment_id not in active:
            raise PlanningError(f"no active segment {segment_id!r}; define it first")
        version, rule = active[segment_id]
        condition = to_sql(parse_rule(rule), customers, now)
        consent = CONSENT_FACTS.get(channel)
        columns = [customers.c.customer_id, customers.c.rfm_segment]
        if consent is not None:
            columns.append(customers.c[consent])
        rows = conn.execute(
            sa.select(*columns).where(condition, *_TARGETABLE).order_by(customers.c.customer_id)
        ).all()
    allowed = (True,) if consent_policy == "opt_in" else (True, None)
    audience = [(r[0], r[1]) for r in rows if consent is None or r[2] in allowed]
    excluded = len(rows) - len(audience)
    payload = CampaignLaunched(
        campaign_id=campaign_id,
        name=name,
        segment_id=segment_id,
        segment_version=version,
        channel=channel,
        offer=offer,
        control_share=control_share,
        attribution_window_days=attribution_window_days,
        audience_size=len(audience),
        excluded_no_consent=excluded,
    )
    launched = _system_event(payload, now, f"campaign.launched:{campaign_id}")
    targeted = []
    groups: Counter[str] = Counter()
    for customer_id, rfm in audience:
        group = assign_group(campaign_id, customer_id, control_share)
        groups[group.value] += 1
        targeted.append(
            _customer_event(
                CampaignCustomerTargeted(
                    campaign_id=campaign_id, customer_id=customer_id, group=group, rfm_segment=rfm
                ),
                customer_id,
                now,
                f"campaign.customer_targeted:{campaign_id}:{customer_id}",
                causation=launched.event_id,
            )
        )
    event_log.append([launched])
    for start in range(0, len(targeted), APPEND_BATCH):
        event_log.append(targeted[start : start + APPEND_BATCH])
    return Launch(launched, len(audience), groups["treatment"], groups["control"], excluded)


def assign_group(campaign_id: str, customer_id: str, control_share: float) -> TargetGroup:
    """Deterministic: a hash of (campaign, customer) mapped to [0, 1) against the share."""
    digest = hashlib.blake2b(f"{campaign_id}\x00{customer_id}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    return TargetGroup.CONTROL if u < control_share else TargetGroup.TREATMENT


# --- results ---------------------------------------------------------------------------


GroupFunnel = Funnel


@dataclass(frozen=True)
class CampaignResults:
    campaign: dict[str, Any]
    groups: dict[str, Funnel]
    conversion_uplift: Uplift
    revenue_uplift: MeanUplift
    currency: str | None
    by_rfm_segment: dict[str, tuple[dict[str, Funnel], Uplift]]


def campaign_results(store: SqlProjectionStore, campaign_id: str) -> CampaignResults:
    """The funnel per group, rates, revenue and uplift (overall and per RFM segment)."""
    with store.engine.connect() as conn:
        campaign = (
            conn.execute(sa.select(campaigns).where(campaigns.c.campaign_id == campaign_id))
            .mappings()
            .first()
        )
        if campaign is None:
            raise PlanningError(f"no campaign {campaign_id!r}")
        rows: list[Mapping[str, Any]] = [
            dict(row)
            for row in conn.execute(
                sa.select(customer_campaigns).where(
                    customer_campaigns.c.campaign_id == campaign_id,
                    customer_campaigns.c.target_group.is_not(None),
                )
            ).mappings()
        ]
    r = compute(rows)
    return CampaignResults(
        dict(campaign),
        r.groups,
        r.conversion_uplift,
        r.revenue_uplift,
        r.currency,
        r.by_rfm_segment,
    )


# --- events ----------------------------------------------------------------------------


def _system_event(payload: EventPayload, now: datetime, name: str) -> Envelope:
    return new_event(
        payload,
        source=PLANNING_SOURCE,
        occurred_at=now,
        event_id=uuid.uuid5(DERIVED_NAMESPACE, name),
    )


def _customer_event(
    payload: EventPayload,
    customer_id: str,
    now: datetime,
    name: str,
    causation: uuid.UUID | None = None,
) -> Envelope:
    return new_event(
        payload,
        source=PLANNING_SOURCE,
        identifiers=Identifiers(customer_id=customer_id),
        occurred_at=now,
        event_id=uuid.uuid5(DERIVED_NAMESPACE, name),
        causation_id=causation,
    )

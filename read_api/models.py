"""Response models of the read API, named by role (``CustomerPublic``, ``CustomersPublic``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Response
from pydantic import BaseModel, ConfigDict, Field, JsonValue, StrictStr, StringConstraints

_CUSTOMER_ID = "cus_3f2a9c1e5b7d4a60"
_AT = "2026-05-01T09:04:00Z"
_SUMMARY_EXAMPLE: dict[str, JsonValue] = {
    "customer_id": _CUSTOMER_ID,
    "display_name": "Ana Silva",
    "order_count": 3,
    "revenue": {"EUR": "129.90"},
    "first_order_at": "2026-04-02T10:00:00Z",
    "last_order_at": _AT,
    "open_ticket_count": 0,
    "preferred_channel": "ecommerce",
    "first_seen": "2026-03-30T08:12:00Z",
    "last_seen": _AT,
    "event_count": 42,
}


class FreshnessPublic(BaseModel):
    """How far the projections had read the log when this answer was read.

    ``positions`` maps each partition of ``topic`` to its next offset: every event below
    it is included. ``caught_up`` is false when a requested ``min_position`` was not
    reached within ``wait_ms`` (the answer then holds the data as it was).
    """

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "topic": "crm.events",
                "positions": {"0": 1200, "1": 980},
                "caught_up": True,
            }
        }
    )

    topic: str
    positions: dict[str, int]
    caught_up: bool = True


class ErrorPublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {"detail": "customer not found"}})

    detail: str


class CustomerSummaryPublic(BaseModel):
    """The headline columns of one customer (a search result)."""

    model_config = ConfigDict(json_schema_extra={"example": _SUMMARY_EXAMPLE})

    customer_id: str
    display_name: str | None
    order_count: int
    revenue: dict[str, str] = Field(description="revenue by currency, decimal strings")
    first_order_at: datetime | None
    last_order_at: datetime | None
    open_ticket_count: int
    preferred_channel: str | None
    first_seen: datetime | None
    last_seen: datetime | None
    event_count: int


class CustomersPublic(BaseModel):
    """One page of customers; pass ``next_cursor`` back as ``cursor`` for the next one."""

    data: list[CustomerSummaryPublic]
    next_cursor: str | None = Field(description="null on the last page")
    freshness: FreshnessPublic


class IdentifierPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {"kind": "email", "value": "ana@example.com", "shared": False}
        }
    )

    kind: str
    value: str
    shared: bool = Field(description="shared by several people (a family phone): links nobody")


class Customer360Public(CustomerSummaryPublic):
    """The single customer view: headline columns, the full state and the identifiers."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                **_SUMMARY_EXAMPLE,
                "resolved_from": "cus_0b1d2e3f4a5b6c7d",
                "erased_at": None,
                "identifiers": [{"kind": "email", "value": "ana@example.com", "shared": False}],
                "state": {"format": 1, "profile": {}, "orders": {}, "event_count": 42},
                "freshness": {"topic": "crm.events", "positions": {"0": 1200}, "caught_up": True},
            }
        }
    )

    resolved_from: str | None = Field(
        description="the id asked for, when it was merged into this customer (else null)"
    )
    erased_at: datetime | None = Field(
        description="when the customer was erased (no name, no personal identifiers since)"
    )
    identifiers: list[IdentifierPublic] = Field(
        description="account and customer ids, and personal identifiers in plain while known"
    )
    state: dict[str, Any] = Field(description="the 360 state (see projections.customer)")
    freshness: FreshnessPublic


class TimelineEventPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "event_id": "0b6f0c1e-7a2d-4c1b-9a8e-1f2d3c4b5a69",
                "occurred_at": _AT,
                "type": "order.placed",
                "channel": "ecommerce",
                "source_system": "shop",
                "event": {"type": "order.placed", "payload": {"order_id": "o1"}},
            }
        }
    )

    event_id: str
    occurred_at: datetime
    type: str
    channel: str
    source_system: str
    event: dict[str, Any] = Field(
        description="the event's envelope, its personal data opened; after an erasure, "
        "personal identifiers are keyed hashes (`h1:...`) and personal fields `[redacted]` "
        "or absent"
    )


class TimelinePublic(BaseModel):
    """A customer's events, newest first; ``next_cursor`` pages on."""

    customer_id: str
    resolved_from: str | None
    data: list[TimelineEventPublic]
    next_cursor: str | None
    freshness: FreshnessPublic


# --- privacy: erasure requests and subject exports ------------------------------------

_REQUEST_ID = "5d1c7e0a-2b3f-4e8d-9a6c-0f1e2d3c4b5a"
AuditText = Annotated[
    StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)
]


class ErasureRequestIn(BaseModel):
    """Why and by whom an erasure was asked, for the audit trail (no personal data)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"reason": "customer request", "requested_by": "agent-17"}},
    )

    reason: AuditText | None = None
    requested_by: AuditText | None = Field(
        default=None, description="a staff member's id, `self-service`, ..."
    )


class ErasureRequestedPublic(BaseModel):
    """The erasure request was appended to the log; the processor carries it out (the
    customer 360 then shows `erased_at`)."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "customer_id": _CUSTOMER_ID,
                "request_id": _REQUEST_ID,
                "status": "requested",
            }
        }
    )

    customer_id: str = Field(description="the live customer the id resolved to")
    request_id: str = Field(description="the event id of the `customer.erasure_requested`")
    status: str = Field(description="`requested`")


class SubjectExportPublic(BaseModel):
    """Everything held about one customer (GDPR art. 15): profile, identifiers, consents,
    every event of their timeline with its personal data opened (unless erased),
    segments, campaigns and merged ids."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "example": {
                "format": 1,
                "exported_at": _AT,
                "customer_id": _CUSTOMER_ID,
                "merged_ids": ["cus_0b1d2e3f4a5b6c7d"],
                "erased_at": None,
                "profile": {"first_name": "Ana", "last_name": "Silva"},
                "attributes": {},
                "identifiers": [{"kind": "email", "value": "ana@example.com", "shared": False}],
                "consents": {"email": {"marketing": True}},
                "segments": [{"segment_id": "buyers", "version": 1, "member": True, "since": _AT}],
                "segment_history": [],
                "campaigns": [],
                "assessment": None,
                "events": [{"event_id": _REQUEST_ID, "type": "order.placed", "payload": {}}],
            }
        },
    )

    format: int = Field(description="the version of this document's layout")
    exported_at: datetime
    customer_id: str
    merged_ids: list[str] = Field(description="ids merged into this customer")
    erased_at: datetime | None
    profile: dict[str, Any]
    attributes: dict[str, Any]
    identifiers: list[IdentifierPublic]
    consents: dict[str, dict[str, Any]] = Field(description="channel -> purpose -> granted")
    segments: list[dict[str, Any]]
    segment_history: list[dict[str, Any]]
    campaigns: list[dict[str, Any]]
    assessment: dict[str, Any] | None = Field(description="the latest assessment's facts")
    events: list[dict[str, Any]] = Field(description="every event of the timeline, oldest first")


class HealthPublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {"status": "ok"}})

    status: str
    detail: str | None = None


# --- the closed loop: segments, campaigns, assessments ---------------------------------

_RULE_EXAMPLE: dict[str, JsonValue] = {"field": "order_count", "op": "ge", "value": 1}


class SegmentVersionPublic(BaseModel):
    """One version of a segment definition (a ``segment.defined`` event)."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "segment_id": "buyers",
                "version": 1,
                "name": "Buyers",
                "description": None,
                "rule": _RULE_EXAMPLE,
                "defined_at": _AT,
                "retired_at": None,
            }
        }
    )

    segment_id: str
    version: int
    name: str
    description: str | None
    rule: dict[str, Any] = Field(description="the rule, canonical JSON (see schemas.rules)")
    defined_at: datetime
    retired_at: datetime | None = Field(description="set when this version was retired")


class SegmentSummaryPublic(SegmentVersionPublic):
    """A segment: its latest version, its status and how many customers are in it now."""

    status: str = Field(description="`active` or `retired`")
    versions: int = Field(description="how many versions were defined")
    member_count: int = Field(description="current members of the latest version")


class SegmentsPublic(BaseModel):
    data: list[SegmentSummaryPublic]
    freshness: FreshnessPublic


class SegmentPublic(SegmentSummaryPublic):
    """A segment with every version of its definition, oldest first."""

    history: list[SegmentVersionPublic]
    freshness: FreshnessPublic


class SegmentMemberPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "customer_id": _CUSTOMER_ID,
                "since": _AT,
                "display_name": "Ana Silva",
                "rfm_segment": "champions",
                "value_tier": "A",
            }
        }
    )

    customer_id: str
    since: datetime = Field(description="when the customer entered")
    display_name: str | None
    rfm_segment: str | None
    value_tier: str | None


class SegmentMembersPublic(BaseModel):
    """Current members by customer id; ``next_cursor`` pages on."""

    segment_id: str
    version: int
    data: list[SegmentMemberPublic]
    next_cursor: str | None
    freshness: FreshnessPublic


class SegmentChangePublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "event_id": "0b6f0c1e-7a2d-4c1b-9a8e-1f2d3c4b5a69",
                "occurred_at": _AT,
                "customer_id": _CUSTOMER_ID,
                "version": 1,
                "change": "entered",
            }
        }
    )

    event_id: str
    occurred_at: datetime
    customer_id: str
    version: int
    change: str = Field(description="`entered` or `exited`")


class SegmentHistoryPublic(BaseModel):
    """Membership changes, newest first; ``next_cursor`` pages on."""

    segment_id: str
    data: list[SegmentChangePublic]
    next_cursor: str | None
    freshness: FreshnessPublic


class CustomerSegmentPublic(BaseModel):
    segment_id: str
    name: str | None
    segment_status: str | None = Field(description="`active` or `retired`")
    version: int
    member: bool = Field(description="false: the customer left the segment `since`")
    since: datetime


class CustomerSegmentsPublic(BaseModel):
    customer_id: str
    resolved_from: str | None
    data: list[CustomerSegmentPublic]
    freshness: FreshnessPublic


class CampaignSummaryPublic(BaseModel):
    """A launched campaign (``campaign.launched``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "campaign_id": "spring",
                "name": "Spring offer",
                "segment_id": "buyers",
                "segment_version": 1,
                "channel": "email",
                "offer": None,
                "control_share": 0.3,
                "attribution_window_days": 14,
                "launched_at": _AT,
                "audience_size": 1200,
                "excluded_no_consent": 31,
            }
        }
    )

    campaign_id: str
    name: str
    segment_id: str
    segment_version: int
    channel: str
    offer: str | None
    control_share: float
    attribution_window_days: int
    launched_at: datetime
    audience_size: int | None
    excluded_no_consent: int | None


class CampaignsPublic(BaseModel):
    data: list[CampaignSummaryPublic]
    freshness: FreshnessPublic


class CustomerCampaignPublic(BaseModel):
    """One customer's exposure and response to one campaign."""

    campaign_id: str
    name: str | None
    channel: str | None
    launched_at: datetime | None
    target_group: str | None = Field(description="`treatment`, `control` or null")
    targeted_at: datetime | None
    rfm_segment: str | None = Field(description="the customer's RFM segment when targeted")
    sent: int
    delivered: int
    opened: int
    clicked: int
    bounced: int
    unsubscribed: int
    conversions: int
    revenue: dict[str, str] = Field(description="attributed revenue by currency")


class CustomerCampaignsPublic(BaseModel):
    customer_id: str
    resolved_from: str | None
    data: list[CustomerCampaignPublic]
    freshness: FreshnessPublic


class FunnelRatesPublic(BaseModel):
    delivery_rate: float | None = Field(description="delivered / sent")
    open_rate: float | None = Field(description="opened / delivered")
    click_rate: float | None = Field(description="clicked / delivered")
    conversion_rate: float | None = Field(description="converted / customers")


class FunnelPublic(BaseModel):
    """One group's funnel: customers with at least one of each step."""

    customers: int
    sent: int
    delivered: int
    opened: int
    clicked: int
    bounced: int
    unsubscribed: int
    converted: int = Field(description="customers with at least one attributed order")
    conversions: int = Field(description="attributed orders")
    revenue: dict[str, str] = Field(description="attributed revenue by currency")
    rates: FunnelRatesPublic


class UpliftPublic(BaseModel):
    """Treatment rate minus control rate, its confidence interval and a z-test."""

    treatment_rate: float | None
    control_rate: float | None
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    relative_lift: float | None
    p_value: float | None
    method: str


class MeanUpliftPublic(BaseModel):
    """Treatment mean minus control mean (revenue per customer), Welch's t."""

    treatment_mean: float | None
    control_mean: float | None
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    relative_lift: float | None
    p_value: float | None
    degrees_of_freedom: float | None
    method: str


class RfmSegmentResultsPublic(BaseModel):
    rfm_segment: str = Field(description="at targeting; `unassessed` when none")
    groups: dict[str, FunnelPublic]
    conversion_uplift: UpliftPublic


class CampaignResultsPublic(BaseModel):
    """A campaign's funnel per group (treatment, control) and the uplift of treatment."""

    campaign: CampaignSummaryPublic
    groups: dict[str, FunnelPublic]
    conversion_uplift: UpliftPublic
    revenue_currency: str | None = Field(
        description="the currency of `revenue_uplift` (the one most customers spent in)"
    )
    revenue_uplift: MeanUpliftPublic
    by_rfm_segment: list[RfmSegmentResultsPublic]
    freshness: FreshnessPublic


class AssessmentRunPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "run_id": "cycle-1",
                "as_of": _AT,
                "completed_at": _AT,
                "customers": 1500,
            }
        }
    )

    run_id: str
    as_of: datetime
    completed_at: datetime
    customers: int = Field(description="customers assessed")


class AssessmentRunsPublic(BaseModel):
    """Assessment runs, newest first; ``next_cursor`` pages on."""

    data: list[AssessmentRunPublic]
    next_cursor: str | None
    freshness: FreshnessPublic


class AssessmentPublic(AssessmentRunPublic):
    """One assessment run with its summary (RFM segments, value tiers, model fit...)."""

    summary: dict[str, Any]
    freshness: FreshnessPublic


def respond(model: BaseModel, status_code: int = 200) -> Response:
    """``model`` as JSON, serialised once by pydantic. Returned from a route, it skips
    FastAPI's second pass (validating the model again against ``response_model`` and
    encoding the result with ``json``): 35 instead of ~250 us for a customer 360."""
    return Response(model.model_dump_json(), status_code, media_type="application/json")

"""Response models of the read API, named by role (``CustomerPublic``, ``CustomersPublic``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

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
                "identifiers": [{"kind": "email", "value": "ana@example.com", "shared": False}],
                "state": {"format": 1, "profile": {}, "orders": {}, "event_count": 42},
                "freshness": {"topic": "crm.events", "positions": {"0": 1200}, "caught_up": True},
            }
        }
    )

    resolved_from: str | None = Field(
        description="the id asked for, when it was merged into this customer (else null)"
    )
    identifiers: list[IdentifierPublic]
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
    event: dict[str, Any] = Field(description="the event's envelope as stored")


class TimelinePublic(BaseModel):
    """A customer's events, newest first; ``next_cursor`` pages on."""

    customer_id: str
    resolved_from: str | None
    data: list[TimelineEventPublic]
    next_cursor: str | None
    freshness: FreshnessPublic


class HealthPublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {"status": "ok"}})

    status: str
    detail: str | None = None

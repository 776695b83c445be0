"""Response models of the ingest gateway, named by role, and the OpenAPI request examples."""

from __future__ import annotations

from typing import Any, Final, Literal
from uuid import UUID

from pydantic import BaseModel, Field


class ItemError(BaseModel):
    """One problem of a rejected event, addressed by a dotted path into it."""

    loc: str = Field(examples=["payload.lines.0.quantity"])
    msg: str = Field(examples=["Input should be greater than 0"])
    kind: str = Field(description="machine-readable error type", examples=["greater_than"])


class ItemResult(BaseModel):
    """What happened to one event of the request, by its position (0-based)."""

    index: int
    event_id: UUID | None = Field(
        description="the id the event was stored under (given or derived); null if rejected"
    )
    status: Literal["accepted", "rejected"]
    errors: list[ItemError] | None = Field(
        default=None, description="present when rejected: why, field by field"
    )


class IngestResult(BaseModel):
    """Per-event results. Accepted events are acknowledged by Kafka (``acks=all``);
    rejected ones are in the dead-letter topic with the reason."""

    accepted: int
    rejected: int
    results: list[ItemResult]


class ErrorResponse(BaseModel):
    """The request as a whole was refused; nothing of it was stored."""

    detail: str


class HealthStatus(BaseModel):
    status: Literal["ok", "ready"]


NATIVE_EXAMPLE: Final[dict[str, Any]] = {
    "event_id": "5f0c8e6e-3a2b-4c1d-9e8f-0a1b2c3d4e5f",
    "type": "order.placed",
    "schema_version": 1,
    "occurred_at": "2026-03-14T10:21:07Z",
    "source": {"system": "shop-eu", "channel": "ecommerce"},
    "identifiers": {"account_id": "ACC-0000042", "email": "ana.silva@example.com"},
    "payload": {
        "order_id": "O-42-1",
        "currency": "EUR",
        "total": "129.90",
        "lines": [{"sku": "SHO-0042", "quantity": 1, "unit_price": "129.90"}],
    },
}

CLOUDEVENT_EXAMPLE: Final[dict[str, Any]] = {
    "specversion": "1.0",
    "id": "O-42-1",
    "source": "shop-eu",
    "type": "com.loopcrm.order.placed",
    "time": "2026-03-14T10:21:07Z",
    "datacontenttype": "application/json",
    "crmchannel": "ecommerce",
    "crmidentifiers": {"account_id": "ACC-0000042"},
    "data": NATIVE_EXAMPLE["payload"],
}

CLOUDEVENT_SCHEMA: Final[dict[str, Any]] = {
    "title": "CloudEvent",
    "description": "A CloudEvents 1.0 event in structured mode (JSON format); see the "
    "mapping to the envelope in the operation's description.",
    "type": "object",
    "required": ["specversion", "id", "source", "type", "time", "crmchannel", "data"],
    "properties": {
        "specversion": {"type": "string", "enum": ["1.0"]},
        "id": {"type": "string", "minLength": 1},
        "source": {"type": "string", "minLength": 1, "maxLength": 100},
        "type": {"type": "string", "examples": ["order.placed", "com.loopcrm.order.placed"]},
        "time": {"type": "string", "format": "date-time"},
        "subject": {"type": "string", "examples": ["email:ana.silva@example.com"]},
        "datacontenttype": {"type": "string", "enum": ["application/json"]},
        "data": {"type": "object", "description": "the payload of the event's type"},
        "crmchannel": {"$ref": "#/components/schemas/Channel"},
        "crmidentifiers": {
            "oneOf": [
                {"$ref": "#/components/schemas/Identifiers"},
                {"type": "string", "description": "the identifiers object as a JSON string"},
            ]
        },
        "crmschemaversion": {"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string"}]},
        "crmcorrelationid": {"type": "string", "format": "uuid"},
        "crmcausationid": {"type": "string", "format": "uuid"},
    },
    "additionalProperties": True,
}

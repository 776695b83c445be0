"""The envelope every event travels in: identity, time, origin, subject and payload.

``Envelope`` is the common base; the catalog derives one subclass per event type whose
``type``, ``schema_version`` and ``payload`` are pinned, so validation and JSON Schema
are precise. Build events with ``new_event`` and decode them with ``parse_event``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID, uuid4

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    StringConstraints,
    WithJsonSchema,
)

from schemas.errors import custom_error
from schemas.fields import EVENT_TYPE_PATTERN, Timestamp, Version
from schemas.identifiers import IDENTIFIER_KINDS, Identifiers
from schemas.payloads.base import EventPayload
from schemas.source import Source

IDENTIFIERS_REQUIRED = f"at least one of {', '.join(IDENTIFIER_KINDS)} is required"


MAX_SEALED_LENGTH = 200_000


class SealedPii(BaseModel):
    """The event's personal data, encrypted with its subject's data key (AES-256-GCM).

    Set by the ingest doors (``privacy.protect``): the PII fields of the event hold a
    placeholder or a keyed hash instead, and ``ct`` holds their values. Destroying the
    data key (erasure) makes them unrecoverable everywhere, the log included.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    kid: Annotated[StrictStr, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    """Id of the data key in the key store."""
    ct: Annotated[
        StrictStr, StringConstraints(pattern=r"^[A-Za-z0-9_-]+$", max_length=MAX_SEALED_LENGTH)
    ]
    """base64url(nonce || ciphertext || tag) of the JSON map ``{path: value}``."""


def utc_now() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """A LoopCRM event: an immutable fact about a customer (or the CRM) at a touchpoint."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, hide_input_in_errors=True, use_attribute_docstrings=True
    )

    event_id: UUID = Field(default_factory=uuid4)
    """Unique per event; producers may set it so that a retried publish is deduplicated."""
    type: Annotated[StrictStr, StringConstraints(pattern=EVENT_TYPE_PATTERN, max_length=100)]
    schema_version: Version
    occurred_at: Timestamp
    """When it happened at the touchpoint."""
    recorded_at: Timestamp = Field(default_factory=utc_now)
    """When LoopCRM (or the producer SDK) accepted it."""
    source: Source
    identifiers: Identifiers | None = None
    correlation_id: UUID | None = None
    """Groups events of one flow (e.g. one campaign run)."""
    causation_id: UUID | None = None
    """The ``event_id`` of the event that caused this one (for derived events)."""
    payload: Annotated[
        EventPayload,
        WithJsonSchema({"type": "object", "description": "The payload of the event's type."}),
    ]
    pii: SealedPii | None = None
    """The event's personal data, sealed at ingest (absent when it has none, or once opened)."""


def _require_identifiers(identifiers: Identifiers | None) -> Identifiers:
    if identifiers is None or identifiers.is_empty():
        raise custom_error("identifiers_missing", IDENTIFIERS_REQUIRED)
    return identifiers


def _identifiers_required_in_schema(schema: dict[str, Any]) -> None:
    """Show JSON Schema users what ``_require_identifiers`` enforces."""
    properties = schema["properties"]
    nullable = properties["identifiers"]["anyOf"]
    properties["identifiers"] = {
        **next(option for option in nullable if "$ref" in option),
        "description": f"Who the event is about: {IDENTIFIERS_REQUIRED}.",
    }
    schema["required"] = [*schema.get("required", []), "identifiers"]


class CustomerEnvelope(Envelope):
    """An event about one customer: ``identifiers`` must name them."""

    model_config = ConfigDict(json_schema_extra=_identifiers_required_in_schema)

    identifiers: Annotated[Identifiers | None, AfterValidator(_require_identifiers)] = Field(
        default=None, validate_default=True
    )

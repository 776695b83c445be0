"""LoopCRM's event contract: envelope, payloads, catalog, upcasting and JSON Schema.

Producers build events with ``new_event``; consumers decode them with ``parse_event``.
Both raise ``EventValidationError``. This package imports nothing else of LoopCRM and
does no I/O apart from ``export_json_schemas``.
"""

from schemas.catalog import CATALOG, EventType, new_event, parse_event, pii_fields
from schemas.envelope import CustomerEnvelope, Envelope
from schemas.errors import EventValidationError, FieldError
from schemas.export import envelope_json_schema, export_json_schemas, json_schemas
from schemas.identifiers import (
    DEFAULT_PHONE_REGION,
    IDENTIFIER_KINDS,
    IdentifierKind,
    Identifiers,
    normalize_email,
    normalize_phone,
)
from schemas.payloads import *  # noqa: F403 - the payload classes are part of the API
from schemas.payloads import __all__ as _payload_names
from schemas.source import Channel, Source
from schemas.upcasting import upcast, upcaster

__all__ = [
    "CATALOG",
    "DEFAULT_PHONE_REGION",
    "IDENTIFIER_KINDS",
    "Channel",
    "CustomerEnvelope",
    "Envelope",
    "EventType",
    "EventValidationError",
    "FieldError",
    "IdentifierKind",
    "Identifiers",
    "Source",
    "envelope_json_schema",
    "export_json_schemas",
    "json_schemas",
    "new_event",
    "normalize_email",
    "normalize_phone",
    "parse_event",
    "pii_fields",
    "upcast",
    "upcaster",
    *_payload_names,
]

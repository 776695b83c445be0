"""Reusable field types of the contract: strict, size-capped, with precise errors.

Every string, list and map in an event is capped so that a malformed or hostile producer
cannot push megabytes through the log; the error names the limit. Wrong JSON types are
rejected rather than coerced ("3" is not a quantity, 1700000000 is not a timestamp).
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Final

import orjson
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    GetPydanticSchema,
    JsonValue,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
)
from pydantic_core import core_schema

from schemas.errors import custom_error

MAX_ID_LENGTH: Final = 200
MAX_SHORT_TEXT_LENGTH: Final = 200
MAX_TEXT_LENGTH: Final = 2_000
MAX_FREE_TEXT_LENGTH: Final = 10_000
MAX_KEY_LENGTH: Final = 100
MAX_LIST_ITEMS: Final = 1_000
MAX_MAP_ENTRIES: Final = 100
MAX_JSON_BYTES: Final = 64 * 1024

PII: Final = Field(json_schema_extra={"x-pii": True})
REDACTED: Final = "[redacted]"
"""What a required personal field holds in the log (its value is sealed) or after erasure."""
"""Marks a field as holding personal data: ``name: Annotated[PersonName, PII]``."""


def _replace_errors(kind: str, message: str) -> GetPydanticSchema:
    """Report any failure of the wrapped (Rust-side) schema as one error with our wording."""
    return GetPydanticSchema(
        lambda source, handler: core_schema.custom_error_schema(
            handler(source), custom_error_type=kind, custom_error_message=message
        )
    )


# --- strings ---------------------------------------------------------------------------

Id = Annotated[
    StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ID_LENGTH)
]
"""An identifier assigned by some system (order, campaign, agent, …)."""

ShortText = Annotated[
    StrictStr,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_SHORT_TEXT_LENGTH),
]
"""A label, code or category ("shoes", "last_touch", "delivery_late")."""

Text = Annotated[
    StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_LENGTH)
]
"""A sentence-sized text (a ticket subject, a description, a reason)."""

FreeText = Annotated[StrictStr, StringConstraints(min_length=1, max_length=MAX_FREE_TEXT_LENGTH)]
"""Long free text kept verbatim (notes, transcripts). Usually personal data: mark it PII."""

PersonName = ShortText

Currency = Annotated[
    StrictStr,
    StringConstraints(pattern=r"^[A-Z]{3}$"),
    _replace_errors("currency", "Input should be an ISO 4217 currency code: 3 upper-case letters"),
]

CountryCode = Annotated[
    StrictStr,
    StringConstraints(pattern=r"^[A-Z]{2}$"),
    _replace_errors(
        "country_code", "Input should be an ISO 3166-1 alpha-2 country code: 2 upper-case letters"
    ),
]

Locale = Annotated[
    StrictStr,
    StringConstraints(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$", max_length=35),
    _replace_errors("locale", "Input should be a BCP 47 language tag such as 'en-GB'"),
]

Key = Annotated[StrictStr, StringConstraints(min_length=1, max_length=MAX_KEY_LENGTH)]
"""A key of a small map (attribute name, channel name)."""

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S+")


def _check_url(value: str) -> str:
    if _URL.fullmatch(value) is None:
        raise custom_error("url", "Input should be an absolute URL such as https://example.com/")
    return value


Url = Annotated[
    StrictStr,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_LENGTH),
    AfterValidator(_check_url),
]

EVENT_TYPE_PATTERN: Final = r"^[a-z]+(_[a-z]+)*\.[a-z]+(_[a-z]+)*$"

# --- numbers ---------------------------------------------------------------------------

INT64_MAX: Final = 2**63 - 1
"""Integers are capped to what every JSON stack (and orjson) can carry."""

Count = Annotated[StrictInt, Field(ge=0, le=INT64_MAX)]
PositiveInt = Annotated[StrictInt, Field(gt=0, le=INT64_MAX)]
Version = Annotated[StrictInt, Field(ge=1, le=INT64_MAX)]
Score = Annotated[StrictInt, Field(ge=1, le=5)]
Fraction = Annotated[StrictFloat, Field(ge=0, le=1, allow_inf_nan=False)]
FiniteFloat = Annotated[StrictFloat, Field(allow_inf_nan=False)]
Money = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
"""A non-negative amount: JSON number or decimal string (serialised as a string)."""

# --- time ------------------------------------------------------------------------------

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIMESTAMP_HINT: Final = "use ISO-8601 with a timezone, e.g. 2024-05-01T12:00:00Z"


def _iso_timestamp_only(value: Any) -> Any:
    """Keep pydantic from reading numbers (or numeric strings) as Unix timestamps."""
    if isinstance(value, datetime) or (isinstance(value, str) and _ISO_DATE.match(value)):
        return value
    raise custom_error("timestamp_type", f"Input should be a timestamp string ({_TIMESTAMP_HINT})")


def _require_timezone(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise custom_error("timestamp_naive", f"Timestamp has no timezone ({_TIMESTAMP_HINT})")
    return value


Timestamp = Annotated[
    datetime, BeforeValidator(_iso_timestamp_only), AfterValidator(_require_timezone)
]
"""A timezone-aware instant; naive datetimes and bare numbers are rejected."""


def _iso_date_only(value: Any) -> Any:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        return value
    raise custom_error("date_type", "Input should be a date string YYYY-MM-DD")


CalendarDate = Annotated[date, BeforeValidator(_iso_date_only)]

# --- small open-ended structures -------------------------------------------------------


def _int64_only(value: Any) -> Any:
    """Stop out-of-range integers from slipping through the union as lossy floats."""
    if type(value) is int and not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise custom_error("int_too_large", "Integer should fit in 64 bits (signed)")
    return value


Scalar = Annotated[
    Annotated[StrictStr, StringConstraints(max_length=MAX_TEXT_LENGTH)]
    | StrictBool
    | StrictInt
    | Annotated[StrictFloat, Field(allow_inf_nan=False)],
    GetPydanticSchema(
        lambda source, handler: {
            **handler(source),
            "custom_error_type": "scalar_type",
            "custom_error_message": (
                "Input should be a string (at most 2000 characters), an integer, "
                "a finite number or a boolean"
            ),
        }
    ),
    BeforeValidator(_int64_only),
]

ScalarMap = Annotated[dict[Key, Scalar], Field(max_length=MAX_MAP_ENTRIES)]
"""A flat map of custom attributes."""


def _cap_json_size(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    try:
        size = len(orjson.dumps(value))
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise custom_error("json_invalid", "Input should be JSON-serialisable") from exc
    if size > MAX_JSON_BYTES:
        raise custom_error(
            "json_too_large",
            "JSON object should be at most {limit} bytes when serialised, not {size}",
            limit=MAX_JSON_BYTES,
            size=size,
        )
    return value


JsonObject = Annotated[
    dict[Key, JsonValue], Field(max_length=MAX_MAP_ENTRIES), AfterValidator(_cap_json_size)
]
"""An opaque JSON object (a segment rule, a run summary), at most 64 KiB serialised."""

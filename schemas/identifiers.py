"""Customer identifiers carried by events, normalised so that equal people look equal.

Identity resolution joins events on these values, so normalisation is part of the
contract: emails are trimmed and lower-cased, phones are E.164.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated, Final, Literal

import phonenumbers
from pydantic import AfterValidator, BaseModel, ConfigDict, StrictStr, StringConstraints

from schemas.errors import custom_error
from schemas.fields import PII, Id

DEFAULT_PHONE_REGION: Final = "US"
"""Region assumed for phone numbers written without a leading ``+``."""

IdentifierKind = Literal[
    "customer_id", "account_id", "email", "phone", "device_id", "social_handle"
]

IDENTIFIER_KINDS: Final[tuple[IdentifierKind, ...]] = (
    "customer_id",
    "account_id",
    "email",
    "phone",
    "device_id",
    "social_handle",
)
"""Identifier kinds in precedence order (most authoritative first)."""

HASHED_KINDS: Final[tuple[IdentifierKind, ...]] = ("email", "phone", "device_id", "social_handle")
"""Identifier kinds that are personal data: in the log they travel as keyed hashes."""

IDENTIFIER_HASH_PREFIX: Final = "h1:"
_HASH = re.compile(r"h1:[A-Za-z0-9_-]{27}")


def is_identifier_hash(value: str) -> bool:
    """True for a keyed hash of an identifier (``h1:`` + 27 base64url characters).

    The ingest doors replace personal identifiers by such hashes (``privacy.crypto``);
    identity resolution matches on them, so they pass normalisation unchanged.
    """
    return _HASH.fullmatch(value) is not None


_MAX_EMAIL_LENGTH: Final = 254
_MAX_PHONE_INPUT_LENGTH: Final = 40
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+")


# Recent values only (each cache was 65,536, ~15 MiB, filled by the processor from
# ~80k customers on): normalising an email is ~0.7 µs, a phone number ~40 µs.
@lru_cache(maxsize=4_096)
def normalize_email(value: str) -> str:
    """Strip and lower-case an email address; raise ``ValueError`` if it does not look like one."""
    email = value.strip().lower()
    if len(email) > _MAX_EMAIL_LENGTH or _EMAIL.fullmatch(email) is None:
        raise ValueError(f"email {value!r} is not a valid email address")
    return email


@lru_cache(maxsize=16_384)
def normalize_phone(value: str, region: str = DEFAULT_PHONE_REGION) -> str:
    """Return the E.164 form of a phone number; raise ``ValueError`` if it is not valid.

    Numbers without a leading ``+`` are read as numbers of ``region``.
    """
    error = f"phone {value!r} is not a valid phone number (use E.164, e.g. +14155550123)"
    text = value.strip()
    if not text or len(text) > _MAX_PHONE_INPUT_LENGTH:
        raise ValueError(error)
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(error) from exc
    if not phonenumbers.is_valid_number(number):
        raise ValueError(error)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_identifier(kind: IdentifierKind, value: str) -> str:
    """Normalise ``value`` as an identifier of ``kind`` (email, phone or a plain id).

    A keyed hash (``is_identifier_hash``) is already normalised and returned as is.
    """
    if is_identifier_hash(value):
        return value
    if kind == "email":
        return normalize_email(value)
    if kind == "phone":
        return normalize_phone(value)
    stripped = value.strip()
    if not stripped:
        raise ValueError(f"{kind} must not be blank")
    return stripped


def _email(value: str) -> str:
    if is_identifier_hash(value):
        return value
    try:
        return normalize_email(value)
    except ValueError as exc:
        raise custom_error("email_invalid", "{reason}", reason=str(exc)) from None


def _phone(value: str) -> str:
    if is_identifier_hash(value):
        return value
    try:
        return normalize_phone(value)
    except ValueError as exc:
        raise custom_error("phone_invalid", "{reason}", reason=str(exc)) from None


Email = Annotated[StrictStr, StringConstraints(max_length=320), AfterValidator(_email)]
Phone = Annotated[
    StrictStr, StringConstraints(max_length=_MAX_PHONE_INPUT_LENGTH), AfterValidator(_phone)
]


class Identifiers(BaseModel):
    """The ways touchpoints know a customer; events carry whichever they have.

    Personal identifiers (``HASHED_KINDS``) are given in plain by producers; in the log
    they are keyed hashes (``h1:...``) and their plain values travel encrypted in the
    envelope's ``pii``.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, hide_input_in_errors=True, use_attribute_docstrings=True
    )

    email: Annotated[Email | None, PII] = None
    phone: Annotated[Phone | None, PII] = None
    account_id: Id | None = None
    device_id: Annotated[Id | None, PII] = None
    social_handle: Annotated[Id | None, PII] = None
    customer_id: Id | None = None
    """LoopCRM's canonical customer id, used by derived events."""

    def present(self) -> list[tuple[str, str]]:
        """The given identifiers as ``(kind, value)`` pairs, in ``IDENTIFIER_KINDS`` order."""
        values = self.__dict__
        return [(kind, values[kind]) for kind in IDENTIFIER_KINDS if values[kind] is not None]

    def is_empty(self) -> bool:
        values = self.__dict__
        return all(values[kind] is None for kind in IDENTIFIER_KINDS)

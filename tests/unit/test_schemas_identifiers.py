"""Identifier normalisation: equal people must look equal to identity resolution."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas import (
    DEFAULT_PHONE_REGION,
    EventValidationError,
    Identifiers,
    normalize_email,
    normalize_phone,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ada@example.com", "ada@example.com"),
        ("  Ada.Lovelace@Example.COM\t", "ada.lovelace@example.com"),
        ("first+tag@sub.example.co.uk", "first+tag@sub.example.co.uk"),
    ],
)
def test_normalize_email(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    "raw", ["", "ada", "ada@", "@example.com", "ada@example", "a da@example.com", "a@b@c.com"]
)
def test_normalize_email_rejects_garbage(raw: str) -> None:
    with pytest.raises(ValueError, match="is not a valid email address"):
        normalize_email(raw)


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("(415) 555-0123", "US", "+14155550123"),
        ("415.555.0123", DEFAULT_PHONE_REGION, "+14155550123"),
        ("+1 415 555 0123", "US", "+14155550123"),
        (" +14155550123 ", "US", "+14155550123"),
        ("020 7183 8750", "GB", "+442071838750"),
        ("+44 20 7183 8750", "US", "+442071838750"),
    ],
)
def test_normalize_phone(raw: str, region: str, expected: str) -> None:
    assert normalize_phone(raw, region) == expected


def test_default_region_is_us() -> None:
    assert DEFAULT_PHONE_REGION == "US"
    assert normalize_phone("(415) 555-0123") == "+14155550123"


@pytest.mark.parametrize("raw", ["", "12", "call me", "020 7183 8750", "+999 123", "1" * 50])
def test_normalize_phone_rejects_garbage(raw: str) -> None:
    expected = f"phone {raw!r} is not a valid phone number (use E.164, e.g. +14155550123)"
    with pytest.raises(ValueError) as info:
        normalize_phone(raw)
    assert str(info.value) == expected


def test_identifiers_normalise_on_validation() -> None:
    ids = Identifiers(
        email=" Ada@Example.com ",
        phone="(415) 555-0123",
        account_id=" A-1 ",
        device_id="dev-1",
        social_handle="@ada",
        customer_id="cust-1",
    )
    assert ids.email == "ada@example.com"
    assert ids.phone == "+14155550123"
    assert ids.account_id == "A-1"
    assert ids.present() == [
        ("customer_id", "cust-1"),
        ("account_id", "A-1"),
        ("email", "ada@example.com"),
        ("phone", "+14155550123"),
        ("device_id", "dev-1"),
        ("social_handle", "@ada"),
    ]
    assert Identifiers(phone="+14155550123", email="a@b.co").present() == [
        ("email", "a@b.co"),
        ("phone", "+14155550123"),
    ]
    assert Identifiers().present() == []


def test_identifiers_errors_are_precise() -> None:
    with pytest.raises(ValidationError) as info:
        Identifiers(phone="(415) 555", email="nope", account_id="  ", device_id=7)
    flat = EventValidationError.from_pydantic(info.value, prefix="identifiers")
    assert str(flat).splitlines() == [
        "identifiers.email: email 'nope' is not a valid email address",
        "identifiers.phone: phone '(415) 555' is not a valid phone number "
        "(use E.164, e.g. +14155550123)",
        "identifiers.account_id: String should have at least 1 character",
        "identifiers.device_id: Input should be a valid string",
    ]


def test_identifiers_reject_unknown_kinds() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Identifiers.model_validate({"passport": "X1"})

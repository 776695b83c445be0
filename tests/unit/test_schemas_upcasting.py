"""Upcasting old payloads: customer.registered v1 (full_name) → v2 (first/last name)."""

from __future__ import annotations

from typing import Any

import pytest

from schemas import CATALOG, CustomerRegistered, EventValidationError, parse_event, upcast
from schemas.upcasting import UPCASTERS, check_upcaster_chains


def legacy_registration(payload: dict[str, Any], version: int = 1) -> dict[str, Any]:
    return {
        "type": "customer.registered",
        "schema_version": version,
        "occurred_at": "2019-03-01T09:00:00+01:00",
        "source": {"system": "legacy-crm", "channel": "store"},
        "identifiers": {"account_id": "L-17"},
        "payload": payload,
    }


@pytest.mark.parametrize(
    ("full_name", "first", "last"),
    [
        ("Ada Lovelace", "Ada", "Lovelace"),
        ("Mary Ann  Smith", "Mary Ann", "Smith"),
        ("  Cher ", "Cher", None),
        ("Jean-Luc Picard", "Jean-Luc", "Picard"),
    ],
)
def test_v1_full_name_is_split_on_the_last_space(
    full_name: str, first: str, last: str | None
) -> None:
    v1 = {"full_name": full_name, "locale": "en-GB"}
    upcasted = upcast("customer.registered", 1, v1)
    assert upcasted.get("first_name") == first
    assert upcasted.get("last_name") == last
    assert "full_name" not in upcasted
    assert v1 == {"full_name": full_name, "locale": "en-GB"}, "input must not be mutated"
    event = parse_event(legacy_registration(v1))
    assert event.schema_version == 2
    assert isinstance(event.payload, CustomerRegistered)
    assert (event.payload.first_name, event.payload.last_name) == (first, last)


def test_current_version_passes_through_unchanged() -> None:
    payload = {"first_name": "Ada", "last_name": "Lovelace"}
    assert upcast("customer.registered", 2, payload) == payload
    assert upcast("order.placed", 1, {"order_id": "o"}) == {"order_id": "o"}


def test_newer_version_than_known_is_an_error() -> None:
    with pytest.raises(EventValidationError) as info:
        upcast("customer.registered", 3, {"first_name": "Ada"})
    assert str(info.value) == (
        "schema_version: schema_version 3 of 'customer.registered' is newer than "
        "this LoopCRM knows (2)"
    )
    with pytest.raises(EventValidationError, match="newer than this LoopCRM knows"):
        parse_event(legacy_registration({"first_name": "Ada"}, version=3))


def test_unreadable_v1_payload_is_reported() -> None:
    with pytest.raises(EventValidationError) as info:
        parse_event(legacy_registration({"locale": "en-GB"}))
    [error] = info.value.errors
    assert (error.loc, error.kind) == ("payload", "upcast_failed")
    assert "from v1 to v2: full_name should be a non-empty string" in error.msg


def test_upcasted_payload_is_validated_like_a_new_one() -> None:
    with pytest.raises(EventValidationError) as info:
        parse_event(legacy_registration({"full_name": "Ada Lovelace", "shoe_size": 38}))
    assert [e.loc for e in info.value.errors] == ["payload.shoe_size"]


def test_unknown_type_cannot_be_upcast() -> None:
    with pytest.raises(EventValidationError, match=r"unknown event type 'x\.y'"):
        upcast("x.y", 1, {})


def test_every_version_chain_is_complete() -> None:
    check_upcaster_chains()
    for name, entry in CATALOG.items():
        for version in range(1, entry.version):
            assert (name, version) in UPCASTERS

"""Strictness of ``parse_event``: wrong types are rejected, errors are precise."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from schemas import CATALOG, EventValidationError, FieldError, OrderPlaced, parse_event
from schemas.fields import MAX_FREE_TEXT_LENGTH, MAX_LIST_ITEMS, MAX_TEXT_LENGTH

BASE: dict[str, Any] = {
    "event_id": "6f1c1b9e-2a5d-4a44-8f5e-0c4a1d2b3c4d",
    "type": "order.placed",
    "schema_version": 1,
    "occurred_at": "2024-05-01T12:00:00+02:00",
    "source": {"system": "shopify-eu", "channel": "ecommerce"},
    "identifiers": {"email": "ada@example.com"},
    "payload": {
        "order_id": "o-1",
        "lines": [{"sku": "S1", "quantity": 2, "unit_price": "9.95"}],
        "currency": "EUR",
        "total": "19.90",
    },
}


def event(**changes: Any) -> dict[str, Any]:
    """A copy of BASE; keys like ``payload__total`` reach into the payload."""
    data = copy.deepcopy(BASE)
    for key, value in changes.items():
        target = data
        *parents, leaf = key.split("__")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return data


def errors_of(data: Any) -> list[FieldError]:
    with pytest.raises(EventValidationError) as info:
        parse_event(data)
    return info.value.errors


def locs(data: Any) -> list[str]:
    return [error.loc for error in errors_of(data)]


def test_base_event_is_valid() -> None:
    payload = parse_event(BASE).payload
    assert isinstance(payload, OrderPlaced)
    assert payload.total == Decimal("19.90")


def test_error_string_is_one_line_per_error() -> None:
    data = event(payload__lines=[{"sku": "S1", "quantity": 0, "unit_price": "1"}], payload__x=1)
    with pytest.raises(EventValidationError) as info:
        parse_event(data)
    assert str(info.value).splitlines() == [
        "payload.lines.0.quantity: Input should be greater than 0",
        "payload.x: Extra inputs are not permitted",
    ]
    assert info.value.errors[0] == FieldError(
        loc="payload.lines.0.quantity", msg="Input should be greater than 0", kind="greater_than"
    )
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("changes", "loc", "kind"),
    [
        (
            {"payload__lines": [{"sku": "S1", "quantity": "3", "unit_price": "1"}]},
            "payload.lines.0.quantity",
            "int_type",
        ),
        (
            {"payload__lines": [{"sku": "S1", "quantity": 2.0, "unit_price": "1"}]},
            "payload.lines.0.quantity",
            "int_type",
        ),
        (
            {"payload__lines": [{"sku": "S1", "quantity": True, "unit_price": "1"}]},
            "payload.lines.0.quantity",
            "int_type",
        ),
        (
            {"payload__lines": [{"sku": 12, "quantity": 1, "unit_price": "1"}]},
            "payload.lines.0.sku",
            "string_type",
        ),
        (
            {"payload__lines": [{"sku": "S", "quantity": 1, "unit_price": True}]},
            "payload.lines.0.unit_price",
            "decimal_type",
        ),
        (
            {"payload__lines": [{"sku": "S", "quantity": 1, "unit_price": "-1"}]},
            "payload.lines.0.unit_price",
            "greater_than_equal",
        ),
        ({"payload__total": "NaN"}, "payload.total", "finite_number"),
        ({"payload__total": "Infinity"}, "payload.total", "finite_number"),
        ({"payload__total": "a lot"}, "payload.total", "decimal_parsing"),
        ({"payload__currency": "eur"}, "payload.currency", "currency"),
        ({"payload__currency": "EURO"}, "payload.currency", "currency"),
        ({"payload__lines": []}, "payload.lines", "too_short"),
        ({"payload__order_id": "   "}, "payload.order_id", "string_too_short"),
        ({"payload__coupon": "X"}, "payload.coupon", "extra_forbidden"),
        ({"extra": 1}, "extra", "extra_forbidden"),
        ({"occurred_at": "2024-05-01T12:00:00"}, "occurred_at", "timestamp_naive"),
        ({"occurred_at": "2024-05-01"}, "occurred_at", "timestamp_naive"),
        ({"occurred_at": 1714564800}, "occurred_at", "timestamp_type"),
        ({"occurred_at": "1714564800"}, "occurred_at", "timestamp_type"),
        ({"occurred_at": "yesterday"}, "occurred_at", "timestamp_type"),
        ({"recorded_at": 1714564800.5}, "recorded_at", "timestamp_type"),
        ({"event_id": "not-a-uuid"}, "event_id", "uuid_parsing"),
        ({"source__channel": "fax"}, "source.channel", "enum"),
        ({"source__system": ""}, "source.system", "string_too_short"),
        ({"identifiers__phone": "12"}, "identifiers.phone", "phone_invalid"),
        ({"identifiers__email": "nobody"}, "identifiers.email", "email_invalid"),
        ({"identifiers__email": ["a@b.co"]}, "identifiers.email", "string_type"),
        ({"schema_version": True}, "schema_version", "int_type"),
        ({"schema_version": "1"}, "schema_version", "int_type"),
        ({"schema_version": 0}, "schema_version", "greater_than_equal"),
    ],
)
def test_wrong_values_are_rejected_not_coerced(
    changes: dict[str, Any], loc: str, kind: str
) -> None:
    found = errors_of(event(**changes))
    assert [(e.loc, e.kind) for e in found] == [(loc, kind)]


def test_naive_timestamp_message_names_the_fix() -> None:
    [error] = errors_of(event(occurred_at="2024-05-01T12:00:00"))
    assert "timezone" in error.msg and "2024-05-01T12:00:00Z" in error.msg


def test_unknown_type_lists_known_types() -> None:
    [error] = errors_of(event(type="order.teleported"))
    assert error.loc == "type" and error.kind == "unknown_event_type"
    assert error.msg.startswith("unknown event type 'order.teleported'; known types: ")
    assert error.msg.endswith(", ".join(sorted(CATALOG)))


@pytest.mark.parametrize("bad", [None, 3, ["order.placed"]])
def test_missing_or_non_string_type(bad: Any) -> None:
    data = event(type=bad)
    if bad is None:
        del data["type"]
    assert locs(data) == ["type"]


def test_missing_fields_are_reported_with_their_path() -> None:
    data = event()
    del data["source"]
    del data["payload"]["currency"]
    assert locs(data) == ["source", "payload.currency"]
    del data["schema_version"]
    assert locs(data) == ["schema_version"]


def test_non_mapping_input() -> None:
    assert [e.kind for e in errors_of(["not", "an", "event"])] == ["model_type"]
    assert locs(event(payload="nope", schema_version=1)) == ["payload"]


@pytest.mark.parametrize("identifiers", [None, {}, {"email": None}])
def test_customer_events_need_an_identifier(identifiers: Any) -> None:
    data = event(identifiers=identifiers)
    [error] = errors_of(data)
    assert error.loc == "identifiers"
    assert error.msg == (
        "at least one of customer_id, account_id, email, phone, device_id, social_handle "
        "is required"
    )
    del data["identifiers"]
    assert locs(data) == ["identifiers"]


def test_non_customer_events_need_no_identifier() -> None:
    data = {
        **BASE,
        "type": "segment.defined",
        "source": {"system": "loopcrm", "channel": "system"},
        "payload": {
            "segment_id": "s",
            "version": 1,
            "name": "VIP",
            "rule": {"field": "nps", "op": "is_null"},
        },
    }
    del data["identifiers"]
    assert parse_event(data).identifiers is None
    assert parse_event({**data, "identifiers": {"customer_id": "c1"}}).identifiers is not None


def test_huge_strings_and_lists_are_rejected_with_the_limit() -> None:
    [error] = errors_of(event(payload__order_id="x" * 201))
    assert error.msg == "String should have at most 200 characters"
    line = {"sku": "S1", "quantity": 1, "unit_price": "1"}
    [error] = errors_of(event(payload__lines=[line] * (MAX_LIST_ITEMS + 1)))
    assert (error.loc, error.kind) == ("payload.lines", "too_long")
    assert f"at most {MAX_LIST_ITEMS} items" in error.msg
    note = {"note_id": "n", "rep_id": "r", "text": "x" * (MAX_FREE_TEXT_LENGTH + 1)}
    [error] = errors_of({**BASE, "type": "sales.note_added", "payload": note})
    assert error.loc == "payload.text" and str(MAX_FREE_TEXT_LENGTH) in error.msg
    searched = {"query": "q" * (MAX_TEXT_LENGTH + 1), "results_count": 1}
    [error] = errors_of({**BASE, "type": "web.searched", "payload": searched})
    assert error.loc == "payload.query" and str(MAX_TEXT_LENGTH) in error.msg


def test_oversized_json_rule_is_rejected() -> None:
    rule = {f"k{i}": "v" * 1000 for i in range(80)}
    data = {
        **BASE,
        "type": "segment.defined",
        "payload": {"segment_id": "s", "version": 1, "name": "n", "rule": rule},
    }
    [error] = errors_of(data)
    assert error.loc == "payload.rule" and "at most 65536 bytes" in error.msg


def test_attribute_values_must_be_scalars() -> None:
    attributes = {"ok": 1, "bad": [1, 2], "nan": float("nan"), "big": 2**64}
    payload = {"first_name": "Ada", "attributes": attributes}
    data = {**BASE, "type": "customer.registered", "schema_version": 2, "payload": payload}
    found = errors_of(data)
    assert [e.loc for e in found] == [
        "payload.attributes.bad",
        "payload.attributes.nan",
        "payload.attributes.big",
    ]
    assert [e.kind for e in found] == ["scalar_type", "scalar_type", "int_too_large"]


@pytest.mark.parametrize(
    ("event_type", "payload", "loc", "fragment"),
    [
        ("customer.profile_updated", {}, "payload", "at least one of first_name"),
        ("customer.registered", {"first_name": "A", "locale": "en_GB"}, "payload.locale", "BCP 47"),
        (
            "customer.registered",
            {"first_name": "A", "birth_date": 19901210},
            "payload.birth_date",
            "YYYY-MM-DD",
        ),
        (
            "customer.registered",
            {"first_name": "A", "birth_date": "1850-01-01"},
            "payload.birth_date",
            "1900-01-01",
        ),
        (
            "customer.registered",
            {"first_name": "A", "address": {"country": "gb"}},
            "payload.address.country",
            "ISO 3166-1",
        ),
        (
            "consent.changed",
            {"channel": "email", "purpose": "marketing", "granted": "yes"},
            "payload.granted",
            "valid boolean",
        ),
        (
            "consent.changed",
            {"channel": "email", "purpose": "spam", "granted": True},
            "payload.purpose",
            "'marketing'",
        ),
        (
            "chat.conversation_held",
            {
                "conversation_id": "c",
                "started_at": "2024-05-01T10:00:00Z",
                "ended_at": "2024-05-01T09:59:59Z",
                "message_count": 1,
            },
            "payload.ended_at",
            "not be before started_at",
        ),
        (
            "identity.merged",
            {"survivor_id": "c1", "merged_id": "c1", "linking_identifiers": [], "reason": "x"},
            "payload.merged_id",
            "differ from survivor_id",
        ),
        (
            "identity.merged",
            {
                "survivor_id": "c1",
                "merged_id": "c2",
                "linking_identifiers": [{"kind": "phone", "value": "nope"}],
                "reason": "x",
            },
            "payload.linking_identifiers.0.value",
            "not a valid phone number",
        ),
        (
            "campaign.launched",
            {
                "campaign_id": "c",
                "name": "n",
                "segment_id": "s",
                "segment_version": 1,
                "channel": "email",
                "control_share": 0.95,
                "attribution_window_days": 7,
            },
            "payload.control_share",
            "less than or equal to 0.9",
        ),
        (
            "campaign.launched",
            {
                "campaign_id": "c",
                "name": "n",
                "segment_id": "s",
                "segment_version": 1,
                "channel": "email",
                "control_share": 0.1,
                "attribution_window_days": 400,
            },
            "payload.attribution_window_days",
            "365",
        ),
        (
            "customer.assessed",
            {
                "run_id": "r",
                "customer_id": "c",
                "recency_score": 6,
                "frequency_score": 1,
                "monetary_score": 1,
                "rfm_segment": "x",
                "value_tier": "y",
            },
            "payload.recency_score",
            "less than or equal to 5",
        ),
        (
            "customer.assessed",
            {
                "run_id": "r",
                "customer_id": "c",
                "recency_score": 1,
                "frequency_score": 1,
                "monetary_score": 1,
                "rfm_segment": "x",
                "value_tier": "y",
                "churn_risk": float("nan"),
            },
            "payload.churn_risk",
            "finite",
        ),
        (
            "social.mentioned",
            {"platform": "x", "post_id": "p", "sentiment": -1.5},
            "payload.sentiment",
            "greater than or equal to -1",
        ),
        (
            "survey.answered",
            {"survey_id": "s", "response_id": "r", "nps": 11},
            "payload.nps",
            "less than or equal to 10",
        ),
        ("web.page_viewed", {"url": "/relative/path"}, "payload.url", "absolute URL"),
        (
            "message.bounced",
            {"message_id": "m", "bounce_type": "medium"},
            "payload.bounce_type",
            "'hard' or 'soft'",
        ),
    ],
)
def test_domain_rules(event_type: str, payload: dict[str, Any], loc: str, fragment: str) -> None:
    data = {**BASE, "type": event_type, "schema_version": CATALOG[event_type].version}
    data["payload"] = payload
    [error] = errors_of(data)
    assert error.loc == loc
    assert fragment in error.msg


def test_pydantic_input_values_are_not_echoed() -> None:
    """Errors may end up in logs and dead letters: they must not copy personal data."""
    data = event(payload__lines=[{"sku": "S1", "quantity": "secret-42", "unit_price": "1"}])
    with pytest.raises(EventValidationError) as info:
        parse_event(data)
    assert "secret-42" not in str(info.value)

"""Property tests: valid events round-trip; any input yields an event or EventValidationError."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import (
    Channel,
    CustomerRegistered,
    EventValidationError,
    Identifiers,
    LineItem,
    OrderPlaced,
    Source,
    new_event,
    parse_event,
)
from schemas.fields import MAX_SHORT_TEXT_LENGTH

FAST = settings(max_examples=60, deadline=None)

text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Cc")), min_size=1, max_size=40
)
ids = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=30)
money = st.decimals(min_value=0, max_value=Decimal("1e9"), places=2, allow_nan=False)
aware = st.datetimes(
    min_value=datetime(1990, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
)
emails = st.builds(lambda user, host: f"{user}@{host}.example", ids, ids)

line_items = st.builds(
    LineItem,
    sku=ids,
    name=st.none() | text,
    category=st.none() | text,
    quantity=st.integers(min_value=1, max_value=10_000),
    unit_price=money,
)
orders = st.builds(
    OrderPlaced,
    order_id=ids,
    lines=st.lists(line_items, min_size=1, max_size=5),
    currency=st.sampled_from(["EUR", "USD", "GBP"]),
    total=money,
    discount=st.none() | money,
    store_id=st.none() | ids,
)
registrations = st.builds(
    CustomerRegistered,
    first_name=text.filter(lambda s: s.strip() == s and len(s) <= MAX_SHORT_TEXT_LENGTH),
    last_name=st.none() | ids,
    attributes=st.dictionaries(
        ids,
        st.one_of(
            text,
            st.booleans(),
            st.integers(min_value=-(2**63), max_value=2**63 - 1),
            st.floats(allow_nan=False, allow_infinity=False),
        ),
        max_size=5,
    ),
)
identifiers = st.builds(
    Identifiers, email=st.none() | emails, account_id=st.none() | ids, customer_id=ids
)


@FAST
@given(payload=orders | registrations, occurred_at=aware, who=identifiers)
def test_valid_events_round_trip(
    payload: OrderPlaced | CustomerRegistered, occurred_at: datetime, who: Identifiers
) -> None:
    event = new_event(
        payload,
        source=Source(system="prop", channel=Channel.WEB),
        occurred_at=occurred_at,
        identifiers=who,
    )
    wire = orjson.loads(orjson.dumps(event.model_dump(mode="json")))
    assert parse_event(wire) == event


VALID: dict[str, Any] = {
    "type": "order.placed",
    "schema_version": 1,
    "occurred_at": "2024-05-01T12:00:00Z",
    "source": {"system": "s", "channel": "web"},
    "identifiers": {"email": "a@b.co"},
    "payload": {
        "order_id": "o",
        "lines": [{"sku": "S", "quantity": 1, "unit_price": "1.00"}],
        "currency": "EUR",
        "total": "1.00",
    },
}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


@FAST
@given(data=st.data(), replacement=json_values)
def test_any_corruption_is_accepted_or_reported_never_crashes(
    data: st.DataObject, replacement: Any
) -> None:
    path = data.draw(st.sampled_from(_paths(VALID)[1:]))
    event = orjson.loads(orjson.dumps(VALID))
    target = event
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = replacement
    try:
        parse_event(event)
    except EventValidationError as exc:
        assert exc.errors and all(isinstance(e.loc, str) for e in exc.errors)

"""Every catalog type builds with ``new_event`` and survives a JSON round trip."""

from __future__ import annotations

import pickle
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from schemas import (
    CATALOG,
    Channel,
    CustomerEnvelope,
    Envelope,
    EventPayload,
    EventValidationError,
    Identifiers,
    OrderPlaced,
    Source,
    new_event,
    parse_event,
)

OCCURRED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LINES = [
    {"sku": "SHOE-42", "name": "Runner", "category": "shoes", "quantity": 1, "unit_price": "89.90"},
    {"sku": "SOCK-1", "quantity": 3, "unit_price": 4.5},
]
MSG = {"message_id": "m-1", "campaign_id": "c-9"}

SAMPLE_PAYLOADS: dict[str, dict[str, Any]] = {
    "customer.registered": {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "birth_date": "1990-12-10",
        "gender": "female",
        "locale": "en-GB",
        "address": {"line1": "1 Main St", "city": "London", "postal_code": "N1", "country": "GB"},
        "attributes": {"tier": "gold", "pets": 2, "score": 0.5, "vip": True},
    },
    "customer.profile_updated": {"locale": "fr-FR", "attributes": {"newsletter": False}},
    "customer.erasure_requested": {"reason": "customer request", "requested_by": "agent-7"},
    "customer.erased": {
        "request_id": "00000000-0000-4000-8000-000000000001",
        "keys_destroyed": 2,
    },
    "consent.changed": {
        "channel": "email",
        "purpose": "marketing",
        "granted": True,
        "method": "web-form",
    },
    "order.placed": {
        "order_id": "o-1",
        "lines": LINES,
        "currency": "EUR",
        "total": "103.40",
        "discount": 0,
        "shipping": "0.00",
        "tax": "17.23",
        "store_id": "store-7",
    },
    "order.returned": {
        "order_id": "o-1",
        "return_id": "r-1",
        "lines": LINES[:1],
        "currency": "EUR",
        "refund_amount": "89.90",
        "reason": "too small",
    },
    "web.page_viewed": {
        "url": "https://shop.example/shoes?id=42",
        "page_type": "product",
        "referrer": "https://google.com/",
        "session_id": "s-1",
        "duration_ms": 5300,
    },
    "web.searched": {"query": "kids sneakers", "results_count": 0, "session_id": "s-1"},
    "message.sent": MSG,
    "message.delivered": {"message_id": "m-2"},
    "message.opened": MSG,
    "message.clicked": {**MSG, "url": "https://shop.example/sale"},
    "message.bounced": {**MSG, "bounce_type": "hard", "reason": "mailbox unknown"},
    "message.unsubscribed": {**MSG, "scope": "all"},
    "call.logged": {
        "call_id": "call-1",
        "direction": "inbound",
        "duration_seconds": 312,
        "reason": "delivery",
        "outcome": "resolved",
        "agent_id": "agent-3",
        "notes": "Customer asked where the parcel is.",
    },
    "ticket.opened": {"ticket_id": "t-1", "subject": "Broken zip", "priority": "high"},
    "ticket.resolved": {"ticket_id": "t-1", "resolution": "Replaced.", "satisfaction": 5},
    "chat.conversation_held": {
        "conversation_id": "chat-1",
        "started_at": "2024-05-01T10:00:00+02:00",
        "ended_at": "2024-05-01T08:05:00Z",
        "message_count": 12,
        "topic": "sizing",
        "transcript": "Hi! ...",
        "agent_id": "agent-3",
    },
    "social.mentioned": {
        "platform": "instagram",
        "post_id": "p-1",
        "text": "Love my new runners",
        "sentiment": 0.9,
        "url": "https://instagram.com/p/1",
    },
    "sales.visit_logged": {
        "visit_id": "v-1",
        "rep_id": "rep-1",
        "purpose": "renewal",
        "outcome": "signed",
        "notes": "Wants a bulk discount next year.",
    },
    "sales.note_added": {"note_id": "n-1", "rep_id": "rep-1", "text": "Prefers phone calls."},
    "survey.answered": {
        "survey_id": "sv-1",
        "response_id": "resp-1",
        "nps": 9,
        "answers": [
            {"question_id": "q1", "answer": "Fast delivery"},
            {"question_id": "q2", "answer": 4},
            {"question_id": "q3", "answer": True},
            {"question_id": "q4", "answer": 2.5},
        ],
    },
    "identity.merged": {
        "survivor_id": "cust-1",
        "merged_id": "cust-2",
        "linking_identifiers": [{"kind": "email", "value": "Ada@Example.com"}],
        "reason": "same email",
    },
    "identity.split": {
        "customer_id": "cust-1",
        "into": ["cust-1", "cust-3"],
        "shared_kinds": ["phone"],
        "reason": "shared phone",
    },
    "segment.defined": {
        "segment_id": "seg-vip",
        "version": 1,
        "name": "VIP",
        "description": "Top 20% by value",
        "rule": {"all": [{"field": "value_tier", "op": "eq", "value": "gold"}]},
    },
    "segment.retired": {"segment_id": "seg-vip", "version": 1},
    "segment.entered": {"segment_id": "seg-vip", "version": 1, "customer_id": "cust-1"},
    "segment.exited": {"segment_id": "seg-vip", "version": 1, "customer_id": "cust-1"},
    "campaign.launched": {
        "campaign_id": "camp-1",
        "name": "Spring sale",
        "segment_id": "seg-vip",
        "segment_version": 1,
        "channel": "email",
        "offer": "20% off",
        "control_share": 0.1,
        "attribution_window_days": 14,
    },
    "campaign.customer_targeted": {
        "campaign_id": "camp-1",
        "customer_id": "cust-1",
        "group": "control",
    },
    "conversion.attributed": {
        "campaign_id": "camp-1",
        "customer_id": "cust-1",
        "order_id": "o-1",
        "amount": "103.40",
        "currency": "EUR",
        "touch_event_id": str(uuid.UUID(int=7)),
        "rule": "last_touch",
    },
    "assessment.completed": {
        "run_id": "run-1",
        "as_of": "2024-05-01T00:00:00Z",
        "customers": 1200,
        "summary": {"segments": {"champions": 120}, "mean_clv": 410.5},
    },
    "customer.assessed": {
        "run_id": "run-1",
        "customer_id": "cust-1",
        "recency_score": 5,
        "frequency_score": 4,
        "monetary_score": 3,
        "rfm_segment": "champions",
        "value_tier": "gold",
        "clv": 812.4,
        "p_alive": 0.93,
        "churn_risk": 0.07,
        "channel_responsiveness": {"email": 0.3, "sms": 0.05},
    },
}

NON_CUSTOMER_TYPES = {
    "segment.defined",
    "segment.retired",
    "campaign.launched",
    "assessment.completed",
}


def sample_event(event_type: str) -> Envelope:
    entry = CATALOG[event_type]
    payload = entry.payload.model_validate(SAMPLE_PAYLOADS[event_type])
    derived = event_type.split(".")[0] in {"identity", "segment", "campaign", "conversion"}
    return new_event(
        payload,
        source=Source(system="loopcrm" if derived else "shopify-eu", channel=Channel.ECOMMERCE),
        occurred_at=OCCURRED,
        identifiers=None if not entry.customer_event else Identifiers(email="ada@example.com"),
        correlation_id=uuid.uuid4(),
        causation_id=uuid.uuid4(),
    )


def test_samples_cover_the_whole_catalog() -> None:
    assert set(SAMPLE_PAYLOADS) == set(CATALOG)
    assert len(CATALOG) == 34


@pytest.mark.parametrize("event_type", sorted(CATALOG))
def test_every_type_round_trips_through_json(event_type: str) -> None:
    event = sample_event(event_type)
    assert type(event) is CATALOG[event_type].model
    assert event.type == event_type
    assert event.schema_version == CATALOG[event_type].version
    wire = orjson.loads(orjson.dumps(event.model_dump(mode="json")))
    decoded = parse_event(wire)
    assert decoded == event
    assert type(decoded.payload) is CATALOG[event_type].payload
    assert decoded.model_dump(mode="json") == wire


def test_catalog_entries_are_consistent() -> None:
    for name, entry in CATALOG.items():
        assert entry.name == name == entry.payload.event_type
        assert entry.version == entry.payload.schema_version >= 1
        assert issubclass(entry.model, Envelope)
        assert entry.model.__name__ == f"{entry.payload.__name__}Event"
        assert issubclass(entry.model, CustomerEnvelope) is entry.customer_event
        assert issubclass(entry.payload, EventPayload)
        assert entry.payload.model_config.get("frozen") is True
        assert entry.payload.model_config.get("extra") == "forbid"
        assert entry.description
    assert {n for n, e in CATALOG.items() if not e.customer_event} == NON_CUSTOMER_TYPES
    assert CATALOG["customer.registered"].version == 2


def test_events_and_payloads_are_immutable() -> None:
    event = sample_event("order.placed")
    with pytest.raises(ValueError, match="frozen"):
        event.type = "x"  # type: ignore[misc]
    with pytest.raises(ValueError, match="frozen"):
        event.payload.order_id = "x"  # type: ignore[attr-defined]


def test_new_event_defaults_and_supplied_ids() -> None:
    event_id = uuid.uuid4()
    recorded = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    payload = OrderPlaced.model_validate(SAMPLE_PAYLOADS["order.placed"])
    source = Source(system="pos", channel=Channel.STORE)
    ids = Identifiers(account_id="A1")
    event = new_event(
        payload,
        source=source,
        occurred_at=OCCURRED,
        identifiers=ids,
        event_id=event_id,
        recorded_at=recorded,
    )
    assert event.event_id == event_id
    assert event.recorded_at == recorded
    fresh = new_event(payload, source=source, occurred_at=OCCURRED, identifiers=ids)
    assert fresh.event_id != event_id
    assert fresh.recorded_at.tzinfo is not None
    assert event.correlation_id is None and event.causation_id is None


def test_new_event_rejects_foreign_payload_classes() -> None:
    class Stray(EventPayload):
        """Not in the catalog."""

        event_type = "stray.happened"

    with pytest.raises(TypeError, match="Stray is not a payload class of the catalog"):
        new_event(Stray(), source=Source(system="x", channel=Channel.WEB), occurred_at=OCCURRED)


def test_new_event_raises_event_validation_error() -> None:
    payload = OrderPlaced.model_validate(SAMPLE_PAYLOADS["order.placed"])
    with pytest.raises(EventValidationError) as info:
        new_event(
            payload,
            source=Source(system="pos", channel=Channel.STORE),
            occurred_at=datetime(2024, 5, 1, 12, 0),
        )
    assert [e.loc for e in info.value.errors] == ["occurred_at", "identifiers"]


def test_events_and_errors_pickle() -> None:
    event = sample_event("customer.registered")
    assert pickle.loads(pickle.dumps(event)) == event
    with pytest.raises(EventValidationError) as info:
        parse_event({"type": "nope.nope"})
    copy = pickle.loads(pickle.dumps(info.value))
    assert copy.errors == info.value.errors and str(copy) == str(info.value)

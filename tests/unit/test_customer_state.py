"""The customer 360 fold: every catalog event type, and the documented semantics."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, ClassVar
from uuid import UUID

import pytest

from projections.customer import CustomerState, fold, merge
from projections.customer_handlers import ACTIVITY_ONLY, HANDLERS
from projections.customer_records import ChannelActivity, iso, stamp_from_json, stamp_to_json
from schemas import (
    CATALOG,
    Address,
    Channel,
    Envelope,
    EventPayload,
    Identifiers,
    Source,
    new_event,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
WHO = Identifiers(customer_id="C-1")

_LINE = {"sku": "SKU-1", "quantity": 1, "unit_price": Decimal("10.00")}
SAMPLES: dict[str, dict[str, Any]] = {
    "customer.registered": {
        "first_name": "Ana",
        "last_name": "Silva",
        "birth_date": date(1990, 5, 17),
        "address": Address(country="PT", city="Porto"),
        "attributes": {"tier": "gold", "kids": 2},
    },
    "customer.profile_updated": {"locale": "pt-PT", "attributes": {"vip": True}},
    "customer.erasure_requested": {"reason": "customer request"},
    "customer.erased": {
        "request_id": UUID("00000000-0000-4000-8000-000000000001"),
        "keys_destroyed": 2,
    },
    "consent.changed": {"channel": "sms", "purpose": "marketing", "granted": True},
    "order.placed": {"order_id": "O-1", "lines": [_LINE], "currency": "EUR", "total": "10.00"},
    "order.returned": {
        "order_id": "O-1",
        "return_id": "R-1",
        "lines": [_LINE],
        "currency": "EUR",
        "refund_amount": "4.50",
    },
    "web.page_viewed": {"url": "https://shop.example.com/"},
    "web.searched": {"query": "tent", "results_count": 3},
    "message.sent": {"message_id": "m-1", "campaign_id": "K-1"},
    "message.delivered": {"message_id": "m-1", "campaign_id": "K-1"},
    "message.opened": {"message_id": "m-1", "campaign_id": "K-1"},
    "message.clicked": {"message_id": "m-1", "campaign_id": "K-1", "url": "https://x.example/"},
    "message.bounced": {"message_id": "m-1", "campaign_id": "K-1", "bounce_type": "soft"},
    "message.unsubscribed": {"message_id": "m-1", "campaign_id": "K-1", "scope": "channel"},
    "call.logged": {"call_id": "c-1", "direction": "inbound", "duration_seconds": 60},
    "ticket.opened": {"ticket_id": "T-1", "subject": "Broken item"},
    "ticket.resolved": {"ticket_id": "T-1"},
    "chat.conversation_held": {
        "conversation_id": "ch-1",
        "started_at": T0,
        "ended_at": T0 + HOUR,
        "message_count": 4,
    },
    "social.mentioned": {"platform": "x", "post_id": "p-1"},
    "sales.visit_logged": {"visit_id": "v-1", "rep_id": "rep-1"},
    "sales.note_added": {"note_id": "n-1", "rep_id": "rep-1", "text": "Wants a catalogue"},
    "survey.answered": {"survey_id": "nps", "response_id": "r-1", "nps": 9},
    "identity.merged": {
        "survivor_id": "C-1",
        "merged_id": "C-2",
        "linking_identifiers": [{"kind": "email", "value": "ana@example.com"}],
        "reason": "same email",
    },
    "identity.split": {
        "customer_id": "C-1",
        "into": ["C-1", "C-3"],
        "shared_kinds": ["phone"],
        "reason": "shared landline",
    },
    "segment.defined": {
        "segment_id": "S-1",
        "version": 1,
        "name": "VIP",
        "rule": {"field": "order_count", "op": "ge", "value": 1},
    },
    "segment.retired": {"segment_id": "S-1", "version": 1},
    "segment.entered": {"segment_id": "S-1", "version": 1, "customer_id": "C-1"},
    "segment.exited": {"segment_id": "S-1", "version": 1, "customer_id": "C-1"},
    "campaign.launched": {
        "campaign_id": "K-1",
        "name": "Spring",
        "segment_id": "S-1",
        "segment_version": 1,
        "channel": "email",
        "control_share": 0.1,
        "attribution_window_days": 14,
    },
    "campaign.customer_targeted": {"campaign_id": "K-1", "customer_id": "C-1", "group": "control"},
    "conversion.attributed": {
        "campaign_id": "K-1",
        "customer_id": "C-1",
        "order_id": "O-1",
        "amount": "10.00",
        "currency": "EUR",
        "rule": "last_touch",
    },
    "assessment.completed": {"run_id": "run-1", "as_of": T0, "customers": 1, "summary": {}},
    "customer.assessed": {
        "run_id": "run-1",
        "customer_id": "C-1",
        "recency_score": 5,
        "frequency_score": 4,
        "monetary_score": 3,
        "rfm_segment": "loyal",
        "value_tier": "high",
    },
}


def event(
    type_: str,
    at: datetime = T0,
    via: str = "web",
    event_id: int | UUID | None = None,
    **fields: Any,
) -> Envelope:
    """An event of ``type_`` seen ``via`` a channel: its sample payload, ``fields`` overriding."""
    entry = CATALOG[type_]
    payload = entry.payload(**{**SAMPLES[type_], **fields})
    return new_event(
        payload,
        source=Source(system="test", channel=Channel(via)),
        occurred_at=at,
        identifiers=WHO if entry.customer_event else None,
        event_id=UUID(int=event_id) if isinstance(event_id, int) else event_id,
    )


def specific(state: CustomerState) -> dict[str, Any]:
    """The state's JSON without the parts every event changes."""
    data = state.to_json()
    for common in ("activity", "first_seen", "last_seen", "event_count"):
        del data[common]
    return data


EMPTY = specific(CustomerState.empty())

EXPECTED: dict[str, Callable[[CustomerState], object]] = {
    "customer.registered": lambda s: (
        (
            s.display_name,
            s.profile["birth_date"].value,
            s.profile["address"].value,
            {k: v.value for k, v in s.attributes.items()},
        )
        == (
            "Ana Silva",
            date(1990, 5, 17),
            Address(country="PT", city="Porto"),
            {"tier": "gold", "kids": 2},
        )
    ),
    "customer.profile_updated": lambda s: (
        s.profile["locale"].value == "pt-PT"
        and s.attributes["vip"].value is True
        and s.display_name is None
    ),
    "consent.changed": lambda s: s.consent("sms", "marketing") is True,
    "customer.erased": lambda s: s.erased is not None and s.erased[0] == T0,
    "order.placed": lambda s: (
        s.order_count == 1 and s.orders["EUR"].revenue == 10 and s.first_order_at == T0
    ),
    "order.returned": lambda s: (
        (s.order_count == 0 and (s.orders["EUR"].return_count, s.orders["EUR"].returned_value))
        == (1, Decimal("4.50"))
    ),
    "message.sent": lambda s: s.campaigns["K-1"].sent == s.messages["email"].sent == 1,
    "message.delivered": lambda s: s.campaigns["K-1"].delivered == 1,
    "message.opened": lambda s: (
        s.campaigns["K-1"].opened == s.summary()["emails_opened"] == 1
        and s.campaigns["K-1"].last_response_at == T0
    ),
    "message.clicked": lambda s: s.campaigns["K-1"].clicked == s.summary()["emails_clicked"] == 1,
    "message.bounced": lambda s: s.campaigns["K-1"].bounced == s.messages["email"].bounced == 1,
    "message.unsubscribed": lambda s: (
        s.campaigns["K-1"].unsubscribed == 1 and s.consent("email", "marketing") is False
    ),
    "ticket.opened": lambda s: s.open_tickets == {"T-1"},
    "ticket.resolved": lambda s: s.tickets_resolved == {"T-1"} and not s.open_tickets,
    "survey.answered": lambda s: s.nps is not None and s.nps.value == 9,
    "segment.entered": lambda s: s.segments["S-1"].member and s.segments["S-1"].version == 1,
    "segment.exited": lambda s: not s.segments["S-1"].member,
    "campaign.customer_targeted": lambda s: (
        s.campaigns["K-1"].group is not None and s.campaigns["K-1"].group.value == "control"
    ),
    "conversion.attributed": lambda s: (
        s.campaigns["K-1"].conversions == s.summary()["conversions"] == 1
        and s.campaigns["K-1"].converted_revenue == {"EUR": Decimal("10.00")}
    ),
    "customer.assessed": lambda s: (
        s.assessment is not None and s.assessment.value.run_id == "run-1"
    ),
}


def test_samples_and_expectations_cover_the_catalog() -> None:
    assert set(CATALOG) <= set(SAMPLES)
    handled = {e.name for e in CATALOG.values() if e.payload in HANDLERS}
    customer = {e.name for e in CATALOG.values() if e.customer_event}
    assert customer <= handled | ACTIVITY_ONLY, "a new event type needs a handler or a mention"
    assert not handled & ACTIVITY_ONLY
    assert not any(e.payload in HANDLERS for e in CATALOG.values() if not e.customer_event)
    assert set(EXPECTED) == handled


@pytest.mark.parametrize("type_", sorted(CATALOG))
def test_every_catalog_type_folds_as_documented(type_: str) -> None:
    channel = "email" if type_.startswith("message.") else "web"
    if not CATALOG[type_].customer_event:
        with pytest.raises(ValueError, match=f"{type_} event .* is not about one customer"):
            CustomerState.empty().apply(event(type_, via=channel))
        return
    state = fold([event(type_, at=T0, via=channel)])
    assert (state.event_count, state.first_seen, state.last_seen) == (1, T0, T0)
    assert state.activity == {channel: ChannelActivity(1, T0)}
    if type_ in ACTIVITY_ONLY:
        assert specific(state) == EMPTY, f"{type_} should only count as activity"
    else:
        assert specific(state) != EMPTY
        assert EXPECTED[type_](state)


def test_unknown_payload_type_only_counts_as_activity() -> None:
    class GadgetPinged(EventPayload):
        """A gadget pinged (not in the catalog)."""

        event_type: ClassVar[str] = "gadget.pinged"

    unknown = Envelope(
        type="gadget.pinged",
        schema_version=1,
        occurred_at=T0,
        source=Source(system="gadget", channel=Channel.PUSH),
        payload=GadgetPinged(),
    )
    state = fold([unknown])
    assert (state.event_count, state.activity) == (1, {"push": ChannelActivity(1, T0)})
    assert specific(state) == EMPTY


def test_profile_is_last_writer_wins_per_attribute_with_event_id_breaking_ties() -> None:
    same_instant = T0.astimezone(timezone(timedelta(hours=5, minutes=30)))
    events = [
        event("customer.registered", at=T0, event_id=2, attributes={"tier": "gold", "kids": 2}),
        event("customer.profile_updated", at=same_instant, event_id=1, first_name="Anna"),
        event("customer.profile_updated", at=same_instant, event_id=3, last_name="Costa"),
        event("customer.profile_updated", at=T0 - HOUR, event_id=9, attributes={"tier": "tin"}),
        event("customer.profile_updated", at=T0 + HOUR, event_id=4, attributes={"kids": 3}),
    ]
    for order in (events, events[::-1]):
        state = fold(order)
        assert state.display_name == "Ana Costa"  # id 2 beats id 1 at the same instant
        attributes = {k: v.value for k, v in state.attributes.items()}
        assert attributes == {"tier": "gold", "kids": 3, "vip": True}
        assert state.profile["first_name"].stamp == (T0, UUID(int=2))
        assert state.profile["address"].value == Address(country="PT", city="Porto")


def test_currencies_are_kept_apart() -> None:
    state = fold(
        [
            event("order.placed", at=T0, event_id=1, currency="EUR", total="10.00"),
            event("order.placed", at=T0 + HOUR, event_id=2, currency="EUR", total="5.05"),
            event("order.placed", at=T0 - HOUR, event_id=3, currency="USD", total="7"),
            event("order.returned", at=T0, event_id=4, currency="USD", refund_amount="2.5"),
        ]
    )
    eur, usd = state.orders["EUR"], state.orders["USD"]
    assert (eur.order_count, eur.revenue, eur.average_order_value) == (
        2,
        Decimal("15.05"),
        Decimal("7.525"),
    )
    assert (eur.first_order_at, eur.last_order_at) == (T0, T0 + HOUR)
    assert (usd.revenue, usd.return_count, usd.returned_value) == (Decimal(7), 1, Decimal("2.5"))
    assert (state.order_count, state.first_order_at, state.last_order_at) == (
        3,
        T0 - HOUR,
        T0 + HOUR,
    )
    assert state.summary()["revenue_by_currency"] == {"EUR": "15.05", "USD": "7"}


def test_money_sums_are_exact_so_order_does_not_matter() -> None:
    amounts = ["12345678901234567890123456789.5", "0.000000000000000000000000001", "1"]
    events = [event("order.placed", event_id=i, total=a) for i, a in enumerate(amounts)]
    expected = Decimal("12345678901234567890123456790.500000000000000000000000001")
    assert fold(events).orders["EUR"].revenue == fold(events[::-1]).orders["EUR"].revenue
    assert fold(events).orders["EUR"].revenue == expected


def test_a_ticket_resolved_before_it_was_opened_is_closed() -> None:
    state = fold(
        [
            event("ticket.resolved", at=T0, event_id=1, ticket_id="T-1"),
            event("ticket.opened", at=T0 + HOUR, event_id=2, ticket_id="T-1"),
            event("ticket.opened", at=T0 + HOUR, event_id=3, ticket_id="T-2"),
        ]
    )
    assert state.open_tickets == {"T-2"}
    assert state.summary()["open_ticket_count"] == 1


def test_unsubscribe_all_versus_grants_latest_stamp_wins() -> None:
    state = fold(
        [
            event("consent.changed", at=T0, event_id=1, channel="sms", granted=True),
            event("message.unsubscribed", at=T0 + HOUR, via="email", event_id=2, scope="all"),
            event("consent.changed", at=T0 + 2 * HOUR, event_id=3, channel="email", granted=True),
            event("consent.changed", at=T0, event_id=4, channel="sms", purpose="service"),
        ]
    )
    assert state.consent("email", "marketing") is True  # granted after the unsubscribe
    assert state.consent("sms", "marketing") is False  # granted before it
    assert state.consent("push", "marketing") is False  # never granted, unsubscribed all
    assert state.consent("sms", "service") is True  # not marketing: untouched
    assert state.consent("push", "service") is None


def test_unsubscribe_scopes() -> None:
    def after(scope: str | None, campaign_id: str | None = "K-1") -> CustomerState:
        grant = event("consent.changed", at=T0, event_id=1, channel="email", granted=True)
        unsubscribe = event(
            "message.unsubscribed",
            at=T0 + HOUR,
            via="email",
            event_id=2,
            scope=scope,
            campaign_id=campaign_id,
        )
        return fold([unsubscribe, grant])

    campaign = after("campaign")
    assert (campaign.consent("email", "marketing"), campaign.campaign_opt_outs) == (True, {"K-1"})
    assert after("campaign", campaign_id=None).campaign_opt_outs == set()
    for scope in ("channel", None):
        state = after(scope)
        assert state.consent("email", "marketing") is False
        assert state.consent("sms", "marketing") is None
        assert not state.campaign_opt_outs
    grant_later = fold(
        [
            event("message.unsubscribed", at=T0, via="email", event_id=2, scope="channel"),
            event("consent.changed", at=T0 + HOUR, event_id=1, channel="email", granted=True),
        ]
    )
    assert grant_later.consent("email", "marketing") is True


@pytest.mark.parametrize(
    ("events", "preferred"),
    [
        ([], None),
        ([("system", T0), ("system", T0)], None),
        ([("web", T0), ("sms", T0), ("sms", T0 - HOUR), ("system", T0), ("system", T0)], "sms"),
        ([("web", T0), ("sms", T0 + HOUR)], "sms"),  # tie on count: latest wins
        ([("web", T0), ("sms", T0), ("chat", T0 - HOUR)], "sms"),  # then the first name
    ],
)
def test_preferred_channel(events: list[tuple[str, datetime]], preferred: str | None) -> None:
    state = fold(
        event("web.page_viewed", at=at, via=ch, event_id=i) for i, (ch, at) in enumerate(events)
    )
    assert state.preferred_channel == state.summary()["preferred_channel"] == preferred


def test_segment_membership_ranks_version_before_time() -> None:
    entered_v2 = event("segment.entered", at=T0, event_id=1, version=2)
    late_exit_v1 = event("segment.exited", at=T0 + HOUR, event_id=2, version=1)
    state = fold([late_exit_v1, entered_v2])
    assert (state.segments["S-1"].member, state.segments["S-1"].version) == (True, 2)
    state.apply(event("segment.exited", at=T0 + HOUR, event_id=3, version=2))
    assert not state.segments["S-1"].member


def test_campaigns_and_channel_responses() -> None:
    state = fold(
        [
            event("message.sent", via="email", event_id=1),
            event("message.opened", at=T0 + HOUR, via="email", event_id=2),
            event("message.opened", at=T0, via="sms", event_id=3, campaign_id=None),
            event("message.sent", via="email", event_id=4, campaign_id="K-2"),
            event("campaign.customer_targeted", via="system", event_id=5, group="treatment"),
            event("campaign.customer_targeted", at=T0 - HOUR, via="system", event_id=6),
            event("conversion.attributed", via="system", event_id=7),
            event("conversion.attributed", via="system", event_id=8, currency="USD"),
        ]
    )
    k1 = state.campaigns["K-1"]
    assert (k1.sent, k1.opened, k1.last_response_at, k1.conversions) == (1, 1, T0 + HOUR, 2)
    assert k1.group is not None and k1.group.value == "treatment"
    assert k1.converted_revenue == {"EUR": Decimal("10.00"), "USD": Decimal("10.00")}
    totals = state.campaign_totals
    assert (totals.sent, totals.opened, totals.clicked, totals.conversions) == (2, 1, 0, 2)
    assert state.messages["sms"].opened == 1  # transactional: channel only, no campaign
    assert state.messages["email"].sent == 2


def test_latest_assessment_and_nps_win() -> None:
    state = fold(
        [
            event("customer.assessed", at=T0 + HOUR, via="system", event_id=1, run_id="new"),
            event("customer.assessed", at=T0, via="system", event_id=2, run_id="old"),
            event("survey.answered", at=T0, event_id=3, nps=3),
            event("survey.answered", at=T0 + HOUR, event_id=4, nps=None),
        ]
    )
    assert state.assessment is not None and state.assessment.value.run_id == "new"
    assert state.nps is not None and state.nps.value == 3


def test_summary_has_the_headline_columns() -> None:
    state = fold([event("customer.registered", event_id=1), event("order.placed", event_id=2)])
    assert state.summary() == {
        "display_name": "Ana Silva",
        "order_count": 1,
        "revenue_by_currency": {"EUR": "10.00"},
        "first_order_at": T0,
        "last_order_at": T0,
        "open_ticket_count": 0,
        "preferred_channel": "web",
        "first_seen": T0,
        "last_seen": T0,
        "event_count": 2,
        "emails_opened": 0,
        "emails_clicked": 0,
        "conversions": 0,
    }


def test_json_is_plain_and_round_trips() -> None:
    state = fold(event(t, via="email", event_id=i) for i, t in enumerate(EXPECTED))
    data = state.to_json()
    assert json.loads(json.dumps(data)) == data
    assert data["orders"]["EUR"]["revenue"] == "10.00"
    assert data["first_seen"] == "2026-03-01T12:00:00Z"
    assert CustomerState.from_json(json.loads(json.dumps(data))) == state
    with pytest.raises(ValueError, match="format"):
        CustomerState.from_json({**data, "format": 99})


def test_merge_and_copy_leave_their_inputs_alone() -> None:
    a = fold([event("order.placed", event_id=1), event("ticket.opened", event_id=2)])
    b = fold([event("order.placed", event_id=3), event("ticket.resolved", event_id=4)])
    before = (a.to_json(), b.to_json())
    merged = merge(a, b)
    copy = merged.copy()
    merged.apply(event("order.placed", event_id=5))
    assert (a.to_json(), b.to_json()) == before
    assert (merged.order_count, copy.order_count, a.order_count) == (3, 2, 1)
    assert copy.open_tickets == frozenset()


class _Moment(datetime):
    """A datetime subclass (as some libraries hand out): orjson takes none."""


@pytest.mark.parametrize(
    "at",
    [
        datetime(2026, 5, 1, 12, 0, 0, 250000, tzinfo=UTC),
        datetime(2026, 5, 1, 12, 0, tzinfo=UTC),  # no microseconds: none written
        datetime(2026, 5, 1, 23, 59, 59, 1, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
        datetime(2026, 5, 1, 0, 0, 30, 7, tzinfo=timezone(timedelta(seconds=30))),
        datetime(1, 1, 1, 0, 0, tzinfo=UTC),
        _Moment(2026, 5, 1, 12, tzinfo=timezone(timedelta(hours=2))),
    ],
)
def test_iso_writes_what_isoformat_writes_in_utc_with_a_z(at: datetime) -> None:
    expected = at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert iso(at) == expected
    assert iso(at).endswith("Z") and datetime.fromisoformat(iso(at)) == at


def test_stamps_write_their_event_id_as_str_does() -> None:
    event_id = UUID("0b6c1f5e-3d2a-4f7b-9a41-6c8e2d5f7a90")
    at = datetime(2026, 5, 1, tzinfo=UTC)
    assert stamp_to_json((at, event_id)) == {
        "at": "2026-05-01T00:00:00Z",
        "event_id": str(event_id),
    }
    assert stamp_from_json(stamp_to_json((at, event_id))) == (at, event_id)

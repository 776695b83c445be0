"""Property tests: the customer 360 depends only on the set of events folded (DESIGN §3).

Hand-built events draw from small pools of timestamps (one instant also in a non-UTC
offset), ids, campaigns, segments and attribute keys so that last-writer-wins ties,
set overlaps and shared counters are the common case; synthetic traffic adds realism.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

from hypothesis import given, settings
from hypothesis import strategies as st

from producers.synthetic import SyntheticTouchpoints
from projections.customer import CustomerState, fold, merge
from schemas import (
    CATALOG,
    Address,
    Channel,
    ConsentPurpose,
    Envelope,
    Identifiers,
    Source,
    TargetGroup,
    UnsubscribeScope,
    new_event,
)
from tests.unit.test_customer_state import SAMPLES

FAST = settings(max_examples=60, deadline=None)

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
IST = timezone(timedelta(hours=5, minutes=30))
times = st.sampled_from([T, T + timedelta(hours=1), (T + timedelta(hours=1)).astimezone(IST)])
channels = st.sampled_from([Channel.EMAIL, Channel.SMS, Channel.WEB, Channel.SYSTEM])
ids = st.sampled_from(["a", "b", "c"])
optional_ids = st.none() | ids
currencies = st.sampled_from(["EUR", "USD"])
money = st.decimals(min_value=0, max_value=10**6, places=2) | st.sampled_from(
    [Decimal("12345678901234567890123456789.5"), Decimal("1E-30"), Decimal("0.10")]
)
scalars = st.one_of(ids, st.booleans(), st.integers(-5, 5), st.floats(-1, 1, allow_nan=False))
names = st.sampled_from(["Ana", "Ben", "Chloé"])
line = [{"sku": "S", "quantity": 1, "unit_price": "1"}]


def _message(**extra: Any) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"message_id": ids, "campaign_id": optional_ids, **extra})


_profile = {
    "first_name": names,
    "last_name": st.none() | names,
    "birth_date": st.none() | st.dates(min_value=datetime(1950, 1, 1).date()),
    "gender": st.none() | ids,
    "locale": st.none() | st.sampled_from(["en-GB", "fr"]),
    "address": st.none() | st.builds(Address, country=st.sampled_from(["PT", "FR"])),
    "attributes": st.dictionaries(ids, scalars, max_size=2),
}
PAYLOADS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "customer.registered": st.fixed_dictionaries(_profile),
    "customer.profile_updated": st.fixed_dictionaries(
        {
            **_profile,
            "first_name": st.none() | names,
            "attributes": st.none() | _profile["attributes"],
        }
    ).filter(lambda fields: any(v is not None for v in fields.values())),
    "consent.changed": st.fixed_dictionaries(
        {
            "channel": channels,
            "purpose": st.sampled_from(list(ConsentPurpose)),
            "granted": st.booleans(),
        }
    ),
    "order.placed": st.fixed_dictionaries(
        {"order_id": ids, "lines": st.just(line), "currency": currencies, "total": money}
    ),
    "order.returned": st.fixed_dictionaries(
        {
            "order_id": ids,
            "return_id": ids,
            "lines": st.just(line),
            "currency": currencies,
            "refund_amount": money,
        }
    ),
    "message.sent": _message(),
    "message.delivered": _message(),
    "message.opened": _message(),
    "message.clicked": _message(url=st.just("https://x.example/")),
    "message.bounced": _message(bounce_type=st.sampled_from(["hard", "soft"])),
    "message.unsubscribed": _message(scope=st.none() | st.sampled_from(list(UnsubscribeScope))),
    "ticket.opened": st.fixed_dictionaries({"ticket_id": ids, "subject": st.just("Help")}),
    "ticket.resolved": st.fixed_dictionaries({"ticket_id": ids}),
    "survey.answered": st.fixed_dictionaries(
        {"survey_id": ids, "response_id": ids, "nps": st.none() | st.integers(0, 10)}
    ),
    "segment.entered": st.fixed_dictionaries(
        {"segment_id": ids, "version": st.integers(1, 2), "customer_id": ids}
    ),
    "segment.exited": st.fixed_dictionaries(
        {"segment_id": ids, "version": st.integers(1, 2), "customer_id": ids}
    ),
    "campaign.customer_targeted": st.fixed_dictionaries(
        {"campaign_id": ids, "customer_id": ids, "group": st.sampled_from(list(TargetGroup))}
    ),
    "conversion.attributed": st.fixed_dictionaries(
        {
            "campaign_id": ids,
            "customer_id": ids,
            "order_id": ids,
            "amount": money,
            "currency": currencies,
            "rule": st.just("last_touch"),
        }
    ),
    "customer.assessed": st.fixed_dictionaries(
        {
            **{k: st.just(v) for k, v in SAMPLES["customer.assessed"].items()},
            "run_id": ids,
            "recency_score": st.integers(1, 5),
            "churn_risk": st.none() | st.floats(0, 1),
        }
    ),
}
# Activity-only types: their payload does not matter, the sample will do.
CUSTOMER_TYPES = sorted(name for name, entry in CATALOG.items() if entry.customer_event)
PAYLOADS |= {name: st.just(SAMPLES[name]) for name in CUSTOMER_TYPES if name not in PAYLOADS}


def _build(type_: str, fields: dict[str, Any], at: datetime, via: Channel, id_: UUID) -> Envelope:
    return new_event(
        CATALOG[type_].payload(**fields),
        source=Source(system="test", channel=via),
        occurred_at=at,
        identifiers=Identifiers(customer_id="C-1"),
        event_id=id_,
    )


# Half the events are of types with last-writer-wins parts, so that ties are frequent.
LWW_TYPES = [
    "customer.registered",
    "customer.profile_updated",
    "consent.changed",
    "message.unsubscribed",
    "segment.entered",
    "segment.exited",
    "campaign.customer_targeted",
    "customer.assessed",
    "survey.answered",
]
any_event = (st.sampled_from(CUSTOMER_TYPES) | st.sampled_from(LWW_TYPES)).flatmap(
    lambda type_: st.builds(_build, st.just(type_), PAYLOADS[type_], times, channels, st.uuids())
)
event_sets = st.lists(any_event, min_size=8, max_size=40, unique_by=lambda e: e.event_id)


def synthetic(seed: int, count: int, customers: int) -> list[Envelope]:
    return list(SyntheticTouchpoints(customers=customers, seed=seed).events(count))


synthetic_sets = st.builds(synthetic, st.integers(0, 2**32), st.integers(0, 250), st.integers(1, 4))
any_set = event_sets | synthetic_sets


def _parts(events: list[Envelope], labels: list[int]) -> tuple[list[Envelope], ...]:
    """Disjoint parts of ``events``: event i goes to part ``labels[i] % 3``."""
    parts: tuple[list[Envelope], ...] = ([], [], [])
    for i, e in enumerate(events):
        parts[labels[i % len(labels)] % 3 if labels else 0].append(e)
    return parts


def test_hand_built_strategies_cover_every_customer_event_type() -> None:
    assert set(PAYLOADS) == set(CUSTOMER_TYPES)


@FAST
@given(events=any_set, seed=st.randoms(use_true_random=False))
def test_any_permutation_folds_to_an_equal_state(
    events: list[Envelope], seed: random.Random
) -> None:
    shuffled = events[:]
    seed.shuffle(shuffled)
    assert fold(shuffled) == fold(events)


@FAST
@given(events=any_set, labels=st.lists(st.integers(0, 2), max_size=40))
def test_merge_of_disjoint_folds_is_the_fold_of_the_union(
    events: list[Envelope], labels: list[int]
) -> None:
    parts = _parts(events, labels)
    a, b, c = (fold(part) for part in parts)
    assert merge(a, b) == fold([*parts[0], *parts[1]])
    assert merge(merge(a, b), c) == fold(events)


@FAST
@given(events=any_set, labels=st.lists(st.integers(0, 2), max_size=40))
def test_merge_is_commutative_and_associative(events: list[Envelope], labels: list[int]) -> None:
    a, b, c = (fold(part) for part in _parts(events, labels))
    assert merge(a, b) == merge(b, a)
    assert merge(merge(a, b), c) == merge(a, merge(b, c))
    assert merge(a, CustomerState.empty()) == a == a.copy()


@FAST
@given(events=event_sets, cut=st.integers(0, 30), overlap=st.integers(0, 30))
def test_overlapping_merge_still_agrees_on_the_idempotent_parts(
    events: list[Envelope], cut: int, overlap: int
) -> None:
    """Counters would double an overlap; LWW, min/max and id sets must not care."""
    merged = merge(fold(events[: cut + overlap]), fold(events[cut:]))
    union = fold(events)
    for name in ("profile", "attributes", "consents", "unsubscribed_all", "campaign_opt_outs"):
        assert getattr(merged, name) == getattr(union, name)
    for name in ("tickets_opened", "tickets_resolved", "segments", "assessment", "nps"):
        assert getattr(merged, name) == getattr(union, name)
    assert (merged.first_seen, merged.last_seen) == (union.first_seen, union.last_seen)


@FAST
@given(events=any_set)
def test_json_round_trips_through_text(events: list[Envelope]) -> None:
    state = fold(events)
    text = json.dumps(state.to_json(), allow_nan=False)
    assert CustomerState.from_json(json.loads(text)) == state
    assert json.loads(text) == state.to_json()

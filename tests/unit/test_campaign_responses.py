"""The campaign response simulator: deterministic, valid, and shaped like a real campaign."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from producers.campaign_responses import (
    CLICKED,
    OPENED,
    ORDERED,
    SENT,
    STEPS,
    Campaign,
    ResponseKnobs,
    Target,
    simulate_responses,
)
from schemas import CampaignLaunched, Channel, parse_event

LAUNCH = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CAMPAIGN = Campaign("K-spring", Channel.EMAIL, LAUNCH, attribution_window_days=14)


def _population(n: int, seed: int = 1) -> list[Target]:
    rng = random.Random(seed)
    return [
        Target(
            customer_id=f"C-{i:05d}",
            group="control" if i % 5 == 0 else "treatment",
            p_alive=rng.choice([None, rng.random()]),
            responsiveness=rng.choice([None, rng.random() * 0.6]),
            recency_score=rng.choice([None, 1, 2, 3, 4, 5]),
            currency=rng.choice([None, "GBP"]),
        )
        for i in range(n)
    ]


def test_same_seed_same_events_other_seed_other_outcomes() -> None:
    targets = _population(300)
    first = [e.model_dump(mode="json") for e in simulate_responses(CAMPAIGN, targets, seed=7)]
    again = [e.model_dump(mode="json") for e in simulate_responses(CAMPAIGN, targets, seed=7)]
    assert first == again
    other = [e.model_dump(mode="json") for e in simulate_responses(CAMPAIGN, targets, seed=8)]
    assert first != other


def test_a_customers_outcome_does_not_depend_on_the_other_targets() -> None:
    targets = _population(200)
    alone = simulate_responses(CAMPAIGN, targets[:1], seed=3)
    shuffled = list(targets)
    random.Random(0).shuffle(shuffled)
    crowd = simulate_responses(CAMPAIGN, shuffled, seed=3)
    mine = [e for e in crowd if e.identifiers and e.identifiers.customer_id == "C-00000"]
    assert [e.model_dump() for e in alone] == [e.model_dump() for e in mine]


def test_events_validate_and_occur_within_the_attribution_window() -> None:
    result = simulate_responses(CAMPAIGN, _population(500), seed=1)
    events = list(result)
    assert len(events) == len(result) > 0
    ends = LAUNCH + timedelta(days=14)
    for event in events:
        assert parse_event(event.model_dump(mode="json")) == event
        assert LAUNCH < event.occurred_at < ends
        assert event.identifiers is not None and event.identifiers.customer_id
        if event.type.startswith("message."):
            assert event.payload.campaign_id == "K-spring"  # type: ignore[attr-defined]
            assert event.payload.message_id  # type: ignore[attr-defined]
            assert event.source.system == "esp-simulator"
            assert event.source.channel is Channel.EMAIL
        else:
            assert event.type == ORDERED
            assert event.source.system == "shop-simulator"
            assert event.source.channel is Channel.ECOMMERCE
    assert [e.occurred_at for e in events] == sorted(e.occurred_at for e in events)
    assert len({e.event_id for e in events}) == len(events)


def test_message_steps_follow_each_other_per_customer() -> None:
    by_customer: dict[str, list[str]] = {}
    times: dict[tuple[str, str], datetime] = {}
    for e in simulate_responses(CAMPAIGN, _population(800), seed=2):
        assert e.identifiers is not None and e.identifiers.customer_id is not None
        by_customer.setdefault(e.identifiers.customer_id, []).append(e.type)
        times[(e.identifiers.customer_id, e.type)] = e.occurred_at
    for customer, steps in by_customer.items():
        assert Counter(steps).most_common(1)[0][1] == 1  # each step at most once
        if OPENED in steps:
            assert "message.delivered" in steps and "message.bounced" not in steps
            assert times[(customer, SENT)] <= times[(customer, OPENED)]
        if CLICKED in steps:
            assert OPENED in steps
            assert times[(customer, OPENED)] <= times[(customer, CLICKED)]


def test_control_customers_receive_no_messages() -> None:
    targets = _population(1_000)
    control = {t.customer_id for t in targets if t.group == "control"}
    result = simulate_responses(CAMPAIGN, targets, seed=4)
    for event in result:
        assert event.identifiers is not None
        if event.identifiers.customer_id in control:
            assert event.type == ORDERED
    summary = result.summary
    assert summary.targets == {"treatment": 800, "control": 200}
    assert summary.count("treatment", SENT) == 800
    assert all(summary.count("control", step) == 0 for step in STEPS if step != ORDERED)
    assert summary.count("control", ORDERED) > 0


def test_summary_counts_what_was_generated() -> None:
    result = simulate_responses(CAMPAIGN, _population(600), seed=5)
    counted: Counter[tuple[str, str]] = Counter()
    revenue: dict[str, Decimal] = {}
    group = {t.customer_id: t.group for t in _population(600)}
    for e in result:
        assert e.identifiers is not None and e.identifiers.customer_id is not None
        g = group[e.identifiers.customer_id]
        counted[(g, e.type)] += 1
        if e.type == ORDERED:
            revenue[g] = revenue.get(g, Decimal(0)) + e.payload.total  # type: ignore[attr-defined]
            assert e.payload.currency in ("EUR", "GBP")  # type: ignore[attr-defined]
    assert dict(result.summary.steps) == dict(counted)
    assert dict(result.summary.revenue) == revenue
    assert result.summary.rate("treatment", SENT) == 1.0


def test_treatment_converts_more_than_control_with_a_positive_lift() -> None:
    targets = [
        Target(f"C-{i:05d}", "treatment" if i % 2 else "control", p_alive=0.6, recency_score=3)
        for i in range(6_000)
    ]
    knobs = ResponseKnobs(conversion_base_rate=0.05, treatment_lift=1.5, base_open_rate=0.3)
    summary = simulate_responses(CAMPAIGN, targets, seed=11, knobs=knobs).summary
    treated = summary.rate("treatment", ORDERED)
    control = summary.rate("control", ORDERED)
    assert treated is not None and control is not None
    assert treated > control * 1.2
    # Without a lift the groups convert alike (same draws, same probabilities).
    flat = simulate_responses(
        CAMPAIGN, targets, seed=11, knobs=ResponseKnobs(conversion_base_rate=0.05, treatment_lift=0)
    ).summary
    assert flat.rate("treatment", ORDERED) == pytest.approx(control, abs=0.015)


def test_responsive_and_alive_customers_open_more() -> None:
    def open_rate(**traits: float) -> float:
        targets = [Target(f"C-{i}", "treatment", **traits) for i in range(2_000)]  # type: ignore[arg-type]
        rate = simulate_responses(CAMPAIGN, targets, seed=9).summary.rate("treatment", OPENED)
        assert rate is not None
        return rate

    assert open_rate(responsiveness=0.8, p_alive=0.5) > 2 * open_rate(
        responsiveness=0.02, p_alive=0.5
    )
    assert open_rate(responsiveness=0.3, p_alive=0.95) > 2 * open_rate(
        responsiveness=0.3, p_alive=0.05
    )


def test_event_ids_are_uuid5_of_campaign_customer_and_step() -> None:
    targets = [Target("C-1", "treatment", p_alive=1.0, responsiveness=1.0)]
    first = {e.type: e.event_id for e in simulate_responses(CAMPAIGN, targets, seed=1)}
    assert first[SENT].version == 5
    again = {e.type: e.event_id for e in simulate_responses(CAMPAIGN, targets, seed=99)}
    assert first[SENT] == again[SENT]  # the campaign reaches C-1 once, whatever the seed
    other = Campaign("K-other", Channel.SMS, LAUNCH, 7)
    assert {e.event_id for e in simulate_responses(other, targets, seed=1)}.isdisjoint(
        first.values()
    )


def test_campaign_from_launch_event_and_input_checks() -> None:
    launched = CampaignLaunched(
        campaign_id="K-9",
        name="Spring",
        segment_id="S-1",
        segment_version=1,
        channel=Channel.SMS,
        control_share=0.2,
        attribution_window_days=10,
    )
    campaign = Campaign.from_launch(launched, LAUNCH)
    assert campaign == Campaign("K-9", Channel.SMS, LAUNCH, 10)
    with pytest.raises(ValueError, match="timezone"):
        Campaign("K", Channel.EMAIL, datetime(2026, 1, 1), 7)
    with pytest.raises(ValueError, match="group"):
        Target("C-1", "both")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="p_alive"):
        Target("C-1", "control", p_alive=1.5)
    with pytest.raises(ValueError, match="twice"):
        simulate_responses(CAMPAIGN, [Target("C-1", "control"), Target("C-1", "treatment")])

"""Two full turns of the closed loop on a generated population, with the checks.

Run by ``tests/unit/test_closed_loop_embedded.py`` (SQLite log and projections) and
``tests/integration/test_closed_loop_kafka_postgres.py`` (Kafka + PostgreSQL), so the
loop is specified once and holds on both.

Cycle 1 (at T1): assess, define "buyers" (ordered at least once), launch an email
campaign to it with a 30% control group, let the touchpoints report responses and
orders (``producers.campaign_responses``). Cycle 2 (at T2 = T1 + 20 days): reassess,
define "email responders" (responded since the launch) and "ignored last campaign",
launch a follow-up to the responders. Every expectation is computed from the events
published, never from the projections under test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from crm.demo import campaign_targets
from events.log import EventLog
from producers.campaign_responses import Campaign, ResponseKnobs, simulate_responses
from producers.synthetic import SyntheticTouchpoints
from projections import planning
from projections.assessment import run_assessment
from projections.runner import catch_up
from projections.store import SqlProjectionStore
from projections.tables import (
    assessment_runs,
    customer_segments,
    customers,
    metadata,
)
from schemas import Channel, Envelope, MessageUnsubscribed, OrderPlaced

T1 = datetime(2026, 6, 1, 9, tzinfo=UTC)
T2 = T1 + timedelta(days=20)
FX = {"USD": 0.92, "GBP": 1.17}  # the synthetic population buys in EUR, USD and GBP

LOOP_TABLES = (
    "customers",
    "customer_segments",
    "segment_history",
    "customer_campaigns",
    "campaigns",
    "segment_definitions",
    "assessment_runs",
    "customer_aliases",
)


@dataclass
class Clock:
    now: datetime = T1

    def __call__(self) -> datetime:
        return self.now


def populate(event_log: EventLog, customers_n: int, events_n: int, seed: int = 3) -> None:
    generator = SyntheticTouchpoints(
        customers=customers_n, seed=seed, start=T1 - timedelta(days=365), days=364
    )
    events = list(generator.events(events_n))
    for start in range(0, len(events), 2_000):
        event_log.append(events[start : start + 2_000])


def _column(store: SqlProjectionStore, query: sa.Select[Any]) -> list[Any]:
    with store.engine.connect() as conn:
        return list(conn.execute(query).scalars())


def run_two_cycles(
    event_log: EventLog, store: SqlProjectionStore, clock: Clock, *, customers_n: int = 500
) -> dict[str, Any]:
    """Run the scenario, asserting as it goes; returns figures for the caller to print."""
    populate(event_log, customers_n, customers_n * 14)
    planning.settle(event_log, store)

    # --- cycle 1 ---------------------------------------------------------------------
    clock.now = T1
    run1 = run_assessment(event_log, store, now=T1, run_id="cycle-1", fx_rates=FX)
    planning.settle(event_log, store)
    live = _column(store, sa.select(customers.c.customer_id).where(customers.c.event_count > 0))
    assessed = _column(
        store, sa.select(customers.c.customer_id).where(customers.c.assessed_at == T1)
    )
    assert sorted(assessed) == sorted(live), "every customer carries the first assessment"
    assert sum(run1.summary["rfm_segments"].values()) == len(live)
    assert run1.summary["model"]["fitted"], run1.summary["model"]
    assert _column(store, sa.select(assessment_runs.c.run_id)) == ["cycle-1"]

    planning.define_segment(
        event_log,
        store,
        segment_id="buyers",
        name="Buyers",
        rule={"field": "order_count", "op": "ge", "value": 1},
        now=T1,
    )
    planning.settle(event_log, store)
    planning.evaluate_segments(event_log, store, now=T1)
    planning.settle(event_log, store)
    buyers = set(
        _column(store, sa.select(customers.c.customer_id).where(customers.c.order_count >= 1))
    )
    members = set(
        _column(
            store,
            sa.select(customer_segments.c.customer_id).where(
                customer_segments.c.segment_id == "buyers", customer_segments.c.member
            ),
        )
    )
    assert members == buyers and buyers, "membership is exactly the rule's answer"
    no_consent = set(
        _column(
            store,
            sa.select(customers.c.customer_id).where(
                customers.c.order_count >= 1, customers.c.email_marketing_consent.is_(False)
            ),
        )
    )

    launch1 = planning.launch_campaign(
        event_log,
        store,
        campaign_id="spring",
        name="Spring offer",
        segment_id="buyers",
        channel=Channel.EMAIL,
        now=T1,
        control_share=0.3,
        attribution_window_days=14,
    )
    planning.settle(event_log, store)
    assert launch1.excluded_no_consent == len(no_consent)
    assert launch1.audience == len(buyers) - len(no_consent)
    targets = campaign_targets(store, "spring")
    assert {t.customer_id for t in targets} == buyers - no_consent
    for t in targets:
        assert t.group == planning.assign_group("spring", t.customer_id, 0.3).value
    assert 0.15 < launch1.control / launch1.audience < 0.45

    knobs = ResponseKnobs(base_open_rate=0.5, conversion_base_rate=0.15, treatment_lift=2.0)
    responses = list(
        simulate_responses(Campaign("spring", Channel.EMAIL, T1, 14), targets, seed=5, knobs=knobs)
    )
    event_log.append(responses)
    clock.now = T2
    planning.settle(event_log, store)

    results = planning.campaign_results(store, "spring")
    orders = [e for e in responses if isinstance(e.payload, OrderPlaced)]
    responders = _ids(responses, {"message.opened", "message.clicked"})
    ordered_by = _ids(orders, {"order.placed"})
    group = {t.customer_id: t.group for t in targets}
    for name in ("treatment", "control"):
        funnel = results.groups[name]
        assert funnel.customers == sum(1 for g in group.values() if g == name)
        assert funnel.converted == sum(1 for c in ordered_by if group[c] == name)
        assert funnel.opened == len(
            {c for c in _ids(responses, {"message.opened"}) if group[c] == name}
        )
    assert results.groups["control"].sent == 0
    assert sum(f.conversions for f in results.groups.values()) == len(orders)
    revenue = sum(sum(f.revenue.values()) for f in results.groups.values())
    assert revenue == sum(e.payload.total for e in orders if isinstance(e.payload, OrderPlaced))
    uplift = results.conversion_uplift
    assert uplift.difference is not None and uplift.ci_low is not None
    assert uplift.ci_low < uplift.difference < uplift.ci_high  # type: ignore[operator]

    # --- cycle 2: the responses drive the next assessment and segments ---------------
    recency_before = _recency(store, ordered_by)
    run2 = run_assessment(event_log, store, now=T2, run_id="cycle-2", fx_rates=FX)
    planning.settle(event_log, store)
    recency_after = _recency(store, ordered_by)
    others = _recency(store, buyers - ordered_by)
    assert ordered_by and min(recency_after.values()) >= max(others.values()), (
        "converters bought last, so they now score the highest recency"
    )
    assert sum(recency_after.values()) > sum(recency_before.values())
    assert run2.summary["rfm_segments"] != run1.summary["rfm_segments"]

    for segment_id, rule in (
        (
            "email-responders",
            {"field": "last_email_response_at", "op": "ge", "value": T1.isoformat()},
        ),
        ("ignored-last", {"field": "ignored_campaigns_streak", "op": "ge", "value": 1}),
    ):
        planning.define_segment(
            event_log, store, segment_id=segment_id, name=segment_id, rule=rule, now=T2
        )
    planning.settle(event_log, store)
    planning.evaluate_segments(event_log, store, now=T2)
    planning.settle(event_log, store)
    in_segment = _members(store)
    assert in_segment["email-responders"] == responders
    treated = {c for c, g in group.items() if g == "treatment"}
    assert in_segment["ignored-last"] == treated - responders - ordered_by

    unsubscribed = {
        str(e.identifiers.customer_id)
        for e in responses
        if isinstance(e.payload, MessageUnsubscribed) and e.identifiers is not None
    }
    launch2 = planning.launch_campaign(
        event_log,
        store,
        campaign_id="thanks",
        name="Thank you",
        segment_id="email-responders",
        channel=Channel.EMAIL,
        now=T2,
        control_share=0.2,
    )
    planning.settle(event_log, store)
    assert launch2.excluded_no_consent == len(unsubscribed & responders)
    assert (
        set(t.customer_id for t in campaign_targets(store, "thanks")) == responders - unsubscribed
    )
    return {
        "customers": len(live),
        "buyers": len(buyers),
        "audience_1": launch1.audience,
        "responders": len(responders),
        "converters": len(ordered_by),
        "uplift": uplift,
        "segments_2": run2.summary["rfm_segments"],
        "audience_2": launch2.audience,
    }


def _ids(events: list[Envelope], types: set[str]) -> set[str]:
    return {
        str(e.identifiers.customer_id)
        for e in events
        if e.type in types and e.identifiers is not None
    }


def _recency(store: SqlProjectionStore, ids: set[str]) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {
            cid: int(score)
            for cid, score in conn.execute(
                sa.select(customers.c.customer_id, customers.c.recency_score).where(
                    customers.c.customer_id.in_(sorted(ids))
                )
            )
        }


def _members(store: SqlProjectionStore) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    with store.engine.connect() as conn:
        for sid, cid in conn.execute(
            sa.select(customer_segments.c.segment_id, customer_segments.c.customer_id).where(
                customer_segments.c.member
            )
        ):
            out.setdefault(sid, set()).add(cid)
    return out


def rebuild_matches(
    event_log: EventLog, live: SqlProjectionStore, fresh: Callable[[], SqlProjectionStore]
) -> int:
    """Replay the whole log into a fresh store (no live decisions) and compare the loop's
    tables row for row with the live ones; returns the rows compared."""
    rebuilt = fresh()
    while catch_up(event_log, rebuilt):
        pass
    rebuilt.apply_deferred()
    compared = 0
    for name in LOOP_TABLES:
        mine, theirs = _rows(live, name), _rows(rebuilt, name)
        if mine != theirs:
            cols = [c.name for c in metadata.tables[name].columns]
            diff = [
                (a[0], [(c, x, y) for c, x, y in zip(cols, a, b, strict=True) if x != y])
                for a, b in zip(mine, theirs, strict=False)
                if a != b
            ]
            raise AssertionError(
                f"{name} differs after a rebuild ({len(mine)} vs {len(theirs)} rows): "
                f"{str(diff[:3])[:3000]}"
            )
        compared += len(mine)
    return compared


def _rows(store: SqlProjectionStore, name: str) -> list[tuple[Any, ...]]:
    table = metadata.tables[name]
    with store.engine.connect() as conn:
        return [
            tuple(r) for r in conn.execute(sa.select(table).order_by(*table.primary_key.columns))
        ]

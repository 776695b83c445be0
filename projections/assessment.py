"""Assessment: score every customer from the projections, append the results as events.

``assess`` is pure (inputs in, scores and a run summary out); ``run_assessment`` reads
the inputs from the customer projections, calls it, and appends one
``customer.assessed`` per customer and an ``assessment.completed`` with the summary.
The processor folds them into the customer 360 (and its facts, which segment rules
read) and projects the run into ``assessment_runs``.

Per customer with orders:

* **RFM**: recency (days since the last order), frequency (orders), monetary (net revenue
  in the reporting currency) scored 1-5 by quintile (``projections.scoring``) and named
  (champions, loyal, at_risk, ...). Customers without orders are ``prospect``, scored 1.
* **Value tier** from the Pareto curve of net revenue: A (the fewest customers who bring
  80% of revenue), B (to 95%), C, none.
* **BG/NBD + Gamma-Gamma** (``projections.clv``), time in weeks since each customer's
  first order: P(alive), expected purchases and CLV over ``horizon_weeks``; churn risk is
  1 - P(alive). Needs at least ``MIN_BUYERS_FOR_MODEL`` buyers with a repeat purchase;
  otherwise those fields stay empty and the summary says why.
* **Channel responsiveness**: responses (opens or clicks) per message sent, per channel,
  from all past messages (campaign responses included), so the loop feeds back.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np
import sqlalchemy as sa

from events.log import EventLog
from projections import clv, scoring
from projections.store import DERIVED_NAMESPACE, SqlProjectionStore
from projections.tables import customers
from schemas import (
    AssessmentCompleted,
    Channel,
    CustomerAssessed,
    Envelope,
    Identifiers,
    Source,
    new_event,
)

ASSESSMENT_SOURCE = Source(system="loopcrm-assessment", channel=Channel.SYSTEM)
MIN_BUYERS_FOR_MODEL = 20
WEEK_SECONDS = 7 * 24 * 3600.0
APPEND_BATCH = 5_000


@dataclass(frozen=True, slots=True)
class CustomerInput:
    customer_id: str
    order_count: int
    monetary: float
    """Net revenue (orders minus refunds) in the reporting currency."""
    first_order_at: datetime | None
    last_order_at: datetime | None
    messages: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)
    """channel -> (sent, opened, clicked)."""


@dataclass(frozen=True)
class Assessment:
    scores: list[CustomerAssessed]
    summary: dict[str, Any]


def assess(
    inputs: Sequence[CustomerInput], *, run_id: str, as_of: datetime, horizon_weeks: float = 52
) -> Assessment:
    buyers = [c for c in inputs if c.order_count > 0 and c.last_order_at and c.first_order_at]
    rfm = scoring.rfm_scores(
        (
            c.customer_id,
            max(0.0, _seconds(as_of, c.last_order_at) / 86_400),
            c.order_count,
            c.monetary,
        )
        for c in buyers
    )
    pareto = scoring.pareto_tiers((c.customer_id, c.monetary) for c in buyers)
    model = _model(buyers, as_of, horizon_weeks)
    scores: list[CustomerAssessed] = []
    for c in inputs:
        r, f, m = rfm.get(c.customer_id, (1, 1, 1))
        name = scoring.rfm_segment(r, f, m) if c.customer_id in rfm else scoring.PROSPECT
        p_alive, value = model.per_customer.get(c.customer_id, (None, None))
        responsiveness = scoring.channel_responsiveness(c.messages)
        scores.append(
            CustomerAssessed(
                run_id=run_id,
                customer_id=c.customer_id,
                recency_score=r,
                frequency_score=f,
                monetary_score=m,
                rfm_segment=name,
                value_tier=pareto.tiers.get(c.customer_id, scoring.TIER_NONE),
                clv=value,
                p_alive=p_alive,
                churn_risk=None if p_alive is None else scoring.churn_risk(p_alive),
                channel_responsiveness=responsiveness or None,
            )
        )
    summary = _summary(scores, buyers, pareto, model, horizon_weeks)
    return Assessment(scores, summary)


@dataclass
class _Model:
    per_customer: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)


def _model(buyers: Sequence[CustomerInput], as_of: datetime, horizon: float) -> _Model:
    out = _Model()
    if not buyers:
        out.report = {"fitted": False, "reason": "no customer has ordered"}
        return out
    x = np.array([c.order_count - 1 for c in buyers], dtype=np.float64)
    first = [c.first_order_at for c in buyers]
    t_x = np.array(
        [_seconds(c.last_order_at, f) / WEEK_SECONDS for c, f in zip(buyers, first, strict=True)]
    )
    T = np.array([max(_seconds(as_of, f) / WEEK_SECONDS, 0.0) for f in first])
    T = np.maximum(T, t_x)
    t_x = np.where(x > 0, t_x, 0.0)
    repeaters = int((x > 0).sum())
    if repeaters < MIN_BUYERS_FOR_MODEL:
        out.report = {
            "fitted": False,
            "reason": f"{repeaters} buyers with a repeat purchase; "
            f"the model needs at least {MIN_BUYERS_FOR_MODEL}",
        }
        return out
    bgnbd = clv.fit_bgnbd(x, t_x, T)
    alive = clv.p_alive(bgnbd, x, t_x, T)
    spend = np.array([c.monetary / c.order_count for c in buyers], dtype=np.float64)
    positive = (x > 0) & (spend > 0)
    gg: clv.GammaGammaFit | None = None
    values = np.full(len(buyers), np.nan)
    if int(positive.sum()) >= MIN_BUYERS_FOR_MODEL:
        gg = clv.fit_gamma_gamma(x[positive], spend[positive])
        # CLV = expected purchases x expected spend; a customer whose refunds outweigh
        # its orders gets the population's expected spend (as if it had no history)
        with np.errstate(all="ignore"):
            purchases = clv.expected_purchases(bgnbd, horizon, x, t_x, T)
            values = purchases * clv.expected_spend(
                gg, np.where(positive, x, 0.0), np.where(positive, spend, 0.0)
            )
    unusable = int((~np.isfinite(values)).sum())
    for c, p, v in zip(buyers, alive, values, strict=True):
        out.per_customer[c.customer_id] = (
            float(p) if math.isfinite(p) else None,
            round(float(v), 2) if math.isfinite(v) else None,
        )
    max_x = 7
    expected = clv.expected_repeat_distribution(bgnbd, T, max_x)
    observed = clv.observed_repeat_distribution(x, max_x)
    fit_quality: dict[str, Any] = {
        "repeat_purchases_observed": [int(v) for v in observed],
        "repeat_purchases_expected": [round(float(v), 1) for v in expected],
    }
    try:
        chi = clv.chi_square_test(observed, expected)
        fit_quality.update(chi_square=round(chi.statistic, 3), dof=chi.dof, p_value=chi.p_value)
    except ValueError as exc:
        fit_quality["chi_square_skipped"] = str(exc)
    out.report = {
        "fitted": True,
        "customers_without_clv": unusable,
        "clv_note": None
        if gg is not None
        else f"fewer than {MIN_BUYERS_FOR_MODEL} repeat buyers with a positive net spend",
        "time_unit": "week",
        "horizon_weeks": horizon,
        "bgnbd": {
            "r": bgnbd.r,
            "alpha": bgnbd.alpha,
            "a": bgnbd.a,
            "b": bgnbd.b,
            "log_likelihood": bgnbd.log_likelihood,
            "converged": bgnbd.converged,
            "customers": bgnbd.n_customers,
        },
        "gamma_gamma": None
        if gg is None
        else {
            "p": gg.p,
            "q": gg.q,
            "v": gg.v,
            "log_likelihood": gg.log_likelihood,
            "converged": gg.converged,
            "customers": gg.n_customers,
        },
        "fit_quality": fit_quality,
    }
    return out


def _summary(
    scores: Sequence[CustomerAssessed],
    buyers: Sequence[CustomerInput],
    pareto: scoring.ParetoResult,
    model: _Model,
    horizon: float,
) -> dict[str, Any]:
    segments = Counter(s.rfm_segment for s in scores)
    tiers = Counter(s.value_tier for s in scores)
    revenue = sum(max(c.monetary, 0.0) for c in buyers)
    clvs = [s.clv for s in scores if s.clv is not None]
    alive = [s.p_alive for s in scores if s.p_alive is not None]
    responsiveness: dict[str, list[float]] = {}
    for s in scores:
        for channel, rate in (s.channel_responsiveness or {}).items():
            responsiveness.setdefault(channel, []).append(rate)
    return {
        "customers": len(scores),
        "buyers": len(buyers),
        "revenue": round(revenue, 2),
        "rfm_segments": dict(sorted(segments.items())),
        "value_tiers": dict(sorted(tiers.items())),
        "pareto": {
            "top20_revenue_share": pareto.top20_revenue_share,
            "customers_for_80pct": pareto.customers_for_80pct,
            "curve": [[round(x, 4), round(y, 4)] for x, y in pareto.curve],
        },
        "model": model.report,
        "clv_total": round(sum(clvs), 2),
        "clv_mean": round(sum(clvs) / len(clvs), 2) if clvs else None,
        "p_alive_mean": round(sum(alive) / len(alive), 4) if alive else None,
        "responsiveness_mean": {
            channel: round(sum(rates) / len(rates), 4)
            for channel, rates in sorted(responsiveness.items())
        },
        "horizon_weeks": horizon,
    }


def _seconds(later: datetime | None, earlier: datetime | None) -> float:
    if later is None or earlier is None:
        return 0.0
    return (later - earlier).total_seconds()


# --- the job ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AssessmentRun:
    run_id: str
    as_of: datetime
    summary: dict[str, Any]
    skipped_currencies: dict[str, int]
    events: int


def read_inputs(
    store: SqlProjectionStore, reporting_currency: str, fx_rates: Mapping[str, float]
) -> tuple[list[CustomerInput], dict[str, int]]:
    """Inputs from the customer projections; amounts converted with ``fx_rates`` (units of
    the reporting currency per unit). Orders in currencies without a rate are left out
    and counted per currency."""
    rates = {**fx_rates, reporting_currency: 1.0}
    skipped: Counter[str] = Counter()
    inputs = []
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(customers.c.customer_id, customers.c.state)
            .where(customers.c.event_count > 0)
            .order_by(customers.c.customer_id)
        )
        for customer_id, state in rows:
            count, monetary = 0, 0.0
            first: datetime | None = None
            last: datetime | None = None
            for currency, orders in state["orders"].items():
                rate = rates.get(currency)
                if rate is None:
                    skipped[currency] += 1
                    continue
                net = Decimal(orders["revenue"]) - Decimal(orders["returned_value"])
                monetary += float(net) * rate
                count += orders["order_count"]
                if orders["first_order_at"] is not None:
                    at = datetime.fromisoformat(orders["first_order_at"])
                    first = at if first is None else min(first, at)
                if orders["last_order_at"] is not None:
                    at = datetime.fromisoformat(orders["last_order_at"])
                    last = at if last is None else max(last, at)
            messages = {
                channel: (m["sent"], m["opened"], m["clicked"])
                for channel, m in state["messages"].items()
            }
            inputs.append(
                CustomerInput(
                    customer_id,
                    count,
                    monetary,
                    first,
                    last,
                    messages,
                )
            )
    return inputs, dict(skipped)


def run_assessment(
    event_log: EventLog,
    store: SqlProjectionStore,
    *,
    now: datetime,
    run_id: str | None = None,
    reporting_currency: str = "EUR",
    fx_rates: Mapping[str, float] | None = None,
    horizon_weeks: float = 52,
) -> AssessmentRun:
    """Assess every customer as of ``now`` and append the results to the log."""
    run = run_id or f"asm_{now.strftime('%Y%m%dT%H%M%S')}"
    inputs, skipped = read_inputs(store, reporting_currency, fx_rates or {})
    result = assess(inputs, run_id=run, as_of=now, horizon_weeks=horizon_weeks)
    summary = {
        **result.summary,
        "reporting_currency": reporting_currency,
        "skipped_currencies": skipped,
    }
    events: list[Envelope] = [
        new_event(
            score,
            source=ASSESSMENT_SOURCE,
            identifiers=Identifiers(customer_id=score.customer_id),
            occurred_at=now,
            event_id=uuid.uuid5(DERIVED_NAMESPACE, f"customer.assessed:{run}:{score.customer_id}"),
        )
        for score in result.scores
    ]
    for start in range(0, len(events), APPEND_BATCH):
        event_log.append(events[start : start + APPEND_BATCH])
    completed = new_event(
        AssessmentCompleted(run_id=run, as_of=now, customers=len(events), summary=_json(summary)),
        source=ASSESSMENT_SOURCE,
        occurred_at=now,
        event_id=uuid.uuid5(DERIVED_NAMESPACE, f"assessment.completed:{run}"),
    )
    event_log.append([completed])
    return AssessmentRun(run, now, summary, skipped, len(events) + 1)


def _json(value: Any) -> Any:
    """Plain JSON values (NaN/inf become null: the summary must validate as JSON)."""
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _json(value.item())
    return value

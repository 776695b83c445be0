"""Campaign results from the per-customer campaign rows: the funnel per group, rates,
revenue by currency and the uplift of treatment over control (conversion rate with a
Newcombe interval, revenue per customer in the main currency with a Welch interval),
overall and per RFM segment at targeting. Pure: rows in, figures out; used by
``projections.planning`` and by the read API (which imports no store code).

The funnel counts *customers* reaching each step (a customer sent two messages is
one "sent"); ``conversions`` counts attributed orders, ``converted`` customers."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from projections.uplift import MeanUplift, Uplift, mean_uplift, proportion_uplift

GROUPS = ("treatment", "control")
FLAGS = ("sent", "delivered", "opened", "clicked", "bounced", "unsubscribed")
UNASSESSED = "unassessed"


@dataclass
class Funnel:
    customers: int = 0
    sent: int = 0
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    bounced: int = 0
    unsubscribed: int = 0
    converted: int = 0
    conversions: int = 0
    revenue: dict[str, Decimal] = field(default_factory=dict)
    revenue_per_customer: list[float] = field(default_factory=list)

    def rates(self) -> dict[str, float | None]:
        def ratio(a: int, b: int) -> float | None:
            return a / b if b else None

        return {
            "delivery_rate": ratio(self.delivered, self.sent),
            "open_rate": ratio(self.opened, self.delivered),
            "click_rate": ratio(self.clicked, self.delivered),
            "conversion_rate": ratio(self.converted, self.customers),
        }

    def public(self) -> dict[str, Any]:
        counts = {name: getattr(self, name) for name in ("customers", *FLAGS)}
        return {
            **counts,
            "converted": self.converted,
            "conversions": self.conversions,
            "revenue": {k: str(v) for k, v in sorted(self.revenue.items())},
            "rates": self.rates(),
        }


@dataclass(frozen=True)
class Results:
    groups: dict[str, Funnel]
    conversion_uplift: Uplift
    revenue_uplift: MeanUplift
    currency: str | None
    by_rfm_segment: dict[str, tuple[dict[str, Funnel], Uplift]]


def compute(rows: Sequence[Mapping[str, Any]]) -> Results:
    """Results of the rows of one campaign's targeted customers (``customer_campaigns``)."""
    currency = main_currency(rows)
    overall = funnels(rows, currency)
    by_rfm: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_rfm[row["rfm_segment"] or UNASSESSED].append(row)
    per_class = {}
    for rfm, class_rows in sorted(by_rfm.items()):
        class_funnels = funnels(class_rows, currency)
        per_class[rfm] = (class_funnels, conversion_uplift(class_funnels))
    treatment, control = overall["treatment"], overall["control"]
    return Results(
        groups=overall,
        conversion_uplift=conversion_uplift(overall),
        revenue_uplift=mean_uplift(treatment.revenue_per_customer, control.revenue_per_customer),
        currency=currency,
        by_rfm_segment=per_class,
    )


def main_currency(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """The currency most customers spent in (None without revenue)."""
    totals: Counter[str] = Counter()
    for row in rows:
        for currency in row["revenue"] or {}:
            totals[currency] += 1
    return totals.most_common(1)[0][0] if totals else None


def funnels(rows: Sequence[Mapping[str, Any]], currency: str | None) -> dict[str, Funnel]:
    out = {g: Funnel() for g in GROUPS}
    for row in rows:
        f = out.setdefault(row["target_group"], Funnel())
        f.customers += 1
        for name in FLAGS:
            setattr(f, name, getattr(f, name) + (1 if row[name] else 0))
        f.conversions += row["conversions"]
        f.converted += 1 if row["conversions"] else 0
        revenue = row["revenue"] or {}
        for cur, amount in revenue.items():
            f.revenue[cur] = f.revenue.get(cur, Decimal(0)) + Decimal(amount)
        f.revenue_per_customer.append(float(revenue.get(currency, 0)) if currency else 0.0)
    return out


def conversion_uplift(groups: Mapping[str, Funnel]) -> Uplift:
    t, c = groups["treatment"], groups["control"]
    return proportion_uplift(t.converted, t.customers, c.converted, c.customers)

"""Assessment scoring: RFM quintiles and segments, Pareto value tiers, responsiveness, churn.

Pure functions over plain rows, so the assessment run (and its tests) can score a customer
base without a database. Every result is deterministic: equal inputs give equal scores,
and ties are broken by customer id wherever an order is needed.

RFM scores are *relative*: a customer's score is where they stand in this population, in
quintiles (1 = worst fifth, 5 = best fifth). Equal values always share a score, taking
the lowest position of their tie block, so with very few customers (or many ties) the
upper scores may stay unused; a population of one scores ``(1, 1, 1)``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

import numpy as np
import numpy.typing as npt

K = TypeVar("K", bound=Hashable)

QUINTILES: Final = 5

PROSPECT: Final = "prospect"
"""The segment of a customer with no orders (RFM needs at least one)."""

# --- RFM ------------------------------------------------------------------------------


def rfm_scores(
    rows: Iterable[tuple[K, float, int, float]],
) -> dict[K, tuple[int, int, int]]:
    """Score ``(customer_id, days_since_last_order, order_count, monetary)`` rows.

    Only customers with at least one order belong here (the others are ``PROSPECT``).
    Returns ``{customer_id: (r, f, m)}`` with each score in 1..5, 5 = best (most recent,
    most frequent, highest spend). For "higher is better" with ``n`` customers::

        score = 1 + floor(5 * (rank_min - 1) / n)

    where ``rank_min`` is the 1-based ascending rank, ties taking the minimum rank (one
    plus the number of customers with a strictly lower value). Recency mirrors it: fewer
    days is better. 100 distinct values give 20 customers per score.

    Raises ``ValueError`` for a repeated customer id, an order count below 1 or a value
    that is not finite.
    """
    ids: list[K] = []
    days: list[float] = []
    counts: list[float] = []
    money: list[float] = []
    seen: set[K] = set()
    for customer_id, recency, order_count, monetary in rows:
        if customer_id in seen:
            raise ValueError(f"customer {customer_id!r} appears twice")
        if order_count < 1:
            raise ValueError(f"customer {customer_id!r} has no orders: score them as PROSPECT")
        if not (math.isfinite(recency) and math.isfinite(monetary)):
            raise ValueError(f"customer {customer_id!r} has a non-finite recency or monetary")
        seen.add(customer_id)
        ids.append(customer_id)
        days.append(float(recency))
        counts.append(float(order_count))
        money.append(float(monetary))
    if not ids:
        return {}
    r = _quintile_scores(-np.asarray(days))
    f = _quintile_scores(np.asarray(counts))
    m = _quintile_scores(np.asarray(money))
    return {customer_id: (int(r[i]), int(f[i]), int(m[i])) for i, customer_id in enumerate(ids)}


def _quintile_scores(values: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """``1 + floor(5 * (rank_min - 1) / n)``, higher values scoring higher."""
    n = len(values)
    below = np.searchsorted(np.sort(values), values, side="left")  # = rank_min - 1
    return np.asarray(1 + (QUINTILES * below) // n, dtype=np.int64)


# The RFM segment grid: rows are R (recency score), columns FM = round-half-up((F + M) / 2).
#   R    FM=1              FM=2                  FM=3                  FM=4         FM=5
_GRID: Final[Mapping[int, tuple[str, str, str, str, str]]] = {
    5: ("new_customer", "potential_loyalist", "potential_loyalist", "champions", "champions"),
    4: ("promising", "potential_loyalist", "potential_loyalist", "loyal", "loyal"),
    3: ("about_to_sleep", "about_to_sleep", "need_attention", "loyal", "loyal"),
    2: ("hibernating", "hibernating", "at_risk", "at_risk", "cannot_lose"),
    1: ("lost", "hibernating", "at_risk", "at_risk", "cannot_lose"),
}
"""Every ``(R, FM)`` cell names exactly one segment. It is the widely used R x FM map
(recent + frequent/high spend = champions; recent but little history = new or promising;
valuable but gone quiet = at risk, or cannot lose when they were the best), with ``lost``
kept for the bottom corner: long gone, one order, lowest spend (FM = 1 needs F = M = 1).
"""

SEGMENTS: Final[tuple[str, ...]] = (
    "champions",
    "loyal",
    "potential_loyalist",
    "new_customer",
    "promising",
    "need_attention",
    "about_to_sleep",
    "at_risk",
    "cannot_lose",
    "hibernating",
    "lost",
)
"""The eleven RFM segment names, best first (``PROSPECT`` is not one of them)."""


def rfm_segment(r: int, f: int, m: int) -> str:
    """The named segment of RFM scores (each 1..5), looked up in ``_GRID`` by (R, FM).

    ``FM = round-half-up((F + M) / 2)``, i.e. ``(F + M + 1) // 2``.
    """
    for name, score in (("r", r), ("f", f), ("m", m)):
        if not 1 <= score <= QUINTILES:
            raise ValueError(f"{name} score should be 1..5, not {score!r}")
    return _GRID[r][(f + m + 1) // 2 - 1]


# --- Pareto value tiers ---------------------------------------------------------------

TIER_A: Final = "A"
TIER_B: Final = "B"
TIER_C: Final = "C"
TIER_NONE: Final = "none"
_A_SHARE: Final = 0.80
_B_SHARE: Final = 0.95
_CURVE_POINTS: Final = 200
_REL_TOL: Final = 1e-9  # a cumulative sum within this of a threshold has reached it


@dataclass(frozen=True, slots=True)
class ParetoResult:
    """Value tiers and the concentration (Lorenz-style) curve of a customer base."""

    tiers: dict[str, str]
    """``customer_id -> "A" | "B" | "C" | "none"``."""
    curve: list[tuple[float, float]]
    """``(customer share, revenue share)`` from ``(0, 0)`` to ``(1, 1)``, best customers
    first, at most 200 points (always the first and last)."""
    top20_revenue_share: float | None
    """Share of revenue from the top 20% of customers (linear between customers);
    ``None`` when there is no revenue."""
    customers_for_80pct: float | None
    """Share of customers in tier A: the fewest that bring 80% of revenue."""


def pareto_tiers(rows: Iterable[tuple[str, float]]) -> ParetoResult:
    """Tier ``(customer_id, monetary)`` rows by their share of total revenue.

    Customers are sorted by monetary (descending, ties by customer id) and accumulated:
    tier ``A`` is the smallest top set whose revenue reaches 80% of the total (the
    customer who crosses 80% is in it), ``B`` continues up to 95%, ``C`` is the rest with
    revenue, and ``none`` is revenue of 0 (or below: a net refund counts as 0). Shares
    are over *all* rows given, so pass buyers only to ask "which share of buyers".
    """
    ordered = sorted(((cid, float(value)) for cid, value in rows), key=_by_value_desc)
    if len({cid for cid, _ in ordered}) != len(ordered):
        raise ValueError("a customer id appears twice")
    if not all(math.isfinite(value) for _, value in ordered):
        raise ValueError("monetary values must be finite")
    n = len(ordered)
    revenue = np.array([max(value, 0.0) for _, value in ordered], dtype=np.float64)
    total = float(revenue.sum())
    if n == 0 or total <= 0:
        return ParetoResult(
            tiers={cid: TIER_NONE for cid, _ in ordered},
            curve=[(0.0, 0.0), (1.0, 0.0)] if n else [],
            top20_revenue_share=None,
            customers_for_80pct=None,
        )
    cumulative = np.cumsum(revenue)
    tolerance = _REL_TOL * total
    tiers: dict[str, str] = {}
    tier_a = 0
    before = 0.0
    for i, (cid, _) in enumerate(ordered):
        if revenue[i] <= 0:
            tier = TIER_NONE
        elif before < _A_SHARE * total - tolerance:
            tier, tier_a = TIER_A, tier_a + 1
        elif before < _B_SHARE * total - tolerance:
            tier = TIER_B
        else:
            tier = TIER_C
        tiers[cid] = tier
        before = float(cumulative[i])
    customer_share = np.arange(n + 1, dtype=np.float64) / n
    revenue_share = np.concatenate(([0.0], cumulative / total))
    return ParetoResult(
        tiers=tiers,
        curve=_downsample(customer_share, revenue_share),
        top20_revenue_share=float(np.interp(0.2, customer_share, revenue_share)),
        customers_for_80pct=tier_a / n,
    )


def _by_value_desc(row: tuple[str, float]) -> tuple[float, str]:
    return (-row[1], row[0])


def _downsample(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]
) -> list[tuple[float, float]]:
    """At most ``_CURVE_POINTS`` evenly spaced points of the curve, ends included."""
    picks: Sequence[int] = range(len(x))
    if len(x) > _CURVE_POINTS:
        picks = sorted(set(np.linspace(0, len(x) - 1, _CURVE_POINTS).round().astype(int)))
    return [(float(x[i]), float(y[i])) for i in picks]


# --- responsiveness and churn ---------------------------------------------------------


def channel_responsiveness(messages: Mapping[K, tuple[int, int, int]]) -> dict[K, float]:
    """``{channel: (sent, opened, clicked)} -> {channel: response rate}``.

    A response is an open or a click, counted as ``max(opened, clicked)`` (a click
    without a tracked open still is one); the rate is ``responses / sent`` capped at 1.
    Channels with nothing sent are left out: their responsiveness is unknown, not 0.
    """
    return {
        channel: min(1.0, max(opened, clicked) / sent)
        for channel, (sent, opened, clicked) in messages.items()
        if sent > 0
    }


def churn_risk(p_alive: float) -> float:
    """``1 - p_alive``, clipped to [0, 1]."""
    if math.isnan(p_alive):
        raise ValueError("p_alive is NaN")
    return min(1.0, max(0.0, 1.0 - p_alive))

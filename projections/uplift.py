"""Campaign result statistics: treatment versus control, for rates and for means.

Campaign groups are often small and conversions rare, so the rate difference uses
Newcombe's hybrid score interval (Newcombe 1998, "Interval estimation for the difference
between independent proportions: comparison of eleven methods", Statistics in Medicine
17:873-890, method 10), built from the two groups' Wilson intervals: unlike the Wald
interval it stays inside [-1, 1], is not degenerate at 0 or n conversions and keeps near
nominal coverage at small n. Revenue per customer uses Welch's t interval (no equal
variance assumption: a campaign changes the spread as well as the mean).

Nothing here raises on an empty group: what cannot be estimated is ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

PROPORTION_METHOD: Final = "newcombe-hybrid-score"
MEAN_METHOD: Final = "welch-t"


@dataclass(frozen=True, slots=True)
class Uplift:
    """Treatment rate minus control rate, with its confidence interval and z-test."""

    treatment_rate: float | None
    control_rate: float | None
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    relative_lift: float | None
    """``difference / control_rate``; ``None`` when the control rate is 0 or unknown."""
    p_value: float | None
    """Two-sided pooled two-proportion z-test; ``None`` when undefined (a group is empty,
    or nobody / everybody converted in both)."""
    method: str


@dataclass(frozen=True, slots=True)
class MeanUplift:
    """Treatment mean minus control mean (e.g. revenue per customer), Welch's t."""

    treatment_mean: float | None
    control_mean: float | None
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    relative_lift: float | None
    """``difference / control_mean``; ``None`` unless the control mean is positive."""
    p_value: float | None
    """Two-sided Welch t-test; ``None`` when a group has fewer than 2 values or both
    groups have no spread at all."""
    degrees_of_freedom: float | None
    """Welch-Satterthwaite degrees of freedom."""
    method: str


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval for ``successes / n`` (``n`` >= 1).

    ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``.
    """
    _check_counts(successes, n)
    if n == 0:
        raise ValueError("the Wilson interval needs n >= 1")
    z = _z(confidence)
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def proportion_uplift(
    treat_conv: int,
    treat_n: int,
    ctrl_conv: int,
    ctrl_n: int,
    confidence: float = 0.95,
) -> Uplift:
    """Conversion rate of treatment minus control, Newcombe interval, pooled z-test.

    With Wilson intervals ``(l1, u1)`` for treatment rate ``p1`` and ``(l2, u2)`` for
    control rate ``p2`` and ``d = p1 - p2``::

        low  = d - sqrt((p1 - l1)² + (u2 - p2)²)
        high = d + sqrt((u1 - p1)² + (p2 - l2)²)

    The p-value is ``2·(1 - Φ(|d| / se))`` with ``se = sqrt(p(1-p)(1/n1 + 1/n2))`` and
    ``p`` the pooled rate. A group of 0 has rate ``None`` and so has everything that
    needs it; counts out of range raise ``ValueError``.
    """
    _check_counts(treat_conv, treat_n)
    _check_counts(ctrl_conv, ctrl_n)
    _check_confidence(confidence)
    p1 = treat_conv / treat_n if treat_n else None
    p2 = ctrl_conv / ctrl_n if ctrl_n else None
    if p1 is None or p2 is None:
        return Uplift(p1, p2, None, None, None, None, None, PROPORTION_METHOD)
    l1, u1 = wilson_interval(treat_conv, treat_n, confidence)
    l2, u2 = wilson_interval(ctrl_conv, ctrl_n, confidence)
    d = p1 - p2
    low = max(-1.0, d - math.hypot(p1 - l1, u2 - p2))
    high = min(1.0, d + math.hypot(u1 - p1, p2 - l2))
    pooled = (treat_conv + ctrl_conv) / (treat_n + ctrl_n)
    se = math.sqrt(pooled * (1 - pooled) * (1 / treat_n + 1 / ctrl_n))
    p_value = 2 * float(_stats().norm.sf(abs(d) / se)) if se > 0 else None
    return Uplift(
        treatment_rate=p1,
        control_rate=p2,
        difference=d,
        ci_low=low,
        ci_high=high,
        relative_lift=d / p2 if p2 > 0 else None,
        p_value=p_value,
        method=PROPORTION_METHOD,
    )


def mean_uplift(
    treatment_values: Sequence[float],
    control_values: Sequence[float],
    confidence: float = 0.95,
) -> MeanUplift:
    """Mean of treatment minus mean of control, with Welch's t interval and test.

    ``se = sqrt(s1²/n1 + s2²/n2)`` (sample variances), degrees of freedom
    ``se⁴ / ((s1²/n1)²/(n1-1) + (s2²/n2)²/(n2-1))``, interval ``d ± t(df)·se``.
    Means need one value per group, the interval and p-value two and some spread.
    """
    _check_confidence(confidence)
    t_values = _finite(treatment_values, "treatment")
    c_values = _finite(control_values, "control")
    m1 = math.fsum(t_values) / len(t_values) if t_values else None
    m2 = math.fsum(c_values) / len(c_values) if c_values else None
    if m1 is None or m2 is None:
        return MeanUplift(m1, m2, None, None, None, None, None, None, MEAN_METHOD)
    d = m1 - m2
    lift = d / m2 if m2 > 0 else None
    n1, n2 = len(t_values), len(c_values)
    if n1 < 2 or n2 < 2:
        return MeanUplift(m1, m2, d, None, None, lift, None, None, MEAN_METHOD)
    a = _sample_variance(t_values, m1) / n1
    b = _sample_variance(c_values, m2) / n2
    se = math.sqrt(a + b)
    if se == 0:
        return MeanUplift(m1, m2, d, None, None, lift, None, None, MEAN_METHOD)
    df = (a + b) ** 2 / (a * a / (n1 - 1) + b * b / (n2 - 1))
    t_crit = float(_stats().t.ppf(0.5 + confidence / 2, df))
    p_value = 2 * float(_stats().t.sf(abs(d) / se, df))
    return MeanUplift(
        treatment_mean=m1,
        control_mean=m2,
        difference=d,
        ci_low=d - t_crit * se,
        ci_high=d + t_crit * se,
        relative_lift=lift,
        p_value=p_value,
        degrees_of_freedom=df,
        method=MEAN_METHOD,
    )


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence should be between 0 and 1, not {confidence!r}")


def _z(confidence: float) -> float:
    _check_confidence(confidence)
    return float(_stats().norm.ppf(0.5 + confidence / 2))


def _stats() -> Any:
    """``scipy.stats``, imported on first use: it takes about a second, which every ``crm``
    command paid at start (the CLI imports the planning commands)."""
    from scipy import stats

    return stats


def _check_counts(successes: int, n: int) -> None:
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"counts should satisfy 0 <= successes <= n, not {successes}/{n}")


def _finite(values: Sequence[float], group: str) -> list[float]:
    result = [float(v) for v in values]
    if not all(math.isfinite(v) for v in result):
        raise ValueError(f"{group} values must be finite")
    return result


def _sample_variance(values: Sequence[float], mean: float) -> float:
    return math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)

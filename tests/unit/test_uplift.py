"""Campaign result statistics against published and hand-computed figures.

Published figures: Newcombe, R. G. (1998a) "Interval estimation for the difference between
independent proportions: comparison of eleven methods", Statistics in Medicine
17:873-890, Table II, method 10 (the hybrid score interval); and Newcombe (1998b)
"Two-sided confidence intervals for the single proportion: comparison of seven methods",
Statistics in Medicine 17:857-872 (Wilson score interval, method 3). The same figures are
the regression tests of the R package propint (github.com/m-Py/propint,
tests/testthat/test_Two_Independent_Props_CI.R and test_Single_Proportion_CI.R).
"""

from __future__ import annotations

import math

import pytest
from scipy import stats

from projections.uplift import (
    MEAN_METHOD,
    PROPORTION_METHOD,
    mean_uplift,
    proportion_uplift,
    wilson_interval,
)

Z95 = 1.959963984540054  # Φ⁻¹(0.975)


# --- Wilson ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        (81, 263, 0.2553, 0.3662),  # Newcombe 1998b, first example
        (15, 148, 0.0624, 0.1605),  # Newcombe 1998b, second example
    ],
)
def test_wilson_matches_newcombe(successes: int, n: int, low: float, high: float) -> None:
    assert wilson_interval(successes, n) == pytest.approx((low, high), abs=5e-5)


def test_wilson_by_hand() -> None:
    """56/70 at 95%: p = 0.8, z² = 3.841459, z²/n = 0.054878.

    centre = (0.8 + 0.027439) / 1.054878 = 0.784393
    half   = 1.959964 * sqrt(0.16/70 + 3.841459/19600) / 1.054878
           = 1.959964 * sqrt(0.0022857 + 0.0001960) / 1.054878 = 0.092560
    -> (0.691834, 0.876953)

    At 0 successes the interval is [0, z²/(n + z²)]: for n = 10, 3.841459/13.841459 = 0.277533.
    """
    assert wilson_interval(56, 70) == pytest.approx((0.691834, 0.876953), abs=2e-6)
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(Z95**2 / (10 + Z95**2)) == pytest.approx(0.277533, abs=1e-6)
    assert wilson_interval(10, 10) == pytest.approx((1 - 0.277533, 1.0), abs=1e-6)


def test_wilson_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        wilson_interval(0, 0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(1, 10, confidence=1.0)


# --- difference of proportions -------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "m", "b", "n", "low", "high"),
    [
        (56, 70, 48, 80, 0.0524, 0.3339),  # Newcombe 1998a, Table II (a)
        (9, 10, 3, 10, 0.1705, 0.8090),  # Newcombe 1998a, Table II (b)
    ],
)
def test_newcombe_published_examples(
    a: int, m: int, b: int, n: int, low: float, high: float
) -> None:
    result = proportion_uplift(a, m, b, n)
    assert result.difference == pytest.approx(a / m - b / n)
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high), abs=5e-5)
    assert result.method == PROPORTION_METHOD


def test_newcombe_by_hand() -> None:
    """56/70 vs 48/80 step by step (note: the difference is 0.2000, not 0.1833).

    Wilson 95% intervals: treatment 0.8 -> (l1, u1) = (0.691834, 0.876953);
    control 0.6: z²/n = 0.048018, centre = 0.624009/1.048018 = 0.595418,
    half = 1.959964 * sqrt(0.24/80 + 3.841459/25600) / 1.048018 = 0.104964
    -> (l2, u2) = (0.490455, 0.700382).

    low  = 0.2 - sqrt((0.8 - 0.691834)² + (0.700382 - 0.6)²)
         = 0.2 - sqrt(0.0117003 + 0.0100765) = 0.2 - 0.147570 = 0.052430
    high = 0.2 + sqrt((0.876953 - 0.8)² + (0.6 - 0.490455)²)
         = 0.2 + sqrt(0.0059218 + 0.0120001) = 0.2 + 0.133873 = 0.333873

    Relative lift 0.2 / 0.6 = 1/3.
    """
    result = proportion_uplift(56, 70, 48, 80)
    assert result.treatment_rate == 0.8
    assert result.control_rate == 0.6
    assert result.ci_low == pytest.approx(0.052430, abs=5e-6)
    assert result.ci_high == pytest.approx(0.333873, abs=5e-6)
    assert result.relative_lift == pytest.approx(1 / 3)


def test_pooled_z_test_by_hand() -> None:
    """56/70 vs 48/80: pooled p = 104/150 = 0.693333, p(1-p) = 0.212622,
    1/70 + 1/80 = 0.0267857, se = sqrt(0.212622 * 0.0267857) = 0.0754675,
    z = 0.2 / 0.0754675 = 2.650172, two-sided p = erfc(z / sqrt 2) = 0.0080451.
    """
    result = proportion_uplift(56, 70, 48, 80)
    assert result.p_value == pytest.approx(math.erfc(2.650172 / math.sqrt(2)), rel=1e-5)
    assert result.p_value == pytest.approx(0.0080451, abs=1e-7)


def test_no_conversions_anywhere() -> None:
    """0/10 vs 0/10: d = 0, each Wilson interval is [0, 0.277533], so the interval is
    ±sqrt(0² + 0.277533²) = ±0.277533. The pooled rate is 0: no z-test, no lift."""
    result = proportion_uplift(0, 10, 0, 10)
    assert result.difference == 0.0
    assert (result.ci_low, result.ci_high) == pytest.approx((-0.277533, 0.277533), abs=1e-6)
    assert result.p_value is None
    assert result.relative_lift is None


def test_all_converted_versus_none() -> None:
    """10/10 vs 0/10: d = 1, low = 1 - sqrt(0.277533² + 0.277533²) = 1 - 0.392491 =
    0.607509, high = 1 + sqrt(0² + 0²) = 1. The pooled rate 0.5 gives se = 0.223607,
    z = 4.472136, p = erfc(4.472136 / sqrt 2) = 7.744e-6."""
    result = proportion_uplift(10, 10, 0, 10)
    assert result.difference == 1.0
    assert result.ci_low == pytest.approx(0.607509, abs=1e-6)
    assert result.ci_high == 1.0
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(20) / math.sqrt(2)), rel=1e-9)
    assert result.relative_lift is None  # control rate 0
    both_all = proportion_uplift(10, 10, 20, 20)
    assert both_all.difference == 0.0
    assert both_all.p_value is None  # pooled rate 1: the z-test is undefined
    assert both_all.ci_low is not None and both_all.ci_high is not None
    assert both_all.ci_low < 0 < both_all.ci_high


def test_empty_groups_give_none_not_errors() -> None:
    no_treatment = proportion_uplift(0, 0, 3, 10)
    assert no_treatment.treatment_rate is None
    assert no_treatment.control_rate == 0.3
    assert no_treatment.difference is None
    assert no_treatment.ci_low is None and no_treatment.ci_high is None
    assert no_treatment.p_value is None and no_treatment.relative_lift is None
    nothing = proportion_uplift(0, 0, 0, 0)
    assert nothing.treatment_rate is None and nothing.control_rate is None


def test_interval_is_always_inside_minus_one_one() -> None:
    for a, m, b, n in [(1, 1, 0, 1), (0, 1, 1, 1), (3, 3, 0, 50), (0, 2, 7, 7)]:
        result = proportion_uplift(a, m, b, n)
        assert result.ci_low is not None and result.ci_high is not None
        assert result.difference is not None
        assert -1.0 <= result.ci_low <= result.difference <= result.ci_high <= 1.0


def test_invalid_counts_raise() -> None:
    with pytest.raises(ValueError):
        proportion_uplift(5, 4, 0, 10)
    with pytest.raises(ValueError):
        proportion_uplift(-1, 4, 0, 10)
    with pytest.raises(ValueError):
        proportion_uplift(1, 4, 0, 10, confidence=0.0)


# --- difference of means --------------------------------------------------------------

TREATMENT = [12.0, 15.0, 9.0, 14.0]
CONTROL = [10.0, 8.0, 11.0, 7.0, 9.0]


def test_welch_by_hand() -> None:
    """Treatment: mean 50/4 = 12.5, squared deviations 0.25 + 6.25 + 12.25 + 2.25 = 21,
    s² = 21/3 = 7. Control: mean 45/5 = 9, squared deviations 1 + 1 + 4 + 4 + 0 = 10,
    s² = 10/4 = 2.5.

    s1²/n1 = 1.75, s2²/n2 = 0.5, se = sqrt(2.25) = 1.5, t = 3.5 / 1.5 = 2.3333.
    df = 2.25² / (1.75²/3 + 0.5²/4) = 5.0625 / 1.0833333 = 4.6730769.
    95% interval: 3.5 ± t₀.₉₇₅(4.6730769) · 1.5.
    """
    result = mean_uplift(TREATMENT, CONTROL)
    assert result.treatment_mean == 12.5
    assert result.control_mean == 9.0
    assert result.difference == 3.5
    assert result.degrees_of_freedom == pytest.approx(5.0625 / (1.75**2 / 3 + 0.5**2 / 4))
    assert result.degrees_of_freedom == pytest.approx(4.6730769, abs=1e-7)
    half = float(stats.t.ppf(0.975, 4.6730769230769)) * 1.5
    assert (result.ci_low, result.ci_high) == pytest.approx((3.5 - half, 3.5 + half))
    assert result.p_value == pytest.approx(2 * float(stats.t.sf(3.5 / 1.5, 4.6730769230769)))
    assert result.relative_lift == pytest.approx(3.5 / 9)
    assert result.method == MEAN_METHOD


def test_welch_agrees_with_scipy() -> None:
    reference = stats.ttest_ind(TREATMENT, CONTROL, equal_var=False)
    interval = reference.confidence_interval(0.90)
    result = mean_uplift(TREATMENT, CONTROL, confidence=0.90)
    assert result.p_value == pytest.approx(reference.pvalue)
    assert result.degrees_of_freedom == pytest.approx(reference.df)
    assert (result.ci_low, result.ci_high) == pytest.approx((interval.low, interval.high))


def test_mean_edge_cases() -> None:
    empty = mean_uplift([], CONTROL)
    assert empty.treatment_mean is None and empty.difference is None
    assert empty.ci_low is None and empty.p_value is None
    single = mean_uplift([20.0], CONTROL)  # a mean, but no variance for an interval
    assert single.difference == 11.0
    assert single.ci_low is None and single.p_value is None
    flat = mean_uplift([5.0, 5.0], [5.0, 5.0, 5.0])  # no spread: nothing to test
    assert flat.difference == 0.0 and flat.ci_low is None and flat.p_value is None
    zero_control = mean_uplift([1.0, 3.0], [0.0, 0.0])  # one flat group is fine
    assert zero_control.relative_lift is None
    assert zero_control.ci_low is not None and zero_control.degrees_of_freedom == 1.0
    with pytest.raises(ValueError, match="finite"):
        mean_uplift([1.0, float("inf")], CONTROL)

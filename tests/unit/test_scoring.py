"""Assessment scoring: RFM quintiles and segments, Pareto tiers, responsiveness, churn."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections.scoring import (
    PROSPECT,
    SEGMENTS,
    ParetoResult,
    channel_responsiveness,
    churn_risk,
    pareto_tiers,
    rfm_scores,
    rfm_segment,
)

# --- RFM scores -----------------------------------------------------------------------


def test_100_distinct_values_give_quintiles_of_20() -> None:
    rows = [(f"C{i:03d}", float(i), i + 1, 10.0 * i) for i in range(100)]
    scores = rfm_scores(rows)
    for axis in range(3):
        assert Counter(s[axis] for s in scores.values()) == {1: 20, 2: 20, 3: 20, 4: 20, 5: 20}
    # C000: bought today (best recency), fewest orders, lowest spend.
    assert scores["C000"] == (5, 1, 1)
    assert scores["C099"] == (1, 5, 5)
    # rank_min 21 -> 1 + floor(5 * 20 / 100) = 2 for frequency; recency mirrors it.
    assert scores["C020"] == (4, 2, 2)
    assert scores["C019"] == (5, 1, 1)


def test_equal_values_get_equal_scores_with_the_minimum_rank() -> None:
    """Ten customers: frequencies 1,1,1,1,2,2,3,3,3,9 and equal recency and spend.

    Frequency: the 1s have rank_min 1 -> 1; the 2s rank_min 5 -> 1 + floor(5*4/10) = 3;
    the 3s rank_min 7 -> 1 + floor(5*6/10) = 4; the 9 rank_min 10 -> 1 + floor(45/10) = 5.
    Recency and monetary are all equal: everyone has rank_min 1 and scores 1.
    """
    freqs = [1, 1, 1, 1, 2, 2, 3, 3, 3, 9]
    scores = rfm_scores([(i, 5.0, f, 100.0) for i, f in enumerate(freqs)])
    assert [scores[i][1] for i in range(10)] == [1, 1, 1, 1, 3, 3, 4, 4, 4, 5]
    assert {s[0] for s in scores.values()} == {1}
    assert {s[2] for s in scores.values()} == {1}


@pytest.mark.parametrize(
    ("days", "expected_r"),
    [
        ([3.0], [1]),  # a population of one has nothing to be better than
        ([3.0, 30.0], [3, 1]),  # rank_min 2 of 2 -> 1 + floor(5/2) = 3
        ([3.0, 30.0, 300.0], [4, 2, 1]),  # 1 + floor(10/3) = 4, 1 + floor(5/3) = 2
        ([7.0, 7.0], [1, 1]),
    ],
)
def test_small_populations(days: list[float], expected_r: list[int]) -> None:
    rows = [(f"C{i}", d, 1, 1000.0 - d) for i, d in enumerate(days)]  # spend mirrors days
    scores = rfm_scores(rows)
    assert [scores[f"C{i}"][0] for i in range(len(days))] == expected_r
    # Higher-is-better monetary ranks the same customers the same way.
    assert [scores[f"C{i}"][2] for i in range(len(days))] == expected_r


def test_empty_and_invalid_rows() -> None:
    assert rfm_scores([]) == {}
    with pytest.raises(ValueError, match="no orders"):
        rfm_scores([("C1", 1.0, 0, 0.0)])
    with pytest.raises(ValueError, match="twice"):
        rfm_scores([("C1", 1.0, 1, 5.0), ("C1", 2.0, 1, 5.0)])
    with pytest.raises(ValueError, match="non-finite"):
        rfm_scores([("C1", float("nan"), 1, 5.0)])


_rows = st.lists(
    st.tuples(
        st.floats(0, 2_000, allow_nan=False),
        st.integers(1, 50),
        st.floats(0, 1e6, allow_nan=False),
    ),
    min_size=1,
    max_size=60,
)


@given(_rows)
def test_scores_are_monotone_tie_consistent_and_order_independent(
    rows: list[tuple[float, int, float]],
) -> None:
    keyed = [(i, d, f, m) for i, (d, f, m) in enumerate(rows)]
    scores = rfm_scores(keyed)
    shuffled = list(keyed)
    random.Random(7).shuffle(shuffled)
    assert rfm_scores(shuffled) == scores
    for a, da, fa, ma in keyed:
        assert all(1 <= s <= 5 for s in scores[a])
        for b, db, fb, mb in keyed:
            for axis, better, equal in (
                (0, da < db, da == db),
                (1, fa > fb, fa == fb),
                (2, ma > mb, ma == mb),
            ):
                if equal:
                    assert scores[a][axis] == scores[b][axis]
                elif better:
                    assert scores[a][axis] >= scores[b][axis]


# --- RFM segments ---------------------------------------------------------------------


def test_segment_grid_is_total_and_uses_every_name() -> None:
    names = {
        (r, (f + m + 1) // 2): rfm_segment(r, f, m)
        for r in range(1, 6)
        for f in range(1, 6)
        for m in range(1, 6)
    }
    assert len(names) == 25  # every (R, FM) cell is reached
    assert set(names.values()) == set(SEGMENTS)
    assert len(SEGMENTS) == 11
    assert PROSPECT not in SEGMENTS
    # FM is a function of (F, M) only: same R and FM, same name.
    for r in range(1, 6):
        for f in range(1, 6):
            for m in range(1, 6):
                assert rfm_segment(r, f, m) == names[(r, (f + m + 1) // 2)]


@pytest.mark.parametrize(
    ("rfm", "segment"),
    [
        ((5, 5, 5), "champions"),
        ((5, 4, 3), "champions"),  # (F + M) / 2 = 3.5 rounds half up to FM = 4
        ((5, 2, 3), "potential_loyalist"),  # 2.5 rounds up to 3
        ((5, 1, 1), "new_customer"),
        ((4, 1, 1), "promising"),
        ((4, 5, 4), "loyal"),
        ((3, 3, 3), "need_attention"),
        ((3, 1, 2), "about_to_sleep"),  # FM = (1 + 2 + 1) // 2 = 2
        ((2, 4, 3), "at_risk"),
        ((1, 5, 5), "cannot_lose"),
        ((2, 2, 1), "hibernating"),
        ((1, 1, 1), "lost"),
        ((1, 1, 2), "hibernating"),  # FM 1.5 rounds up to 2
    ],
)
def test_segment_cells(rfm: tuple[int, int, int], segment: str) -> None:
    assert rfm_segment(*rfm) == segment


@pytest.mark.parametrize("bad", [(0, 3, 3), (3, 6, 3), (3, 3, -1)])
def test_segment_rejects_scores_out_of_range(bad: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match=r"1\.\.5"):
        rfm_segment(*bad)


# --- Pareto tiers ---------------------------------------------------------------------

REVENUES = {
    "c01": 400.0,
    "c02": 200.0,
    "c03": 120.0,
    "c04": 80.0,
    "c05": 55.0,
    "c06": 55.0,
    "c07": 40.0,
    "c08": 30.0,
    "c09": 20.0,
    "c10": 0.0,
}


def test_pareto_hand_example() -> None:
    """Ten customers, total revenue 1000. Sorted (c05 before c06 on the tie, by id):

    ====  ======  ==========  ======  ====
    rank  id      revenue     cum     tier
    ====  ======  ==========  ======  ====
    1     c01     400         0.400   A
    2     c02     200         0.600   A
    3     c03     120         0.720   A
    4     c04      80         0.800   A    (reaches 80%: the smallest such top set)
    5     c05      55         0.855   B
    6     c06      55         0.910   B
    7     c07      40         0.950   B    (reaches 95%)
    8     c08      30         0.980   C
    9     c09      20         1.000   C
    10    c10       0         1.000   none
    ====  ======  ==========  ======  ====

    Top 20% of customers = the top 2 = 600 / 1000 = 0.60; 4 of 10 customers (0.40)
    bring 80% of revenue.
    """
    result = pareto_tiers(REVENUES.items())
    assert result.tiers == {
        "c01": "A",
        "c02": "A",
        "c03": "A",
        "c04": "A",
        "c05": "B",
        "c06": "B",
        "c07": "B",
        "c08": "C",
        "c09": "C",
        "c10": "none",
    }
    assert result.top20_revenue_share == pytest.approx(0.60)
    assert result.customers_for_80pct == pytest.approx(0.40)
    expected_cum = [0, 400, 600, 720, 800, 855, 910, 950, 980, 1000, 1000]
    assert result.curve == [pytest.approx((i / 10, c / 1000)) for i, c in enumerate(expected_cum)]


def test_pareto_is_order_independent_and_breaks_ties_by_id() -> None:
    rows = list(REVENUES.items())
    random.Random(3).shuffle(rows)
    assert pareto_tiers(rows) == pareto_tiers(REVENUES.items())
    # a and b are equal and straddle the 80% line (x 70%, a 80%): the smaller id is in A.
    # Cumulative shares: x .70, a .80, b .90, y .95, z 1.00.
    tied = pareto_tiers([("z", 5.0), ("b", 10.0), ("y", 5.0), ("a", 10.0), ("x", 70.0)])
    assert tied.tiers == {"x": "A", "a": "A", "b": "B", "y": "B", "z": "C"}
    # The customer who crosses a line completes the tier being filled: z (0% -> 85%) is A.
    assert pareto_tiers([("z", 85.0), ("y", 10.0), ("x", 5.0)]).tiers == {
        "z": "A",
        "y": "B",
        "x": "C",
    }


def test_pareto_without_revenue() -> None:
    assert pareto_tiers([]) == ParetoResult({}, [], None, None)
    result = pareto_tiers([("a", 0.0), ("b", -5.0)])
    assert result.tiers == {"a": "none", "b": "none"}
    assert result.top20_revenue_share is None
    assert result.customers_for_80pct is None


def test_pareto_curve_is_downsampled_monotone_and_ends_at_one() -> None:
    rows = [(f"c{i:05d}", random.Random(i).paretovariate(1.2)) for i in range(10_000)]
    result = pareto_tiers(rows)
    assert len(result.curve) <= 200
    assert result.curve[0] == (0.0, 0.0)
    assert result.curve[-1] == pytest.approx((1.0, 1.0))
    xs = [x for x, _ in result.curve]
    ys = [y for _, y in result.curve]
    assert xs == sorted(xs) and ys == sorted(ys)
    assert Counter(result.tiers.values())["A"] / 10_000 == result.customers_for_80pct
    assert result.top20_revenue_share is not None and result.top20_revenue_share > 0.2


def test_pareto_reaches_thresholds_despite_float_rounding() -> None:
    # In floats 0.7 + 0.1 == 0.7999999999999999 < 0.8: c2 still reaches 80% of 1.0, so
    # c3 is not needed for A.
    rows = [("c1", 0.7), ("c2", 0.1), ("c3", 0.08), ("c4", 0.07), ("c5", 0.05)]
    result = pareto_tiers(rows)
    assert result.tiers == {"c1": "A", "c2": "A", "c3": "B", "c4": "B", "c5": "C"}


# --- responsiveness and churn ---------------------------------------------------------


def test_channel_responsiveness() -> None:
    assert channel_responsiveness(
        {
            "email": (200, 50, 10),  # 50 / 200
            "sms": (10, 0, 3),  # a click without a tracked open: 3 / 10
            "push": (0, 0, 0),  # nothing sent: unknown, left out
            "direct_mail": (4, 6, 0),  # more opens than sends (re-opens): capped
        }
    ) == {"email": 0.25, "sms": 0.3, "direct_mail": 1.0}


@pytest.mark.parametrize(
    ("p_alive", "risk"), [(0.0, 1.0), (1.0, 0.0), (0.25, 0.75), (1.2, 0.0), (-0.1, 1.0)]
)
def test_churn_risk(p_alive: float, risk: float) -> None:
    assert churn_risk(p_alive) == pytest.approx(risk)


def test_churn_risk_rejects_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        churn_risk(float("nan"))

"""BG/NBD + Gamma-Gamma (projections/clv.py) validated against the published CDNOW figures.

Tolerances (also in tests/data/cdnow/README.md): fitted parameters within 1% (relative) of the
published three-significant-figure values, the BG/NBD log-likelihood within 0.5 of -9582.4, the
paper's worked example E[Y(39)] = 1.226 within 5e-4; closed forms against independent numerical
integration of the model within 1e-7 relative.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate, special

from projections import clv

DATA = (
    Path(__file__).resolve().parents[1]
    / "data"
    / "cdnow"
    / "cdnow_customers_summary_with_transactions.csv"
)

# Fader, Hardie & Lee (2005), Marketing Science 24(2), Section 4.
PAPER_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PAPER_BGNBD_LL = -9582.4
# Fader, Hardie & Lee (2005), JMR 42(4); Fader & Hardie (2013) Gamma-Gamma note.
PAPER_GG = {"p": 6.25, "q": 3.74, "v": 15.44}
PARAM_RTOL = 0.01
LL_ATOL = 0.5


@pytest.fixture(scope="module")
def cdnow() -> dict[str, np.ndarray]:
    data = np.genfromtxt(DATA, delimiter=",", names=True)
    return {name: np.asarray(data[name], dtype=np.float64) for name in ("x", "t_x", "T", "zbar")}


@pytest.fixture(scope="module")
def bgnbd(cdnow: dict[str, np.ndarray]) -> clv.BgNbdFit:
    return clv.fit_bgnbd(cdnow["x"], cdnow["t_x"], cdnow["T"])


@pytest.fixture(scope="module")
def gg(cdnow: dict[str, np.ndarray]) -> clv.GammaGammaFit:
    repeaters = cdnow["x"] > 0
    return clv.fit_gamma_gamma(cdnow["x"][repeaters], cdnow["zbar"][repeaters])


def brute_force_expected_purchases(
    fit: clv.BgNbdFit, t: float, x: int, t_x: float, T: float
) -> float:
    """E[Y(t) | x, t_x, T] by integrating the model, without the 2F1 closed form.

    Given lambda, p and alive at T: E[Y(t)] = (1 - exp(-lambda p t)) / p. The lambda integral
    against the posterior is a Gamma integral; the p integral is done numerically against the
    Beta(a, b + x) density, in s = log p so that the peak near a / (b + x) is resolved for large
    x. Everything is scaled by (alpha + T)^(r + x) B(a, b) / B(a, b + x).
    """
    r, alpha, a, b = fit.r, fit.alpha, fit.a, fit.b
    k = r + x
    log_norm = special.betaln(a, b + x)

    def integrand(s: float) -> float:
        p = math.exp(s)
        gain = -math.expm1(-k * math.log1p(p * t / (alpha + T))) / p
        return math.exp(a * s + (b + x - 1.0) * math.log1p(-p) - log_norm) * gain

    peak = math.log(a / (a + b + x))
    numerator: float = sum(
        integrate.quad(integrand, lo, hi, epsabs=0.0, epsrel=1e-12, limit=200)[0]
        for lo, hi in [(-745.0, peak - 10.0), (peak - 10.0, peak), (peak, 0.0)]
        if hi > lo
    )
    denominator = 1.0
    if x > 0:
        denominator += math.exp(
            special.betaln(a + 1, b + x - 1)
            - log_norm
            + k * (math.log(alpha + T) - math.log(alpha + t_x))
        )
    return numerator / denominator


# --------------------------------------------------------------------------- published values


def test_bgnbd_reproduces_published_cdnow_estimates(bgnbd: clv.BgNbdFit) -> None:
    """r, alpha, a, b within 1% relative and LL within 0.5 of FHL (2005)."""
    assert bgnbd.converged
    assert bgnbd.n_customers == 2357
    for name, published in PAPER_BGNBD.items():
        assert getattr(bgnbd, name) == pytest.approx(published, rel=PARAM_RTOL), name
    assert bgnbd.log_likelihood == pytest.approx(PAPER_BGNBD_LL, abs=LL_ATOL)


def test_gamma_gamma_reproduces_published_cdnow_estimates(gg: clv.GammaGammaFit) -> None:
    """p, q, gamma (v) within 1% relative of FHL (2005, JMR) / Fader-Hardie (2013)."""
    assert gg.converged
    assert gg.n_customers == 946
    for name, published in PAPER_GG.items():
        assert getattr(gg, name) == pytest.approx(published, rel=PARAM_RTOL), name
    assert math.isfinite(gg.log_likelihood)


def test_paper_worked_example_expected_purchases(bgnbd: clv.BgNbdFit) -> None:
    """FHL (2005): x=2, t_x=30.43, T=38.86 expects 1.226 purchases in the next 39 weeks."""
    value = float(clv.expected_purchases(bgnbd, 39.0, 2, 30.43, 38.86))
    assert value == pytest.approx(1.226, abs=5e-4)
    assert value == pytest.approx(
        brute_force_expected_purchases(bgnbd, 39.0, 2, 30.43, 38.86), rel=1e-7
    )


# --------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize(
    ("t", "x", "t_x", "T"),
    [
        (39.0, 0, 0.0, 38.86),
        (1.0, 1, 1.71, 38.86),
        (52.0, 7, 35.0, 38.0),
        (500.0, 3, 2.0, 5.0),
        (5000.0, 0, 0.0, 0.0),
        (10.0, 300, 290.0, 300.0),
        (100.0, 2000, 1999.0, 2000.0),
    ],
)
def test_expected_purchases_matches_numerical_integration(
    bgnbd: clv.BgNbdFit, t: float, x: int, t_x: float, T: float
) -> None:
    closed = float(clv.expected_purchases(bgnbd, t, x, t_x, T))
    assert closed == pytest.approx(brute_force_expected_purchases(bgnbd, t, x, t_x, T), rel=1e-7)


@pytest.mark.parametrize(
    "params", [(0.243, 4.414, 0.793, 2.426), (2.0, 10.0, 3.0, 0.5), (0.5, 1.0, 1.0 + 1e-9, 4.0)]
)
def test_expected_purchases_other_parameters_match_integration(
    params: tuple[float, float, float, float],
) -> None:
    """Including a > 1 and a == 1 to within 1e-9 (the (a-1) division handled by the series)."""
    r, alpha, a, b = params
    fit = clv.BgNbdFit(
        r, alpha, a, b, log_likelihood=0.0, n_customers=1, converged=True, iterations=0
    )
    for t, x, t_x, T in [(39.0, 2, 30.43, 38.86), (200.0, 0, 0.0, 10.0), (20.0, 50, 60.0, 80.0)]:
        closed = float(clv.expected_purchases(fit, t, x, t_x, T))
        assert closed == pytest.approx(brute_force_expected_purchases(fit, t, x, t_x, T), rel=1e-7)


def test_series_fallback_agrees_with_scipy_hyp2f1() -> None:
    """The power-series fallback equals (2F1(a1, a-1; c; z) - 1)/(a-1) from scipy."""
    a1 = np.array([0.456, 0.456, 3.2, -0.3, 0.456])
    a = 0.793
    c = np.array([2.2, 1002.2, 5.0, 1.5, 30.0])
    z = np.array([0.5, 0.9, 0.3, 0.95, 0.99])
    series = clv._hyp2f1_series_scaled(a1, a, c, z)
    reference = (special.hyp2f1(a1, a - 1.0, c, z) - 1.0) / (a - 1.0)
    np.testing.assert_allclose(series, reference, rtol=1e-10)


def test_expected_purchases_vectorised_and_zero_horizon(
    bgnbd: clv.BgNbdFit, cdnow: dict[str, np.ndarray]
) -> None:
    values = clv.expected_purchases(bgnbd, 39.0, cdnow["x"], cdnow["t_x"], cdnow["T"])
    assert values.shape == cdnow["x"].shape
    assert np.all(np.isfinite(values)) and np.all(values >= 0)
    assert np.all(clv.expected_purchases(bgnbd, 0.0, cdnow["x"], cdnow["t_x"], cdnow["T"]) == 0)
    longer = clv.expected_purchases(bgnbd, 78.0, cdnow["x"], cdnow["t_x"], cdnow["T"])
    assert np.all(longer >= values)


def test_p_alive_sanity(bgnbd: clv.BgNbdFit) -> None:
    assert float(clv.p_alive(bgnbd, 0, 0.0, 38.86)) == 1.0
    recency = np.linspace(0.5, 38.86, 50)
    values = clv.p_alive(bgnbd, 5, recency, 38.86)
    assert np.all((values >= 0) & (values <= 1))
    assert np.all(np.diff(values) > 0), "more recent last purchase must mean more likely alive"
    assert float(values[-1]) == pytest.approx(1.0 / (1.0 + bgnbd.a / (bgnbd.b + 4)))
    # Long silence after many purchases: essentially dead, but no overflow or NaN.
    assert float(clv.p_alive(bgnbd, 1000, 1.0, 5000.0)) == 0.0


def test_large_inputs_stay_finite(bgnbd: clv.BgNbdFit, gg: clv.GammaGammaFit) -> None:
    x = np.array([0, 1, 1000, 5000, 5000, 10_000])
    t_x = np.array([0.0, 0.5, 999.0, 100.0, 4999.0, 9_999.0])
    T = np.array([5000.0, 5000.0, 1000.0, 5000.0, 5000.0, 10_000.0])
    for t in (1.0, 52.0, 10_000.0):
        values = clv.expected_purchases(bgnbd, t, x, t_x, T)
        assert np.all(np.isfinite(values)) and np.all(values >= 0)
    assert np.all(np.isfinite(clv.p_alive(bgnbd, x, t_x, T)))
    clv_values = clv.customer_lifetime_value(bgnbd, gg, x, t_x, T, 50.0, 52.0, 0.002)
    assert np.all(np.isfinite(clv_values))
    # A fit on heavy buyers with long histories does not overflow either.
    fit = clv.fit_bgnbd(x, t_x, T)
    assert math.isfinite(fit.log_likelihood)


# --------------------------------------------------------------------------- fit quality


def test_repeat_distribution_matches_observed_histogram(
    bgnbd: clv.BgNbdFit, cdnow: dict[str, np.ndarray]
) -> None:
    expected = clv.expected_repeat_distribution(bgnbd, cdnow["T"], 7)
    observed = clv.observed_repeat_distribution(cdnow["x"], 7)
    assert expected.shape == observed.shape == (8,)
    assert expected.sum() == pytest.approx(2357, abs=1e-6)
    assert observed.sum() == 2357
    result = clv.chi_square_test(observed, expected, n_fitted_params=4)
    assert result.dof == 3
    # Ours: chi-square 4.82 on 3 dof (p = 0.19): the model is not rejected at 5%.
    assert result.p_value > 0.05, result


def test_repeat_purchase_probability_is_a_distribution(bgnbd: clv.BgNbdFit) -> None:
    """P(X(t)=n) sums to 1 and its mean is E[X(t)] (eq. 9 = eq. 10 with x = t_x = T = 0)."""
    n = np.arange(0, 2000)
    for t in (1.0, 39.0, 78.0):
        probs = clv.repeat_purchase_probability(bgnbd, t, n)
        assert np.all(probs >= 0)
        assert probs.sum() == pytest.approx(1.0, abs=1e-6)
        mean = float(np.sum(n * probs))
        assert mean == pytest.approx(float(clv.expected_purchases(bgnbd, t, 0, 0.0, 0.0)), rel=1e-5)


def test_fit_recovers_simulated_parameters() -> None:
    """Simulate the BG/NBD process with known parameters; the fit finds them again."""
    rng = np.random.default_rng(20050301)
    n, true = 20_000, (0.8, 6.0, 1.2, 3.0)
    r, alpha, a, b = true
    lam = rng.gamma(r, 1.0 / alpha, n)
    p = rng.beta(a, b, n)
    T = rng.uniform(20.0, 60.0, n)
    dies_after = rng.geometric(p)  # number of repeat purchases before dropping out
    x = np.zeros(n)
    t_x = np.zeros(n)
    clock = np.zeros(n)
    active = np.ones(n, dtype=bool)
    while np.any(active):
        clock = clock + np.where(active, rng.exponential(1.0 / lam), 0.0)
        bought = active & (clock <= T)
        x = x + bought
        t_x = np.where(bought, clock, t_x)
        active = bought & (x < dies_after)
    fit = clv.fit_bgnbd(x, t_x, T)
    assert fit.converged
    for name, value in zip(("r", "alpha", "a", "b"), true, strict=True):
        assert getattr(fit, name) == pytest.approx(value, rel=0.15), name


# --------------------------------------------------------------------------- spend and CLV


def test_expected_spend(gg: clv.GammaGammaFit, cdnow: dict[str, np.ndarray]) -> None:
    population = gg.p * gg.v / (gg.q - 1)
    assert gg.population_mean_spend == pytest.approx(population)
    assert float(clv.expected_spend(gg, 0, 0.0)) == pytest.approx(population)
    assert float(clv.expected_spend(gg, 0, 123.0)) == pytest.approx(population)  # ignored at x=0
    # Shrinkage: between the population mean and the customer's own mean, closer with more x.
    few = float(clv.expected_spend(gg, 1, 100.0))
    many = float(clv.expected_spend(gg, 20, 100.0))
    assert population < few < many < 100.0
    repeaters = cdnow["x"] > 0
    values = clv.expected_spend(gg, cdnow["x"][repeaters], cdnow["zbar"][repeaters])
    assert np.all(np.isfinite(values)) and np.all(values > 0)


def test_customer_lifetime_value(bgnbd: clv.BgNbdFit, gg: clv.GammaGammaFit) -> None:
    x = np.array([0, 2, 10])
    t_x = np.array([0.0, 30.43, 38.0])
    T = np.array([38.86, 38.86, 38.86])
    spend = np.array([0.0, 22.35, 40.0])
    plain = clv.customer_lifetime_value(bgnbd, gg, x, t_x, T, spend, 52.0)
    np.testing.assert_allclose(
        plain,
        clv.expected_purchases(bgnbd, 52.0, x, t_x, T) * clv.expected_spend(gg, x, spend),
    )
    discounted = clv.customer_lifetime_value(bgnbd, gg, x, t_x, T, spend, 52.0, 0.01)
    assert np.all(discounted < plain) and np.all(discounted > plain / 1.01**52)
    # The per-period differences telescope: a vanishing rate gives the undiscounted value.
    tiny = clv.customer_lifetime_value(bgnbd, gg, x, t_x, T, spend, 52.5, 1e-12)
    np.testing.assert_allclose(tiny, clv.customer_lifetime_value(bgnbd, gg, x, t_x, T, spend, 52.5))
    assert np.all(clv.customer_lifetime_value(bgnbd, gg, x, t_x, T, spend, 0.0) == 0)


# --------------------------------------------------------------------------- invalid input


@pytest.mark.parametrize(
    ("x", "t_x", "T", "message"),
    [
        ([1, -1], [1.0, 0.0], [2.0, 2.0], "x .* must be >= 0"),
        ([1.5], [1.0], [2.0], "whole numbers"),
        ([1], [-1.0], [2.0], "t_x .* must be >= 0"),
        ([1], [3.0], [2.0], "t_x must be <= T"),
        ([0], [1.0], [2.0], "t_x must be 0 where x == 0"),
        ([1, 2], [1.0], [2.0, 2.0], "same length"),
        ([[1]], [[1.0]], [[2.0]], "1-D"),
        ([], [], [], "zero customers"),
        ([0, 0], [0.0, 0.0], [1.0, 2.0], "no customer has a repeat purchase"),
        ([1], [float("nan")], [2.0], "finite"),
        (["a"], [1.0], [2.0], "numeric"),
    ],
)
def test_fit_bgnbd_rejects_invalid_input(x: object, t_x: object, T: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        clv.fit_bgnbd(x, t_x, T)  # type: ignore[arg-type]


def test_fit_bgnbd_accepts_repeat_purchases_at_time_zero() -> None:
    fit = clv.fit_bgnbd([0, 1, 3, 2], [0.0, 0.0, 5.0, 1.0], [10.0, 10.0, 10.0, 3.0])
    assert math.isfinite(fit.log_likelihood)


def test_predictions_reject_invalid_input(bgnbd: clv.BgNbdFit, gg: clv.GammaGammaFit) -> None:
    with pytest.raises(ValueError, match="t must be >= 0"):
        clv.expected_purchases(bgnbd, -1.0, 1, 1.0, 2.0)
    with pytest.raises(ValueError, match="broadcast"):
        clv.p_alive(bgnbd, [1, 2], [1.0, 1.0, 1.0], 2.0)
    with pytest.raises(ValueError, match="t_x must be <= T"):
        clv.p_alive(bgnbd, 1, 3.0, 2.0)
    with pytest.raises(ValueError, match="parameter a"):
        bad = clv.BgNbdFit(1.0, 1.0, -1.0, 1.0, 0.0, 1, True, 0)
        clv.p_alive(bad, 1, 1.0, 2.0)
    with pytest.raises(ValueError, match="max_x"):
        clv.expected_repeat_distribution(bgnbd, [38.0], 0)
    with pytest.raises(ValueError, match="x > 0 only"):
        clv.fit_gamma_gamma([0, 1], [0.0, 5.0])
    with pytest.raises(ValueError, match="mean_spend must be > 0"):
        clv.fit_gamma_gamma([1, 2], [0.0, 5.0])
    with pytest.raises(ValueError, match="infinite"):
        clv.expected_spend(clv.GammaGammaFit(1.0, 0.5, 1.0, 0.0, 1, True), 0, 0.0)
    with pytest.raises(ValueError, match="horizon"):
        clv.customer_lifetime_value(bgnbd, gg, 1, 1.0, 2.0, 5.0, -1.0)
    with pytest.raises(ValueError, match="discount_rate_per_period"):
        clv.customer_lifetime_value(bgnbd, gg, 1, 1.0, 2.0, 5.0, 10.0, -0.1)
    with pytest.raises(ValueError, match="degrees of freedom"):
        clv.chi_square_test([1.0, 2.0], [1.5, 1.5])

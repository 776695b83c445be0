"""Customer lifetime value: the BG/NBD purchase model and the Gamma-Gamma spend model.

The model in ten lines
----------------------
1. While active, a customer buys at Poisson rate ``lambda`` (repeat purchases only).
2. ``lambda`` varies across customers as Gamma(shape ``r``, rate ``alpha``).
3. After each repeat purchase the customer drops out ("dies") with probability ``p``.
4. ``p`` varies across customers as Beta(``a``, ``b``); ``lambda`` and ``p`` are independent.
5. The data per customer are ``x`` (repeat purchases), ``t_x`` (time of the last one, counted
   from the first purchase) and ``T`` (time from the first purchase to the end of calibration).
6. ``fit_bgnbd`` maximises the likelihood (FHL 2005, eq. 6) over ``r, alpha, a, b``.
7. ``expected_purchases`` is E[Y(t) | x, t_x, T], purchases in the next ``t`` (eq. 10).
8. ``p_alive`` is P(still active at T | x, t_x, T) (Fader-Hardie note on P(alive)).
9. Spend per transaction is Gamma(``p``, ``nu``) around a customer mean; ``nu`` varies across
   customers as Gamma(``q``, ``v``) (Gamma-Gamma); spend is independent of the purchase process.
10. CLV = E[purchases over the horizon] x E[average spend | history], optionally discounted.

Assumptions and units
---------------------
* Time is in any one unit (days, weeks), the same for ``t_x``, ``T``, ``t``, ``horizon`` and the
  discount period; ``alpha`` is in that unit. The CDNOW validation data use weeks.
* ``x`` counts *repeat* purchases (the first purchase is not counted); ``x == 0`` implies
  ``t_x == 0``. ``x > 0`` with ``t_x == 0`` (repeat purchases on the day of the first one,
  after rounding) is accepted: the likelihood is finite there.
* ``mean_spend`` is the average value of the *repeat* transactions (the first is excluded, as
  in Fader-Hardie-Lee 2005, because it is often atypical); ignored where ``x == 0``.
* Results are expectations under the fitted population parameters; no parameter uncertainty.
* CLV here is revenue, not margin: multiply by a margin if needed. It omits the first purchase
  and anything after the horizon. See ``customer_lifetime_value`` for the discounting rule.

Numerics: all likelihoods are computed in log space with ``gammaln``/``betaln``/``logaddexp``;
the 2F1 in eq. 10 is evaluated after Euler's transformation, which leaves small upper
parameters whatever ``x`` is: as a power series for z <= 1/2, by scipy's hyp2f1 above (with the
series as fallback). Optimisation is over
log-parameters with L-BFGS-B and an analytic gradient (Nelder-Mead polish if it fails).

Sources
-------
* P. S. Fader, B. G. S. Hardie, K. L. Lee (2005), "Counting Your Customers the Easy Way: An
  Alternative to the Pareto/NBD Model", Marketing Science 24(2):275-284.
* P. S. Fader, B. G. S. Hardie, K. L. Lee, notes "Implementing the BG/NBD Model for Customer Base
  Analysis in Excel" (2005) and "Computing P(alive) Using the BG/NBD Model" (2008).
* P. S. Fader, B. G. S. Hardie, K. L. Lee (2005), "RFM and CLV: Using Iso-Value Curves for
  Customer Base Analysis", Journal of Marketing Research 42(4):415-430.
* P. S. Fader, B. G. S. Hardie (2013), note "The Gamma-Gamma Model of Monetary Value".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import optimize, special, stats

FloatArray = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike

__all__ = [
    "BgNbdFit",
    "ChiSquareResult",
    "GammaGammaFit",
    "chi_square_test",
    "customer_lifetime_value",
    "expected_purchases",
    "expected_repeat_distribution",
    "expected_spend",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "observed_repeat_distribution",
    "p_alive",
    "repeat_purchase_probability",
]

_LOG_BOUND = 25.0  # log-parameters are kept in [-25, 25] during optimisation
_SERIES_MAX_TERMS = 200_000


@dataclass(frozen=True)
class BgNbdFit:
    """Maximum-likelihood BG/NBD parameters: Gamma(r, alpha) rates, Beta(a, b) dropout."""

    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float
    n_customers: int
    converged: bool
    iterations: int


@dataclass(frozen=True)
class GammaGammaFit:
    """Maximum-likelihood Gamma-Gamma parameters (``v`` is the paper's gamma)."""

    p: float
    q: float
    v: float
    log_likelihood: float
    n_customers: int
    converged: bool

    @property
    def population_mean_spend(self) -> float:
        """E[average transaction value] of a new customer, ``p * v / (q - 1)`` (inf if q <= 1)."""
        return self.p * self.v / (self.q - 1.0) if self.q > 1.0 else math.inf


@dataclass(frozen=True)
class ChiSquareResult:
    """Pearson chi-square goodness of fit of a histogram."""

    statistic: float
    dof: int
    p_value: float


# --------------------------------------------------------------------------- validation


def _as_float_array(name: str, value: ArrayLike) -> FloatArray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got {value!r}") from exc
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return arr


def _validate_rft(
    x: ArrayLike, t_x: ArrayLike, T: ArrayLike, *, for_fit: bool
) -> tuple[FloatArray, FloatArray, FloatArray]:
    xa = _as_float_array("x", x)
    ta = _as_float_array("t_x", t_x)
    Ta = _as_float_array("T", T)
    if for_fit:
        if xa.ndim != 1 or ta.shape != xa.shape or Ta.shape != xa.shape:
            raise ValueError(
                "x, t_x and T must be 1-D arrays of the same length, got shapes "
                f"{xa.shape}, {ta.shape}, {Ta.shape}"
            )
        if xa.size == 0:
            raise ValueError("cannot fit on zero customers")
    else:
        try:
            xa, ta, Ta = np.broadcast_arrays(xa, ta, Ta)
        except ValueError as exc:
            raise ValueError(
                f"x, t_x and T cannot be broadcast together: {xa.shape}, {ta.shape}, {Ta.shape}"
            ) from exc
    if np.any(xa < 0):
        raise ValueError("x (number of repeat purchases) must be >= 0")
    if np.any(xa != np.round(xa)):
        raise ValueError("x (number of repeat purchases) must be whole numbers")
    if np.any(ta < 0):
        raise ValueError("t_x (time of last purchase since the first) must be >= 0")
    if np.any(Ta < 0):
        raise ValueError("T (time since the first purchase) must be >= 0")
    if np.any(ta > Ta):
        raise ValueError("t_x must be <= T (the last purchase cannot be after the end of data)")
    if np.any((xa == 0) & (ta != 0)):
        raise ValueError("t_x must be 0 where x == 0 (no repeat purchase, no recency)")
    return xa, ta, Ta


def _validate_time(name: str, value: ArrayLike) -> FloatArray:
    arr = _as_float_array(name, value)
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0")
    return arr


def _check_bgnbd(fit: BgNbdFit) -> None:
    for name in ("r", "alpha", "a", "b"):
        value = getattr(fit, name)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"BG/NBD parameter {name} must be finite and > 0, got {value!r}")


def _check_gg(fit: GammaGammaFit) -> None:
    for name in ("p", "q", "v"):
        value = getattr(fit, name)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"Gamma-Gamma parameter {name} must be finite and > 0, got {value!r}")


# --------------------------------------------------------------------------- BG/NBD fit


def _bgnbd_loglik_terms(
    params: FloatArray, x: FloatArray, t_x: FloatArray, T: FloatArray, with_grad: bool
) -> tuple[FloatArray, FloatArray | None]:
    """Per-customer log-likelihood (FHL 2005 eq. 6) and, optionally, its gradient.

    The gradient rows are w.r.t. (r, alpha, a, b) (not their logs), shape (4, n).
    """
    r, alpha, a, b = (float(v) for v in params)
    pos = x > 0
    bx1 = np.where(pos, b + x - 1.0, 1.0)  # b + x - 1, only meaningful where x > 0
    log_at = np.log(alpha + T)
    log_atx = np.log(alpha + t_x)
    a1 = special.gammaln(r + x) - special.gammaln(r) + r * math.log(alpha)
    a2 = (
        special.gammaln(a + b)
        + special.gammaln(b + x)
        - special.gammaln(b)
        - special.gammaln(a + b + x)
    )
    a3 = -(r + x) * log_at
    a4 = np.where(pos, math.log(a) - np.log(bx1) - (r + x) * log_atx, -np.inf)
    mix = np.logaddexp(a3, a4)
    ll = a1 + a2 + mix
    if not with_grad:
        return ll, None
    w = np.exp(a3 - mix)  # weight of the "alive at T" branch
    v = 1.0 - w  # weight of the "died after the last purchase" branch (0 where x == 0)
    grad = np.empty((4, x.size))
    grad[0] = (
        special.digamma(r + x)
        - special.digamma(r)
        + math.log(alpha)
        - w * log_at
        - np.where(pos, v * log_atx, 0.0)
    )
    grad[1] = (
        r / alpha - w * (r + x) / (alpha + T) - np.where(pos, v * (r + x) / (alpha + t_x), 0.0)
    )
    dab = special.digamma(a + b) - special.digamma(a + b + x)
    grad[2] = dab + np.where(pos, v / a, 0.0)
    grad[3] = dab + special.digamma(b + x) - special.digamma(b) - np.where(pos, v / bx1, 0.0)
    return ll, grad


def _minimise(objective: Any, start: FloatArray, n_params: int) -> tuple[FloatArray, bool, int]:
    """Minimise a (value, gradient) objective in log-parameter space; polish if needed."""
    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * n_params
    options = {"maxiter": 2000, "ftol": 1e-14, "gtol": 1e-9}
    res = optimize.minimize(
        objective, start, jac=True, method="L-BFGS-B", bounds=bounds, options=options
    )
    iterations = int(res.nit)
    if res.success and np.all(np.isfinite(res.x)):
        return np.asarray(res.x, dtype=np.float64), True, iterations

    def value_only(theta: FloatArray) -> float:
        return float(objective(np.clip(theta, -_LOG_BOUND, _LOG_BOUND))[0])

    x0 = res.x if np.all(np.isfinite(res.x)) else start
    nm = optimize.minimize(
        value_only,
        x0,
        method="Nelder-Mead",
        options={"maxiter": 20_000, "xatol": 1e-10, "fatol": 1e-13},
    )
    iterations += int(nm.nit)
    res2 = optimize.minimize(
        objective,
        np.clip(nm.x, -_LOG_BOUND, _LOG_BOUND),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options=options,
    )
    iterations += int(res2.nit)
    best = res2 if res2.fun <= nm.fun else nm
    theta = np.clip(np.asarray(best.x, dtype=np.float64), -_LOG_BOUND, _LOG_BOUND)
    return theta, bool(res2.success or nm.success), iterations


def fit_bgnbd(x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> BgNbdFit:
    """Fit the BG/NBD model by maximum likelihood (FHL 2005, eq. 6).

    ``x``: repeat purchases, ``t_x``: time of the last repeat purchase since the first purchase,
    ``T``: time since the first purchase; 1-D arrays of equal length, any one time unit.
    Raises ``ValueError`` on invalid input.
    """
    xa, ta, Ta = _validate_rft(x, t_x, T, for_fit=True)
    if np.all(xa == 0):
        raise ValueError("cannot fit BG/NBD: no customer has a repeat purchase (all x == 0)")
    n = xa.size

    def objective(theta: FloatArray) -> tuple[float, FloatArray]:
        params = np.exp(theta)
        ll, grad = _bgnbd_loglik_terms(params, xa, ta, Ta, with_grad=True)
        assert grad is not None
        value = -float(np.sum(ll)) / n
        g = -(grad.sum(axis=1) * params) / n
        if not np.isfinite(value):
            return 1e300, np.zeros(4)
        return value, g

    # Start: r = 1 and alpha so that r / alpha matches the observed purchase rate; a = b = 1.
    rate = max(float(np.sum(xa)) / max(float(np.sum(Ta)), 1e-12), 1e-6)
    start = np.log(np.array([1.0, 1.0 / rate, 1.0, 1.0]))
    start = np.clip(start, -_LOG_BOUND + 1, _LOG_BOUND - 1)
    theta, converged, iterations = _minimise(objective, start, 4)
    params = np.exp(theta)
    ll, _ = _bgnbd_loglik_terms(params, xa, ta, Ta, with_grad=False)
    r, alpha, a, b = (float(v) for v in params)
    at_bound = bool(np.any(np.abs(theta) >= _LOG_BOUND - 1e-6))
    return BgNbdFit(
        r=r,
        alpha=alpha,
        a=a,
        b=b,
        log_likelihood=float(np.sum(ll)),
        n_customers=n,
        converged=converged and not at_bound,
        iterations=iterations,
    )


# --------------------------------------------------------------------------- BG/NBD predictions


def _log_death_odds(fit: BgNbdFit, x: FloatArray, t_x: FloatArray, T: FloatArray) -> FloatArray:
    """log of  delta(x>0) * a/(b+x-1) * ((alpha+T)/(alpha+t_x))^(r+x)  (-inf where x == 0)."""
    pos = x > 0
    bx1 = np.where(pos, fit.b + x - 1.0, 1.0)
    value = (
        math.log(fit.a)
        - np.log(bx1)
        + (fit.r + x) * (np.log(fit.alpha + T) - np.log(fit.alpha + t_x))
    )
    return np.where(pos, value, -np.inf)


def p_alive(fit: BgNbdFit, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> FloatArray:
    """P(customer still active at T | x, t_x, T); exactly 1 where x == 0.

    ``1 / (1 + delta(x>0) a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))``, computed in log space.
    Inputs broadcast; returns a float array of the broadcast shape (0-d for scalars).
    """
    _check_bgnbd(fit)
    xa, ta, Ta = _validate_rft(x, t_x, T, for_fit=False)
    return np.asarray(special.expit(-_log_death_odds(fit, xa, ta, Ta)), dtype=np.float64)


def _hyp2f1_series_scaled(a1: FloatArray, a: float, c: FloatArray, z: FloatArray) -> FloatArray:
    """``(2F1(a1, a-1; c; z) - 1) / (a - 1)`` by its power series (|z| < 1), vectorised.

    The n-th term is (a1)_n (a)_{n-1} z^n / ((c)_n n!); the (a-1) factor of (a-1)_n is taken out,
    so the result is well defined as a -> 1.
    """
    term = a1 * z / c
    total = term.copy()
    n = 1
    scale = np.maximum(np.abs(total), 1e-300)
    while n < _SERIES_MAX_TERMS:
        term = term * (a1 + n) * (a + n - 1.0) / ((c + n) * (n + 1.0)) * z
        total = total + term
        scale = np.maximum(scale, np.abs(total))
        n += 1
        if np.all(np.abs(term) <= 1e-16 * scale):
            break
    return total


def _one_minus_g_over_a_minus_1(
    fit: BgNbdFit, t: FloatArray, x: FloatArray, T: FloatArray
) -> FloatArray:
    """``[1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; z)] / (a-1)``.

    With z = t/(alpha+T+t), Euler's transformation 2F1(A,B;C;z) = (1-z)^(C-A-B) 2F1(C-A,C-B;C;z)
    turns the bracket into 1 - (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z), whose upper parameters
    do not grow with x. The bracket is O(z) while its two terms are O(1), so for z <= 1/2 (and
    where a is within 1e-4 of 1, which the division would amplify) the power series is summed
    directly with the (a-1) factor taken out analytically: it converges at least like 2^-n.
    Above 1/2 scipy's hyp2f1 is used, with the series as fallback where it is not finite.
    """
    r, alpha, a, b = fit.r, fit.alpha, fit.a, fit.b
    t, x, T = np.broadcast_arrays(t, x, T)
    z = t / (alpha + T + t)
    log1mz = np.log(alpha + T) - np.log(alpha + T + t)  # log(1 - z), exact for z near 1
    a1 = np.full(z.shape, a + b - 1.0 - r)
    c = a + b + x - 1.0
    am1 = a - 1.0
    out = np.full(z.shape, np.nan)
    if abs(am1) > 1e-4:
        big = z > 0.5
        f = special.hyp2f1(a1[big], am1, c[big], z[big])
        out[big] = (1.0 - np.exp(am1 * log1mz[big]) * f) / am1
    todo = ~np.isfinite(out)
    if np.any(todo):
        # -expm1((a-1) log(1-z)) / (a-1), with its limit -log(1-z) at a == 1
        lead = -np.expm1(am1 * log1mz[todo]) / am1 if am1 != 0.0 else -log1mz[todo]
        s = _hyp2f1_series_scaled(a1[todo], a, c[todo], z[todo])
        out[todo] = lead - np.exp(am1 * log1mz[todo]) * s
    return np.asarray(out, dtype=np.float64)


def expected_purchases(
    fit: BgNbdFit, t: ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike
) -> FloatArray:
    """E[Y(t) | x, t_x, T]: expected repeat purchases in the next ``t`` periods (FHL 2005 eq. 10).

    ``(a+b+x-1)/(a-1) [1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; t/(alpha+T+t))]
    / (1 + delta(x>0) a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))``.
    With x = t_x = T = 0 this is E[X(t)] of a new customer (eq. 9). Inputs broadcast.
    """
    _check_bgnbd(fit)
    ta = _validate_time("t", t)
    xa, txa, Ta = _validate_rft(x, t_x, T, for_fit=False)
    ta, xa, txa, Ta = np.broadcast_arrays(ta, xa, txa, Ta)
    bracket = _one_minus_g_over_a_minus_1(fit, ta, xa, Ta)
    log_odds = _log_death_odds(fit, xa, txa, Ta)
    value = (fit.a + fit.b + xa - 1.0) * bracket * np.exp(-np.logaddexp(0.0, log_odds))
    value = np.where(ta == 0, 0.0, np.maximum(value, 0.0))
    return np.asarray(value, dtype=np.float64)


def repeat_purchase_probability(fit: BgNbdFit, t: ArrayLike, n: ArrayLike) -> FloatArray:
    """P(X(t) = n): probability of ``n`` repeat purchases in (0, t] for a new customer (eq. 8).

    Computed as ``B(a,b+n)/B(a,b) NB(n; r, alpha/(alpha+t)) + delta(n>0) B(a+1,b+n-1)/B(a,b)
    P(NB >= n)``, with NB the negative binomial and its tail from the regularised beta.
    """
    _check_bgnbd(fit)
    ta = _validate_time("t", t)
    na = _as_float_array("n", n)
    if np.any(na < 0) or np.any(na != np.round(na)):
        raise ValueError("n must be whole numbers >= 0")
    ta, na = np.broadcast_arrays(ta, na)
    r, alpha, a, b = fit.r, fit.alpha, fit.a, fit.b
    log_nb_pmf = (
        special.gammaln(r + na)
        - special.gammaln(r)
        - special.gammaln(na + 1.0)
        + r * (math.log(alpha) - np.log(alpha + ta))
        + special.xlogy(na, ta)
        - na * np.log(alpha + ta)
    )
    first = np.exp(special.betaln(a, b + na) - special.betaln(a, b) + log_nb_pmf)
    pos = na > 0
    safe_n = np.where(pos, na, 1.0)
    tail = special.betainc(safe_n, r, ta / (alpha + ta))  # P(NB >= n) = I_{t/(alpha+t)}(n, r)
    second = np.where(
        pos,
        np.exp(special.betaln(a + 1.0, b + safe_n - 1.0) - special.betaln(a, b)) * tail,
        0.0,
    )
    return np.asarray(first + second, dtype=np.float64)


def expected_repeat_distribution(fit: BgNbdFit, T_values: ArrayLike, max_x: int) -> FloatArray:
    """Expected number of customers with 0, 1, ..., max_x - 1 and >= max_x repeat purchases.

    ``T_values`` holds each customer's calibration length T; the result (length ``max_x + 1``)
    sums to ``len(T_values)``. Compare with ``observed_repeat_distribution``.
    """
    if isinstance(max_x, bool) or not isinstance(max_x, int | np.integer) or max_x < 1:
        raise ValueError(f"max_x must be an integer >= 1, got {max_x!r}")
    Ta = _validate_time("T_values", T_values).ravel()
    if Ta.size == 0:
        raise ValueError("T_values must not be empty")
    counts = np.arange(int(max_x), dtype=np.float64)
    probs = repeat_purchase_probability(fit, Ta[None, :], counts[:, None])  # (max_x, n)
    expected = probs.sum(axis=1)
    rest = float(np.sum(np.clip(1.0 - probs.sum(axis=0), 0.0, 1.0)))
    return np.asarray(np.append(expected, rest), dtype=np.float64)


def observed_repeat_distribution(x: ArrayLike, max_x: int) -> FloatArray:
    """Observed counts of customers with 0, ..., max_x - 1 and >= max_x repeat purchases."""
    if isinstance(max_x, bool) or not isinstance(max_x, int | np.integer) or max_x < 1:
        raise ValueError(f"max_x must be an integer >= 1, got {max_x!r}")
    xa = _as_float_array("x", x).ravel()
    if np.any(xa < 0) or np.any(xa != np.round(xa)):
        raise ValueError("x must be whole numbers >= 0")
    clipped = np.minimum(xa, max_x).astype(np.int64)
    return np.bincount(clipped, minlength=int(max_x) + 1).astype(np.float64)


def chi_square_test(
    observed: ArrayLike, expected: ArrayLike, n_fitted_params: int = 4
) -> ChiSquareResult:
    """Pearson chi-square of a histogram: sum (O - E)^2 / E, dof = bins - 1 - fitted params."""
    o = _as_float_array("observed", observed).ravel()
    e = _as_float_array("expected", expected).ravel()
    if o.shape != e.shape:
        raise ValueError(f"observed and expected differ in length: {o.size} vs {e.size}")
    if np.any(e <= 0):
        raise ValueError("expected counts must be > 0 (merge sparse bins)")
    dof = o.size - 1 - int(n_fitted_params)
    if dof < 1:
        raise ValueError(
            f"{o.size} bins leave no degrees of freedom for {n_fitted_params} fitted parameters"
        )
    statistic = float(np.sum((o - e) ** 2 / e))
    return ChiSquareResult(
        statistic=statistic, dof=dof, p_value=float(stats.chi2.sf(statistic, dof))
    )


# --------------------------------------------------------------------------- Gamma-Gamma


def _validate_spend(
    x: ArrayLike, mean_spend: ArrayLike, *, for_fit: bool
) -> tuple[FloatArray, FloatArray]:
    xa = _as_float_array("x", x)
    ma = _as_float_array("mean_spend", mean_spend)
    if for_fit:
        if xa.ndim != 1 or ma.shape != xa.shape:
            raise ValueError(
                "x and mean_spend must be 1-D arrays of the same length, got "
                f"{xa.shape}, {ma.shape}"
            )
        if xa.size == 0:
            raise ValueError("cannot fit on zero customers")
    else:
        try:
            xa, ma = np.broadcast_arrays(xa, ma)
        except ValueError as exc:
            raise ValueError(
                f"x and mean_spend cannot be broadcast together: {xa.shape}, {ma.shape}"
            ) from exc
    if np.any(xa != np.round(xa)):
        raise ValueError("x (number of repeat purchases) must be whole numbers")
    if for_fit:
        if np.any(xa <= 0):
            raise ValueError(
                "Gamma-Gamma is fitted on customers with x > 0 only; filter out x == 0 first"
            )
        if np.any(ma <= 0):
            raise ValueError("mean_spend must be > 0 for every customer in the fit")
    else:
        if np.any(xa < 0):
            raise ValueError("x (number of repeat purchases) must be >= 0")
        if np.any((xa > 0) & (ma <= 0)):
            raise ValueError("mean_spend must be > 0 where x > 0")
    return xa, ma


def _gg_loglik_terms(
    params: FloatArray, x: FloatArray, z: FloatArray, with_grad: bool
) -> tuple[FloatArray, FloatArray | None]:
    """Per-customer log density of the mean spend z given x (Fader-Hardie 2013, eq. 5)."""
    p, q, v = (float(val) for val in params)
    px = p * x
    log_vxz = np.log(v + x * z)
    ll = (
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + q * math.log(v)
        + px * np.log(x)
        + (px - 1.0) * np.log(z)
        - (px + q) * log_vxz
    )
    if not with_grad:
        return ll, None
    psi_pq = special.digamma(px + q)
    grad = np.empty((3, x.size))
    grad[0] = x * (psi_pq - special.digamma(px) + np.log(x) + np.log(z) - log_vxz)
    grad[1] = psi_pq - special.digamma(q) + math.log(v) - log_vxz
    grad[2] = q / v - (px + q) / (v + x * z)
    return ll, grad


def fit_gamma_gamma(x: ArrayLike, mean_spend: ArrayLike) -> GammaGammaFit:
    """Fit the Gamma-Gamma spend model by maximum likelihood on customers with x > 0.

    ``x``: repeat purchases (all > 0), ``mean_spend``: their average repeat-transaction value.
    """
    xa, za = _validate_spend(x, mean_spend, for_fit=True)
    n = xa.size

    def objective(theta: FloatArray) -> tuple[float, FloatArray]:
        params = np.exp(theta)
        ll, grad = _gg_loglik_terms(params, xa, za, with_grad=True)
        assert grad is not None
        value = -float(np.sum(ll)) / n
        if not np.isfinite(value):
            return 1e300, np.zeros(3)
        return value, -(grad.sum(axis=1) * params) / n

    # Start: p = 1, q = 2, v so that the population mean p v / (q - 1) matches the sample mean.
    start = np.log(np.array([1.0, 2.0, float(np.mean(za))]))
    theta, converged, _ = _minimise(objective, start, 3)
    params = np.exp(theta)
    ll, _ = _gg_loglik_terms(params, xa, za, with_grad=False)
    p, q, v = (float(val) for val in params)
    at_bound = bool(np.any(np.abs(theta) >= _LOG_BOUND - 1e-6))
    return GammaGammaFit(
        p=p,
        q=q,
        v=v,
        log_likelihood=float(np.sum(ll)),
        n_customers=n,
        converged=converged and not at_bound,
    )


def expected_spend(fit: GammaGammaFit, x: ArrayLike, mean_spend: ArrayLike) -> FloatArray:
    """E[average transaction value | x, mean_spend] = p (v + x zbar) / (p x + q - 1).

    A weighted average of the population mean ``p v / (q - 1)`` and the customer's own mean;
    equal to the population mean where x == 0 (``mean_spend`` is ignored there).
    Raises ``ValueError`` where the expectation does not exist (p x + q <= 1, e.g. q <= 1, x = 0).
    """
    _check_gg(fit)
    xa, ma = _validate_spend(x, mean_spend, for_fit=False)
    denom = fit.p * xa + fit.q - 1.0
    if np.any(denom <= 0):
        raise ValueError(
            "expected spend is infinite where p*x + q <= 1 (q <= 1 makes the population mean "
            "infinite for customers with x == 0)"
        )
    z = np.where(xa > 0, ma, 0.0)
    return np.asarray(fit.p * (fit.v + xa * z) / denom, dtype=np.float64)


# --------------------------------------------------------------------------- CLV


def customer_lifetime_value(
    bgnbd: BgNbdFit,
    gg: GammaGammaFit,
    x: ArrayLike,
    t_x: ArrayLike,
    T: ArrayLike,
    mean_spend: ArrayLike,
    horizon: float,
    discount_rate_per_period: float = 0.0,
) -> FloatArray:
    """Expected revenue from each customer's repeat purchases over the next ``horizon`` periods.

    Simplification: CLV = E[purchases] x E[spend per purchase], valid because the Gamma-Gamma
    model assumes spend independent of the purchase process. No margin, no first purchase,
    nothing after the horizon.

    With ``discount_rate_per_period`` d > 0 the horizon is cut at the period boundaries
    0, 1, 2, ..., floor(horizon), horizon (one period = one time unit of ``T``); the expected
    purchases in period k, E[Y(k)] - E[Y(k-1)] from ``expected_purchases``, are discounted by
    (1 + d)^-k (end-of-period convention; a final partial period is discounted as period
    ceil(horizon)).
    """
    h = float(horizon)
    if not math.isfinite(h) or h < 0:
        raise ValueError(f"horizon must be finite and >= 0, got {horizon!r}")
    d = float(discount_rate_per_period)
    if not math.isfinite(d) or d < 0:
        raise ValueError(f"discount_rate_per_period must be finite and >= 0, got {d!r}")
    xa, txa, Ta = _validate_rft(x, t_x, T, for_fit=False)
    spend = expected_spend(gg, xa, mean_spend)
    if d == 0.0:
        purchases = expected_purchases(bgnbd, h, xa, txa, Ta)
    else:
        boundaries = np.arange(0.0, math.floor(h) + 1.0)
        if boundaries[-1] < h:
            boundaries = np.append(boundaries, h)
        purchases = np.zeros(np.broadcast(xa, txa, Ta).shape)
        previous = np.zeros_like(purchases)
        for k, edge in enumerate(boundaries[1:], start=1):
            current = expected_purchases(bgnbd, float(edge), xa, txa, Ta)
            purchases = purchases + (current - previous) / (1.0 + d) ** k
            previous = current
    return np.asarray(purchases * spend, dtype=np.float64)

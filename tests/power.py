"""Power and sample-size calculations for the statistical tests (plain functions, no tests here).

Every statistical test in the suite fixes its false-fail rate α before it runs and names a wrong
answer it must catch with probability ≥ 1 - β; the functions here turn (α, β, wrong answer) into a
number of draws or replications, and into the critical values the tests compare against.

KS / DKW. The Dvoretzky–Kiefer–Wolfowitz inequality with Massart's constant says, for n i.i.d.
draws from a continuous F and every n, P(√n sup|F_n - F| > c) ≤ 2 exp(-2c²). So

* rejecting when √n D_n > c_α with c_α = sqrt(log(2/α) / 2) fails a correct sampler with
  probability ≤ α, at any n (no asymptotics);
* if the draws come from G ≠ F with D* = sup|G - F|, then by the triangle inequality
  D_n ≥ D* - sup|F_n - G|, and sup|F_n - G| ≤ c_β / √n with probability ≥ 1 - β. The test
  therefore rejects with probability ≥ 1 - β once √n D* ≥ c_α + c_β, i.e.
  n ≥ ((c_α + c_β) / D*)². This is conservative: the true power at that n is much higher.

χ² (Pearson). Under a local alternative p' the statistic is approximately noncentral χ²_k with
noncentrality λ = n Σ (p'_i - p_i)² / p_i; the sample size is the smallest n whose
P(ncx2(k, λ) > χ²_k quantile at 1 - α) reaches 1 - β.

Scale of a χ² statistic. If R independent z-scores are N(0, σ²) and the test assumes σ = 1,
T = Σ z² ~ σ² χ²_R; a two-sided test at α rejects outside the α/2 and 1 - α/2 quantiles of χ²_R.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.stats


def dkw_critical_value(alpha: float) -> float:
    """c with 2 exp(-2c²) = α: P(√n sup|F_n - F| > c) ≤ α for every n (DKW–Massart)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1); got {float(alpha)}")
    return math.sqrt(math.log(2.0 / alpha) / 2.0)


def ks_sample_size(distance: float, alpha: float, beta: float) -> int:
    """Draws n so that the DKW test at level α rejects a law at KS distance ``distance`` with
    probability ≥ 1 - β: n = ceil(((c_α + c_β) / D*)²)."""
    if not 0.0 < distance <= 1.0:
        raise ValueError(f"distance must lie in (0, 1]; got {float(distance)}")
    return math.ceil(((dkw_critical_value(alpha) + dkw_critical_value(beta)) / distance) ** 2)


def scale_error_distance(
    cdf: Callable[[np.ndarray], np.ndarray], delta: float, grid: np.ndarray
) -> float:
    """D* = max over ``grid`` of |F(x) - F(x / (1 + δ))|: the KS distance between X and (1 + δ)X.

    A maximum over a grid is at most the true supremum, so a sample size computed from it is
    conservative (too large, never too small). ``cdf`` is evaluated in float64.
    """
    grid = np.asarray(grid, np.float64)
    return float(np.max(np.abs(cdf(grid) - cdf(grid / (1.0 + delta)))))


def ks_statistic(draws: np.ndarray, cdf: Callable[[np.ndarray], np.ndarray]) -> float:
    """sup_x |F_n(x) - F(x)| of 1-D draws against a float64 CDF (ties handled: steps at ties)."""
    x = np.sort(np.asarray(draws, np.float64).ravel())
    num = x.shape[0]
    f = cdf(x)
    above = np.arange(1, num + 1) / num - f  # F_n at x_(i) is at least i / n
    below = f - np.arange(num) / num  # F_n just left of x_(i) is at most (i - 1) / n
    return float(max(above.max(), below.max()))


def ks_rejects(draws: np.ndarray, cdf: Callable[[np.ndarray], np.ndarray], alpha: float) -> bool:
    """The DKW test: True when √n D_n > c_α, which a correct sampler does with probability ≤ α."""
    num = np.asarray(draws).size
    return math.sqrt(num) * ks_statistic(draws, cdf) > dkw_critical_value(alpha)


def chi_square_power(
    num: int, probs: np.ndarray, wrong: np.ndarray, alpha: float, dof: int | None = None
) -> float:
    """Approximate power of Pearson's χ² test at level α against ``wrong`` with n draws.

    ``probs`` and ``wrong`` are over the same cells (all probs > 0); dof defaults to K - 1. For
    tests that pool several rows of n draws each (a transition matrix), pass the rows' cells
    concatenated and dof = Σ (K_i - 1): the noncentrality n Σ (p' - p)² / p adds up over rows.
    """
    probs, wrong = np.asarray(probs, np.float64).ravel(), np.asarray(wrong, np.float64).ravel()
    dof = probs.shape[0] - 1 if dof is None else int(dof)
    noncentrality = num * np.sum((wrong - probs) ** 2 / probs)
    critical = scipy.stats.chi2.isf(alpha, dof)
    return float(scipy.stats.ncx2.sf(critical, dof, noncentrality))


def _smallest(accept: Callable[[int], bool]) -> int:
    """Smallest integer n >= 1 with ``accept(n)``, for an ``accept`` monotone in n."""
    low, high = 0, 1
    while not accept(high):
        low, high = high, 2 * high
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if accept(mid) else (mid, high)
    return high


def chi_square_sample_size(
    probs: np.ndarray, wrong: np.ndarray, alpha: float, beta: float, dof: int | None = None
) -> int:
    """Smallest n with ``chi_square_power(n, probs, wrong, alpha, dof) >= 1 - beta``."""
    return _smallest(lambda n: chi_square_power(n, probs, wrong, alpha, dof) >= 1.0 - beta)


def shift_between(probs: np.ndarray, i: int, j: int, shift: float) -> np.ndarray:
    """``probs`` with ``shift`` of probability moved from category i to category j."""
    wrong = np.array(probs, np.float64)
    wrong[i] -= shift
    wrong[j] += shift
    return wrong


def hardest_shift(probs: np.ndarray, shift: float) -> np.ndarray:
    """The shift of ``shift`` between two categories that χ² detects worst: the two largest.

    The noncentrality of moving s from i to j is n s² (1/p_i + 1/p_j), smallest for the two
    largest p; a sample size that catches this shift catches every other shift of the same size.
    """
    order = np.argsort(np.asarray(probs))
    return shift_between(probs, int(order[-1]), int(order[-2]), shift)


def chi2_interval(dof: int, alpha: float) -> tuple[float, float]:
    """The α/2 and 1 - α/2 quantiles of χ²_dof: a two-sided acceptance region at level α."""
    return float(scipy.stats.chi2.ppf(alpha / 2, dof)), float(scipy.stats.chi2.isf(alpha / 2, dof))


def scaled_chi2_power(dof: int, variance_ratio: float, alpha: float) -> float:
    """P(the two-sided χ²_dof test at α rejects) when the statistic is variance_ratio · χ²_dof."""
    low, high = chi2_interval(dof, alpha)
    return float(
        scipy.stats.chi2.cdf(low / variance_ratio, dof)
        + scipy.stats.chi2.sf(high / variance_ratio, dof)
    )


def scaled_chi2_dof(variance_ratios: list[float], alpha: float, beta: float) -> int:
    """Smallest dof R with power ≥ 1 - β against every ratio in ``variance_ratios``."""
    return _smallest(
        lambda dof: (
            dof >= 2
            and min(scaled_chi2_power(dof, r, alpha) for r in variance_ratios) >= 1.0 - beta
        )
    )


def num_standard_errors(alpha: float, num_checks: int = 1) -> float:
    """k such that |estimate - truth| < k·SE for all ``num_checks`` checks fails with
    probability ≤ α under normality: the two-sided normal quantile at α / num_checks (Bonferroni).
    """
    if not 0.0 < alpha < 1.0 or num_checks < 1:
        raise ValueError(
            f"need 0 < alpha < 1 and num_checks >= 1; got {float(alpha)}, {num_checks}"
        )
    return float(scipy.stats.norm.isf(alpha / (2 * num_checks)))


def correlation_sample_size(rho: float, alpha: float, beta: float, num_checks: int = 1) -> int:
    """n so that |r| < k/√n (k = num_standard_errors(alpha, num_checks)) catches |ρ| = rho with
    probability ≥ 1 - β: √n r is ≈ N(√n ρ, 1) for small ρ, so n = ((k + z_β) / ρ)²."""
    k = num_standard_errors(alpha, num_checks)
    return math.ceil(((k + float(scipy.stats.norm.isf(beta))) / rho) ** 2)


def pool_small_cells(
    probs: np.ndarray, wrong: np.ndarray, num: int, min_expected: float = 5.0
) -> tuple[np.ndarray, np.ndarray]:
    """Cells with expected count n·p < ``min_expected`` merged into one (as the tests pool them)."""
    probs, wrong = np.asarray(probs, np.float64).ravel(), np.asarray(wrong, np.float64).ravel()
    probs, wrong = probs / probs.sum(), wrong / wrong.sum()
    small = num * probs < min_expected
    pooled_p = np.append(probs[~small], probs[small].sum())
    pooled_w = np.append(wrong[~small], wrong[small].sum())
    keep = pooled_p > 0
    return pooled_p[keep], pooled_w[keep]


def pooled_chi_square_sample_size(
    probs: np.ndarray, wrong: np.ndarray, alpha: float, beta: float, min_expected: float = 5.0
) -> int:
    """Smallest n (by bisection) whose χ² test, with cells of expected count < ``min_expected``
    pooled as at that n, has power ≥ 1 - β against ``wrong`` at level α. Pooling changes with n,
    so power is only nearly monotone in n; the returned n is one where the power was verified."""

    def enough(num: int) -> bool:
        pooled_p, pooled_w = pool_small_cells(probs, wrong, num, min_expected)
        return len(pooled_p) > 1 and chi_square_power(num, pooled_p, pooled_w, alpha) >= 1 - beta

    return _smallest(enough)


def stationary_solve_atol(matrix: np.ndarray) -> float:
    """Float32 error bound of ``markov.stationary_distribution(matrix)`` (not a power calculation,
    shared by the chain tests): 2 S κ eps for the lstsq solve of [Tᵀ - I; 1ᵀ] π = e, with κ the
    float64 condition number over the nonzero singular values (the minimum-norm solution for
    reducible chains), plus S eps for the clip and renormalisation and half an ulp for a
    reference rounded to float32."""
    eps = float(np.finfo(np.float32).eps)
    matrix = np.asarray(matrix, np.float64)
    size = matrix.shape[0]
    system = np.vstack([matrix.T - np.eye(size), np.ones((1, size))])
    singular = np.linalg.svd(system, compute_uv=False)
    singular = singular[singular > 1e-12 * singular[0]]  # rank cut far above float64 noise
    return (2 * size * singular[0] / singular[-1] + size + 0.5) * eps

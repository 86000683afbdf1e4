"""ESS, autocorrelation, split and nested R-hat.

Kinds of check:
* exact agreement (float32 round-off) with TFP's JAX substrate for the ``"tfp"`` variants, and
  with a direct float64 NumPy implementation of Vehtari et al. (2021)'s formulas (written below,
  loops and ``np.correlate``, no FFT) for the rank-normalised ones;
* exact integer ranks and float64-accurate normal scores past 2^23 draws per parameter, where
  float32 ranks used to round the top score to inf;
* statistics against theory on AR(1) chains, x_t = rho x_{t-1} + sqrt(1 - rho^2) e_t, whose ESS
  for the mean is S (1 - rho) / (1 + rho) for S draws, with tolerances from standard errors;
* R-hat of iid normal chains inside bounds from the F distribution, and above them, with a stated
  power, when one chain is shifted;
* stuck chains: R-hat inf, ESS 0, a warning naming the chains; constant parameters: NaN.

Unit roundoff: U32 = 2^-24 (float32), the unit of every float32 tolerance below.
"""

from __future__ import annotations

import functools
import math
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from nflows_jax.sampling.diagnostics import (
    StuckChainWarning,
    _rank_normalize,
    _rank_sums,
    _split_chains,
    _xla_rank_sums,
    autocorrelation,
    effective_sample_size,
    nested_rhat,
    split_rhat,
    stuck_chains,
)

U32 = 2.0**-24


@functools.partial(jax.jit, static_argnums=(1, 2, 4))
def ar1_chains(key, num_chains: int, num_draws: int, rho: float, num_columns: int) -> jax.Array:
    """(C, T, E) stationary AR(1) chains with unit marginal variance, E independent columns."""
    noise = jax.random.normal(key, (num_draws, num_chains, num_columns))

    def step(x, e):
        x = rho * x + jnp.sqrt(1.0 - rho**2) * e
        return x, x

    _, xs = jax.lax.scan(step, noise[0], noise[1:])
    return jnp.moveaxis(jnp.concatenate([noise[:1], xs], axis=0), 0, 1)


# ------------------------------------------------------------------------------------------------
# A direct float64 implementation of Vehtari et al. (2021), for one scalar quantity (C, T).
# ------------------------------------------------------------------------------------------------


def ref_split(x: np.ndarray) -> np.ndarray:
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, x.shape[1] - half :]], axis=0)


def ref_rank_normalize(x: np.ndarray) -> np.ndarray:
    ranks = stats.rankdata(x, method="average").reshape(x.shape)
    return stats.norm.ppf((ranks - 3 / 8) / (x.size + 1 / 4))


def ref_ess(x: np.ndarray, *, paper_lags: bool = False, improved: bool = True) -> float:
    """Multi-chain ESS as Stan (and ArviZ) compute it, eq. (10)-(11) of Vehtari et al. with
    Geyer's initial positive + monotone sequences. The defaults are Stan's; the switches give
    the literal eq. (10) (``paper_lags``: s_m² ρ_{t,m} = N/(N-1) acov_m(t) at every lag rather
    than the biased acov_m(t) for t ≥ 1) and drop Stan's improved estimate (``improved``: add
    max(ρ_{2K}, 0) for the first dropped pair K)."""
    num_chains, n = x.shape
    centred = x - x.mean(axis=1, keepdims=True)
    acov = np.stack([np.correlate(c, c, mode="full")[n - 1 :] / n for c in centred])
    within = acov[:, 0].mean() * n / (n - 1)
    var_plus = (n - 1) / n * within + (x.mean(1).var(ddof=1) if num_chains > 1 else 0.0)
    lagged = acov.mean(axis=0) * (n / (n - 1) if paper_lags else 1.0)
    rho = 1 - (within - lagged) / var_plus
    rho[0] = 1.0
    total, previous, k = -1.0, np.inf, 0
    while k < n // 2 and rho[2 * k] + rho[2 * k + 1] > 0:
        previous = min(previous, rho[2 * k] + rho[2 * k + 1])
        total += 2 * previous
        k += 1
    if improved and k < n // 2:
        total += max(rho[2 * k], 0.0)
    total = max(total, 1 / np.log10(num_chains * n))
    return num_chains * n / total


def ref_rhat(x: np.ndarray) -> float:
    n = x.shape[1]
    within = x.var(axis=1, ddof=1).mean()
    var_plus = (n - 1) / n * within + x.mean(1).var(ddof=1)
    return float(np.sqrt(var_plus / within))


def ref_rank_rhat(x: np.ndarray) -> float:
    bulk = ref_rhat(ref_rank_normalize(ref_split(x)))
    tail = ref_rhat(ref_rank_normalize(ref_split(np.abs(x - np.median(x)))))
    return max(bulk, tail)


def ref_nested_rhat(x: np.ndarray, num_superchains: int) -> float:
    """Margossian et al. (2024): sqrt(1 + B / W) from superchain, chain and draw variances."""
    groups = np.split(x, num_superchains, axis=0)
    superchain_means = np.array([g.mean() for g in groups])
    between = superchain_means.var(ddof=1)
    within = np.mean([g.mean(1).var(ddof=1) + g.var(axis=1, ddof=1).mean() for g in groups])
    return float(np.sqrt(1 + between / within))


# ------------------------------------------------------------------------------------------------
# The sampling distribution of split R-hat for iid normal chains.
#
# M split chains of N iid N(mu_j, 1) draws: W ~ chi2_{M(N-1)} / (M(N-1)) and N var_j(chain means)
# ~ noncentral chi2_{M-1}(lambda) / (M-1), independent, lambda = N sum_j (mu_j - mean mu)^2. So
# F = N (B/N) / W ~ F(M-1, M(N-1), lambda) and classic R-hat^2 = var+/W = (N-1)/N + F/N; TFP's
# statistic is (M+1)/M R-hat^2 - (N-1)/(M N). Both are increasing functions of F.
# ------------------------------------------------------------------------------------------------


def rhat_from_f(f: np.ndarray, m: int, n: int, variant: str) -> np.ndarray:
    """The R-hat (``variant``) of M split chains of N draws whose ANOVA F statistic is ``f``."""
    squared = (n - 1) / n + np.asarray(f, np.float64) / n
    if variant == "tfp":
        return (m + 1) / m * squared - (n - 1) / (m * n)
    return np.sqrt(squared)


def f_quantiles(alpha: float, m: int, n: int) -> tuple[float, float]:
    """The alpha/2 and 1 - alpha/2 quantiles of F(M-1, M(N-1))."""
    lo, hi = stats.f.ppf([alpha / 2, 1 - alpha / 2], m - 1, m * (n - 1))
    return float(lo), float(hi)


def shifted_chain_power(alpha: float, m: int, n: int, delta: float) -> float:
    """P(F > upper alpha/2 quantile) when 2 of the M split chains (one chain's halves) are
    shifted by ``delta`` sd: lambda = N [2 (delta (1 - 2/M))^2 + (M-2) (2 delta/M)^2]
    = 2 N delta^2 (M-2)/M."""
    _, hi = f_quantiles(alpha, m, n)
    noncentrality = 2 * n * delta**2 * (m - 2) / m
    return float(stats.ncf.sf(hi, m - 1, m * (n - 1), noncentrality))


# ------------------------------------------------------------------------------------------------
# Every test uses draws of one shape, so each jitted diagnostic compiles once for the whole file.

NUM_CHAINS, NUM_DRAWS, NUM_COLUMNS = 4, 1001, 32  # an odd T exercises the split


def ar1(seed: int, rho: float) -> jax.Array:
    return ar1_chains(jax.random.key(seed), NUM_CHAINS, NUM_DRAWS, rho, NUM_COLUMNS)


@pytest.fixture(scope="module")
def ar_draws() -> jax.Array:
    """AR(1) with rho = 0.5; the second half of the columns rounded to a 0.5 grid so that ties
    (as a Metropolis chain's rejections make) are exercised."""
    draws = ar1(0, 0.5)
    half = NUM_COLUMNS // 2
    return draws.at[..., half:].set(jnp.round(draws[..., half:] * 2) / 2)


def test_tfp_variants_agree_with_tensorflow_probability(ar_draws):
    tfp = pytest.importorskip("tensorflow_probability.substrates.jax")

    @jax.jit
    def tfp_diagnostics(draws):
        time_major = jnp.swapaxes(draws, 0, 1)
        ess = tfp.mcmc.effective_sample_size(
            time_major, filter_beyond_positive_pairs=True, cross_chain_dims=1
        )
        return ess, tfp.mcmc.potential_scale_reduction(time_major, split_chains=True)

    expected_ess, expected_rhat = tfp_diagnostics(ar_draws)
    # Two float32 programs for one formula. ESS: 2048-point FFTs have relative round-off about
    # log2(2048) U32 ~ 1e-6 per lag, summed over the ~10 kept lags and divided by a tau near 3:
    # ~1e-5, bounded by 1e-4. R-hat: two variances over 500 draws each (rounding ~ sqrt(500) U32
    # ~ 1.3e-6 relative), near-cancelling nothing (R-hat ~ 1): rtol 1e-5.
    np.testing.assert_allclose(
        effective_sample_size(ar_draws, variant="tfp"), expected_ess, rtol=1e-4
    )
    np.testing.assert_allclose(split_rhat(ar_draws, variant="tfp"), expected_rhat, rtol=1e-5)


def test_rank_normalised_variants_agree_with_the_papers_formulas(ar_draws):
    x64 = np.asarray(ar_draws, dtype=np.float64)
    columns = [x64[..., j] for j in range(NUM_COLUMNS)]
    expected_bulk = [ref_ess(ref_rank_normalize(ref_split(x))) for x in columns]
    expected_mean = [ref_ess(ref_split(x)) for x in columns]
    expected_rhat = [ref_rank_rhat(x) for x in columns]
    expected_classic = [ref_rhat(ref_split(x)) for x in columns]
    # float32 against float64 on the same draws; the same round-off budgets as the TFP test.
    np.testing.assert_allclose(effective_sample_size(ar_draws), expected_bulk, rtol=1e-4)
    np.testing.assert_allclose(
        effective_sample_size(ar_draws, variant="mean"), expected_mean, rtol=1e-4
    )
    np.testing.assert_allclose(split_rhat(ar_draws), expected_rhat, rtol=1e-5)
    np.testing.assert_allclose(split_rhat(ar_draws, variant="classic"), expected_classic, rtol=1e-5)


def test_rank_sums_are_exact_average_ranks_on_the_host_and_the_xla_path():
    """Ranks are integers (first + last sorted position of a tie group), equal to scipy's average
    ranks exactly: on CPU (NumPy via pure_callback, also under vmap and for float64 input) and on
    the XLA sort path other backends take. -0.0 and +0.0 tie, as they compare equal."""
    rows = jnp.round(jax.random.normal(jax.random.key(8), (3, 10_001)) * 8) / 8  # many ties
    rows = rows.at[0, :5].set(-0.0).at[0, 5:10].set(0.0)
    expected = 2 * stats.rankdata(np.asarray(rows), axis=-1) - 2
    np.testing.assert_array_equal(jax.jit(_rank_sums)(rows), expected)
    np.testing.assert_array_equal(jax.jit(_xla_rank_sums)(rows), expected)
    batched = jax.vmap(_rank_sums)(jnp.stack([rows, -rows]))
    np.testing.assert_array_equal(batched[0], expected)
    np.testing.assert_array_equal(batched[1], 2 * stats.rankdata(-np.asarray(rows), axis=-1) - 2)
    from nflows_jax.sampling.diagnostics import _host_rank_sums

    as_float64 = np.asarray(rows, np.float64)  # the argsort branch (x64 mode)
    np.testing.assert_array_equal(_host_rank_sums(as_float64, np.dtype(np.int64)), expected)


def test_rank_normalisation_is_exact_past_2_to_the_23_draws():
    """9000 chains x 1000 draws: S = 9e6 > 2^23 draws per parameter, where float32 ranks made
    (S - 3/8) / (S + 1/4) round to 1 and the top normal score inf (so ESS and R-hat NaN).

    Normal scores against float64 (scipy's ranks, ndtri): the probability below 1/2 is formed
    with 3 float32 roundings (|dp/p| <= 3 U32) and dz = (p / phi(z)) dp/p with p / phi(z) <=
    Phi(0)/phi(0) = 1.2533 (Mills' ratio, largest at z = 0); float32 ndtri adds a few ulps of
    |z|. Bound: 16 U32 (1.2533 + |z|), four times that budget, still ~1e5 times below the old
    error at the top (inf) and ~1e3 below a float32 p's error there."""
    num_chains, num_draws = 9000, 1000
    total = num_chains * num_draws
    draws = jax.random.normal(jax.random.key(7), (num_chains, num_draws))
    halves = _split_chains(draws[..., None], "middle")  # T even: every draw, (2C, T/2, 1)
    ranks = stats.rankdata(np.asarray(halves, np.float64).ravel())
    sums = jax.jit(_rank_sums)(halves.reshape(1, total))
    np.testing.assert_array_equal(sums[0], 2 * ranks - 2)
    z = np.asarray(jax.jit(_rank_normalize)(halves), np.float64).ravel()
    z_ref = special.ndtri((ranks - 3 / 8) / (total + 1 / 4))
    assert np.isfinite(z).all()
    np.testing.assert_array_less(np.abs(z - z_ref), 16 * U32 * (1.2533 + np.abs(z_ref)))

    # ESS: finite, and the mean-ESS of the float64 scores (same split arrangement). Scores
    # differ by < 1e-6 relative; the FFT budget of the tests above gives rtol 1e-4.
    ess = float(effective_sample_size(draws))
    scores = z_ref.reshape(2 * num_chains, num_draws // 2).astype(np.float32)
    unsplit = np.concatenate([scores[:num_chains], scores[num_chains:]], axis=1)
    np.testing.assert_allclose(ess, effective_sample_size(unsplit, variant="mean"), rtol=1e-4)
    # R-hat: finite; at least the bulk value of the float64 scores (max of bulk and tail; the
    # scores agree to 1e-6, R-hat ~ 1 so rounding of the ratio is a few U32); at most the F
    # bound at false-fail rate 1e-4 (bulk and tail at 5e-5 each), plus float32 summation
    # round-off of the two variances of S terms, 4 sqrt(S) U32 ~ 7e-4 as a random-walk bound.
    rhat = float(split_rhat(draws))
    bulk = float(split_rhat(unsplit, variant="classic"))
    m, n = 2 * num_chains, num_draws // 2
    upper = rhat_from_f(f_quantiles(1e-4, m, n)[1], m, n, "classic")
    assert bulk * (1 - 8 * U32) <= rhat < upper + 4 * math.sqrt(total) * U32, (rhat, bulk, upper)


def measure_ess_bias(replications: int = 100) -> None:
    """Not a test: prints the mean and standard error of ESS / theory over ``replications`` x 32
    AR(1) columns of the test shape, per rho and variant (how the bias bound below was found).

    ``python -c "import tests.test_diagnostics as t; t.measure_ess_bias()"`` gave, with 3200
    columns each (standard errors 0.001-0.003): rho 0: 0.986 bulk/mean, 0.968 tfp; rho 0.5:
    0.996, 0.972; rho 0.9: 1.009 bulk, 1.006 mean, 0.974 tfp. Largest |bias| 0.032 (TFP's
    estimator without the monotone step or the split), so ESS_BIAS_BOUND = 0.04 covers it with
    a margin of more than 2 standard errors.
    """
    for rho in (0.0, 0.5, 0.9):
        draws = ar1_chains(jax.random.key(123), NUM_CHAINS, NUM_DRAWS, rho, 32 * replications)
        theory = NUM_CHAINS * NUM_DRAWS * (1 - rho) / (1 + rho)
        for variant in ("bulk", "mean", "tfp"):
            rel = np.asarray(effective_sample_size(draws, variant=variant), np.float64) / theory
            print(rho, variant, rel.mean(), rel.std(ddof=1) / math.sqrt(rel.size))


ESS_BIAS_BOUND = 0.04  # |E[ESS] / theory - 1| at this shape; see measure_ess_bias


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_ess_of_ar1_chains_matches_theory(rho):
    """The mean of the 32 columns' independent ESS estimates, over S (1 - rho)/(1 + rho), is 1
    within ESS_BIAS_BOUND (the estimators' finite-sample bias, measured: measure_ess_bias) plus
    t_31 standard errors (the 32 estimates' spread / sqrt(32)) at a two-sided false-fail rate of
    1e-4 / 9 per check (9 checks: 1e-4 in all). rho = 0 is the iid case, ESS ~ S.

    Power: the named wrong answers are far outside. Dropping the factor 2 in tau = 1 + 2 sum rho
    gives ESS x1.5 (rho 0.5) and x1.9 (rho 0.9); ignoring autocorrelation x3 and x19; counting
    one chain's draws x0.25 (every rho). The band's half-width is about 0.04 + 5.2 x 0.034 =
    0.22 (rho 0.9, the per-column spread 0.19 measured above), so each is rejected with
    probability ~1."""
    draws = ar1(1, rho)
    theory = NUM_CHAINS * NUM_DRAWS * (1 - rho) / (1 + rho)
    t_quantile = stats.t.ppf(1 - 1e-4 / 9 / 2, NUM_COLUMNS - 1)
    for variant in ("bulk", "mean", "tfp"):
        ess = np.asarray(effective_sample_size(draws, variant=variant), dtype=np.float64)
        chex.assert_shape(ess, (NUM_COLUMNS,))
        relative = ess / theory
        standard_error = relative.std(ddof=1) / np.sqrt(NUM_COLUMNS)
        bound = ESS_BIAS_BOUND + t_quantile * standard_error
        assert abs(relative.mean() - 1) < bound, (variant, float(relative.mean()), float(bound))


# R-hat of iid chains: 32 columns x 3 variants = 96 values, false-fail rate 1e-4 for the test.
RHAT_ALPHA = 1e-4 / (NUM_COLUMNS * 3)


def rhat_bounds(variant: str, m: int, n: int) -> tuple[float, float]:
    """Two-sided bounds on ``variant`` R-hat at false-fail rate RHAT_ALPHA for iid chains.

    "classic" and "tfp" are exact (the F law). "rank" is max(bulk, tail), each the classic
    statistic of normal scores of a uniformly random permutation (iid draws): van der Waerden's
    F statistic, F(M-1, M(N-1)) to within its O(1/N) large-sample error at N = 500. Three ways to
    fail (bulk low, bulk high, tail high), so each is given 1/3 of the rate.
    """
    alpha = RHAT_ALPHA * 2 / 3 if variant == "rank" else RHAT_ALPHA
    lo, hi = f_quantiles(alpha, m, n)
    formula = "tfp" if variant == "tfp" else "classic"
    return float(rhat_from_f(lo, m, n, formula)), float(rhat_from_f(hi, m, n, formula))


def test_iid_draws_give_rhat_inside_the_f_bounds():
    """4 chains of 1001 iid N(0, 1) draws per column, split into M = 8 chains of N = 500: every
    R-hat lies inside the two-sided F bounds (false-fail rate 1e-4 for all 96 values)."""
    draws = ar1(2, 0.0)
    m, n = 2 * NUM_CHAINS, NUM_DRAWS // 2
    for variant in ("rank", "classic", "tfp"):
        lo, hi = rhat_bounds(variant, m, n)
        rhat = np.asarray(split_rhat(draws, variant=variant), np.float64)
        assert np.all((lo < rhat) & (rhat < hi)), (variant, lo, hi, rhat.min(), rhat.max())


def minimum_split_draws(delta: float, power: float, m: int) -> int:
    """Smallest N with P(every one of the 96 values exceeds its bound) >= ``power`` when one
    chain of M/2 is shifted by ``delta`` sd (exact noncentral F for classic/tfp)."""
    n = 2
    while shifted_chain_power(RHAT_ALPHA * 2 / 3, m, n, delta) ** (NUM_COLUMNS * 3) < power:
        n += 1
    return n


def test_one_shifted_chain_pushes_rhat_above_the_f_bound():
    """Named wrong answer: one of the 4 chains centred 0.5 sd away from the others. Its two halves
    make the ANOVA noncentral, lambda = 2 N delta^2 (M-2)/M = 187.5, and each R-hat exceeds the
    upper bound of the iid test with probability 1 - 6e-14 (classic/tfp exactly; rank to the
    large-sample approximation of rhat_bounds), all 96 with probability >= 0.99 once N >= the
    minimum_split_draws (264 draws per split chain); N = 500 here."""
    m, n = 2 * NUM_CHAINS, NUM_DRAWS // 2
    assert n >= minimum_split_draws(0.5, 0.99, m)
    draws = ar1(3, 0.0).at[0].add(0.5)
    for variant in ("rank", "classic", "tfp"):
        _, hi = rhat_bounds(variant, m, n)
        np.testing.assert_array_less(hi, split_rhat(draws, variant=variant))


def test_chains_with_different_means_give_large_rhat_and_small_ess():
    offsets = jnp.arange(float(NUM_CHAINS))[:, None, None]  # chain c centred at c
    draws = ar1(3, 0.0) + offsets
    m, n = 2 * NUM_CHAINS, NUM_DRAWS // 2
    for variant in ("rank", "classic", "tfp"):
        np.testing.assert_array_less(
            rhat_bounds(variant, m, n)[1], split_rhat(draws, variant=variant)
        )
    # ESS collapses: with iid draws inside chains, rho_t ~ (B/N) / var+ ~ 1.43 / 2.43 ~ 0.59 at
    # every lag, the pair sums never turn negative and tau ~ 0.59 T, so ESS ~ 4000 / 590 ~ 7,
    # far below 4000 draws; 100 is 14x that expectation, and 40x below the iid ESS.
    np.testing.assert_array_less(effective_sample_size(draws), 100)


def test_autocorrelation_of_ar1_is_rho_to_the_lag():
    """Pooled over the 8 series of two columns, r_k has Bartlett variance
    v_k = ((1 + rho^2)(1 - rho^(2k))/(1 - rho^2) - 2 k rho^(2k)) / (8 N) and, to first order,
    bias -(k rho^k + tau (1 - rho^k)) / N (the 1/N divisor and the removed mean, tau = (1 + rho)
    / (1 - rho)); we allow twice that bias for the ratio's own O(1/N) term. The bound is that
    allowance plus the normal quantile at a two-sided 1e-4 / 3 (3 lags) times sqrt(v_k)."""
    rho = 0.6
    draws = ar1(4, rho)
    acf = autocorrelation(draws)
    chex.assert_shape(acf, draws.shape)
    # x / x is exactly 1 in IEEE arithmetic; 4 U32 allows a reciprocal-multiply lowering.
    np.testing.assert_allclose(acf[:, 0], 1.0, rtol=4 * U32)
    # Same numbers as the direct sum (no FFT): 2048-point float32 FFT round-off, ~log2(2048) U32
    # ~ 7e-7 of the lag-0 value per lag; atol 1e-5.
    c = np.asarray(draws[0, :, 0], dtype=np.float64)
    c = c - c.mean()
    direct = np.correlate(c, c, mode="full")[NUM_DRAWS - 1 :] / (c @ c)
    np.testing.assert_allclose(acf[0, :50, 0], direct[:50], atol=1e-5)
    pooled = np.asarray(acf[:, :, :2], dtype=np.float64)
    tau = (1 + rho) / (1 - rho)
    z = stats.norm.ppf(1 - 1e-4 / 3 / 2)
    for lag in (1, 2, 3):
        r2 = rho ** (2 * lag)
        variance = ((1 + rho**2) * (1 - r2) / (1 - rho**2) - 2 * lag * r2) / (
            pooled.shape[0] * pooled.shape[2] * NUM_DRAWS
        )
        bias = 2 * (lag * rho**lag + tau * (1 - rho**lag)) / NUM_DRAWS
        assert abs(pooled[:, lag].mean() - rho**lag) < bias + z * np.sqrt(variance), lag


def nested_rhat_upper_bound(k: int, m: int, n: int, alpha: float) -> float:
    """Upper alpha quantile of nested R-hat for iid N(0, 1) draws (Satterthwaite).

    B ~ chi2_{K-1} / ((K-1) M N), independent of W (normal theory: means vs deviations), and
    W = mean_k(var_m(f_mk) + mean_m s_mk^2) has mean 1 + 1/N and variance
    2 / (K N^2 (M-1)) + 2 / (K M (N-1)); W / (1 + 1/N) ~ chi2_nu / nu with nu = 2 mean^2 / var
    matches both. Then M N (1 + 1/N) B / W ~ F(K-1, nu).
    """
    mean = 1 + 1 / n
    variance = 2 / (k * n**2 * (m - 1)) + 2 / (k * m * (n - 1))
    nu = 2 * mean**2 / variance
    return math.sqrt(1 + stats.f.ppf(1 - alpha, k - 1, nu) / (m * n * mean))


def test_nested_rhat_matches_formula_is_near_one_when_mixed_and_large_when_stuck():
    """K = 4 superchains of M = 16 chains of N = 10 iid N(0, 1) draws, 2 columns: nested R-hat is
    below its upper 1e-4 / 2 quantile per column (false-fail rate 1e-4). Named wrong answer: one
    superchain still at its start, 3 + 0.1 N(0, 1): B ~ var(3, 0, 0, 0) = 2.25 and W ~ (3 x 1.1
    + 0.011) / 4 = 0.83, so nested R-hat ~ sqrt(1 + 2.25 / 0.83) = 1.9, above 1.3 whatever the
    draws (B/W would have to drop by half)."""
    k, m, n = 4, 16, 10
    draws = jax.random.normal(jax.random.key(5), (k * m, n, 2))
    mixed = np.asarray(nested_rhat(draws, k))
    expected = [ref_nested_rhat(np.asarray(draws[..., j], np.float64), k) for j in range(2)]
    # float32 variances over <= 160 terms: relative round-off <= 160 U32 ~ 1e-5.
    np.testing.assert_allclose(mixed, expected, rtol=1e-5)
    np.testing.assert_array_less(mixed, nested_rhat_upper_bound(k, m, n, 1e-4 / 2))
    assert np.all(mixed >= 1.0)
    stuck = draws.at[:m].set(3.0 + 0.1 * draws[:m])
    np.testing.assert_array_less(1.3, nested_rhat(stuck, k))
    # One draw per chain is allowed when superchains hold several chains.
    assert np.isfinite(nested_rhat(draws[:, :1], k)).all()
    # A chain that rejects every proposal is normal for short chains: no NaN, the same formula.
    one_stuck = draws.at[3, :, 0].set(0.25)
    expected = ref_nested_rhat(np.asarray(one_stuck[..., 0], np.float64), k)
    np.testing.assert_allclose(nested_rhat(one_stuck, k)[0], expected, rtol=1e-5)
    # A constant parameter has no R-hat.
    assert np.isnan(nested_rhat(draws.at[:, :, 1].set(2.0), k)[1])


def test_diagnostics_work_inside_jit_and_vmap_and_trace_once(ar_draws):
    def summary(x):
        return effective_sample_size(x), nested_rhat(x, num_superchains=2)

    traced = jax.jit(chex.assert_max_traces(summary, n=1))
    # The same float32 formulas compiled into a bigger program: fusion may reassociate sums of
    # up to 2048 terms (~1e-6 relative, as in the FFT budget above): rtol 1e-5.
    chex.assert_trees_all_close(traced(ar_draws), summary(ar_draws), rtol=1e-5)
    traced(ar_draws + 1.0)  # same shapes: no retrace
    # vmap over a leading batch of draw sets gives each set its own result (same per-set sums:
    # a few U32 of reassociation, rtol 1e-6).
    batched = jax.vmap(functools.partial(split_rhat, variant="classic"))(
        jnp.stack([ar_draws, ar_draws[::-1] * 2.0])
    )
    np.testing.assert_allclose(batched[0], split_rhat(ar_draws, variant="classic"), rtol=1e-6)
    # The rank variants under vmap (pure_callback batched on the host) agree with eager calls.
    batched_bulk = jax.vmap(effective_sample_size)(jnp.stack([ar_draws, -ar_draws]))
    np.testing.assert_allclose(batched_bulk[0], effective_sample_size(ar_draws), rtol=1e-5)


@pytest.fixture(scope="module")
def stuck_draws(ar_draws) -> jax.Array:
    """Column 0: a constant parameter; 1: chain 2 stuck; 2: every chain stuck, at different
    values; 3: one NaN draw; the rest untouched."""
    per_chain = jnp.arange(float(NUM_CHAINS))[:, None]
    return (
        ar_draws.at[:, :, 0]
        .set(1.0)
        .at[2, :, 1]
        .set(0.3)
        .at[:, :, 2]
        .set(per_chain)
        .at[1, 7, 3]
        .set(jnp.nan)
    )


def test_stuck_chains_give_inf_rhat_zero_ess_and_a_warning_naming_them(ar_draws, stuck_draws):
    expected_mask = np.zeros((NUM_CHAINS, NUM_COLUMNS), bool)
    expected_mask[:, 0] = expected_mask[2, 1] = expected_mask[:, 2] = True
    np.testing.assert_array_equal(stuck_chains(stuck_draws), expected_mask)
    calls = [(effective_sample_size, v, 0.0) for v in ("bulk", "mean", "tfp")]
    calls += [(split_rhat, v, np.inf) for v in ("rank", "classic", "tfp")]
    for function, variant, stuck_value in calls:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            value = np.asarray(function(stuck_draws, variant=variant))
        assert [w.category for w in record] == [StuckChainWarning] * 2, record
        messages = " | ".join(str(w.message) for w in record)
        assert "parameter (1,): chains 2; parameter (2,): chains 0, 1, 2, 3." in messages
        assert "are constant" in messages and ": (0,)" in messages, messages
        assert np.isnan(value[0]) and np.isnan(value[3]), (function.__name__, variant)
        assert value[1] == stuck_value and value[2] == stuck_value, (function.__name__, variant)
        # The other columns are computed independently of these: bit-for-bit unchanged.
        clean = np.asarray(function(ar_draws, variant=variant))
        np.testing.assert_array_equal(value[4:], clean[4:])


def test_stuck_chains_are_reported_under_jit_without_a_warning(stuck_draws):
    with warnings.catch_warnings():
        warnings.simplefilter("error", StuckChainWarning)
        rhat = jax.jit(split_rhat)(stuck_draws)
        mask = jax.jit(stuck_chains)(stuck_draws)
    assert rhat[1] == np.inf and bool(mask[2, 1])
    # A multi-dimensional event is named by its index: column 1 of (4, 8) is (0, 1).
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        split_rhat(stuck_draws.reshape(NUM_CHAINS, NUM_DRAWS, 4, 8), variant="classic")
    messages = " | ".join(str(w.message) for w in record)
    assert "parameter (0, 1): chains 2; parameter (0, 2): chains 0, 1, 2, 3." in messages
    assert "are constant" in messages and ": (0, 0)" in messages, messages


def test_bad_shapes_and_options_raise_clear_errors():
    with pytest.raises(ValueError, match=r"\(C, T\)"):
        effective_sample_size(jnp.zeros(10))
    with pytest.raises(ValueError, match="at least 4 draws"):
        split_rhat(jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="at least 2 draws"):
        stuck_chains(jnp.zeros((4, 1)))
    with pytest.raises(ValueError, match="variant must be 'bulk', 'mean' or 'tfp', got 'tail'"):
        effective_sample_size(jnp.zeros((4, 10)), variant="tail")
    with pytest.raises(ValueError, match="variant must be 'rank', 'classic' or 'tfp'"):
        split_rhat(jnp.zeros((4, 10)), variant="bulk")
    with pytest.raises(ValueError, match=r"of 2147483648 draws per parameter needs 64-bit"):
        jax.eval_shape(effective_sample_size, jax.ShapeDtypeStruct((2**16, 2**15), jnp.float32))
    with pytest.raises(ValueError, match="multiple of num_superchains"):
        nested_rhat(jnp.zeros((6, 10)), 4)
    with pytest.raises(ValueError, match="num_superchains must be"):
        nested_rhat(jnp.zeros((6, 10)), 1)
    with pytest.raises(ValueError, match="several chains per superchain"):
        nested_rhat(jnp.zeros((4, 1)), 4)

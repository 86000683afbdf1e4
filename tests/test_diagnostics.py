"""ESS, autocorrelation, split and nested R-hat.

Three kinds of check:
* exact agreement (float32 round-off) with TFP's JAX substrate for the ``"tfp"`` variants, and
  with a direct float64 NumPy implementation of Vehtari et al. (2021)'s formulas (written below,
  loops and ``np.correlate``, no FFT) for the rank-normalised ones;
* statistics against theory on AR(1) chains, x_t = rho x_{t-1} + sqrt(1 - rho^2) e_t, whose ESS
  for the mean is S (1 - rho) / (1 + rho) for S draws, with tolerances from standard errors;
* R-hat near 1 for well-mixed chains (bounds from the F distribution) and large when not.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from nflows_jax.sampling.diagnostics import (
    autocorrelation,
    effective_sample_size,
    nested_rhat,
    split_rhat,
)


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


def ref_ess(x: np.ndarray) -> float:
    """Multi-chain ESS, eq. (10)-(11) with Geyer's initial positive + monotone sequences."""
    num_chains, n = x.shape
    acov = np.empty((num_chains, n))
    for m in range(num_chains):
        c = x[m] - x[m].mean()
        acov[m] = np.correlate(c, c, mode="full")[n - 1 :] / n
    s2 = acov[:, 0] * n / (n - 1)
    within = s2.mean()
    var_plus = (n - 1) / n * within + (x.mean(1).var(ddof=1) if num_chains > 1 else 0.0)
    # rho_t = 1 - (W - mean_m s_m^2 rho_{t,m}) / var+, rho_{t,m} = acov_m(t) / acov_m(0).
    rho = 1 - (within - np.mean(s2[:, None] * acov / acov[:, :1], axis=0)) / var_plus
    total, previous = -1.0, np.inf
    for k in range(n // 2):
        pair = rho[2 * k] + rho[2 * k + 1]
        if pair <= 0:
            break
        previous = min(previous, pair)
        total += 2 * previous
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
    # float32 FFTs of 2048 points: relative round-off ~1e-6 per lag, summed over ~10 lags.
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
    np.testing.assert_allclose(effective_sample_size(ar_draws), expected_bulk, rtol=1e-4)
    np.testing.assert_allclose(
        effective_sample_size(ar_draws, variant="mean"), expected_mean, rtol=1e-4
    )
    np.testing.assert_allclose(split_rhat(ar_draws), expected_rhat, rtol=1e-5)
    np.testing.assert_allclose(split_rhat(ar_draws, variant="classic"), expected_classic, rtol=1e-5)


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_ess_of_ar1_chains_matches_theory(rho):
    """The mean of the 32 columns' independent ESS estimates is within 5 of its standard errors
    (their spread / sqrt(32)) of S (1 - rho)/(1 + rho). rho = 0 is the iid case, ESS ~ S. The
    estimator's own finite-sample bias (about 1-2% here, from Geyer truncation) is well inside
    that, while a wrong lag weighting or a missing factor of 2 is not."""
    draws = ar1(1, rho)
    theory = NUM_CHAINS * NUM_DRAWS * (1 - rho) / (1 + rho)
    for variant in ("bulk", "mean", "tfp"):
        ess = np.asarray(effective_sample_size(draws, variant=variant), dtype=np.float64)
        chex.assert_shape(ess, (NUM_COLUMNS,))
        standard_error = ess.std(ddof=1) / np.sqrt(NUM_COLUMNS)
        assert abs(ess.mean() - theory) < 5 * standard_error, (variant, ess.mean(), theory)


def test_iid_draws_give_rhat_near_one():
    """For iid normal draws split into M chains of N, B/W ~ F(M-1, M(N-1)), so
    R-hat = sqrt(1 + (F - 1)/N) ~ 1 + (F - 1)/(2N); we bound |F - 1| by 5 sd = 5 sqrt(2/(M-1))."""
    draws = ar1(2, 0.0)
    m, n = 2 * NUM_CHAINS, NUM_DRAWS // 2
    bound = 5 * np.sqrt(2 / (m - 1)) / (2 * n)
    for variant in ("rank", "classic"):
        rhat = np.asarray(split_rhat(draws, variant=variant))
        np.testing.assert_array_less(np.abs(rhat - 1), bound)


def test_chains_with_different_means_give_large_rhat():
    offsets = jnp.arange(float(NUM_CHAINS))[:, None, None]  # chain c centred at c
    draws = ar1(3, 0.0) + offsets
    for variant in ("rank", "classic", "tfp"):
        # The iid bound above is below 1.002.
        np.testing.assert_array_less(1.2, split_rhat(draws, variant=variant))
    # ESS collapses: with iid draws inside chains, rho_t ~ (B/N) / var+ ~ 0.6 at every lag, the
    # pair sums never turn negative and tau ~ 0.6 T, so ESS ~ 4000 / 600, far below 4000 draws.
    np.testing.assert_array_less(effective_sample_size(draws), 100)


def test_autocorrelation_of_ar1_is_rho_to_the_lag():
    """Pooled over the 8 series of two columns, r_k has Bartlett variance
    ((1 + rho^2)(1 - rho^(2k))/(1 - rho^2) - 2 k rho^(2k)) / (8 N); 5 standard errors. (Its
    O(1/N) bias, about 0.004, is under one standard error.)"""
    rho = 0.6
    draws = ar1(4, rho)
    acf = autocorrelation(draws)
    chex.assert_shape(acf, draws.shape)
    np.testing.assert_allclose(acf[:, 0], 1.0, rtol=1e-6)
    # Same numbers as the direct sum (no FFT).
    c = np.asarray(draws[0, :, 0], dtype=np.float64)
    c = c - c.mean()
    direct = np.correlate(c, c, mode="full")[NUM_DRAWS - 1 :] / (c @ c)
    np.testing.assert_allclose(acf[0, :50, 0], direct[:50], atol=1e-5)
    pooled = np.asarray(acf[:, :, :2], dtype=np.float64)
    for lag in (1, 2, 3):
        r2 = rho ** (2 * lag)
        variance = ((1 + rho**2) * (1 - r2) / (1 - rho**2) - 2 * lag * r2) / (
            pooled.shape[0] * pooled.shape[2] * NUM_DRAWS
        )
        assert abs(pooled[:, lag].mean() - rho**lag) < 5 * np.sqrt(variance), lag


def test_nested_rhat_matches_formula_is_near_one_when_mixed_and_large_when_stuck():
    """K = 4 superchains of M = 16 chains of N = 10 iid N(0, 1) draws: B/W is about
    chi2(K-1)/(K-1) / (M N), so nested R-hat < sqrt(1 + q / (M N)) with q the 1 - 1e-6 quantile."""
    k, m, n = 4, 16, 10
    draws = jax.random.normal(jax.random.key(5), (k * m, n, 2))
    mixed = np.asarray(nested_rhat(draws, k))
    expected = [ref_nested_rhat(np.asarray(draws[..., j], np.float64), k) for j in range(2)]
    np.testing.assert_allclose(mixed, expected, rtol=1e-5)
    q = stats.chi2.ppf(1 - 1e-6, k - 1) / (k - 1)
    np.testing.assert_array_less(mixed, np.sqrt(1 + q / (m * n)))
    assert np.all(mixed >= 1.0)
    # One superchain stuck near its start: its chains agree with each other but not the rest.
    stuck = draws.at[:m].set(3.0 + 0.1 * draws[:m])
    np.testing.assert_array_less(1.3, nested_rhat(stuck, k))
    # One draw per chain is allowed when superchains hold several chains.
    assert np.isfinite(nested_rhat(draws[:, :1], k)).all()


def test_diagnostics_work_inside_jit_and_vmap_and_trace_once(ar_draws):
    def summary(x):
        return effective_sample_size(x), nested_rhat(x, num_superchains=2)

    traced = jax.jit(chex.assert_max_traces(summary, n=1))
    chex.assert_trees_all_close(traced(ar_draws), summary(ar_draws), rtol=1e-5)
    traced(ar_draws + 1.0)  # same shapes: no retrace
    # vmap over a leading batch of draw sets gives each set its own result.
    batched = jax.vmap(functools.partial(split_rhat, variant="classic"))(
        jnp.stack([ar_draws, ar_draws[::-1] * 2.0])
    )
    np.testing.assert_allclose(batched[0], split_rhat(ar_draws, variant="classic"), rtol=1e-6)


def test_a_chain_that_never_moves_gives_nan_not_a_plausible_number(ar_draws):
    # Column 0: every chain constant; column 1: one chain stuck; the rest untouched.
    draws = ar_draws.at[:, :, 0].set(1.0).at[2, :, 1].set(0.3)
    for value in (
        effective_sample_size(draws),
        effective_sample_size(draws, variant="mean"),
        split_rhat(draws),
        split_rhat(draws, variant="classic"),
    ):
        value = np.asarray(value)
        assert np.isnan(value[:2]).all()
        assert np.isfinite(value[2:]).all()


def test_bad_shapes_and_options_raise_clear_errors():
    with pytest.raises(ValueError, match=r"\(C, T\)"):
        effective_sample_size(jnp.zeros(10))
    with pytest.raises(ValueError, match="at least 4 draws"):
        split_rhat(jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="variant"):
        effective_sample_size(jnp.zeros((4, 10)), variant="tail")
    with pytest.raises(ValueError, match="multiple of num_superchains"):
        nested_rhat(jnp.zeros((6, 10)), 4)
    with pytest.raises(ValueError, match="num_superchains must be"):
        nested_rhat(jnp.zeros((6, 10)), 1)
    with pytest.raises(ValueError, match="several chains per superchain"):
        nested_rhat(jnp.zeros((4, 1)), 4)

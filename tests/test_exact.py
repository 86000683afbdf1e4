"""Exact samplers: goodness of fit (KS / chi-square at fixed seeds), exact table identities, edges.

Every statistical test uses a fixed seed and the threshold P_MIN = 1e-3 decided before running:
a correct sampler fails it with probability 1e-3 per seed, while the sample sizes used give a
wrong distribution (e.g. a probability off by 0.01, a normal scale off by 2%) p-values far below.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from nflows_jax.sampling import exact

P_MIN = 1e-3
PROBS = np.array([0.1, 0.0, 0.2, 0.3, 0.4, 0.0], np.float32)


def _chi_square_p(draws, probs) -> float:
    """Chi-square p-value of integer draws against probs over the categories with probs > 0."""
    probs = np.asarray(probs, np.float64)
    counts = np.bincount(np.asarray(draws), minlength=len(probs))
    support = probs > 0
    assert counts[~support].sum() == 0, f"zero-probability categories drawn: {counts}"
    expected = probs[support] / probs[support].sum() * counts.sum()
    return scipy.stats.chisquare(counts[support], expected).pvalue


# ------------------------------------------------------------------------------ categorical


@pytest.mark.parametrize("form", ["probs", "logits"])
def test_categorical_inverse_cdf_goodness_of_fit(form):
    key = jax.random.PRNGKey(0)
    if form == "probs":
        draws = exact.sample_categorical(key, 20_000, probs=jnp.asarray(PROBS))
    else:
        with np.errstate(divide="ignore"):
            logits = np.log(PROBS)  # -inf for the zero-probability categories
        assert np.isneginf(logits).sum() == 2
        draws = exact.sample_categorical(key, 20_000, logits=jnp.asarray(logits))
    assert draws.shape == (20_000,) and draws.dtype == jnp.int32
    assert _chi_square_p(draws, PROBS) > P_MIN


def test_categorical_unnormalised_weights_and_shape():
    weights = jnp.asarray(PROBS * 7.0)  # unnormalised on purpose
    draws = exact.sample_categorical(jax.random.PRNGKey(1), (100, 200), probs=weights)
    assert draws.shape == (100, 200)
    assert _chi_square_p(draws.reshape(-1), PROBS) > P_MIN


def test_categorical_trailing_zero_never_drawn_even_at_u_near_one():
    # Only the last category is impossible; the uniforms' largest values must still map to 1.
    probs = jnp.array([0.5, 0.5, 0.0])
    draws = exact.sample_categorical(jax.random.PRNGKey(2), 200_000, probs=probs)
    assert int(draws.max()) == 1


def test_categorical_jits_and_rejects_bad_input():
    fn = jax.jit(lambda k: exact.sample_categorical(k, 10, probs=jnp.asarray(PROBS)))
    assert fn(jax.random.PRNGKey(0)).shape == (10,)
    with pytest.raises(ValueError, match="exactly one"):
        exact.sample_categorical(jax.random.PRNGKey(0), 3)
    with pytest.raises(ValueError, match="shape"):
        exact.sample_categorical(jax.random.PRNGKey(0), 3, probs=jnp.ones((2, 3)))


# ------------------------------------------------------------------------------ alias


def _alias_implied_probs(table: exact.AliasTable) -> np.ndarray:
    """The distribution a table encodes: (prob[k] + Σ_{alias[i]=k} (1 - prob[i])) / K."""
    prob = np.asarray(table.prob, np.float64)
    alias = np.asarray(table.alias)
    implied = prob.copy()
    np.add.at(implied, alias, 1.0 - prob)
    return implied / len(prob)


@pytest.mark.parametrize("size", [1, 6, 1000])
def test_alias_table_encodes_the_distribution_exactly(size):
    rng = np.random.default_rng(size)
    probs = PROBS.astype(np.float64) if size == 6 else rng.dirichlet(np.full(size, 0.3))
    table = exact.alias_table(probs)
    assert table.prob.shape == (size,) and table.alias.shape == (size,)
    # Float32 storage of prob is the only rounding: 2^-24 per column, divided by K.
    np.testing.assert_allclose(_alias_implied_probs(table), probs / probs.sum(), atol=1e-7)
    zero = probs == 0
    assert np.all(np.asarray(table.prob)[zero] == 0.0), "a zero category keeps its column"
    assert not np.any(np.isin(np.asarray(table.alias), np.flatnonzero(zero)))


def test_alias_sampling_goodness_of_fit_and_jit():
    table = exact.alias_table(PROBS)
    draws = jax.jit(exact.sample_alias, static_argnums=2)(jax.random.PRNGKey(3), table, 20_000)
    assert draws.shape == (20_000,) and draws.dtype == jnp.int32
    assert _chi_square_p(draws, PROBS) > P_MIN


def test_alias_table_rejects_bad_probs():
    for bad in ([0.5, -0.1, 0.6], [0.0, 0.0], [[0.5, 0.5]], [np.nan, 1.0], []):
        with pytest.raises(ValueError):
            exact.alias_table(np.asarray(bad))
    with pytest.raises(ValueError, match="outside jit"):
        jax.jit(exact.alias_table)(jnp.ones(3))


# ------------------------------------------------------------------------------ continuous


def test_inverse_cdf_exponential_ks():
    rate = 2.5
    draws = exact.inverse_cdf_sample(jax.random.PRNGKey(4), lambda u: -jnp.log1p(-u) / rate, 5000)
    assert draws.shape == (5000,)
    assert scipy.stats.kstest(np.asarray(draws), "expon", args=(0, 1 / rate)).pvalue > P_MIN


def test_inverse_cdf_normal_quantile_is_finite():
    # The normal quantile is -inf at u = 0; the open-interval uniforms must never produce it.
    draws = exact.inverse_cdf_sample(jax.random.PRNGKey(5), jax.scipy.special.ndtri, (50, 2000))
    assert draws.shape == (50, 2000)
    assert bool(jnp.all(jnp.isfinite(draws)))
    assert scipy.stats.kstest(np.asarray(draws).ravel(), "norm").pvalue > P_MIN


def _mixture_cdf(x):
    """A two-component logistic mixture: monotone with no closed-form inverse."""
    return 0.3 * jax.nn.sigmoid(x + 2.0) + 0.7 * jax.nn.sigmoid((x - 1.0) / 0.5)


def test_bisection_logistic_mixture_ks():
    draws = exact.bisection_inverse_cdf_sample(
        jax.random.PRNGKey(6), _mixture_cdf, -30.0, 30.0, 5000, num_iters=40
    )
    np_cdf = lambda x: np.asarray(_mixture_cdf(jnp.asarray(x, jnp.float32)), np.float64)
    assert scipy.stats.kstest(np.asarray(draws), np_cdf).pvalue > P_MIN


@pytest.mark.parametrize("num_iters", [4, 10])
def test_bisection_error_within_documented_bound(num_iters):
    # A uniform CDF on [a, b] has the exact inverse a + u (b - a), and the same key gives the
    # same u in both samplers, so the error of each draw is known. Float error (~1e-6) is far
    # below the bounds tested here (8/16 and 8/1024).
    a, b = -3.0, 5.0
    key = jax.random.PRNGKey(7)
    cdf = lambda x: jnp.clip((x - a) / (b - a), 0.0, 1.0)
    draws = exact.bisection_inverse_cdf_sample(key, cdf, a, b, 4000, num_iters=num_iters)
    exact_draws = exact.inverse_cdf_sample(key, lambda u: a + u * (b - a), 4000)
    error = np.abs(np.asarray(draws) - np.asarray(exact_draws))
    bound = (b - a) / 2**num_iters
    assert error.max() <= bound
    # The midpoint rule is tight: errors fill [0, bound / 2], so the bound is not vacuous.
    assert error.max() > 0.4 * bound


def test_bisection_converges_to_float_resolution_and_jits():
    a, b = -3.0, 5.0
    key = jax.random.PRNGKey(8)
    cdf = lambda x: jnp.clip((x - a) / (b - a), 0.0, 1.0)
    fn = jax.jit(
        lambda k: exact.bisection_inverse_cdf_sample(k, cdf, a, b, 1000, num_iters=40),
    )
    exact_draws = exact.inverse_cdf_sample(key, lambda u: a + u * (b - a), 1000)
    np.testing.assert_allclose(fn(key), exact_draws, atol=4e-6)
    with pytest.raises(ValueError, match="num_iters"):
        exact.bisection_inverse_cdf_sample(key, cdf, a, b, 10, num_iters=0)
    with pytest.raises(ValueError, match="lower < upper"):
        exact.bisection_inverse_cdf_sample(key, cdf, b, a, 10)


# ------------------------------------------------------------------------------ Box–Muller


@pytest.mark.parametrize("num", [5000, 5001])
def test_box_muller_ks(num):
    draws = exact.box_muller(jax.random.PRNGKey(9), num)
    assert draws.shape == (num,)
    draws = np.asarray(draws)
    assert scipy.stats.kstest(draws, "norm").pvalue > P_MIN
    # Both halves (cos and sin members of the pairs) are standard normal on their own.
    half = (num + 1) // 2
    assert scipy.stats.kstest(draws[:half], "norm").pvalue > P_MIN
    assert scipy.stats.kstest(draws[half:], "norm").pvalue > P_MIN


def test_box_muller_pairs_uncorrelated_and_shapes():
    draws = np.asarray(exact.box_muller(jax.random.PRNGKey(10), 20_000))
    cos_part, sin_part = draws[:10_000], draws[10_000:]
    # Under independence the sample correlation has sd 1/sqrt(n) = 0.01; allow 5 sd.
    assert abs(np.corrcoef(cos_part, sin_part)[0, 1]) < 5 / np.sqrt(10_000)
    assert exact.box_muller(jax.random.PRNGKey(0), (3, 7)).shape == (3, 7)
    assert exact.box_muller(jax.random.PRNGKey(0), 1).shape == (1,)


def test_box_muller_clamps_zero_uniform():
    z_cos, z_sin = exact.box_muller_transform(jnp.array([0.0, 0.5]), jnp.array([0.0, 0.25]))
    assert bool(jnp.all(jnp.isfinite(z_cos))) and bool(jnp.all(jnp.isfinite(z_sin)))
    radius_cap = np.sqrt(-2 * np.log(np.finfo(np.float32).tiny))
    np.testing.assert_allclose(z_cos[0], radius_cap, rtol=1e-6)
    # The gradient wrt u1 at the clamp is finite too (no NaN from a masked branch).
    grad = jax.grad(lambda u: exact.box_muller_transform(u, jnp.array(0.1))[0])(jnp.array(0.0))
    assert bool(jnp.isfinite(grad))

"""Exact samplers: goodness of fit sized by a power calculation, exact table identities, edges.

Every statistical test here fixes, before it runs,

* its false-fail rate ALPHA = 1e-4 (split Bonferroni-wise when one test makes several checks),
* a named wrong answer: a 2 % scale error (X -> 1.02 X) for continuous samplers, and 0.01 of
  probability moved between the two largest categories for discrete ones (the shift χ² detects
  worst, see ``power.hardest_shift``),
* power ≥ 1 - BETA = 0.99 against it, from which the number of draws follows (``tests/power.py``):
  KS tests use the DKW bound, n ≥ ((c_α + c_β) / D*)² with c_p = sqrt(log(2/p) / 2) and D* the KS
  distance of the wrong answer; χ² tests use the noncentral χ² with λ = n Σ (p' - p)² / p.

Each statistical test then runs the same procedure on the named wrong answer (draws scaled by 1.02,
or drawn from the shifted probabilities) at the same fixed seed and asserts that it is rejected:
that is the power checked empirically at one seed, which fails with probability ≤ BETA by
construction (far less in practice: DKW is conservative).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import power
import pytest
import scipy.special
import scipy.stats

from nflows_jax.sampling import exact

ALPHA = 1e-4  # false-fail rate per test, fixed before any run
BETA = 0.01  # 1 - power against the named wrong answer
SCALE_ERROR = 0.02  # the named wrong answer for continuous samplers
PROB_SHIFT = 0.01  # the named wrong answer for discrete samplers
EPS32 = float(np.finfo(np.float32).eps)

PROBS = np.array([0.1, 0.0, 0.2, 0.3, 0.4, 0.0], np.float32)
SUPPORT = PROBS > 0
WRONG_PROBS = np.zeros(len(PROBS))
WRONG_PROBS[SUPPORT] = power.hardest_shift(PROBS[SUPPORT], PROB_SHIFT)  # 0.3, 0.4 -> 0.31, 0.39
# Pearson χ² over the 4 positive categories (3 dof): 77,899 draws for power 0.99 at α = 1e-4.
NUM_CATEGORICAL = power.chi_square_sample_size(PROBS[SUPPORT], WRONG_PROBS[SUPPORT], ALPHA, BETA)


def _chi_square_p(draws, probs) -> float:
    """Chi-square p-value of integer draws against probs over the categories with probs > 0."""
    probs = np.asarray(probs, np.float64)
    counts = np.bincount(np.asarray(draws), minlength=len(probs))
    support = probs > 0
    assert counts[~support].sum() == 0, f"zero-probability categories drawn: {counts}"
    expected = probs[support] / probs[support].sum() * counts.sum()
    return scipy.stats.chisquare(counts[support], expected).pvalue


def _scale_error_draws(cdf, grid, alpha: float) -> int:
    """Draws for a DKW test at level ``alpha`` to catch X -> 1.02 X with power 1 - BETA."""
    return power.ks_sample_size(power.scale_error_distance(cdf, SCALE_ERROR, grid), alpha, BETA)


def _assert_ks_fits_and_catches_scale_error(draws, cdf, alpha: float) -> None:
    """Correct draws pass the DKW test at ``alpha``; the same draws scaled by 1.02 fail it."""
    draws = np.asarray(draws, np.float64)
    statistic = power.ks_statistic(draws, cdf)
    critical = power.dkw_critical_value(alpha) / np.sqrt(draws.size)
    assert statistic <= critical, f"KS distance {statistic:.3g} > critical {critical:.3g}"
    assert power.ks_rejects(draws * (1.0 + SCALE_ERROR), cdf, alpha), "2 % scale error missed"


# ------------------------------------------------------------------------------ categorical


@pytest.mark.parametrize("form", ["probs", "logits"])
def test_categorical_inverse_cdf_goodness_of_fit(form):
    """χ² at ALPHA; NUM_CATEGORICAL draws give power ≥ 0.99 against WRONG_PROBS, checked below."""
    key = jax.random.PRNGKey(0)
    if form == "probs":
        draw = lambda p: exact.sample_categorical(key, NUM_CATEGORICAL, probs=jnp.asarray(p))
    else:
        with np.errstate(divide="ignore"):
            assert np.isneginf(np.log(PROBS)).sum() == 2  # -inf for the zero categories
        draw = lambda p: exact.sample_categorical(
            key, NUM_CATEGORICAL, logits=jnp.asarray(np.log(np.maximum(p, 0.0)), jnp.float32)
        )
    with np.errstate(divide="ignore"):
        draws = draw(PROBS)
        wrong_draws = draw(WRONG_PROBS)
    assert draws.shape == (NUM_CATEGORICAL,) and draws.dtype == jnp.int32
    assert _chi_square_p(draws, PROBS) > ALPHA
    assert _chi_square_p(wrong_draws, PROBS) < ALPHA, "a 0.01 probability shift was missed"


def test_categorical_unnormalised_weights_and_shape():
    """χ² at ALPHA on a 2-D batch of ≥ NUM_CATEGORICAL draws (power ≥ 0.99 vs WRONG_PROBS)."""
    shape = (NUM_CATEGORICAL // 256 + 1, 256)
    weights = jnp.asarray(PROBS * 7.0)  # unnormalised on purpose
    draws = exact.sample_categorical(jax.random.PRNGKey(1), shape, probs=weights)
    assert draws.shape == shape
    assert _chi_square_p(draws.reshape(-1), PROBS) > ALPHA
    wrong = exact.sample_categorical(jax.random.PRNGKey(1), shape, probs=7.0 * WRONG_PROBS)
    assert _chi_square_p(wrong.reshape(-1), PROBS) < ALPHA, "a 0.01 probability shift was missed"


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
    # Rounding prob (in [0, 1]) to float32 errs by at most half an ulp of 1, 2^-25, per column;
    # a category collects from at most K columns and is divided by K, so it errs by ≤ 2^-25.
    # The float64 construction adds ~K float64 eps. atol = 2^-24 covers both with room.
    np.testing.assert_allclose(_alias_implied_probs(table), probs / probs.sum(), atol=2.0**-24)
    zero = probs == 0
    assert np.all(np.asarray(table.prob)[zero] == 0.0), "a zero category keeps its column"
    assert not np.any(np.isin(np.asarray(table.alias), np.flatnonzero(zero)))


def test_alias_sampling_goodness_of_fit_and_jit():
    """χ² at ALPHA; NUM_CATEGORICAL draws give power ≥ 0.99 against WRONG_PROBS, checked below."""
    sample = jax.jit(exact.sample_alias, static_argnums=2)
    key = jax.random.PRNGKey(3)
    draws = sample(key, exact.alias_table(PROBS), NUM_CATEGORICAL)
    assert draws.shape == (NUM_CATEGORICAL,) and draws.dtype == jnp.int32
    assert _chi_square_p(draws, PROBS) > ALPHA
    wrong = sample(key, exact.alias_table(WRONG_PROBS), NUM_CATEGORICAL)
    assert _chi_square_p(wrong, PROBS) < ALPHA, "a 0.01 probability shift was missed"


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ([0.5, -0.1, 0.6], "non-negative"),
        ([0.0, 0.0], "positive sum"),
        ([[0.5, 0.5]], "shape"),
        ([np.nan, 1.0], "finite"),
        ([], "shape"),
    ],
)
def test_alias_table_rejects_bad_probs(bad, match):
    with pytest.raises(ValueError, match=match):
        exact.alias_table(np.asarray(bad))


def test_alias_table_refuses_to_trace():
    with pytest.raises(ValueError, match="outside jit"):
        jax.jit(exact.alias_table)(jnp.ones(3))


# ------------------------------------------------------------------------------ continuous

# D* of a 2 % scale error, maximised on grids covering every point where the CDFs differ by
# more than float64 rounding (a grid maximum is ≤ the supremum, so the sizes are conservative).
NORMAL_GRID = np.linspace(-9.0, 9.0, 180_001)
NUM_NORMAL = _scale_error_draws(scipy.special.ndtr, NORMAL_GRID, ALPHA)  # 646,587


def test_open_uniform_range_and_ks():
    """DKW at ALPHA; n from the power calculation against U(0, 1.02) (38,611 draws)."""
    uniform_cdf = lambda x: np.clip(x, 0.0, 1.0)
    num = _scale_error_draws(uniform_cdf, np.linspace(0.0, 1.1, 110_001), ALPHA)
    u = exact.open_uniform(jax.random.PRNGKey(11), (num,))
    assert u.shape == (num,) and u.dtype == jnp.float32
    assert float(u.min()) >= float(np.finfo(np.float32).tiny) and float(u.max()) < 1.0
    _assert_ks_fits_and_catches_scale_error(u, uniform_cdf, ALPHA)


def test_inverse_cdf_exponential_ks():
    """DKW at ALPHA; n from the power calculation against Exp draws 2 % too large (279,723)."""
    rate = 2.5
    cdf = lambda x: -np.expm1(-rate * np.maximum(x, 0.0))
    num = _scale_error_draws(cdf, np.linspace(0.0, 40.0 / rate, 400_001), ALPHA)
    draws = exact.inverse_cdf_sample(jax.random.PRNGKey(4), lambda u: -jnp.log1p(-u) / rate, num)
    assert draws.shape == (num,)
    _assert_ks_fits_and_catches_scale_error(draws, cdf, ALPHA)


def test_inverse_cdf_normal_quantile_is_finite():
    """DKW at ALPHA with NUM_NORMAL draws: power ≥ 0.99 against N(0, 1.02²)."""
    # The normal quantile is -inf at u = 0; the open-interval uniforms must never produce it.
    shape = (50, NUM_NORMAL // 50 + 1)
    draws = exact.inverse_cdf_sample(jax.random.PRNGKey(5), jax.scipy.special.ndtri, shape)
    assert draws.shape == shape
    assert bool(jnp.all(jnp.isfinite(draws)))
    _assert_ks_fits_and_catches_scale_error(draws, scipy.special.ndtr, ALPHA)


def _mixture_cdf(x):
    """A two-component logistic mixture: monotone with no closed-form inverse."""
    return 0.3 * jax.nn.sigmoid(x + 2.0) + 0.7 * jax.nn.sigmoid((x - 1.0) / 0.5)


def _mixture_cdf_float64(x):
    return 0.3 * scipy.special.expit(x + 2.0) + 0.7 * scipy.special.expit((x - 1.0) / 0.5)


def test_bisection_logistic_mixture_ks():
    """DKW at ALPHA; n from the power calculation against the mixture scaled by 1.02 about 0."""
    num = _scale_error_draws(_mixture_cdf_float64, np.linspace(-40.0, 40.0, 400_001), ALPHA)
    draws = exact.bisection_inverse_cdf_sample(
        jax.random.PRNGKey(6), _mixture_cdf, -30.0, 30.0, num, num_iters=40
    )
    # 40 halvings of [-30, 30] reach float32 resolution; the mass outside the bracket is 1e-13.
    _assert_ks_fits_and_catches_scale_error(draws, _mixture_cdf_float64, ALPHA)


@pytest.mark.parametrize("num_iters", [4, 10])
def test_bisection_error_within_documented_bound(num_iters):
    # A uniform CDF on [a, b] has the exact inverse a + u (b - a), and the same key gives the
    # same u in both samplers, so the error of each draw is known.
    a, b = -3.0, 5.0
    num = 4000
    key = jax.random.PRNGKey(7)
    cdf = lambda x: jnp.clip((x - a) / (b - a), 0.0, 1.0)
    draws = exact.bisection_inverse_cdf_sample(key, cdf, a, b, num, num_iters=num_iters)
    exact_draws = exact.inverse_cdf_sample(key, lambda u: a + u * (b - a), num)
    error = np.abs(np.asarray(draws, np.float64) - np.asarray(exact_draws, np.float64))
    bound = (b - a) / 2**num_iters
    # The midpoint of the final bracket is within bound / 2. Float32 adds: cdf(x) errs by a few
    # eps, i.e. by ≈ 4 eps·(b - a) in x near a wrong comparison, and a + u (b - a) by ≤ 2 ulps.
    float_slack = 8 * EPS32 * (b - a)
    assert error.max() <= bound / 2 + float_slack
    # Not vacuous: for uniform u the error is uniform on [0, bound / 2], so the largest of 4000
    # stays below 0.4 · bound with probability 0.8^4000 < 1e-300.
    assert error.max() > 0.4 * bound


def test_bisection_converges_to_float_resolution_and_jits():
    a, b = -3.0, 5.0
    key = jax.random.PRNGKey(8)
    cdf = lambda x: jnp.clip((x - a) / (b - a), 0.0, 1.0)
    fn = jax.jit(
        lambda k: exact.bisection_inverse_cdf_sample(k, cdf, a, b, 1000, num_iters=40),
    )
    exact_draws = exact.inverse_cdf_sample(key, lambda u: a + u * (b - a), 1000)
    # 40 halvings shrink the bracket below float32 resolution; what is left is rounding: cdf(x)
    # errs by ≈ 2 eps in u, i.e. 2 eps·(b - a) in x, and a + u (b - a) by ≤ 2 ulps of |x| ≤ 5.
    atol = 2 * EPS32 * (b - a) + 2 * float(np.spacing(np.float32(max(abs(a), abs(b)))))
    np.testing.assert_allclose(fn(key), exact_draws, rtol=0, atol=2 * atol)
    with pytest.raises(ValueError, match="num_iters"):
        exact.bisection_inverse_cdf_sample(key, cdf, a, b, 10, num_iters=0)
    with pytest.raises(ValueError, match="lower < upper"):
        exact.bisection_inverse_cdf_sample(key, cdf, b, a, 10)


# ------------------------------------------------------------------------------ Box–Muller

# Three DKW checks per test (all draws, the cos half, the sin half) share ALPHA: α/3 each, and
# each half alone must catch its own 2 % scale error: 672,538 draws per half at α/3.
NUM_BOX_MULLER_HALF = _scale_error_draws(scipy.special.ndtr, NORMAL_GRID, ALPHA / 3)


@pytest.mark.parametrize("odd", [0, 1], ids=["even", "odd"])
def test_box_muller_ks(odd):
    """DKW at ALPHA / 3 for the draws and for each half; power ≥ 0.99 against N(0, 1.02²) for
    the whole and for either half alone (the sin or the cos member scaled by 1.02)."""
    num = 2 * NUM_BOX_MULLER_HALF + odd
    draws = exact.box_muller(jax.random.PRNGKey(9), num)
    assert draws.shape == (num,)
    draws = np.asarray(draws)
    _assert_ks_fits_and_catches_scale_error(draws, scipy.special.ndtr, ALPHA / 3)
    # Both halves (cos and sin members of the pairs) are standard normal on their own.
    half = (num + 1) // 2
    _assert_ks_fits_and_catches_scale_error(draws[:half], scipy.special.ndtr, ALPHA / 3)
    _assert_ks_fits_and_catches_scale_error(draws[half:], scipy.special.ndtr, ALPHA / 3)


# Under independence √n r ≈ N(0, 1); threshold k/√n at ALPHA, n for power 0.99 against ρ = 0.01.
NUM_PAIRS = power.correlation_sample_size(0.01, ALPHA, BETA)  # 386,716


def test_box_muller_pairs_uncorrelated_and_shapes():
    """|r(cos, sin)| < k/√n, k = 3.89 at ALPHA; NUM_PAIRS gives power 0.99 against ρ = 0.01."""
    draws = np.asarray(exact.box_muller(jax.random.PRNGKey(10), 2 * NUM_PAIRS), np.float64)
    cos_part, sin_part = draws[:NUM_PAIRS], draws[NUM_PAIRS:]
    threshold = power.num_standard_errors(ALPHA) / np.sqrt(NUM_PAIRS)
    assert abs(np.corrcoef(cos_part, sin_part)[0, 1]) < threshold
    # The named wrong answer, built from the same draws: sin' = sin + 0.01·cos has ρ ≈ 0.01.
    assert abs(np.corrcoef(cos_part, sin_part + 0.01 * cos_part)[0, 1]) > threshold
    assert exact.box_muller(jax.random.PRNGKey(0), (3, 7)).shape == (3, 7)
    assert exact.box_muller(jax.random.PRNGKey(0), 1).shape == (1,)


def test_box_muller_clamps_zero_uniform():
    z_cos, z_sin = exact.box_muller_transform(jnp.array([0.0, 0.5]), jnp.array([0.0, 0.25]))
    assert bool(jnp.all(jnp.isfinite(z_cos))) and bool(jnp.all(jnp.isfinite(z_sin)))
    radius_cap = np.sqrt(-2 * np.log(np.finfo(np.float32).tiny))  # float64 reference
    # float32 log and sqrt each round (≤ a few ulps in XLA), and sqrt halves the relative error
    # of its argument: 8 eps is a generous bound on the relative error.
    np.testing.assert_allclose(z_cos[0], radius_cap, rtol=8 * EPS32)
    # The gradient wrt u1 at the clamp is finite too (no NaN from a masked branch).
    grad = jax.grad(lambda u: exact.box_muller_transform(u, jnp.array(0.1))[0])(jnp.array(0.0))
    assert bool(jnp.isfinite(grad))


# ------------------------------------------------------------------------------ the power helpers


def test_power_calculations_are_consistent():
    """The helpers behind every sample size above agree with known values and limits."""
    # DKW is conservative: its critical value lies above the asymptotic Kolmogorov quantile.
    assert power.dkw_critical_value(ALPHA) >= scipy.stats.kstwobign.isf(ALPHA)
    np.testing.assert_allclose(power.dkw_critical_value(ALPHA), np.sqrt(np.log(2e4) / 2))  # f64
    # Small δ: D* of a scale error of N(0, 1) is δ/(1 + δ) · max_x x φ(x) = φ(1) δ/(1 + δ) to first
    # order; the second-order term is O(δ²), i.e. ~2 % of D* at δ = 0.02.
    distance = power.scale_error_distance(scipy.special.ndtr, SCALE_ERROR, NORMAL_GRID)
    first_order = scipy.stats.norm.pdf(1.0) * SCALE_ERROR / (1 + SCALE_ERROR)
    np.testing.assert_allclose(distance, first_order, rtol=2 * SCALE_ERROR)
    # With no shift the χ² test rejects at exactly its level (a float64 isf/sf round trip through
    # scipy's series, good to ~1e-12 relative; 1e-9 is far below any meaningful change); the
    # sample size is the first n with power 1 - β.
    probs = PROBS[SUPPORT].astype(np.float64)
    np.testing.assert_allclose(power.chi_square_power(1000, probs, probs, ALPHA), ALPHA, rtol=1e-9)
    wrong = WRONG_PROBS[SUPPORT]
    assert power.chi_square_power(NUM_CATEGORICAL, probs, wrong, ALPHA) >= 1 - BETA
    assert power.chi_square_power(NUM_CATEGORICAL - 1, probs, wrong, ALPHA) < 1 - BETA
    # The scaled-χ² test: level α at ratio 1 (same round trip), and the returned R is the first
    # with power 1 - β against both ratios.
    np.testing.assert_allclose(power.scaled_chi2_power(601, 1.0, ALPHA), ALPHA, rtol=1e-9)
    ratios = [1.44, 1 / 1.44]
    dof = power.scaled_chi2_dof(ratios, ALPHA, BETA)
    assert min(power.scaled_chi2_power(dof, r, ALPHA) for r in ratios) >= 1 - BETA
    assert min(power.scaled_chi2_power(dof - 1, r, ALPHA) for r in ratios) < 1 - BETA
    # z_{0.025} to the 16 digits of the textbook value, in float64.
    np.testing.assert_allclose(power.num_standard_errors(0.05), 1.959963984540054, rtol=1e-14)
    with pytest.raises(ValueError, match="alpha"):
        power.dkw_critical_value(0.0)
    with pytest.raises(ValueError, match="distance"):
        power.ks_sample_size(0.0, ALPHA, BETA)

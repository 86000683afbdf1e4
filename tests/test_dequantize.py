"""Tests of nflows_jax.dequantize: bins, bounds against exact discrete likelihoods, bits/dim."""

from __future__ import annotations

import math
import statistics

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nflows_jax import dequantize as dq
from nflows_jax.bijectors.base import Bijector, no_params
from nflows_jax.flows import Flow, log_prob
from nflows_jax.testing import check_bijector, perturb, rounding_steps, rounding_tolerance

pytestmark = pytest.mark.usefixtures("fast_compiles")

# Every statistical check below allows k Monte-Carlo standard errors, with k the two-sided normal
# quantile for a false-fail rate of 1e-4 per test, Bonferroni-split over that test's checks.
FALSE_FAIL_RATE = 1e-4


def _k(num_checks: int, sides: int = 2) -> float:
    return statistics.NormalDist().inv_cdf(1.0 - FALSE_FAIL_RATE / (sides * num_checks))


def _images(seed: int, shape: tuple[int, ...], num_bits: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**num_bits, shape).astype(np.uint8)


def _identity() -> Bijector:
    def same(params, x, context=None):
        return x, jnp.zeros(x.shape[:1], x.dtype)

    return Bijector(no_params, same, same)


def _uniform_base(event_shape) -> distrax.Distribution:
    uniform = distrax.Uniform(jnp.zeros(event_shape), jnp.ones(event_shape))
    return distrax.Independent(uniform, reinterpreted_batch_ndims=len(event_shape))


# ------------------------------------------------------------------------------------------------
# A discrete model with a known log P(x): factorised categorical over the K pixel values, as the
# piecewise-constant density K·P_d(bin) on [0, 1)^D; and a smooth density that is not constant.
# ------------------------------------------------------------------------------------------------


def _categorical_probs(seed: int, num_dims: int, num_levels: int) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(num_levels), size=num_dims)  # (D, K)


def _piecewise_constant_log_prob(probs: np.ndarray, event_shape):
    num_dims, num_levels = probs.shape
    log_density = jnp.asarray(np.log(num_levels * probs), jnp.result_type(float))

    def model_log_prob(y):
        bins = jnp.floor(y.reshape(y.shape[0], num_dims) * num_levels).astype(jnp.int32)
        return jnp.sum(log_density[jnp.arange(num_dims), bins], axis=1)

    return model_log_prob


def _categorical_log_p(probs: np.ndarray, x: np.ndarray) -> np.ndarray:
    flat = x.reshape(x.shape[0], -1)
    return np.log(probs[np.arange(probs.shape[0]), flat]).sum(axis=1)


BETA = 0.8  # the smooth density p(y) = 1 + BETA (2y - 1) per pixel, between 0.2 and 1.8


def _linear_log_prob(y):
    return jnp.sum(jnp.log1p(BETA * (2.0 * y.reshape(y.shape[0], -1) - 1.0)), axis=1)


def _linear_bin_moments(num_levels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bin b: log P(b) = log ∫_bin p, mean and variance of log p(y) for y ~ U(bin). (K,) each.

    P(b) from the CDF F(y) = y + BETA (y² - y); the moments by 64-point Gauss-Legendre per bin,
    exact to float64 rounding for this analytic integrand (log of a linear function bounded away
    from 0).
    """
    nodes, weights = np.polynomial.legendre.leggauss(64)
    low = np.arange(num_levels) / num_levels
    high = low + 1.0 / num_levels
    cdf = lambda y: y + BETA * (y * y - y)
    log_p_bin = np.log(cdf(high) - cdf(low))
    y = low[:, None] + (nodes[None, :] + 1.0) / (2 * num_levels)
    log_p = np.log1p(BETA * (2.0 * y - 1.0))
    mean = (weights * log_p).sum(axis=1) / 2.0
    var = (weights * log_p**2).sum(axis=1) / 2.0 - mean**2
    return log_p_bin, mean, var


# ------------------------------------------------------------------------------------------------
# Uniform dequantization
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_bits", [1, 8])
def test_uniform_dequantize_stays_in_the_bin(num_bits):
    x = _images(0, (64, 4, 4, 1), num_bits)
    y = np.asarray(dq.uniform_dequantize(jax.random.PRNGKey(1), x, num_bits))
    num_levels = 2**num_bits
    assert y.dtype == np.float32 and y.shape == x.shape
    # x/K and (x+1)/K are exact floats (K a power of two), so the bin test is exact.
    np.testing.assert_array_equal(np.floor(y * num_levels), x)
    assert np.all(y >= 0.0) and np.all(y < 1.0)


def test_a_noise_of_almost_one_stays_in_the_top_bin():
    """255 + (1 - 2^-24) rounds to 256 in float32: the clip must keep y below (x + 1)/K."""
    x = jnp.asarray([[255.0, 3.0]], jnp.float32)
    u = jnp.full((1, 2), 1.0 - 2.0**-24, jnp.float32)
    y = np.asarray(dq._to_bin(x, u, 256))
    assert np.all(y < (np.asarray(x) + 1) / 256) and np.all(y >= np.asarray(x) / 256)


@pytest.mark.parametrize("num_bits", [1, 5, 8])
def test_identity_flow_with_uniform_base_has_num_bits_bits_per_dim(num_bits):
    x = _images(num_bits, (16, 3, 3, 2), num_bits)
    flow = Flow(_uniform_base(x.shape[1:]), _identity())
    y = dq.uniform_dequantize(jax.random.PRNGKey(2), x, num_bits)
    log_p = log_prob(flow, (), y)
    num_dims = math.prod(x.shape[1:])
    bpd = np.asarray(dq.bits_per_dim(log_p, num_dims, num_bits))
    # Rounding of the conversion only: its own op count, values of size num_bits.
    steps = rounding_steps(lambda a: dq.bits_per_dim(a, num_dims, num_bits), log_p)
    tolerance = rounding_tolerance(steps, jnp.float32, magnitude=num_bits)
    np.testing.assert_allclose(np.asarray(log_p), 0.0, atol=0.0)  # U[0,1]^D density is exactly 1
    np.testing.assert_allclose(bpd, num_bits, rtol=0.0, atol=tolerance)


def test_bits_per_dim_formula_on_a_known_value():
    # log p = -D log 2 (density 1/2 everywhere) at K = 2^3: bpd = 3 + 1 = 4, exactly in binary.
    num_dims = 12
    bpd = dq.bits_per_dim(jnp.full((3,), -num_dims * math.log(2.0)), num_dims, 3)
    steps = rounding_steps(lambda a: dq.bits_per_dim(a, num_dims, 3), jnp.zeros(3))
    np.testing.assert_allclose(bpd, 4.0, atol=rounding_tolerance(steps, jnp.float32, magnitude=4))


@pytest.mark.parametrize("num_bits", [2, 8])
def test_uniform_bound_is_tight_for_a_piecewise_constant_density(num_bits):
    x = _images(3, (8, 2, 2, 1), num_bits)
    num_dims, num_levels = 4, 2**num_bits
    probs = _categorical_probs(4, num_dims, num_levels)
    model = _piecewise_constant_log_prob(probs, x.shape[1:])
    terms = np.asarray(dq.uniform_elbo_samples(jax.random.PRNGKey(5), x, model, num_bits, 32))
    exact = _categorical_log_p(probs, x)
    # Every sample (not just the mean) equals log P(x): the density is constant on each bin.
    # Rounding: the model's ops plus the subtraction of D log K, on values of size
    # |log P| + D log K.
    steps = rounding_steps(model, jnp.zeros((1, 2, 2, 1))) + 2
    magnitude = np.abs(exact) + num_dims * num_bits * math.log(2.0)
    tolerance = rounding_tolerance(steps, jnp.float32, magnitude=magnitude)
    assert terms.shape == (32, 8)
    assert np.all(np.abs(terms - exact) <= tolerance), np.max(np.abs(terms - exact) - tolerance)
    elbo = dq.uniform_dequantization_elbo(jax.random.PRNGKey(5), x, model, num_bits, 32)
    np.testing.assert_allclose(elbo, terms.mean(axis=0), rtol=1e-6)  # the same draws, averaged
    # An ELBO is already in nats of the discrete data: num_bits=0 gives its bits/dim, the same
    # as converting the continuous log-density elbo + D log K with num_bits. Allowance: the ELBO's
    # own error (the tolerance above) scaled by 1/(D log 2), plus float32 rounding of the mean
    # over 32 samples and of each conversion's ops (counted) on values of size num_bits + |bpd|.
    bpd = np.asarray(dq.bits_per_dim(elbo, num_dims, 0))
    continuous = elbo + num_dims * num_bits * math.log(2.0)
    steps = rounding_steps(lambda a: dq.bits_per_dim(a, num_dims, num_bits), continuous) + 33
    conversion = rounding_tolerance(steps, jnp.float32, magnitude=num_bits + np.abs(bpd))
    exact_bpd = -exact / (num_dims * math.log(2))
    np.testing.assert_array_less(
        np.abs(bpd - exact_bpd), tolerance / (num_dims * math.log(2)) + conversion
    )
    np.testing.assert_array_less(
        np.abs(np.asarray(dq.bits_per_dim(continuous, num_dims, num_bits)) - bpd), 2 * conversion
    )


def test_uniform_bound_is_strictly_below_for_a_smooth_density():
    num_bits, num_levels = 2, 4
    x = _images(6, (4, 2, 1, 1), num_bits)
    flat = x.reshape(4, -1)
    log_p_bin, mean_bin, var_bin = _linear_bin_moments(num_levels)
    log_p = log_p_bin[flat].sum(axis=1)
    expected = mean_bin[flat].sum(axis=1) - flat.shape[1] * math.log(num_levels)
    sigma = np.sqrt(var_bin[flat].sum(axis=1))  # pixels are independent given x
    gap = log_p - expected
    assert np.all(gap > 0)  # Jensen, exactly
    # 2 checks per example (consistency, strict gap); the strict one fails falsely with
    # probability Φ(k - gap/se) <= Φ(-k) when gap/se >= 2k, which fixes the sample size.
    k = _k(2 * len(x))
    num_samples = int(np.ceil(np.max((2 * k * sigma / gap) ** 2)))
    assert num_samples <= 200_000, num_samples  # keeps the test fast
    terms = np.asarray(
        dq.uniform_elbo_samples(jax.random.PRNGKey(7), x, _linear_log_prob, num_bits, num_samples),
        np.float64,
    )
    mean, se = terms.mean(axis=0), terms.std(axis=0, ddof=1) / np.sqrt(num_samples)
    np.testing.assert_array_less(np.abs(mean - expected), k * se)
    np.testing.assert_array_less(mean + k * se, log_p)


def test_uniform_elbo_jits():
    x = _images(8, (4, 2, 2, 1), 3)
    probs = _categorical_probs(9, 4, 8)
    model = _piecewise_constant_log_prob(probs, x.shape[1:])
    fn = jax.jit(lambda key, x: dq.uniform_dequantization_elbo(key, x, model, 3, 4))
    eager = dq.uniform_dequantization_elbo(jax.random.PRNGKey(0), x, model, 3, 4)
    # The same program up to fusion: a few float32 roundings on values of size |ELBO| ~ 10.
    np.testing.assert_allclose(fn(jax.random.PRNGKey(0), x), eager, rtol=64 * 2**-23)


# ------------------------------------------------------------------------------------------------
# Logit pre-processing
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.05, 0.0])
def test_logit_preprocess_passes_check_bijector(alpha):
    pixels = jax.random.uniform(jax.random.PRNGKey(10), (4, 4, 4, 1), minval=0.01, maxval=0.99)
    s = alpha + (1 - 2 * alpha) * pixels
    z = jnp.log(s) - jnp.log1p(-s)  # logit-space inputs: forward maps them into (0, 1) pixels
    check_bijector(dq.logit_preprocess(alpha), z, key=jax.random.PRNGKey(0))


@pytest.mark.parametrize("alpha", [0.05, 0.2])
def test_logistic_base_through_logit_preprocess_has_known_pixel_density(alpha):
    """sigmoid of a logistic variable is U(0, 1), so y = (σ(z) - α)/(1 - 2α) has density 1 - 2α.

    The flow's log_prob must then be D log(1 - 2α) on [0, 1)^D: the logit's Jacobian is counted.
    """
    with jax.enable_x64(True):
        num_bits = 8
        x = _images(11, (8, 3, 3, 1), num_bits)
        num_dims = 9
        base = distrax.Independent(
            distrax.Logistic(jnp.zeros((3, 3, 1)), jnp.ones((3, 3, 1))), reinterpreted_batch_ndims=3
        )
        flow = Flow(base, dq.logit_preprocess(alpha))
        y = dq.uniform_dequantize(jax.random.PRNGKey(12), x, num_bits, dtype=jnp.float64)
        log_p = np.asarray(log_prob(flow, (), y))
        # Rounding in float64 of the flow's log_prob, whose two terms cancel: each is a sum of D
        # values of size up to |log s| + |log(1 - s)| <= 2 log(1/alpha') with s >= alpha' =
        # min(alpha, smallest pixel), so the magnitude is bounded by that sum.
        s = alpha + (1 - 2 * alpha) * np.asarray(y)
        magnitude = num_dims * np.max(np.abs(np.log(s)) + np.abs(np.log1p(-s)))
        steps = rounding_steps(lambda a: log_prob(flow, (), a), y)
        tolerance = rounding_tolerance(steps, jnp.float64, magnitude=magnitude)
        np.testing.assert_allclose(log_p, num_dims * math.log(1 - 2 * alpha), atol=tolerance)
        bpd = dq.bits_per_dim(jnp.asarray(log_p), num_dims, num_bits)
        expected = num_bits - math.log2(1 - 2 * alpha)
        np.testing.assert_allclose(bpd, expected, atol=tolerance / math.log(2) + 1e-12)


def test_logit_preprocess_rejects_bad_inputs():
    layer = dq.logit_preprocess(0.05)
    with pytest.raises(ValueError, match=r"logit_preprocess inverse needs pixels in \(-0.0555556"):
        layer.inverse((), jnp.asarray([[0.5, 1.2]]))
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 0.5\), got 0.5"):
        dq.logit_preprocess(0.5)
    with pytest.raises(TypeError, match="alpha must be a float, got 'a'"):
        dq.logit_preprocess("a")


# ------------------------------------------------------------------------------------------------
# Variational dequantization
# ------------------------------------------------------------------------------------------------


def test_dequantization_noise_passes_check_bijector_with_context():
    x = _images(13, (4, 2, 2, 1), 3)
    eps = jax.random.logistic(jax.random.PRNGKey(14), (4, 2, 2, 1))
    noise = dq.dequantization_noise((8,))
    check_bijector(noise, eps, key=jax.random.PRNGKey(0), context=dq.image_context(x, 3))


def test_variational_elbo_at_identity_noise_equals_the_uniform_elbo():
    """Fresh noise params are the identity: u = σ(logit(v)) = v, log q = 0, the same samples."""
    with jax.enable_x64(True):
        num_bits, num_samples = 3, 16
        x = _images(15, (4, 2, 2, 1), num_bits)
        noise = dq.dequantization_noise((8,))
        params = dq.init_dequantization_noise(
            jax.random.PRNGKey(0), noise, x, num_bits, jnp.float64
        )
        key = jax.random.PRNGKey(16)

        def variational(key):
            return dq.variational_elbo_samples(
                key, x, _linear_log_prob, noise, params, num_bits, num_samples, jnp.float64
            )

        uniform = dq.uniform_elbo_samples(
            key, x, _linear_log_prob, num_bits, num_samples, jnp.float64
        )
        got = np.asarray(variational(key))
        # float64 rounding of the whole variational program (RNG ops included, an over-count),
        # amplified by the Lipschitz constant of log p in u (D · 2 BETA / (K (1 - BETA))) and on
        # values as large as D · max|eps| (the logistic log-density of eps, which log q cancels).
        v = np.asarray(jax.random.uniform(key, (num_samples, *x.shape), jnp.float64))
        v = np.clip(v, np.finfo(np.float64).tiny, 1 - np.finfo(np.float64).epsneg)
        max_eps = np.max(np.abs(np.log(v) - np.log1p(-v)))
        lipschitz = 4 * 2 * BETA / (2**num_bits * (1 - BETA))
        steps = rounding_steps(variational, key)
        tolerance = rounding_tolerance(
            steps, jnp.float64, lipschitz, 4 * max_eps + np.max(np.abs(got))
        )
        np.testing.assert_allclose(got, np.asarray(uniform), rtol=0.0, atol=tolerance)


def _noise_kl_per_example(noise_params, x, num_bits, hidden, num_nodes=200_000) -> np.ndarray:
    """KL(q(.|x) || U(0,1)^D) by quadrature, per example (B,), for dequantization_noise.

    Per pixel u = σ(a ε + t), ε logistic, a = exp(s): KL = E_ε[log p(ε) - s - log σ'(a ε + t)].
    The expectation is over ε = logit(v), v ~ U(0, 1), by the midpoint rule on num_nodes cells;
    the integrand grows like log(1/v) at the ends, so the rule's error is O(log(n)/n) ≈ 1e-4.
    """
    affine = dq.conditional_affine(hidden)
    context = dq.image_context(x, num_bits, jnp.float64)
    zeros = jnp.zeros(x.shape, jnp.float64)
    shift = np.asarray(affine.forward(noise_params[0], zeros, context)[0]).reshape(len(x), -1)
    scale = (
        np.asarray(affine.forward(noise_params[0], zeros + 1, context)[0]).reshape(len(x), -1)
        - shift
    )
    v = (np.arange(num_nodes) + 0.5) / num_nodes
    eps = np.log(v) - np.log1p(-v)
    log_sigmoid_grad = lambda a: -np.logaddexp(0, -a) - np.logaddexp(0, a)
    kl = np.zeros(len(x))
    for row in range(len(x)):
        for d in range(shift.shape[1]):
            a, t = scale[row, d], shift[row, d]
            integrand = log_sigmoid_grad(eps) - np.log(a) - log_sigmoid_grad(a * eps + t)
            kl[row] += integrand.mean()
    return kl


def test_variational_elbo_is_below_log_P_on_the_known_model():
    with jax.enable_x64(True):
        num_bits, num_samples, hidden = 2, 4000, (8,)
        x = _images(17, (4, 2, 2, 1), num_bits)
        probs = _categorical_probs(18, 4, 2**num_bits)
        model = _piecewise_constant_log_prob(probs, x.shape[1:])
        noise = dq.dequantization_noise(hidden)
        params = dq.init_dequantization_noise(
            jax.random.PRNGKey(0), noise, x, num_bits, jnp.float64
        )
        params = perturb(params, jax.random.PRNGKey(19), 0.5)  # a q that is far from uniform
        terms = np.asarray(
            dq.variational_elbo_samples(
                jax.random.PRNGKey(20), x, model, noise, params, num_bits, num_samples, jnp.float64
            )
        )
        log_p = _categorical_log_p(probs, x)
        kl = _noise_kl_per_example(params, x, num_bits, hidden)
    mean, se = terms.mean(axis=0), terms.std(axis=0, ddof=1) / np.sqrt(num_samples)
    # With a piecewise-constant p the ELBO is exactly log P(x) - KL(q || U): 2 checks per example,
    # a two-sided match with that value (plus the quadrature's 1e-3 allowance) and the one-sided
    # bound ELBO <= log P(x), which can only fail falsely when the MC mean overshoots by k se.
    # Doubling the quadrature's nodes changes KL by under 1e-5, so 1e-3 is a safe allowance.
    # A third check per example, that the bound is strict (mean + k se < log P), fails falsely
    # with probability Φ(k - KL/se) <= Φ(-k) once KL >= 2k se (a precondition asserted first).
    k = _k(3 * len(x))
    assert np.all(kl >= 2 * k * se), kl / se
    np.testing.assert_array_less(np.abs(mean - (log_p - kl)), k * se + 1e-3)
    np.testing.assert_array_less(mean - k * se, log_p)
    np.testing.assert_array_less(mean + k * se, log_p)


def test_trained_variational_noise_beats_the_uniform_bound():
    """For a smooth p the optimal q(u|x) ∝ p((x + u)/K) closes the Jensen gap of the uniform q.

    150 Adam steps on q alone, p fixed (the linear density, K = 2, where the uniform gap is about
    0.1 to 0.17 nats per example). Then, on fresh samples, 2 checks per example: the trained ELBO
    exceeds the exact uniform ELBO (by far more than k se, so a false fail needs a k-se miss)
    and stays below log P(x) (one-sided, the bound itself).
    """
    num_bits, num_samples = 1, 4000
    x = _images(21, (4, 2, 1, 1), num_bits)
    noise = dq.dequantization_noise((8,))
    params = dq.init_dequantization_noise(jax.random.PRNGKey(0), noise, x, num_bits)
    optimizer = optax.adam(0.05)
    state = optimizer.init(params)

    def loss(params, key):
        elbo = dq.variational_dequantization_elbo(
            key, x, _linear_log_prob, noise, params, num_bits, 64
        )
        return -jnp.mean(elbo)

    @jax.jit
    def step(params, state, key):
        grads = jax.grad(loss)(params, key)
        updates, state = optimizer.update(grads, state)
        return optax.apply_updates(params, updates), state

    for key in jax.random.split(jax.random.PRNGKey(100), 150):
        params, state = step(params, state, key)
    terms = np.asarray(
        dq.variational_elbo_samples(
            jax.random.PRNGKey(7), x, _linear_log_prob, noise, params, num_bits, num_samples
        ),
        np.float64,
    )
    mean, se = terms.mean(axis=0), terms.std(axis=0, ddof=1) / np.sqrt(num_samples)
    log_p_bin, mean_bin, _ = _linear_bin_moments(2**num_bits)
    flat = x.reshape(len(x), -1)
    log_p = log_p_bin[flat].sum(axis=1)
    uniform_elbo = mean_bin[flat].sum(axis=1) - flat.shape[1] * math.log(2**num_bits)
    k = _k(2 * len(x))
    np.testing.assert_array_less(uniform_elbo + k * se, mean)
    np.testing.assert_array_less(mean - k * se, log_p)


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    key = jax.random.PRNGKey(0)
    with pytest.raises(TypeError, match=r"needs integer data .* got dtype float32"):
        dq.uniform_dequantize(key, jnp.zeros((2, 3), jnp.float32))
    with pytest.raises(ValueError, match=r"data must lie in \[0, 256\) .* values in \[0, 300\]"):
        dq.uniform_dequantize(key, np.array([[0, 300]], np.int32))
    with pytest.raises(ValueError, match=r"data must lie in \[0, 2\) .* values in \[-1, 1\]"):
        dq.uniform_dequantize(key, np.array([[-1, 1]], np.int32), num_bits=1)
    with pytest.raises(TypeError, match=r"num_bits must be an int, got 2\.5"):
        dq.uniform_dequantize(key, np.zeros((2, 3), np.uint8), num_bits=2.5)
    with pytest.raises(ValueError, match="at least one event axis; got shape"):
        dq.uniform_dequantize(key, np.zeros((3,), np.uint8))
    with pytest.raises(ValueError, match="num_dims must be a positive int, got 0"):
        dq.bits_per_dim(jnp.zeros(2), 0)
    with pytest.raises(ValueError, match="num_samples must be a positive int, got 0"):
        dq.uniform_elbo_samples(key, np.zeros((2, 3), np.uint8), _linear_log_prob, 8, 0)
    with pytest.raises(ValueError, match=r"model_log_prob must map \(N, \*event\) to \(N,\)"):
        dq.uniform_elbo_samples(key, np.zeros((2, 3), np.uint8), lambda y: y, 8, 2)
    with pytest.raises(ValueError, match="conditional_affine needs a context of shape"):
        dq.conditional_affine().init(key, jnp.zeros((2, 3)))

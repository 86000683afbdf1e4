"""Importance sampling: exact cases, evidence and moments within Monte-Carlo standard errors.

Tolerances are NUM_SE = 5 standard errors computed in each test from the draws themselves
(a correct estimator fails with probability ~6e-7 under normality); seeds are fixed.
"""

from __future__ import annotations

import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nflows_jax import flows
from nflows_jax.bijectors.base import Bijector
from nflows_jax.sampling import importance as imp

NUM_SE = 5.0
DIM = 2


def _gaussian(mean, scale) -> distrax.Distribution:
    return distrax.MultivariateNormalDiag(jnp.asarray(mean), jnp.asarray(scale))


def _unnormalised_gaussian_log_density(mean, scale, log_z):
    """log of Z · N(x; mean, diag(scale²)) for batched x (n, D)."""
    normal = _gaussian(mean, scale)
    return lambda x: normal.log_prob(x) + log_z


def test_proposal_equal_to_target_gives_constant_weights():
    mean, scale, log_z = jnp.array([0.5, -1.0]), jnp.array([1.0, 2.0]), 3.7
    num = 1000
    draws = imp.importance_sample(
        jax.random.PRNGKey(0),
        _gaussian(mean, scale),
        _unnormalised_gaussian_log_density(mean, scale, log_z),
        num,
    )
    assert draws.samples.shape == (num, DIM) and draws.log_weights.shape == (num,)
    np.testing.assert_allclose(draws.log_weights, log_z, atol=1e-5)
    np.testing.assert_allclose(imp.log_evidence(draws.log_weights), log_z, atol=1e-5)
    np.testing.assert_allclose(imp.effective_sample_size(draws.log_weights), num, rtol=1e-4)
    np.testing.assert_allclose(imp.log_evidence_standard_error(draws.log_weights), 0.0, atol=1e-3)


def test_log_evidence_of_unnormalised_gaussian_within_standard_error():
    # Target: Z · N([1, -1], diag(0.7², 1.2²)) with Z = e^2.3; proposal N(0, 2² I) covers it.
    log_z = 2.3
    target = _unnormalised_gaussian_log_density([1.0, -1.0], [0.7, 1.2], log_z)
    draws = imp.importance_sample(
        jax.random.PRNGKey(1), _gaussian(jnp.zeros(DIM), 2.0 * jnp.ones(DIM)), target, 20_000
    )
    estimate = float(imp.log_evidence(draws.log_weights))
    standard_error = float(imp.log_evidence_standard_error(draws.log_weights))
    assert 0 < standard_error < 0.05  # a useful test: the tolerance is not huge
    assert abs(estimate - log_z) < NUM_SE * standard_error


def test_log_evidence_standard_error_matches_spread_over_seeds():
    # The delta-method SE should predict the spread of log Ẑ across independent runs. With 40
    # runs the sample variance ratio is ~ chi²_39 / 39, whose [1e-4, 1 - 1e-4] quantiles are
    # about [0.38, 2.0]; the average predicted SE is itself noisy, so allow [0.3, 2.5].
    target = _unnormalised_gaussian_log_density([1.0, -1.0], [0.7, 1.2], 0.0)
    proposal = _gaussian(jnp.zeros(DIM), 2.0 * jnp.ones(DIM))

    def run(key):
        lw = imp.importance_sample(key, proposal, target, 1000).log_weights
        return imp.log_evidence(lw), imp.log_evidence_standard_error(lw)

    estimates, ses = jax.jit(jax.vmap(run))(jax.random.split(jax.random.PRNGKey(2), 40))
    variance_ratio = float(np.var(estimates, ddof=1) / np.mean(np.square(ses)))
    assert 0.3 < variance_ratio < 2.5


def test_self_normalised_mean_of_shifted_gaussian():
    mean, scale = jnp.array([1.5, -0.5]), jnp.array([1.0, 0.5])
    target = _unnormalised_gaussian_log_density(mean, scale, -4.0)  # unnormalised on purpose
    draws = imp.importance_sample(
        jax.random.PRNGKey(3), _gaussian(jnp.zeros(DIM), 2.0 * jnp.ones(DIM)), target, 20_000
    )
    lw, x = draws.log_weights, draws.samples
    estimate = imp.self_normalised_expectation(lw, x)
    second_moment = imp.self_normalised_expectation(lw, x**2)
    assert estimate.shape == (DIM,)
    # Delta-method SE of the ratio estimator: sqrt(Σ w̄² (x - μ̂)²), per coordinate.
    weights = imp.normalised_weights(lw)[:, None]
    mean_se = jnp.sqrt(jnp.sum(weights**2 * (x - estimate) ** 2, axis=0))
    second_se = jnp.sqrt(jnp.sum(weights**2 * (x**2 - second_moment) ** 2, axis=0))
    assert bool(jnp.all(jnp.abs(estimate - mean) < NUM_SE * mean_se))
    assert bool(jnp.all(jnp.abs(second_moment - (mean**2 + scale**2)) < NUM_SE * second_se))


def test_ess_falls_as_proposal_mismatch_grows():
    # Target N(0, I₂); proposals N(Δ·e₁, I₂). Theory: ESS/n -> E_q[w]² / E_q[w²] = exp(-Δ²).
    target = _gaussian(jnp.zeros(DIM), jnp.ones(DIM)).log_prob
    shifts = [0.0, 0.25, 0.5, 1.0, 1.5, 2.0]
    num = 4000
    ess_fraction = []
    for i, shift in enumerate(shifts):
        proposal = _gaussian(jnp.array([shift, 0.0]), jnp.ones(DIM))
        lw = imp.importance_sample(jax.random.PRNGKey(10 + i), proposal, target, num).log_weights
        ess_fraction.append(float(imp.effective_sample_size(lw)) / num)
        if shift <= 0.5:
            # For Δ ≤ 0.5, w has finite 4th moment; delta-method SE of (mean w)² / mean(w²).
            w = np.exp(np.asarray(lw, np.float64))
            a, b = w.mean(), (w**2).mean()
            grad = np.array([2 * a / b, -(a**2) / b**2])
            cov = np.cov(np.stack([w, w**2])) / num
            se = math.sqrt(grad @ cov @ grad) + 1e-6  # + 1e-6: at Δ = 0 the SE is 0 exactly
            assert abs(ess_fraction[-1] - math.exp(-(shift**2))) < NUM_SE * se
    assert all(np.diff(ess_fraction) < 0), ess_fraction
    assert ess_fraction[-1] < 0.1


def test_function_pair_and_flow_proposals():
    # q = N(m, diag(s²)) written three ways: a distrax distribution, a (sample_fn, log_prob_fn)
    # pair, and an affine Flow. The target is q itself, so every form must give log-weights of
    # exactly 0 (a wrong sign of the flow's log-det would show up as 2·Σ log s).
    m, s = jnp.array([0.3, -2.0]), jnp.array([0.5, 1.5])
    target = _gaussian(m, s).log_prob
    dist = _gaussian(m, s)
    pair = (lambda key, n: dist.sample(seed=key, sample_shape=(n,)), dist.log_prob)
    affine = Bijector(
        init=lambda key, x, context=None: {"shift": m, "log_scale": jnp.log(s)},
        forward=lambda p, x, context=None: (
            x * jnp.exp(p["log_scale"]) + p["shift"],
            jnp.full(x.shape[:1], jnp.sum(p["log_scale"])),
        ),
        inverse=lambda p, y, context=None: (
            (y - p["shift"]) * jnp.exp(-p["log_scale"]),
            jnp.full(y.shape[:1], -jnp.sum(p["log_scale"])),
        ),
    )
    flow = flows.Flow(flows.standard_normal(DIM), affine)
    params = flows.init(flow, jax.random.PRNGKey(0), jnp.zeros((1, DIM)))
    for proposal in (dist, pair, (flow, params)):
        draws = imp.importance_sample(jax.random.PRNGKey(4), proposal, target, 500)
        assert draws.samples.shape == (500, DIM)
        np.testing.assert_allclose(draws.log_weights, 0.0, atol=1e-5)
        # The flow's draws really are from q: mean within 5 SE of m.
        se = s / math.sqrt(500)
        assert bool(jnp.all(jnp.abs(draws.samples.mean(0) - m) < NUM_SE * se))


def test_importance_sample_jits_and_vmaps():
    proposal = _gaussian(jnp.zeros(DIM), jnp.ones(DIM))
    target = _unnormalised_gaussian_log_density(jnp.ones(DIM), jnp.ones(DIM), 0.0)
    fn = jax.jit(jax.vmap(lambda k: imp.importance_sample(k, proposal, target, 64)))
    draws = fn(jax.random.split(jax.random.PRNGKey(5), 3))
    assert draws.samples.shape == (3, 64, DIM) and draws.log_weights.shape == (3, 64)


def test_estimators_are_stable_for_huge_log_weights():
    lw = jax.random.normal(jax.random.PRNGKey(6), (1000,)) * 3.0
    values = jnp.arange(1000.0)
    for offset in (-1000.0, 1000.0):
        shifted = lw + offset
        np.testing.assert_allclose(imp.log_evidence(shifted), imp.log_evidence(lw) + offset)
        np.testing.assert_allclose(
            imp.effective_sample_size(shifted), imp.effective_sample_size(lw), rtol=1e-4
        )
        np.testing.assert_allclose(
            imp.self_normalised_expectation(shifted, values),
            imp.self_normalised_expectation(lw, values),
            rtol=1e-4,
        )
    # ESS bounds: 1 when one weight dominates, n when all are equal.
    np.testing.assert_allclose(imp.effective_sample_size(jnp.array([0.0, -1e4, -1e4])), 1.0)
    np.testing.assert_allclose(imp.effective_sample_size(jnp.full(7, 123.0)), 7.0, rtol=1e-5)


def test_bad_inputs_raise():
    proposal = _gaussian(jnp.zeros(DIM), jnp.ones(DIM))
    per_sample = lambda x: -0.5 * jnp.sum(x**2)  # not vectorised: returns a scalar for a batch
    with pytest.raises(ValueError, match="vmap"):
        imp.importance_sample(jax.random.PRNGKey(0), proposal, per_sample, 10)
    with pytest.raises(ValueError, match="params"):
        flow = flows.Flow(flows.standard_normal(DIM), None)
        imp.importance_sample(jax.random.PRNGKey(0), flow, proposal.log_prob, 10)
    with pytest.raises(ValueError, match="proposal must be"):
        imp.importance_sample(jax.random.PRNGKey(0), "gaussian", proposal.log_prob, 10)
    with pytest.raises(ValueError, match="shape"):
        imp.log_evidence(jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="leading axis"):
        imp.self_normalised_expectation(jnp.zeros(3), jnp.zeros((4, 2)))

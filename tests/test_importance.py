"""Importance sampling: exact cases, evidence and moments within Monte-Carlo standard errors.

Statistical checks have false-fail rate ALPHA = 1e-4 per test, fixed before any run: a test of m
moment checks uses k = z_{ALPHA / (2m)} standard errors each (Bonferroni, normal approximation;
``power.num_standard_errors``). Float tolerances come from float32 rounding (eps times the size
of the quantities that are rounded), never from a seed that passed. Seeds are fixed.

The Gaussian target/proposal pairs have the proposal broader than the target in every coordinate,
so the weights p/q are bounded and have every moment; those moments are computed exactly
(float64 quadrature) where a test needs the true standard error.
"""

from __future__ import annotations

import itertools
import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import power
import pytest
import scipy.stats

from nflows_jax import flows
from nflows_jax.bijectors.base import Bijector
from nflows_jax.sampling import importance as imp

ALPHA = 1e-4  # false-fail rate per test, fixed before any run
BETA = 0.01  # 1 - power against the named wrong answer
EPS32 = float(np.finfo(np.float32).eps)
DIM = 2

# The pair used for evidence and SE checks: Z · N([1, -1], diag(0.7², 1.2²)) under N(0, 2² I).
TARGET_MEAN, TARGET_SCALE, PROPOSAL_SCALE = np.array([1.0, -1.0]), np.array([0.7, 1.2]), 2.0


def _gaussian(mean, scale) -> distrax.Distribution:
    return distrax.MultivariateNormalDiag(jnp.asarray(mean), jnp.asarray(scale))


def _unnormalised_gaussian_log_density(mean, scale, log_z):
    """log of Z · N(x; mean, diag(scale²)) for batched x (n, D)."""
    normal = _gaussian(mean, scale)
    return lambda x: normal.log_prob(x) + log_z


def _ulp(value) -> float:
    """float32 spacing at |value|: the size of one rounding step there."""
    return float(np.spacing(np.float32(np.max(np.abs(np.asarray(value, np.float64))))))


def _gaussian_log_density_rounding(x, mean, scale) -> float:
    """Bound on the float32 error of log N(x; mean, diag(scale²)) evaluated two different ways
    (from the noise ε that made x = mean + scale·ε, or from x itself): rounding x moves it by
    ≤ eps·|x|, which moves the log-density by |∂/∂x| · eps|x| = |x - m| |x| eps / s², summed over
    coordinates; the quadratic form and the sum of D terms round by a few ulps of the result.
    """
    x = np.asarray(x, np.float64)
    gradient_term = np.sum(np.abs(x - mean) * np.abs(x) / np.square(scale), axis=-1)
    quadratic = np.sum(np.square((x - mean) / scale), axis=-1)
    return float(4 * EPS32 * np.max(gradient_term + quadratic + 1.0))


def _weight_moment(order: int, mean, scale, proposal_scale) -> float:
    """E_q[(p/q)^order] for p = N(mean, diag(scale²)), q = N(0, proposal_scale² I), exactly.

    The integrand p^k q^(1-k) factorises over coordinates into 1-D Gaussians (precision
    k/s² - (k-1)/σ² > 0 because σ > s), each integrated by the midpoint rule on [-40, 40] with
    step 1e-3: for a smooth Gaussian of width ≥ 0.3 that is exact to float64 rounding.
    """
    step = 1e-3
    x = np.arange(-40.0, 40.0, step) + step / 2
    total = 1.0
    for m, s in zip(np.asarray(mean, np.float64), np.asarray(scale, np.float64), strict=True):
        log_p = scipy.stats.norm.logpdf(x, m, s)
        log_q = scipy.stats.norm.logpdf(x, 0.0, proposal_scale)
        total *= np.sum(np.exp(order * log_p + (1 - order) * log_q)) * step
    return float(total)


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
    # log p - log q = log Z up to the two evaluations' rounding plus adding log Z (≤ 1 ulp).
    log_q = np.asarray(_gaussian(mean, scale).log_prob(draws.samples))
    weight_atol = _gaussian_log_density_rounding(draws.samples, mean, scale) + 2 * _ulp(
        np.abs(log_q) + log_z
    )
    np.testing.assert_allclose(draws.log_weights, log_z, rtol=0, atol=weight_atol)
    # logsumexp and - log n round the result, of size log Z + log n, by a few ulps.
    evidence_atol = weight_atol + 4 * _ulp(log_z + math.log(num))
    np.testing.assert_allclose(
        imp.log_evidence(draws.log_weights), log_z, rtol=0, atol=evidence_atol
    )
    # ESS = exp(2 lse(lw) - lse(2 lw)): the exponent errs by the weights' spread (2 · 2 atol)
    # and the rounding of numbers of size 2 (log Z + log n); exp turns that into a relative error.
    ess_rtol = 4 * weight_atol + 4 * _ulp(2 * (log_z + math.log(num)))
    np.testing.assert_allclose(
        imp.effective_sample_size(draws.log_weights), num, rtol=ess_rtol, atol=0
    )
    # SE = sqrt((n/ESS - 1) / (n - 1)) with n/ESS - 1 ≤ ess_rtol.
    se_atol = math.sqrt(ess_rtol / (num - 1))
    np.testing.assert_allclose(
        imp.log_evidence_standard_error(draws.log_weights), 0.0, rtol=0, atol=se_atol
    )


def test_log_evidence_of_unnormalised_gaussian_within_standard_error():
    """Two checks at ALPHA / 2 each: log Ẑ within k SE of log Z, and the SE estimate itself.

    (n - 1) SE² is exactly the sample CV² of the weights, m2/m1² - 1; its true value
    CV² = E_q[w²] - 1 and its delta-method standard deviation, from E_q[w^j] for j ≤ 4, are
    computed exactly. A wrong SE formula (e.g. missing the 1/√n, or 1.7× off, which moves CV² by
    a factor 2.89 while its SD here is ~1 % of it) fails the second check.
    """
    log_z = 2.3
    num = 20_000
    k = power.num_standard_errors(ALPHA, 2)
    target = _unnormalised_gaussian_log_density(TARGET_MEAN, TARGET_SCALE, log_z)
    proposal = _gaussian(jnp.zeros(DIM), PROPOSAL_SCALE * jnp.ones(DIM))
    draws = imp.importance_sample(jax.random.PRNGKey(1), proposal, target, num)
    estimate = float(imp.log_evidence(draws.log_weights))
    standard_error = float(imp.log_evidence_standard_error(draws.log_weights))
    assert abs(estimate - log_z) < k * standard_error

    m1, m2, m3, m4 = (
        _weight_moment(j, TARGET_MEAN, TARGET_SCALE, PROPOSAL_SCALE) for j in (1, 2, 3, 4)
    )
    np.testing.assert_allclose(m1, 1.0, rtol=1e-9)  # quadrature check: p integrates to 1
    cv2 = m2 - 1.0
    # Delta method for m2/m1² - 1 at (E w, E w²) = (1, M2): gradient (-2 M2, 1).
    gradient = np.array([-2.0 * m2, 1.0])
    covariance = np.array([[m2 - 1.0, m3 - m2], [m3 - m2, m4 - m2**2]])
    cv2_sd = math.sqrt(gradient @ covariance @ gradient / num)
    assert abs((num - 1) * standard_error**2 - cv2) < k * cv2_sd


# SE calibration. Over R independent replications z_r = (log Ẑ_r - log Z) / SE_r is ≈ N(0, 1),
# so T = Σ z_r² ≈ χ²_R; if the SE were off by a factor c, T ≈ c^-2 χ²_R. The two-sided χ²_R test
# at ALPHA has power ≥ 0.99 against c = 1.2 and 1/1.2 (variance ratio 1.44 either way) from
# R = 601; c = 1.7 needs only R = 77.
NUM_REPLICATIONS = power.scaled_chi2_dof([1.2**2, 1.2**-2], ALPHA, BETA)
# Draws per replication: the weights' skewness (1.8) and kurtosis (5.3) enter E[z²] - 1 at
# O(1/n), and the Jensen bias of log Ẑ, -CV²/(2n), enters at O(CV²/(4n)); at n = 10^4 both are
# ~1e-3, far below the ±20 % the test resolves.
NUM_PER_REPLICATION = 10_000


def test_log_evidence_standard_error_matches_spread_over_seeds():
    """Σ z² over NUM_REPLICATIONS runs within the χ² interval at ALPHA (power 0.99 against an SE
    1.2× too large or too small, checked below on the same runs)."""
    log_z = 0.0
    target = _unnormalised_gaussian_log_density(TARGET_MEAN, TARGET_SCALE, log_z)
    proposal = _gaussian(jnp.zeros(DIM), PROPOSAL_SCALE * jnp.ones(DIM))

    def run(key):
        lw = imp.importance_sample(key, proposal, target, NUM_PER_REPLICATION).log_weights
        return imp.log_evidence(lw), imp.log_evidence_standard_error(lw)

    keys = jax.random.split(jax.random.PRNGKey(2), NUM_REPLICATIONS)
    estimates, ses = jax.jit(jax.vmap(run))(keys)
    z_squared = np.square((np.asarray(estimates, np.float64) - log_z) / np.asarray(ses, np.float64))
    statistic = float(z_squared.sum())
    low, high = power.chi2_interval(NUM_REPLICATIONS, ALPHA)
    assert low < statistic < high, (statistic, low, high, NUM_REPLICATIONS)
    # The named wrong answers on the same runs: SEs 1.2× too large, and 1.2× too small.
    for factor in (1.2, 1 / 1.2):
        assert not low < statistic / factor**2 < high, f"an SE {float(factor):.3f}x off was missed"


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
    k = power.num_standard_errors(ALPHA, 2 * DIM)  # two moments per coordinate
    assert bool(jnp.all(jnp.abs(estimate - mean) < k * mean_se))
    assert bool(jnp.all(jnp.abs(second_moment - (mean**2 + scale**2)) < k * second_se))


def test_ess_falls_as_proposal_mismatch_grows():
    """Target N(0, I₂), proposals N(Δ·e₁, I₂): log w ~ N(-Δ²/2, Δ²), so E_q[w^j] = e^{j(j-1)Δ²/2}
    and ESS/n = m1² / m2 -> E_q[w]² / E_q[w²] = exp(-Δ²).

    The delta-method SD of m1²/m2 comes from the exact moments (j ≤ 4). The normal approximation
    needs the mean of w² to be nearly symmetric: w² is log-normal with σ = 2Δ, whose skewness over
    √n is 0.1 at Δ = 0.5 and n = 4000 but 0.56 at Δ = 0.75, so the checks stop at Δ = 0.5
    (three checks at k = z_{ALPHA/6}). Their intervals are disjoint, so they also prove the
    decrease; larger mismatches are left out because no tolerance for them could be derived.
    """
    target = _gaussian(jnp.zeros(DIM), jnp.ones(DIM)).log_prob
    shifts = [0.0, 0.25, 0.5]
    num = 4000
    k = power.num_standard_errors(ALPHA, len(shifts))
    # At Δ = 0 the log-weights are rounding noise: ESS/n = 1 up to exp of a few ulps of 2 log n.
    float_slack = 4 * _ulp(2 * math.log(num))
    intervals = []
    for i, shift in enumerate(shifts):
        proposal = _gaussian(jnp.array([shift, 0.0]), jnp.ones(DIM))
        lw = imp.importance_sample(jax.random.PRNGKey(10 + i), proposal, target, num).log_weights
        fraction = float(imp.effective_sample_size(lw)) / num
        m2, m3, m4 = (math.exp(j * (j - 1) * shift**2 / 2) for j in (2, 3, 4))
        grad = np.array([2.0 / m2, -1.0 / m2**2])  # of a²/b at (a, b) = (1, m2)
        cov = np.array([[m2 - 1.0, m3 - m2], [m3 - m2, m4 - m2**2]]) / num
        tolerance = k * math.sqrt(max(grad @ cov @ grad, 0.0)) + float_slack
        theory = math.exp(-(shift**2))
        assert abs(fraction - theory) < tolerance, (shift, fraction, theory, tolerance)
        intervals.append((theory - tolerance, theory + tolerance))
    assert all(low > high for (low, _), (_, high) in itertools.pairwise(intervals)), intervals


def test_function_pair_and_flow_proposals():
    # q = N(m, diag(s²)) written three ways: a distrax distribution, a (sample_fn, log_prob_fn)
    # pair, and an affine Flow. The target is q itself, so every form must give log-weights of
    # exactly 0 up to rounding (a wrong sign of the flow's log-det would show up as 2·Σ log s).
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
    num = 500
    proposals = (dist, pair, (flow, params))
    k = power.num_standard_errors(ALPHA, DIM * len(proposals))  # one mean check per coordinate
    for proposal in proposals:
        draws = imp.importance_sample(jax.random.PRNGKey(4), proposal, target, num)
        assert draws.samples.shape == (num, DIM)
        # Both log-densities round; log s and exp(log s) add a few eps to the scale (the + 1).
        atol = _gaussian_log_density_rounding(draws.samples, m, s) + 4 * EPS32 * DIM
        np.testing.assert_allclose(draws.log_weights, 0.0, rtol=0, atol=atol)
        # The draws really are from q: the mean within k SE of m (SE = s / √n, exact).
        se = s / math.sqrt(num)
        assert bool(jnp.all(jnp.abs(draws.samples.mean(0) - m) < k * se))


def test_importance_sample_jits_and_vmaps():
    proposal = _gaussian(jnp.zeros(DIM), jnp.ones(DIM))
    target = _unnormalised_gaussian_log_density(jnp.ones(DIM), jnp.ones(DIM), 0.0)
    fn = jax.jit(jax.vmap(lambda k: imp.importance_sample(k, proposal, target, 64)))
    draws = fn(jax.random.split(jax.random.PRNGKey(5), 3))
    assert draws.samples.shape == (3, 64, DIM) and draws.log_weights.shape == (3, 64)


def test_estimators_are_stable_for_huge_log_weights():
    num = 1000
    lw = jax.random.normal(jax.random.PRNGKey(6), (num,)) * 3.0
    values = jnp.arange(float(num))
    for offset in (-1000.0, 1000.0):
        shifted = lw + offset
        # Adding the offset rounds each log-weight by half an ulp of |offset| + |lw| (δ); the
        # logsumexp result (size |offset|) rounds by another, so log Ẑ moves by ≤ 2 ulps there.
        delta = _ulp(abs(offset) + np.abs(lw))
        np.testing.assert_allclose(
            imp.log_evidence(shifted), imp.log_evidence(lw) + offset, rtol=0, atol=4 * delta
        )
        # ESS: its exponent 2 lse(lw) - lse(2 lw) has terms of size 2|offset|, each rounded by
        # ≤ one ulp there, plus 2δ from the weights; exp makes that a relative error.
        ess_rtol = 2 * _ulp(2 * (abs(offset) + np.abs(lw))) + 4 * delta
        np.testing.assert_allclose(
            imp.effective_sample_size(shifted), imp.effective_sample_size(lw), rtol=ess_rtol
        )
        # Normalised weights move by ≤ 2δ relative (each weight and their sum); a sum of n
        # positive terms adds ≤ n eps relative in float32 in the worst order.
        np.testing.assert_allclose(
            imp.self_normalised_expectation(shifted, values),
            imp.self_normalised_expectation(lw, values),
            rtol=4 * delta + num * EPS32,
        )
    # ESS bounds: 1 when one weight dominates (e^-1e4 underflows to 0, so exactly 1), n when all
    # are equal (exponent 2·(123 + log 7) - (246 + log 7): terms of size 248 each round once).
    np.testing.assert_array_equal(imp.effective_sample_size(jnp.array([0.0, -1e4, -1e4])), 1.0)
    np.testing.assert_allclose(
        imp.effective_sample_size(jnp.full(7, 123.0)), 7.0, rtol=4 * _ulp(2 * 123.0 + math.log(7))
    )


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
    with pytest.raises(ValueError, match="at least 2"):
        imp.log_evidence_standard_error(jnp.zeros(1))
    with pytest.raises(ValueError, match="num_samples"):
        imp.importance_sample(jax.random.PRNGKey(0), proposal, proposal.log_prob, 0)

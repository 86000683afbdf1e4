"""Real posteriors: logistic regression on the breast-cancer data, eight schools.

Checks: the log-densities equal float64 NumPy/SciPy transcriptions of the models; the logistic
gradient equals central finite differences; the centred and non-centred eight schools are the
same posterior (a change of variables with log-Jacobian 8 log tau); the priors are normalised
(SciPy's normalised densities, and quadrature for the density of log tau); shapes, jit/vmap and
error messages; ``reference_moments`` on a Gaussian with known moments.

Tolerances. A float64 evaluation that combines terms t_i errs by at most a few roundings of
Σ|t_i| per operation; for sums of N terms recursive summation adds up to N eps Σ|t_i|.
``sum_bound`` states that bound for each test with its inputs.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats
from sklearn.datasets import load_breast_cancer

from nflows_jax.targets import (
    EIGHT_SCHOOLS_SIGMA,
    EIGHT_SCHOOLS_Y,
    eight_schools,
    half_cauchy_log_scale_logpdf,
    logistic_regression_posterior,
    reference_moments,
)

EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)
SCHOOLS_Y = np.array([28, 8, -3, 7, -1, 1, 18, 12], np.float64)
SCHOOLS_SIGMA = np.array([15, 10, 16, 11, 9, 11, 10, 18], np.float64)


def sum_bound(terms: np.ndarray, eps: float, ops: int = 8) -> float:
    """Rounding bound for a computed Σ terms: (N + ops) eps Σ|terms| (summation + per-term ops)."""
    terms = np.abs(np.asarray(terms, np.float64)).ravel()
    return (terms.size + ops) * eps * float(terms.sum())


# ------------------------------------------------------------------------------------------------
# Logistic regression
# ------------------------------------------------------------------------------------------------


def reference_logistic_terms(beta: np.ndarray, prior_scale: float) -> tuple[np.ndarray, float]:
    """float64 per-observation log-likelihood terms and the log prior, from the raw sklearn data."""
    data = load_breast_cancer()
    raw = data.data.astype(np.float64)
    features = (raw - raw.mean(0)) / raw.std(0)
    X = np.concatenate([np.ones((raw.shape[0], 1)), features], axis=1)
    y = data.target.astype(np.float64)
    eta = X @ beta
    terms = y * special.log_expit(eta) + (1 - y) * special.log_expit(-eta)
    return terms, float(np.sum(stats.norm.logpdf(beta, 0.0, prior_scale)))


def random_betas(num: int, seed: int = 0) -> np.ndarray:
    return 0.5 * np.random.default_rng(seed).standard_normal((num, 31))


def test_breast_cancer_data_is_standardised_with_an_intercept():
    target = logistic_regression_posterior()
    assert target.dim == 31 and target.X.shape == (569, 31) and target.y.shape == (569,)
    assert target.names[0] == "intercept" and target.names[1] == "mean radius"
    assert len(target.names) == 31
    X = np.asarray(target.X, np.float64)
    assert np.all(X[:, 0] == 1.0)
    # float32 storage of standardised features (|x| < 13): mean within 569 · eps32 · 13 / 569.
    np.testing.assert_allclose(X[:, 1:].mean(0), 0.0, atol=13 * EPS32)
    np.testing.assert_allclose(X[:, 1:].std(0), 1.0, rtol=4 * EPS32)
    assert set(np.unique(np.asarray(target.y))) == {0.0, 1.0}
    assert int(np.asarray(target.y).sum()) == 357  # benign cases in the Wisconsin data


def test_logistic_logdensity_equals_scipy_in_float64():
    betas = np.concatenate([np.zeros((1, 31)), random_betas(4)])
    with jax.enable_x64(True):
        target = logistic_regression_posterior(prior_scale=2.5, dtype=jnp.float64)
        values = np.asarray(jax.vmap(target.logdensity)(jnp.asarray(betas)))
        likelihoods = np.asarray(target.log_likelihood(jnp.asarray(betas)))
        priors = np.asarray(target.prior_logdensity(jnp.asarray(betas)))
    for beta, value, likelihood, prior in zip(betas, values, likelihoods, priors, strict=True):
        terms, expected_prior = reference_logistic_terms(beta, 2.5)
        # eta = X beta itself errs by 31 eps Σ_d |x_nd beta_d| per observation, and each term
        # moves by at most |d term / d eta| <= 1 times that.
        X = np.asarray(target.X)
        eta_error = 31 * EPS64 * float(np.sum(np.abs(X) @ np.abs(beta)))
        atol = sum_bound(terms, EPS64) + 2 * eta_error
        assert abs(likelihood - terms.sum()) <= atol
        assert abs(prior - expected_prior) <= sum_bound(stats.norm.logpdf(beta, 0, 2.5), EPS64)
        assert abs(value - (terms.sum() + expected_prior)) <= atol + 64 * EPS64 * abs(value)


def test_logistic_float32_target_is_the_float64_one_to_float32_precision():
    betas = random_betas(3, seed=1)
    target = logistic_regression_posterior()
    values = np.asarray(target.logdensity(jnp.asarray(betas, jnp.float32)))
    X = np.asarray(target.X, np.float64)
    for beta, value in zip(betas, values, strict=True):
        terms, prior = reference_logistic_terms(beta, 1.0)
        # As above with eps32; beta is rounded to float32 too (a relative eps32 per coefficient).
        eta_error = 33 * EPS32 * float(np.sum(np.abs(X) @ np.abs(beta)))
        atol = sum_bound(terms, EPS32) + 2 * eta_error + sum_bound(beta**2, EPS32)
        assert abs(value - (terms.sum() + prior)) <= atol


def test_logistic_gradient_equals_finite_differences_in_float64():
    """Central differences along random unit directions u, step h: the error is at most
    h² / 6 · max|f'''| + 2 δ / h for an evaluation error δ. Along u, the prior is quadratic
    (f''' = 0) and the likelihood's third derivative is -Σ_n σ''(η_n) (x_n · u)³ with
    |σ''| <= 1 / (6 √3), so max|f'''| <= Σ_n |x_n · u|³ / (6 √3)."""
    rng = np.random.default_rng(2)
    step = 1e-4
    with jax.enable_x64(True):
        target = logistic_regression_posterior(dtype=jnp.float64)
        f = jax.jit(target.logdensity)
        grad = jax.jit(jax.grad(target.logdensity))
        X = np.asarray(target.X)
        for beta in random_betas(3, seed=3):
            g = np.asarray(grad(jnp.asarray(beta)))
            for _ in range(4):
                u = rng.standard_normal(31)
                u /= np.linalg.norm(u)
                plus = float(f(jnp.asarray(beta + step * u)))
                minus = float(f(jnp.asarray(beta - step * u)))
                fd = (plus - minus) / (2 * step)
                third = float(np.sum(np.abs(X @ u) ** 3)) / (6 * math.sqrt(3))
                terms, _ = reference_logistic_terms(beta, 1.0)
                delta = sum_bound(terms, EPS64) + 31 * EPS64 * float(
                    np.sum(np.abs(X) @ np.abs(beta))
                )
                tolerance = step**2 / 6 * third + 2 * delta / step
                assert abs(fd - g @ u) <= tolerance


def test_logistic_shapes_jit_and_errors():
    target = logistic_regression_posterior()
    assert target.logdensity(jnp.zeros(31)).shape == ()
    batch = jnp.zeros((2, 5, 31))
    assert target.logdensity(batch).shape == (2, 5)
    np.testing.assert_array_equal(
        jax.jit(jax.vmap(target.logdensity))(batch.reshape(10, 31)),
        target.logdensity(batch).reshape(10),
    )
    assert jax.grad(target.logdensity)(jnp.zeros(31)).shape == (31,)
    # log p(y | beta = 0) = -N log 2, exactly the log of 2^-569.
    np.testing.assert_allclose(target.log_likelihood(jnp.zeros(31)), -569 * math.log(2), rtol=1e-6)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 31\); got shape \(30,\)"):
        target.logdensity(jnp.zeros(30))
    with pytest.raises(ValueError, match="prior_scale must be a positive number"):
        logistic_regression_posterior(prior_scale=0.0)
    with pytest.raises(ValueError, match="floating dtype"):
        logistic_regression_posterior(dtype=jnp.int32)
    with pytest.raises(ValueError, match=r"jax\.enable_x64"):
        logistic_regression_posterior(dtype=jnp.float64)
    no_intercept = logistic_regression_posterior(intercept=False, standardise=False)
    assert no_intercept.dim == 30 and no_intercept.names[0] == "mean radius"
    assert float(jnp.max(no_intercept.X)) > 1000  # raw areas


# ------------------------------------------------------------------------------------------------
# Eight schools
# ------------------------------------------------------------------------------------------------


def random_points(num: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((num, 10))
    z[:, 0] *= 5.0
    z[:, 1] = rng.uniform(-3.0, 3.0, num)  # tau from 0.05 to 20
    z[:, 2:] *= 3.0
    return z


def scipy_centred_terms(mu: float, tau: float, theta: np.ndarray) -> np.ndarray:
    """float64 log-density terms of the centred model on (mu, log tau, theta), SciPy's pdfs."""
    return np.concatenate(
        [
            [stats.norm.logpdf(mu, 0.0, 5.0), stats.halfcauchy.logpdf(tau, scale=5.0)],
            [math.log(tau)],  # d tau / d log tau
            stats.norm.logpdf(theta, mu, tau),
            stats.norm.logpdf(SCHOOLS_Y, theta, SCHOOLS_SIGMA),
        ]
    )


def test_data_are_the_classic_eight_schools():
    np.testing.assert_array_equal(EIGHT_SCHOOLS_Y, SCHOOLS_Y)
    np.testing.assert_array_equal(EIGHT_SCHOOLS_SIGMA, SCHOOLS_SIGMA)
    target = eight_schools(True)
    assert target.dim == 10 and target.centred
    assert target.names[:3] == ("mu", "log_tau", "theta[0]")
    assert eight_schools(False).names[2] == "theta_tilde[0]"
    assert eight_schools(False).blocks == {"mu": 0, "log_tau": 1, "theta_tilde": slice(2, 10)}


@pytest.mark.parametrize("centred", [True, False])
def test_eight_schools_equals_scipy_in_float64(centred):
    points = random_points(6, seed=4)
    with jax.enable_x64(True):
        target = eight_schools(centred, dtype=jnp.float64)
        values = np.asarray(target.logdensity(jnp.asarray(points)))
        priors = np.asarray(target.prior_logdensity(jnp.asarray(points)))
        likelihoods = np.asarray(target.log_likelihood(jnp.asarray(points)))
    for z, value, prior, likelihood in zip(points, values, priors, likelihoods, strict=True):
        mu, log_tau, rest = z[0], z[1], z[2:]
        tau = math.exp(log_tau)
        theta = rest if centred else mu + tau * rest
        terms = scipy_centred_terms(mu, tau, theta)
        if not centred:  # + log-Jacobian of theta_tilde -> theta
            terms = np.append(terms, 8 * log_tau)
        # The non-centred form evaluates N(theta_tilde; 0, 1) where SciPy evaluates
        # N(theta; mu, tau): theta_tilde recovered from theta errs by eps (|mu| + |theta|) / tau,
        # moving ½ theta_tilde² by |theta_tilde| times that.
        recovery = 4 * EPS64 * float(np.sum(np.abs(rest) * (abs(mu) + np.abs(theta)) / tau))
        assert abs(value - terms.sum()) <= sum_bound(terms, EPS64) + recovery
        assert abs(prior + likelihood - value) <= 4 * EPS64 * (abs(prior) + abs(likelihood))
        expected_likelihood = stats.norm.logpdf(SCHOOLS_Y, theta, SCHOOLS_SIGMA)
        assert abs(likelihood - expected_likelihood.sum()) <= sum_bound(
            expected_likelihood, EPS64
        ) + 4 * EPS64 * float(np.sum(np.abs(theta - SCHOOLS_Y) * np.abs(theta) / SCHOOLS_SIGMA**2))


def test_centred_and_non_centred_are_the_same_posterior():
    """non-centred(mu, log tau, tt) = centred(mu, log tau, mu + tau tt) + 8 log tau, in float64."""
    points = random_points(8, seed=5)
    with jax.enable_x64(True):
        centred = eight_schools(True, dtype=jnp.float64)
        non_centred = eight_schools(False, dtype=jnp.float64)
        mapped = np.asarray(non_centred.constrain(jnp.asarray(points)))  # (mu, tau, theta)
        centred_points = np.concatenate([points[:, :2], mapped[:, 2:]], axis=1)
        lhs = np.asarray(non_centred.logdensity(jnp.asarray(points)))
        rhs = np.asarray(centred.logdensity(jnp.asarray(centred_points))) + 8 * points[:, 1]
        same = np.asarray(centred.constrain(jnp.asarray(centred_points)))
    np.testing.assert_array_equal(same, mapped)  # both forms report the same (mu, tau, theta)
    for z, theta, a, b in zip(points, mapped[:, 2:], lhs, rhs, strict=True):
        tau = math.exp(z[1])
        terms = scipy_centred_terms(z[0], tau, theta)
        recovery = 4 * EPS64 * float(np.sum(np.abs(z[2:]) * (abs(z[0]) + np.abs(theta)) / tau))
        assert abs(a - b) <= 2 * sum_bound(terms, EPS64) + recovery + 8 * EPS64 * abs(8 * z[1])


def test_priors_are_normalised():
    """SciPy's normalised densities above pin the prior of (mu, tau, theta); here the density
    of log tau (HalfCauchy(5) pushed through exp) integrates to 1 by adaptive quadrature, whose
    error estimate (and the float64 evaluation, ~1e-15 per point) sets the tolerance."""
    with jax.enable_x64(True):

        def density(u):
            return math.exp(float(half_cauchy_log_scale_logpdf(jnp.float64(u), 5.0)))

        pieces = [
            integrate.quad(density, a, b, limit=200)
            for a, b in ((-np.inf, math.log(5.0)), (math.log(5.0), np.inf))
        ]
        mu_mass = integrate.quad(lambda m: math.exp(stats.norm.logpdf(m, 0, 5)), -np.inf, np.inf)
    total = sum(p[0] for p in pieces)
    assert abs(total - 1.0) <= 1e-12 + sum(p[1] for p in pieces)
    assert abs(mu_mass[0] - 1.0) <= 1e-12 + mu_mass[1]
    # Its tails are exact in float32 too: p(u) ~ log(2/π) + u - log 5 for u -> -inf and
    # log(2/π) - (u - log 5) for u -> +inf, no overflow of e^{2u}.
    far = jnp.array([-80.0, 80.0])
    expected = math.log(2 / math.pi) - jnp.abs(far - math.log(5.0))
    np.testing.assert_allclose(half_cauchy_log_scale_logpdf(far, 5.0), expected, rtol=4 * EPS32)


def test_eight_schools_shapes_and_errors():
    for centred in (True, False):
        target = eight_schools(centred)
        assert target.logdensity(jnp.zeros(10)).shape == ()
        assert target.logdensity(jnp.zeros((3, 4, 10))).shape == (3, 4)
        assert target.constrain(jnp.zeros((3, 4, 10))).shape == (3, 4, 10)
        assert jax.jit(jax.grad(target.logdensity))(jnp.zeros(10)).shape == (10,)
        # Deep in the funnel's neck (tau = e^-30) the log-density stays finite.
        neck = jnp.zeros(10).at[1].set(-30.0)
        assert np.isfinite(float(target.logdensity(neck)))
        with pytest.raises(ValueError, match=r"shape \(\.\.\., 10\); got shape \(9,\)"):
            target.logdensity(jnp.zeros(9))
    np.testing.assert_allclose(
        eight_schools(False).constrain(jnp.zeros(10).at[1].set(1.0))[1], math.e, rtol=EPS32
    )
    with pytest.raises(ValueError, match="centred must be a bool"):
        eight_schools("yes")
    with pytest.raises(ValueError, match="floating dtype"):
        eight_schools(True, dtype=jnp.int32)


# ------------------------------------------------------------------------------------------------
# Reference moments
# ------------------------------------------------------------------------------------------------


def test_reference_moments_on_a_gaussian_with_known_moments():
    """x ~ N(0, diag(1, 1/4, 4)), f = 2x + 1: E f = 1, E f² = 4 var + 1. Each estimate is
    checked within 4.5 Monte-Carlo standard errors (two-sided normal false-fail 7e-6 per check,
    6 checks: < 5e-5). Power: a wrong answer that ignores the transform has E f = 0, one unit
    away; it is caught with probability >= 99% when 1 >= (4.5 + 2.33) mcse, asserted below."""
    variances = jnp.array([1.0, 0.25, 4.0])

    def logdensity(x):
        return -0.5 * jnp.sum(x**2 / variances)

    moments = reference_moments(
        jax.random.key(0),
        logdensity,
        jax.random.normal(jax.random.key(1), (8, 3)),
        # With M^-1 = Σ the whitened target is N(0, I): a trajectory of length 1.25 (under a
        # quarter period, π/2) mixes well; a length near π would map x to about -x.
        step_size=0.25,
        num_leapfrog_steps=5,
        num_steps=400,
        burn_in=100,
        inverse_mass_matrix=variances,
        transform=lambda x: 2 * x + 1,
    )
    assert moments.mean.shape == (3,) and moments.rhat.shape == (3,)
    assert int(moments.num_divergent) == 0
    np.testing.assert_array_less(np.abs(moments.mean - 1.0), 4.5 * moments.mean_mcse)
    np.testing.assert_array_less(
        np.abs(moments.second_moment - (4 * variances + 1)), 4.5 * moments.second_moment_mcse
    )
    assert np.all(np.asarray(moments.mean_mcse) < 1 / (4.5 + 2.33))

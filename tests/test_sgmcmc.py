"""SGLD and SGHMC on a conjugate Gaussian model, where every bias is known in closed form.

Model: x_i ~ N(θ, s²), i = 1..N, prior θ ~ N(0, τ²). The posterior is N(μ, σ²) with
1/σ² = λ = 1/τ² + N/s² and μ = Σx_i / (s² λ). The minibatch gradient estimate is

    ĝ(θ) = -θ/τ² + (N/n) Σ_{i∈B} (x_i - θ)/s² = -λ(θ - μ) + η,

exactly: the coefficient of θ does not depend on the minibatch, so the gradient noise η is
independent of θ, with mean 0 and variance (N/(n s²))² Var(Σ_{i∈B} x_i), where
Var(Σ_B x) = n v (N - n)/(N - 1) without replacement and n v with replacement (v = the data's
population variance). Both samplers are then linear Gaussian recursions:

* SGLD: θ' - μ = a (θ - μ) + (ε/2) η + √ε ξ with a = 1 - ε/(2σ²), so the stationary law is
  N(μ, (ε + ε² V/4) / (1 - a²)); with exact gradients (V = 0) that is σ²/(1 - ε/(4σ²)).
* SGHMC: z = (θ - μ, r) evolves as z' = A z + w with A = [[1, ε], [-h, 1 - εC - hε]], h = ε/σ²,
  Cov w = diag(0, ε²V + 2(C - B̂)ε), so the stationary covariance solves Σ = A Σ Aᵀ + Cov w.

The tests compare many independent chains' final states with these predictions, within
``NUM_SE`` Monte-Carlo standard errors computed from the draws.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from nflows_jax.sampling.base import Kernel
from nflows_jax.sampling.sgmcmc import (
    SGHMCState,
    SGLDState,
    minibatch_grad_estimator,
    sghmc,
    sgld,
    subsample_without_replacement,
)

NUM_SE = 5.0

# The conjugate model's data and posterior.
NUM_DATA, NOISE_STD, PRIOR_STD = 50, 1.0, 2.0
DATA = (1.5 + NOISE_STD * np.random.default_rng(0).standard_normal(NUM_DATA)).astype(np.float32)
PRECISION = 1.0 / PRIOR_STD**2 + NUM_DATA / NOISE_STD**2
POSTERIOR_MEAN = DATA.astype(np.float64).sum() / (NOISE_STD**2 * PRECISION)
POSTERIOR_VAR = 1.0 / PRECISION


def logprior(theta):
    return -0.5 * jnp.sum(theta**2) / PRIOR_STD**2


def loglikelihood(theta, x):
    return -0.5 * jnp.sum((x - theta) ** 2) / NOISE_STD**2


def gradient_noise_variance(batch_size: int, replace: bool) -> float:
    """Var η for the conjugate model (see the module docstring)."""
    population_var = DATA.astype(np.float64).var()
    sum_var = batch_size * population_var
    if not replace:
        sum_var *= (NUM_DATA - batch_size) / (NUM_DATA - 1)
    return (NUM_DATA / (batch_size * NOISE_STD**2)) ** 2 * sum_var


def gaussian_estimator(batch_size: int, replace: bool = False):
    return minibatch_grad_estimator(
        logprior, loglikelihood, jnp.asarray(DATA), batch_size, replace=replace
    )


def final_states(runs: dict, num_chains: int, seed: int) -> dict:
    """For each ``name: (kernel, num_steps)``, the final states (C, ...) of ``num_chains`` chains
    started over-dispersed, N(μ, 9σ²). All runs are one compiled program (on CPU, XLA's compile
    time dominates these tests); the parametrized tests share it through a cache."""

    def run_one(kernel: Kernel, num_steps: int, key):
        start_key, run_key = jax.random.split(key)
        starts = POSTERIOR_MEAN + 3.0 * np.sqrt(POSTERIOR_VAR) * jax.random.normal(
            start_key, (num_chains, 1)
        )

        def one_chain(step_keys, position):
            def body(state, step_key):
                return kernel.step(step_key, state)[0], None

            return jax.lax.scan(body, kernel.init(position), step_keys)[0]

        step_keys = jax.random.split(run_key, (num_chains, num_steps))
        return jax.vmap(one_chain)(step_keys, starts)

    @jax.jit
    def run_all(key):
        keys = jax.random.split(key, len(runs))
        return {
            name: run_one(kernel, num_steps, run_key)
            for run_key, (name, (kernel, num_steps)) in zip(keys, runs.items(), strict=True)
        }

    return run_all(jax.random.PRNGKey(seed))


def mean_and_var_with_se(samples):
    """Sample mean and variance of independent 1-D draws with their standard errors."""
    samples = np.asarray(samples, np.float64).ravel()
    n = samples.size
    squares = (samples - samples.mean()) ** 2
    mean_se = samples.std(ddof=1) / np.sqrt(n)
    return samples.mean(), mean_se, squares.mean(), squares.std(ddof=1) / np.sqrt(n)


# ------------------------------------------------------------------------------------------------
# The gradient estimator


def logistic_loglikelihood(theta, point):
    features, label = point
    logit = features @ theta
    return label * logit - jnp.logaddexp(0.0, logit)


def test_minibatch_gradient_is_unbiased_with_the_predicted_variance():
    """Averaged over many keys the estimate is the full gradient (a non-linear logistic model);
    its variance on the conjugate model is the finite-population formula. Both sampling schemes."""
    rng = np.random.default_rng(1)
    features = jnp.asarray(rng.standard_normal((40, 3)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 2, 40), jnp.float32)
    theta = jnp.array([0.5, -1.0, 2.0])
    logistic_prior = lambda t: -0.5 * jnp.sum(t**2)
    full_gradient = jax.grad(
        lambda t: (
            logistic_prior(t)
            + jnp.sum(jax.vmap(logistic_loglikelihood, (None, 0))(t, (features, labels)))
        )
    )(theta)
    num_keys = 4000

    @jax.jit
    def estimates(key):
        keys = jax.random.split(key, (4, num_keys))
        results = []
        for i, replace in enumerate((False, True)):
            logistic = minibatch_grad_estimator(
                logistic_prior, logistic_loglikelihood, (features, labels), 8, replace=replace
            )
            conjugate = gaussian_estimator(20, replace)
            results.append(
                (
                    jax.vmap(logistic, (0, None))(keys[2 * i], theta),
                    jax.vmap(conjugate, (0, None))(keys[2 * i + 1], jnp.array([0.7])),
                )
            )
        return results

    exact = -PRECISION * (0.7 - POSTERIOR_MEAN)  # the conjugate model's full gradient at 0.7
    for replace, (logistic, conjugate) in zip(
        (False, True), estimates(jax.random.PRNGKey(2)), strict=True
    ):
        chex.assert_shape(logistic, (num_keys, 3))
        logistic = np.asarray(logistic, np.float64)
        se = logistic.std(0, ddof=1) / np.sqrt(num_keys)
        assert np.all(np.abs(logistic.mean(0) - np.asarray(full_gradient)) < NUM_SE * se)
        assert np.all(logistic.std(0) > 0)  # it is a noisy estimate

        mean, mean_se, var, var_se = mean_and_var_with_se(conjugate)
        assert abs(mean - exact) < NUM_SE * mean_se
        assert abs(var - gradient_noise_variance(20, replace)) < NUM_SE * var_se, (replace, var)
        # The schemes differ by the factor (N - n)/(N - 1) = 0.61 here: the test tells them apart.
        assert abs(var - gradient_noise_variance(20, not replace)) > NUM_SE * var_se


def test_subsample_without_replacement_is_uniform():
    num_items, num_samples, num_draws = 10, 3, 4000
    draws = jax.jit(
        jax.vmap(lambda key: subsample_without_replacement(key, num_items, num_samples))
    )(jax.random.split(jax.random.PRNGKey(7), num_draws))
    chex.assert_shape(draws, (num_draws, num_samples))
    draws = np.asarray(draws)
    assert draws.min() >= 0 and draws.max() < num_items
    assert np.all(np.sort(draws, axis=1)[:, 1:] != np.sort(draws, axis=1)[:, :-1])  # distinct
    # Each index is included with probability n/N (Bernoulli standard error per index).
    inclusion = np.stack([(draws == i).any(axis=1) for i in range(num_items)], axis=1).mean(0)
    p = num_samples / num_items
    assert np.all(np.abs(inclusion - p) < NUM_SE * np.sqrt(p * (1 - p) / num_draws)), inclusion


def test_full_batch_without_replacement_is_the_exact_gradient():
    estimator = gaussian_estimator(NUM_DATA)
    theta = jnp.array([0.3])
    estimate = jax.jit(estimator)(jax.random.PRNGKey(3), theta)
    np.testing.assert_allclose(estimate, -PRECISION * (0.3 - POSTERIOR_MEAN), rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# SGLD


SGLD_CASES = [  # (batch size, with replacement, ε/σ²)
    (NUM_DATA, False, 1.0),  # exact gradients, large step: variance 4σ²/3
    (5, False, 0.25),  # minibatch noise dominates the bias
    (5, True, 0.02),  # small step: close to the posterior
]


def sgld_num_steps(step_size: float) -> int:
    """Steps for the over-dispersed start to be forgotten: a^(2T) · 9 < 1e-6."""
    contraction = 1.0 - step_size / (2.0 * POSTERIOR_VAR)
    return int(np.ceil(np.log(1e-6 / 9.0) / (2.0 * np.log(contraction))))


@functools.cache
def sgld_final_states() -> dict:
    runs = {}
    for batch_size, replace, step_over_var in SGLD_CASES:
        step_size = step_over_var * POSTERIOR_VAR
        kernel = sgld(gaussian_estimator(batch_size, replace), step_size)
        runs[(batch_size, replace, step_over_var)] = (kernel, sgld_num_steps(step_size))
    return final_states(runs, num_chains=2000, seed=4)


@pytest.mark.parametrize(("batch_size", "replace", "step_over_var"), SGLD_CASES)
def test_sgld_stationary_law_matches_closed_form(batch_size, replace, step_over_var):
    step_size = step_over_var * POSTERIOR_VAR
    noise_var = 0.0 if batch_size == NUM_DATA else gradient_noise_variance(batch_size, replace)
    contraction = 1.0 - step_size / (2.0 * POSTERIOR_VAR)
    predicted_var = (step_size + step_size**2 * noise_var / 4.0) / (1.0 - contraction**2)
    num_steps = sgld_num_steps(step_size)

    states = sgld_final_states()[(batch_size, replace, step_over_var)]
    assert isinstance(states, SGLDState)
    np.testing.assert_array_equal(states.step_count, num_steps)
    mean, mean_se, var, var_se = mean_and_var_with_se(states.position)
    assert abs(mean - POSTERIOR_MEAN) < NUM_SE * mean_se
    assert abs(var - predicted_var) < NUM_SE * var_se, (var, predicted_var, POSTERIOR_VAR)
    bias = predicted_var - POSTERIOR_VAR
    if step_over_var < 0.1:
        assert abs(bias) < 0.1 * POSTERIOR_VAR  # the posterior is recovered to within 10%
    else:
        assert abs(bias) > NUM_SE * var_se  # the bias is real and the test resolves it


def test_sgld_step_size_schedule():
    schedule = lambda t: 0.01 / (1.0 + t)
    kernel = sgld(gaussian_estimator(5), schedule)

    @jax.jit
    def run(key):
        return jax.lax.scan(
            lambda s, k: kernel.step(k, s), kernel.init(jnp.array([0.0])), jax.random.split(key, 4)
        )

    state, info = run(jax.random.PRNGKey(5))
    np.testing.assert_allclose(info.step_size, [0.01, 0.005, 0.01 / 3, 0.0025], rtol=1e-6)
    np.testing.assert_array_equal(info.acceptance_prob, 1.0)
    assert np.all(np.asarray(info.accepted))
    assert int(state.step_count) == 4


# ------------------------------------------------------------------------------------------------
# SGHMC


def sghmc_stationary_cov(step_size, friction, noise_var, gradient_noise):
    h = step_size / POSTERIOR_VAR
    transition = np.array([[1.0, step_size], [-h, 1.0 - step_size * friction - h * step_size]])
    momentum_noise = step_size**2 * noise_var + 2.0 * (friction - gradient_noise) * step_size
    return scipy.linalg.solve_discrete_lyapunov(transition, np.diag([0.0, momentum_noise]))


SGHMC_CASES = [(NUM_DATA, False), (5, False), (5, True)]  # (batch size, compensate with B̂)
SGHMC_STEP_SIZE = 0.2 * np.sqrt(POSTERIOR_VAR)
SGHMC_FRICTION = 1.0 / np.sqrt(POSTERIOR_VAR)  # εC = 0.2, under-damped


def sghmc_noise(batch_size: int, compensate: bool) -> tuple[float, float]:
    """(V, B̂): the gradient noise variance and its estimate B̂ = εV/2 (≤ C here) or 0."""
    noise_var = 0.0 if batch_size == NUM_DATA else gradient_noise_variance(batch_size, False)
    return noise_var, (0.5 * SGHMC_STEP_SIZE * noise_var if compensate else 0.0)


@functools.cache
def sghmc_final_states() -> dict:
    runs = {}
    for batch_size, compensate in SGHMC_CASES:
        gradient_noise = sghmc_noise(batch_size, compensate)[1]
        estimator = gaussian_estimator(batch_size)
        kernel = sghmc(estimator, SGHMC_STEP_SIZE, SGHMC_FRICTION, gradient_noise)
        # The slowest mode contracts by about exp(-εC/2) = 0.9 per step: 200 steps suffice.
        runs[(batch_size, compensate)] = (kernel, 200)
    return final_states(runs, num_chains=2000, seed=6)


@pytest.mark.parametrize(
    ("batch_size", "compensate"), SGHMC_CASES, ids=["full-batch", "minibatch", "compensated"]
)
def test_sghmc_stationary_law_matches_closed_form(batch_size, compensate):
    step_size, friction = SGHMC_STEP_SIZE, SGHMC_FRICTION
    noise_var, gradient_noise = sghmc_noise(batch_size, compensate)
    predicted = sghmc_stationary_cov(step_size, friction, noise_var, gradient_noise)

    states = sghmc_final_states()[(batch_size, compensate)]
    assert isinstance(states, SGHMCState)
    mean, mean_se, var, var_se = mean_and_var_with_se(states.position)
    assert abs(mean - POSTERIOR_MEAN) < NUM_SE * mean_se
    assert abs(var - predicted[0, 0]) < NUM_SE * var_se, (var, predicted, POSTERIOR_VAR)
    _, _, momentum_var, momentum_var_se = mean_and_var_with_se(states.momentum)
    assert abs(momentum_var - predicted[1, 1]) < NUM_SE * momentum_var_se

    full_batch = sghmc_stationary_cov(step_size, friction, 0.0, 0.0)
    if compensate:  # B̂ = εV/2 restores the exact-gradient stationary law
        np.testing.assert_allclose(predicted, full_batch, rtol=1e-9)
    elif batch_size < NUM_DATA:  # without it the gradient noise inflates the variance visibly
        assert predicted[0, 0] - full_batch[0, 0] > NUM_SE * var_se
    # The discretisation bias at this step size is small: the posterior is nearly recovered.
    assert abs(full_batch[0, 0] - POSTERIOR_VAR) < 0.05 * POSTERIOR_VAR


# ------------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    "build",
    [
        lambda: minibatch_grad_estimator(logprior, loglikelihood, jnp.asarray(DATA), 0),
        lambda: minibatch_grad_estimator(logprior, loglikelihood, jnp.asarray(DATA), NUM_DATA + 1),
        lambda: minibatch_grad_estimator(logprior, loglikelihood, jnp.asarray(DATA), 2.0),
        lambda: minibatch_grad_estimator(logprior, loglikelihood, (jnp.ones(5), jnp.ones(6)), 2),
        lambda: minibatch_grad_estimator(logprior, loglikelihood, (), 2),
        lambda: sgld(gaussian_estimator(5), 0.0),
        lambda: sghmc(gaussian_estimator(5), 0.01, friction=0.0),
        lambda: sghmc(gaussian_estimator(5), 0.01, friction=1.0, gradient_noise=2.0),
        lambda: sghmc(gaussian_estimator(5), 0.01, friction=1.0, gradient_noise=-0.1),
        lambda: sghmc(gaussian_estimator(5), -0.01, friction=1.0),
    ],
)
def test_bad_configuration_raises(build):
    with pytest.raises(ValueError):
        build()


def test_bad_position_raises():
    for kernel in (sgld(gaussian_estimator(5), 0.01), sghmc(gaussian_estimator(5), 0.01, 1.0)):
        with pytest.raises(ValueError, match="vector"):
            kernel.init(jnp.zeros((2, 1)))

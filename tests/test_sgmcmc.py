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
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.special
import scipy.stats

from nflows_jax.sampling.base import Kernel
from nflows_jax.sampling.sgmcmc import (
    SGHMCState,
    SGLDState,
    minibatch_grad_estimator,
    sghmc,
    sgld,
    subsample_without_replacement,
)

# 5 Monte-Carlo standard errors: a two-sided normal tail of 5.7e-7 per check.
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


SUBSET_ITEMS, SUBSET_SIZE = 6, 3  # C(6, 3) = 20 subsets
SUBSET_FALSE_FAIL = 1e-3
SUBSET_SHIFT = 0.01  # the named wrong answer: two subsets at 1/20 ± 0.01


def subset_num_draws(power: float = 0.99) -> int:
    """Smallest multiple of 1000 draws giving the χ² test ``power`` against the named shift.

    Under an alternative p₁ the χ² statistic over the K = 20 subsets is approximately noncentral
    χ²(K - 1) with noncentrality M Σ (p₁ - p₀)²/p₀; two subsets shifted by ±0.01 from p₀ = 1/20
    give M · 0.004.
    """
    num_subsets = scipy.special.comb(SUBSET_ITEMS, SUBSET_SIZE, exact=True)
    p0 = 1.0 / num_subsets
    critical = scipy.stats.chi2.isf(SUBSET_FALSE_FAIL, num_subsets - 1)
    distance = 2 * SUBSET_SHIFT**2 / p0
    num_draws = 1000
    while scipy.stats.ncx2.sf(critical, num_subsets - 1, num_draws * distance) < power:
        num_draws += 1000
    return num_draws


def test_subsample_without_replacement_is_uniform():
    """Every one of the C(6, 3) = 20 subsets is drawn with probability 1/20 (χ² test).

    Uniformity over subsets is what unbiasedness needs (it implies inclusion probabilities n/N
    and pairwise inclusion n(n-1)/(N(N-1))). False-fail rate 1e-3 (χ²(19) upper tail); power 0.99
    against any law at χ² distance Σ(p₁ - p₀)²/p₀ ≥ 0.004 from uniform, e.g. two subsets at
    1/20 ± 0.01 (noncentral χ², see ``subset_num_draws``: 15,000 draws).
    """
    num_draws = subset_num_draws()
    draws = jax.jit(
        jax.vmap(lambda key: subsample_without_replacement(key, SUBSET_ITEMS, SUBSET_SIZE))
    )(jax.random.split(jax.random.PRNGKey(7), num_draws))
    chex.assert_shape(draws, (num_draws, SUBSET_SIZE))
    draws = np.asarray(draws)
    assert draws.min() >= 0 and draws.max() < SUBSET_ITEMS
    assert np.all(np.sort(draws, axis=1)[:, 1:] != np.sort(draws, axis=1)[:, :-1])  # distinct
    masks = np.sum(1 << draws, axis=1)  # each subset as a bit mask
    subsets = [sum(1 << i for i in c) for c in itertools.combinations(range(SUBSET_ITEMS), 3)]
    counts = np.array([np.sum(masks == m) for m in subsets])
    assert counts.sum() == num_draws
    _, p_value = scipy.stats.chisquare(counts)
    assert p_value > SUBSET_FALSE_FAIL, counts


def test_full_batch_without_replacement_is_the_exact_gradient():
    estimator = gaussian_estimator(NUM_DATA)
    theta = jnp.array([0.3])
    estimate = jax.jit(estimator)(jax.random.PRNGKey(3), theta)
    # A float32 sum of N + 1 terms: error at most (N + 1) eps32 times the sum of their magnitudes.
    data = DATA.astype(np.float64)
    magnitude = 0.3 / PRIOR_STD**2 + np.sum(np.abs(data - 0.3)) / NOISE_STD**2
    tolerance = (NUM_DATA + 1) * np.finfo(np.float32).eps * magnitude
    assert abs(float(estimate[0]) + PRECISION * (0.3 - POSTERIOR_MEAN)) <= tolerance


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
        # A property of the closed form (not a tolerance): a small step nearly removes the bias.
        assert abs(bias) < 0.1 * POSTERIOR_VAR
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
    # Two float32 roundings (0.01 itself, the division) of at most eps32/2 each.
    np.testing.assert_allclose(
        info.step_size, [0.01, 0.005, 0.01 / 3, 0.0025], rtol=np.finfo(np.float32).eps
    )
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
        # Float64: the momentum noise ε²V + 2(C - εV/2)ε equals 2Cε up to a few roundings, and
        # the 2x2 Lyapunov solve amplifies relative errors by at most about 1/(1 - ρ(A)²).
        h = step_size / POSTERIOR_VAR
        transition = np.array([[1.0, step_size], [-h, 1.0 - step_size * friction - h * step_size]])
        radius = np.max(np.abs(np.linalg.eigvals(transition)))
        rtol = 16 * np.finfo(np.float64).eps / (1.0 - radius**2)
        np.testing.assert_allclose(predicted, full_batch, rtol=rtol)
    elif batch_size < NUM_DATA:  # without it the gradient noise inflates the variance visibly
        assert predicted[0, 0] - full_batch[0, 0] > NUM_SE * var_se
    # A property of the closed form (not a tolerance): the discretisation bias at this step size
    # is small, the posterior is nearly recovered.
    assert abs(full_batch[0, 0] - POSTERIOR_VAR) < 0.05 * POSTERIOR_VAR


# ------------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: minibatch_grad_estimator(logprior, loglikelihood, jnp.asarray(DATA), 0), "batch"),
        (
            lambda: minibatch_grad_estimator(
                logprior, loglikelihood, jnp.asarray(DATA), NUM_DATA + 1
            ),
            "batch_size",
        ),
        (
            lambda: minibatch_grad_estimator(logprior, loglikelihood, jnp.asarray(DATA), 2.0),
            "batch_size",
        ),
        (
            lambda: minibatch_grad_estimator(
                logprior, loglikelihood, (jnp.ones(5), jnp.ones(6)), 2
            ),
            "leading axis",
        ),
        (lambda: minibatch_grad_estimator(logprior, loglikelihood, (), 2), "empty"),
        (lambda: sgld(gaussian_estimator(5), 0.0), r"sgld: step_size must be positive.*got 0\.0$"),
        (lambda: sghmc(gaussian_estimator(5), 0.01, friction=0.0), "friction must be positive"),
        (
            lambda: sghmc(gaussian_estimator(5), 0.01, friction=1.0, gradient_noise=2.0),
            r"gradient_noise must lie in \[0, friction\]: got 2\.0 with friction 1\.0",
        ),
        (
            lambda: sghmc(gaussian_estimator(5), 0.01, friction=1.0, gradient_noise=-0.1),
            "gradient_noise must lie",
        ),
        (
            lambda: sghmc(gaussian_estimator(5), np.float32(-0.01), friction=1.0),
            # A plain number in the message, not numpy's repr "np.float32(-0.01)".
            r"sghmc: step_size must be positive and finite, got -0\.0099999",
        ),
    ],
)
def test_bad_configuration_raises(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_positions_and_estimators_raise():
    for kernel in (sgld(gaussian_estimator(5), 0.01), sghmc(gaussian_estimator(5), 0.01, 1.0)):
        with pytest.raises(ValueError, match="floating point"):
            kernel.init(jnp.zeros(1, jnp.int32))
    # A gradient estimator that does not return the position's shape is caught at trace time.
    wrong_shape = lambda key, theta: jnp.zeros(2)
    for name, kernel in (("sgld", sgld(wrong_shape, 0.01)), ("sghmc", sghmc(wrong_shape, 0.01, 1))):
        state = kernel.init(jnp.zeros(3))
        with pytest.raises(ValueError, match=rf"{name}.step: the grad_estimator output must have"):
            jax.eval_shape(kernel.step, jax.random.PRNGKey(0), state)


@pytest.mark.parametrize("which", ["logprior_fn", "loglikelihood_fn"])
def test_non_scalar_minibatch_terms_raise_at_trace_time(which):
    """A per-coordinate log-prior or log-likelihood (the sum forgotten) raises while tracing."""
    vector_prior = lambda theta: -0.5 * theta**2 / PRIOR_STD**2
    vector_likelihood = lambda theta, x: -0.5 * (x - theta) ** 2 / NOISE_STD**2
    prior, likelihood = (
        (vector_prior, loglikelihood) if which == "logprior_fn" else (logprior, vector_likelihood)
    )
    estimator = minibatch_grad_estimator(prior, likelihood, jnp.asarray(DATA), 5)
    match = rf"minibatch_grad_estimator: the {which} must return a scalar.*shape \(3,\)"
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(estimator, jax.random.PRNGKey(0), jnp.zeros(3))


def test_minibatch_gradient_of_a_pytree_position_is_the_flat_gradient():
    """θ = {"a": (2,), "b": ()}: the estimate has θ's structure and, raveled, equals the estimate
    for the (3,) array with the same key (same minibatch). The two differentiate the same sum of
    n + 1 = 6 terms in possibly different orders, so they differ by at most (n + 1) eps32 times the
    sum of the terms' magnitudes, per coordinate."""
    batch_size = 5
    flat_likelihood = lambda theta, x: -0.5 * jnp.sum((x - theta) ** 2)
    tree_flat = lambda p: jnp.concatenate([p["a"], p["b"][None]])
    data = jnp.asarray(np.stack([DATA[:20], DATA[20:40], DATA[30:]], axis=1))  # (20, 3)
    flat = minibatch_grad_estimator(logprior, flat_likelihood, data, batch_size)
    tree = minibatch_grad_estimator(
        lambda p: logprior(tree_flat(p)),
        lambda p, x: flat_likelihood(tree_flat(p), x),
        data,
        batch_size,
    )
    theta = jnp.array([0.3, -1.0, 2.0])
    key = jax.random.PRNGKey(8)
    flat_grad, tree_grad = jax.jit(
        lambda: (flat(key, theta), tree(key, {"a": theta[:2], "b": theta[2]}))
    )()
    chex.assert_shape([tree_grad["a"], tree_grad["b"]], [(2,), ()])
    # Magnitude of the summed terms: the prior's |θ|/τ² plus (N/n) Σ_B |x - θ| ≤ (N/n) Σ_all.
    scale = 20 / batch_size
    magnitude = np.abs(np.asarray(theta)) / PRIOR_STD**2 + scale * np.sum(
        np.abs(np.asarray(data) - np.asarray(theta)), axis=0
    )
    tolerance = (batch_size + 1) * np.finfo(np.float32).eps * magnitude
    error = np.abs(np.asarray(tree_flat(tree_grad)) - np.asarray(flat_grad))
    assert np.all(error <= tolerance), (error, tolerance)

"""HMC, MALA and ULA: the leapfrog integrator's geometry, exact moments, divergences, ULA's bias.

Moment checks run many independent chains (jax.vmap over chains, lax.scan over steps) from
over-dispersed starts and use each chain's final state: these are independent draws, so the
Monte-Carlo standard error of every moment is computed from them, and the tolerance is
``NUM_SE`` standard errors.
"""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nflows_jax.sampling.base import Kernel
from nflows_jax.sampling.hmc import HMCState, hmc, kinetic_energy, leapfrog
from nflows_jax.sampling.langevin import mala, ula

# Moment checks allow 5 Monte-Carlo standard errors: a two-sided normal tail of 5.7e-7 per check.
NUM_SE = 5.0
EPS32 = float(np.finfo(np.float32).eps)


def rounding_atol(num_steps: int, ops_per_step: int, magnitude: float) -> float:
    """Bound on the difference of two float32 evaluations of the same non-expanding recursion.

    Each step may round ``ops_per_step`` operations differently (another formula or fusion), each
    by at most eps32 times the largest value ``magnitude``; a non-expanding map carries those
    differences without amplifying them, so they add up over ``num_steps``.
    """
    return num_steps * ops_per_step * EPS32 * magnitude


def gaussian_logdensity(mean, cov):
    precision = jnp.asarray(np.linalg.inv(np.asarray(cov)), jnp.float32)
    mean = jnp.asarray(mean, jnp.float32)

    def logdensity(x):
        centred = x - mean
        return -0.5 * centred @ (precision @ centred)

    return logdensity


def final_states(runs: dict[str, tuple[Kernel, int]], key, initial_positions):
    """For each ``name: (kernel, num_steps)``, one chain per row of ``initial_positions`` (C, D).

    Returns ``{name: (final positions (C, D), each chain's mean acceptance probability (C,))}``.
    All runs are compiled as one program: on CPU, XLA's compile time dominates these tests.
    """

    def run_one(kernel, num_steps, key, positions):
        def one_chain(chain_key, position):
            def body(state, step_key):
                state, info = kernel.step(step_key, state)
                return state, info.acceptance_prob

            state, acceptance = jax.lax.scan(
                body, kernel.init(position), jax.random.split(chain_key, num_steps)
            )
            return state.position, jnp.mean(acceptance)

        return jax.vmap(one_chain)(jax.random.split(key, positions.shape[0]), positions)

    @jax.jit
    def run_all(key, positions):
        keys = jax.random.split(key, len(runs))
        return {
            name: run_one(kernel, num_steps, run_key, positions)
            for run_key, (name, (kernel, num_steps)) in zip(keys, runs.items(), strict=True)
        }

    return run_all(key, initial_positions)


def assert_moments(samples, mean, cov, num_se: float = NUM_SE) -> None:
    """Mean of every coordinate and every covariance entry within ``num_se`` Monte-Carlo
    standard errors estimated from the independent draws ``samples`` (n, D)."""
    samples = np.asarray(samples, np.float64)
    mean, cov = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
    n, dim = samples.shape
    assert np.all(np.isfinite(samples))
    mean_error = np.abs(samples.mean(0) - mean)
    mean_se = samples.std(0, ddof=1) / np.sqrt(n)
    assert np.all(mean_error < num_se * mean_se), (samples.mean(0), mean, mean_se)
    centred = samples - mean  # the true mean: each product is then an unbiased draw of cov[i, j]
    for i in range(dim):
        for j in range(i, dim):
            products = centred[:, i] * centred[:, j]
            se = products.std(ddof=1) / np.sqrt(n)
            assert abs(products.mean() - cov[i, j]) < num_se * se, (i, j, products.mean(), cov)


def variance_and_se(samples) -> tuple[float, float]:
    """Sample variance of 1-D independent draws and its standard error (from the draws)."""
    samples = np.asarray(samples, np.float64)
    squares = (samples - samples.mean()) ** 2
    return squares.mean(), squares.std(ddof=1) / np.sqrt(samples.size)


# ------------------------------------------------------------------------------------------------
# The integrator


def quartic_logdensity(x):
    """A non-Gaussian, correlated target, so that the integrator is tested beyond linear forces."""
    coupling = jnp.array([[1.0, 0.4, 0.0], [0.4, 2.0, -0.3], [0.0, -0.3, 0.5]])
    return -0.5 * x @ (coupling @ x) - 0.25 * jnp.sum(x**4)


def test_leapfrog_is_reversible():
    value_and_grad = jax.value_and_grad(quartic_logdensity)
    key_x, key_p = jax.random.split(jax.random.PRNGKey(0))
    x0 = jax.random.normal(key_x, (3,))
    p0 = jax.random.normal(key_p, (3,))
    inverse_mass = jnp.array([0.5, 1.0, 2.0])
    _, g0 = value_and_grad(x0)
    x1, p1, logdensity1, g1 = leapfrog(value_and_grad, x0, p0, g0, 0.05, 40, inverse_mass)
    # The returned log-density and gradient are those of the returned position.
    ref_logdensity, ref_grad = value_and_grad(x1)
    # The same function of the same x1, compiled in two programs: a few ulps (8 eps32).
    np.testing.assert_allclose(logdensity1, ref_logdensity, rtol=8 * np.finfo(np.float32).eps)
    np.testing.assert_allclose(g1, ref_grad, rtol=8 * np.finfo(np.float32).eps)
    assert float(jnp.max(jnp.abs(x1 - x0))) > 0.1  # it went somewhere
    x2, p2, _, _ = leapfrog(value_and_grad, x1, -p1, g1, 0.05, 40, inverse_mass)
    # Exact reversibility up to rounding: 80 leapfrog steps there and back, each adding a few ulps
    # (≤ 4 eps32 of the largest coordinate or momentum seen) that the symplectic map carries
    # without growth at this step size.
    size = max(float(jnp.max(jnp.abs(v))) for v in (x0, p0, x1, p1))
    reversal_atol = 80 * 4 * size * np.finfo(np.float32).eps
    np.testing.assert_allclose(x2, x0, atol=reversal_atol)
    np.testing.assert_allclose(-p2, p0, atol=reversal_atol)


def test_leapfrog_matches_unfused_velocity_verlet():
    """The fused kicks are a rewrite of textbook velocity Verlet, not a different integrator."""
    value_and_grad = jax.value_and_grad(quartic_logdensity)
    grad = jax.grad(quartic_logdensity)
    inverse_mass, step_size, num_steps = jnp.array([2.0, 1.0, 0.5]), 0.1, 25

    @jax.jit
    def trajectories(x, p):
        fused = leapfrog(value_and_grad, x, p, grad(x), step_size, num_steps, inverse_mass)

        def verlet_step(carry, _):
            x, p = carry
            p = p + 0.5 * step_size * grad(x)
            x = x + step_size * inverse_mass * p
            return (x, p + 0.5 * step_size * grad(x)), None

        textbook, _ = jax.lax.scan(verlet_step, (x, p), None, length=num_steps)

        def one_call(carry, _):  # one-step calls, handing the gradient over
            x, p, g = carry
            x, p, _, g = leapfrog(value_and_grad, x, p, g, step_size, 1, inverse_mass)
            return (x, p, g), None

        chained, _ = jax.lax.scan(one_call, (x, p, grad(x)), None, length=num_steps)
        return fused[:2], textbook, chained[:2]

    fused, textbook, chained = trajectories(
        jnp.array([0.3, -1.0, 0.8]), jnp.array([1.0, 0.5, -0.2])
    )
    # Fused and unfused kicks round ≤ 4 operations differently per step (the kick split in two).
    magnitude = max(float(jnp.max(jnp.abs(v))) for v in (*fused, *textbook))
    atol = rounding_atol(num_steps, 4, magnitude)
    for reference in (textbook, chained):
        np.testing.assert_allclose(fused[0], reference[0], atol=atol)
        np.testing.assert_allclose(fused[1], reference[1], atol=atol)


def max_energy_error(step_size: float, total_time: float) -> float:
    """Largest |H(t) - H(0)| along a leapfrog trajectory on a 10-d Gaussian (scales 0.5..2)."""
    scales = jnp.linspace(0.5, 2.0, 10)
    logdensity = lambda x: -0.5 * jnp.sum((x / scales) ** 2)
    value_and_grad = jax.value_and_grad(logdensity)
    inverse_mass = jnp.linspace(1.5, 0.5, 10)
    key_x, key_p = jax.random.split(jax.random.PRNGKey(1))
    x = scales * jax.random.normal(key_x, (10,))
    p = jax.random.normal(key_p, (10,)) * jax.lax.rsqrt(inverse_mass)
    logdensity0, grad = value_and_grad(x)
    energy0 = -logdensity0 + kinetic_energy(p, inverse_mass)

    def one_step(carry, _):
        x, p, grad = carry
        x, p, logdensity_x, grad = leapfrog(value_and_grad, x, p, grad, step_size, 1, inverse_mass)
        return (x, p, grad), -logdensity_x + kinetic_energy(p, inverse_mass)

    num_steps = round(total_time / step_size)
    _, energies = jax.lax.scan(one_step, (x, p, grad), None, length=num_steps)
    return float(jnp.max(jnp.abs(energies - energy0)))


def test_leapfrog_energy_error_is_second_order():
    errors = [max_energy_error(step_size, total_time=3.2) for step_size in (0.2, 0.1, 0.05)]
    assert errors[-1] > 1e-4  # well above float32 round-off on an energy of order 10
    # Second order: halving the step quarters the error (ratio 4, up to O(h²) corrections); the
    # band (3, 5) excludes first order (ratio 2) and third order (ratio 8).
    for coarse, fine in itertools.pairwise(errors):
        assert 3.0 < coarse / fine < 5.0, errors


def test_mala_is_one_step_hmc():
    """MALA with step ε is HMC with one leapfrog step of √ε: same draws, same decisions."""
    logdensity = quartic_logdensity
    inverse_mass = jnp.array([0.5, 1.0, 2.0])
    mala_kernel = mala(logdensity, 0.3, inverse_mass)
    hmc_kernel = hmc(logdensity, float(np.sqrt(0.3)), 1, inverse_mass)
    keys = jax.random.split(jax.random.PRNGKey(2), 30)

    @jax.jit
    def both(position):
        def body(states, key):
            (mala_state, mala_info), (hmc_state, hmc_info) = (
                mala_kernel.step(key, states[0]),
                hmc_kernel.step(key, states[1]),
            )
            return (mala_state, hmc_state), (mala_state, mala_info, hmc_state, hmc_info)

        init = (mala_kernel.init(position), hmc_kernel.init(position))
        return jax.lax.scan(body, init, keys)[1]

    mala_states, mala_info, hmc_states, hmc_info = both(jnp.array([0.5, -0.5, 1.0]))
    np.testing.assert_array_equal(mala_info.accepted, hmc_info.accepted)
    assert 0 < int(mala_info.accepted.sum()) < 30  # both decisions occur
    # The two formulas round ≤ 8 operations per coordinate differently per step ((√ε)² ≠ ε in
    # float32, M^{1/2} z vs √(εM⁻¹) z, ...); the MALA map is non-expanding on this target here.
    magnitude = float(jnp.max(jnp.abs(mala_states.position)))
    position_atol = rounding_atol(len(keys), 8, magnitude)
    np.testing.assert_allclose(mala_states.position, hmc_states.position, atol=position_atol)
    # log α sums ℓ(x), ℓ(x'), |z|²/2 and the reverse-move term, each rounded to ≤ 8 eps32 of its
    # size: |ℓ| ≤ max|ℓ| on the chain, |z|²/2 ≤ 15 (P(χ²₃ > 30) = 1.4e-6 per step), and where α
    # exceeds float32's exp(-17) the reverse term is ≤ |z|²/2 + |Δℓ| + 17. The positions' own
    # difference adds ≤ max|∇ℓ| · position_atol, and α is 1-Lipschitz in log α (≤ 0).
    max_logdensity = float(jnp.max(jnp.abs(mala_states.logdensity)))
    max_grad = float(jnp.max(jnp.abs(mala_states.logdensity_grad)))
    log_ratio_size = 4 * max_logdensity + 2 * 15.0 + 17.0
    acceptance_atol = 8 * EPS32 * log_ratio_size + 3 * max_grad * position_atol
    np.testing.assert_allclose(
        mala_info.acceptance_prob, hmc_info.acceptance_prob, atol=acceptance_atol
    )


# ------------------------------------------------------------------------------------------------
# Exact moments

CORRELATED_MEAN = np.array([1.0, -2.0])
CORRELATED_COV = np.array([[1.0, 1.5], [1.5, 4.0]])  # correlation 0.75


def overdispersed_starts(key, mean, cov, num_chains):
    """Starts from N(mean, 9 cov): the chains must forget them."""
    normals = jax.random.normal(key, (num_chains, len(mean)))
    return jnp.asarray(mean + 3.0 * normals @ np.linalg.cholesky(cov).T, jnp.float32)


def test_moments_correlated_gaussian():
    logdensity = gaussian_logdensity(CORRELATED_MEAN, CORRELATED_COV)
    runs = {
        "hmc": (hmc(logdensity, step_size=0.25, num_leapfrog_steps=8), 150),
        "mala": (mala(logdensity, step_size=0.3), 600),
    }
    key_start, key_run = jax.random.split(jax.random.PRNGKey(3))
    starts = overdispersed_starts(key_start, CORRELATED_MEAN, CORRELATED_COV, 2000)
    for name, (samples, acceptance) in final_states(runs, key_run, starts).items():
        chex.assert_shape(samples, (2000, 2))
        assert 0.3 < float(acceptance.mean()) < 1.0, name  # sanity: the chains moved
        assert_moments(samples, CORRELATED_MEAN, CORRELATED_COV)


DIAGONAL_STDS = np.geomspace(0.1, 10.0, 10)  # condition number 10⁴: needs the mass matrix
DIAGONAL_MEAN = np.linspace(-3.0, 3.0, 10)


def test_moments_diagonal_gaussian_with_mass_matrix():
    cov = np.diag(DIAGONAL_STDS**2)
    inverse_mass = jnp.asarray(DIAGONAL_STDS**2, jnp.float32)
    mean, stds = jnp.asarray(DIAGONAL_MEAN, jnp.float32), jnp.asarray(DIAGONAL_STDS, jnp.float32)
    logdensity = lambda x: -0.5 * jnp.sum(((x - mean) / stds) ** 2)
    runs = {
        "hmc": (hmc(logdensity, 0.3, 8, inverse_mass_matrix=inverse_mass), 100),
        "mala": (mala(logdensity, 0.5, inverse_mass_matrix=inverse_mass), 200),
    }
    key_start, key_run = jax.random.split(jax.random.PRNGKey(4))
    starts = overdispersed_starts(key_start, DIAGONAL_MEAN, cov, 1000)
    for name, (samples, acceptance) in final_states(runs, key_run, starts).items():
        assert 0.3 < float(acceptance.mean()) < 1.0, name
        assert_moments(samples, DIAGONAL_MEAN, cov)


def test_ula_bias_matches_closed_form_and_mala_removes_it():
    """On N(0, σ²), ULA's stationary variance is σ²/(1 - ε/(4σ²)); MALA's is σ²."""
    sigma2, step_size = 1.0, 1.0  # ULA variance 4/3: a 33% bias
    logdensity = lambda x: -0.5 * jnp.sum(x**2) / sigma2
    starts = jnp.zeros((4000, 1))
    runs = {"ula": (ula(logdensity, step_size), 100), "mala": (mala(logdensity, step_size), 200)}
    results = final_states(runs, jax.random.PRNGKey(5), starts)
    (ula_samples, ula_acceptance), (mala_samples, _) = results["ula"], results["mala"]
    assert np.all(np.asarray(ula_acceptance) == 1.0)

    predicted = sigma2 / (1.0 - step_size / (4.0 * sigma2))
    ula_var, ula_se = variance_and_se(ula_samples)
    assert abs(ula_var - predicted) < NUM_SE * ula_se, (ula_var, predicted)
    assert abs(ula_var - sigma2) > NUM_SE * ula_se  # the bias is real at this step size
    mala_var, mala_se = variance_and_se(mala_samples)
    assert abs(mala_var - sigma2) < NUM_SE * mala_se, mala_var
    assert abs(float(np.mean(mala_samples))) < NUM_SE * np.sqrt(sigma2 / 4000)


# ------------------------------------------------------------------------------------------------
# Divergences


def record_chain(kernel: Kernel, key, position, num_steps: int):
    """One chain; per step: (position before, state after, info). Call it under jax.jit."""

    def body(state, step_key):
        new_state, info = kernel.step(step_key, state)
        return new_state, (state.position, new_state, info)

    return jax.lax.scan(body, kernel.init(position), jax.random.split(key, num_steps))[1]


def test_hmc_rejects_a_blown_up_trajectory():
    """A step size far beyond stability overflows the trajectory: reject, keep the state, no NaN."""
    logdensity = lambda x: -0.5 * jnp.sum(x**2)
    kernel = hmc(logdensity, step_size=100.0, num_leapfrog_steps=10)
    start = jnp.array([0.5, -1.0, 2.0])
    run = jax.jit(lambda key, position: record_chain(kernel, key, position, 50))
    before, after, info = run(jax.random.PRNGKey(6), start)
    assert np.all(np.asarray(info.is_divergent))
    assert not np.any(np.asarray(info.accepted))
    np.testing.assert_array_equal(info.acceptance_prob, 0.0)
    np.testing.assert_array_equal(after.position, jnp.broadcast_to(start, (50, 3)))
    # Rejections keep the cached log-density and gradient bitwise (no re-evaluation).
    initial = kernel.init(start)
    np.testing.assert_array_equal(after.logdensity, jnp.broadcast_to(initial.logdensity, (50,)))
    np.testing.assert_array_equal(
        after.logdensity_grad, jnp.broadcast_to(initial.logdensity_grad, (50, 3))
    )
    for leaf in jax.tree_util.tree_leaves(after):
        assert np.all(np.isfinite(np.asarray(leaf)))
    assert np.all(np.asarray(before) == np.asarray(start))


def plus_infinity_region_logdensity(x):
    """Standard normal, except +inf on x₀ > 0.5: a naive min(1, exp(Δ)) would accept that."""
    return jnp.where(x[0] > 0.5, jnp.inf, -0.5 * jnp.sum(x**2))


def test_infinite_proposal_logdensity_is_never_accepted():
    kernels = {
        "hmc": hmc(plus_infinity_region_logdensity, step_size=0.5, num_leapfrog_steps=3),
        "mala": mala(plus_infinity_region_logdensity, step_size=1.0),
    }

    @jax.jit
    def run(key, position):
        return {name: record_chain(k, key, position, 400) for name, k in kernels.items()}

    for name, (before, after, info) in run(jax.random.PRNGKey(7), jnp.array([-1.0, 0.0])).items():
        divergent = np.asarray(info.is_divergent)
        assert divergent.sum() > 20, name  # the region was proposed often
        assert not np.any(np.asarray(info.accepted)[divergent]), name
        np.testing.assert_array_equal(np.asarray(info.acceptance_prob)[divergent], 0.0)
        np.testing.assert_array_equal(
            np.asarray(after.position)[divergent], np.asarray(before)[divergent]
        )
        assert np.all(np.asarray(after.position)[:, 0] <= 0.5), name
        assert np.all(np.isfinite(np.asarray(after.logdensity))), name
        assert np.asarray(info.accepted).sum() > 50, name  # the chain still moves elsewhere


# ------------------------------------------------------------------------------------------------
# Contract and errors


@pytest.mark.parametrize("make", [hmc, mala, ula])
def test_state_and_info_shapes(make):
    args = (0.2, 5) if make is hmc else (0.2,)
    kernel = make(lambda x: -0.5 * jnp.sum(x**2), *args, inverse_mass_matrix=jnp.ones(4))
    state = kernel.init(jnp.zeros(4))
    chex.assert_shape((state.position, state.logdensity, state.logdensity_grad), [(4,), (), (4,)])
    # Shapes and dtypes by abstract evaluation: nothing is compiled.
    new_state, info = jax.eval_shape(kernel.step, jax.random.PRNGKey(0), state)
    assert type(new_state) is type(state)
    for old, new in zip(state, new_state, strict=True):
        assert (old.shape, old.dtype) == (new.shape, new.dtype)
    assert info.acceptance_prob.shape == () and info.accepted.shape == ()
    assert info.accepted.dtype == jnp.bool_
    if make is hmc:
        assert isinstance(state, HMCState)
        assert info.is_divergent.shape == () and info.energy_error.shape == ()


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda f: hmc(f, step_size=0.0, num_leapfrog_steps=5), "hmc: step_size must be positive"),
        (lambda f: hmc(f, step_size=-0.1, num_leapfrog_steps=5), r"got -0\.1$"),
        (lambda f: hmc(f, step_size=0.1, num_leapfrog_steps=0), "num_leapfrog_steps"),
        (lambda f: hmc(f, step_size=0.1, num_leapfrog_steps=2.5), "num_leapfrog_steps"),
        # Plain numbers in messages, not numpy reprs such as "np.float64(2.5)".
        (
            lambda f: hmc(f, 0.1, np.float64(2.5)),
            r"num_leapfrog_steps must be an int >= 1, got 2\.5$",
        ),
        (lambda f: hmc(f, 0.1, 5, inverse_mass_matrix=jnp.ones((3, 2))), r"square dense matrix"),
        (
            lambda f: hmc(f, 0.1, 5, inverse_mass_matrix=jnp.array([[1.0, 2.0], [2.0, 1.0]])),
            "positive definite",
        ),
        (
            lambda f: hmc(f, 0.1, 5, inverse_mass_matrix=jnp.array([1.0, -1.0, 1.0])),
            r"strictly positive, got minimum -1\.0",
        ),
        (lambda f: mala(f, step_size=float("nan")), "mala: step_size must be positive and finite"),
        (lambda f: ula(f, step_size=0.0), "ula: step_size"),
        (lambda f: mala(f, 0.1, inverse_mass_matrix=jnp.zeros(3)), "strictly positive"),
    ],
)
def test_bad_configuration_raises(build, match):
    with pytest.raises(ValueError, match=match):
        build(lambda x: -0.5 * jnp.sum(x**2))


@pytest.mark.parametrize("make", [hmc, mala, ula])
def test_bad_positions_raise(make):
    args = (0.1, 5) if make is hmc else (0.1,)
    kernel = make(lambda x: -0.5 * jnp.sum(x**2), *args, inverse_mass_matrix=jnp.ones(3))
    with pytest.raises(ValueError, match=r"inverse_mass_matrix has shape \(3,\).*4 coordinates"):
        kernel.init(jnp.zeros(4))  # does not match the mass matrix
    with pytest.raises(ValueError, match=r"inverse_mass_matrix has shape \(3,\).*6 coordinates"):
        kernel.init(jnp.zeros((2, 3)))  # raveled: 6 coordinates
    with pytest.raises(ValueError, match="floating point"):
        kernel.init(jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="floating point"):
        kernel.init({"a": jnp.zeros(2), "b": jnp.zeros((), jnp.int32)})


# ------------------------------------------------------------------------------------------------
# The kernel contract: scalar log-densities, pytree positions, HMC's gradient budget


@pytest.mark.parametrize(
    ("make", "who"),
    [
        (lambda f: hmc(f, 0.1, 3), "hmc"),
        (lambda f: mala(f, 0.1), "mala"),
        (lambda f: ula(f, 0.1), "ula"),
    ],
    ids=["hmc", "mala", "ula"],
)
def test_non_scalar_logdensity_raises_at_trace_time(make, who):
    """A log-density returning (D,) (the sum forgotten) is caught while tracing, named."""
    kernel = make(lambda x: -0.5 * x**2)
    match = rf"^{who}: the log-density must return a scalar.*shape \(3,\).*forget \.sum\(\)"
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(kernel.init, jnp.zeros(3))
    good_state = make(lambda x: -0.5 * jnp.sum(x**2)).init(jnp.zeros(3))
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(kernel.step, jax.random.PRNGKey(0), good_state)


PYTREE_PRECISION = np.array([[2.0, 0.6, -0.3], [0.6, 1.0, 0.2], [-0.3, 0.2, 0.5]])
PYTREE_DATA = np.random.default_rng(11).standard_normal((8, 3)).astype(np.float32)


def flat_logdensity(x):
    """A correlated Gaussian on R³ with mean (0.5, -0.2, 1.0)."""
    centred = x - jnp.array([0.5, -0.2, 1.0])
    return -0.5 * centred @ (jnp.asarray(PYTREE_PRECISION, jnp.float32) @ centred)


def to_flat(tree):
    """{"a": (2,), "b": ()} -> (3,), in ``ravel_pytree`` order (keys sorted, a then b)."""
    return jnp.concatenate([tree["a"], tree["b"][None]])


def from_flat(x):
    return {"a": x[:2], "b": x[2]}


def flat_estimator():
    from nflows_jax.sampling.sgmcmc import minibatch_grad_estimator

    loglikelihood = lambda theta, point: -0.5 * jnp.sum((point - theta) ** 2)
    return minibatch_grad_estimator(flat_logdensity, loglikelihood, jnp.asarray(PYTREE_DATA), 3)


def pytree_kernels(logdensity_fn, estimator):
    """Every gradient kernel plus rwmh, built on ``logdensity_fn`` of the given position type."""
    from nflows_jax.sampling.mh import rwmh
    from nflows_jax.sampling.sgmcmc import sghmc, sgld

    inverse_mass = jnp.array([0.5, 1.0, 2.0])  # raveled-position order
    return {
        "rwmh": rwmh(logdensity_fn, 0.7),
        "hmc": hmc(logdensity_fn, 0.2, 3, inverse_mass),
        "mala": mala(logdensity_fn, 0.3, inverse_mass),
        "ula": ula(logdensity_fn, 0.1),
        "sgld": sgld(estimator, 0.01),
        "sghmc": sghmc(estimator, 0.05, friction=2.0),
    }


def test_pytree_positions_give_the_flat_chain():
    """A dict position {"a": (2,), "b": ()} runs the same chain as the (3,) array it ravels to.

    Both kernels draw the same random numbers (the draws depend on the key and the raveled size
    only) and do the same float32 operations on the same values; only XLA's fusion may differ
    between the two programs (e.g. ``a·b + c`` contracted to one FMA in one of them), which moves
    a result by at most 1 ulp per operation. Counting 8 rounded operations per coordinate per
    step (SGHMC's update, the longest, has 7) and letting each step's differences add up (the
    chains do not expand them at these step sizes), the tolerance after T steps is
    ``8 T eps32 max|value|``; every accept/reject decision must agree (a flip needs a uniform
    within that tolerance of the acceptance probability). The states keep the user's structure
    (position, cached gradient, momentum). The SG kernels get the
    flat estimator wrapped for dict positions, so that only the kernels' raveling differs
    (``minibatch_grad_estimator`` on pytrees is tested in test_sgmcmc.py).
    """
    estimator = flat_estimator()
    tree_estimator = lambda key, p: from_flat(estimator(key, to_flat(p)))
    flat_kernels = pytree_kernels(flat_logdensity, estimator)
    tree_kernels = pytree_kernels(lambda p: flat_logdensity(to_flat(p)), tree_estimator)
    start = jnp.array([0.3, -1.0, 2.0])
    tree_start = from_flat(start)
    keys = jax.random.split(jax.random.PRNGKey(12), 15)

    def run(kernel, position):
        def step(state, key):
            new_state, info = kernel.step(key, state)
            return new_state, (new_state, info)

        return jax.lax.scan(step, kernel.init(position), keys)[1]  # every state, every info

    @jax.jit
    def all_runs():
        return {
            name: (run(flat_kernels[name], start), run(tree_kernels[name], tree_start))
            for name in flat_kernels
        }

    eps32 = float(np.finfo(np.float32).eps)
    for name, ((flat_state, flat_info), (tree_state, tree_info)) in all_runs().items():
        assert jax.tree.structure(tree_state.position) == jax.tree.structure(tree_start), name
        chex.assert_shape([tree_state.position["a"], tree_state.position["b"]], [(15, 2), (15,)])
        for field in tree_state._fields:
            flat_value, tree_value = getattr(flat_state, field), getattr(tree_state, field)
            if isinstance(tree_value, dict):  # position, gradient, momentum: ravel back
                tree_value = jax.vmap(to_flat)(tree_value)
            flat_value = np.asarray(flat_value)
            if flat_value.dtype.kind != "f":  # step counters
                np.testing.assert_array_equal(tree_value, flat_value, err_msg=f"{name}.{field}")
                continue
            # Row t is the state after t + 1 steps: its tolerance is 8 (t + 1) eps32 max|value|.
            steps = np.arange(1, len(keys) + 1).reshape((-1,) + (1,) * (flat_value.ndim - 1))
            tolerance = 8 * steps * eps32 * np.max(np.abs(flat_value))
            error = np.abs(np.asarray(tree_value) - flat_value)
            assert np.all(error <= tolerance), (name, field, float(error.max()))
        np.testing.assert_array_equal(tree_info.accepted, flat_info.accepted, err_msg=name)
        assert float(jnp.max(jnp.abs(flat_state.position[-1] - start))) > 0, name  # it moved


class _Counter:
    """Counts host calls made by ``jax.debug.callback`` from inside compiled code."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *_) -> None:
        self.calls += 1


@pytest.mark.parametrize(
    ("num_leapfrog_steps", "unroll"),
    [(3, None), (3, False), (20, None)],
    ids=["unrolled", "rolled", "long-rolled"],
)
def test_hmc_evaluates_the_log_density_once_per_leapfrog_step(num_leapfrog_steps, unroll):
    """L value-and-gradient evaluations per step (the gradient cached across steps), one at init;
    a rejected step keeps the cached log-density and gradient bitwise.

    The log-density reports to the host every time its forward pass runs, so a kernel that also
    evaluated the gradient at the start of each trajectory, or the value separately from the
    gradient, would count more than L per step. Step size 1.2 on this Gaussian (stable below
    2·min σ = 1.41) accepts with mean probability about 0.85 for both L, so 200 steps have both
    branches except with probability about 0.85^200 < 1e-13 (asserted: both are exercised).
    """
    counter = _Counter()

    def logdensity(x):
        jax.debug.callback(counter)
        return -0.5 * jnp.sum(x**2 / jnp.array([0.5, 1.0, 3.0]))

    kernel = hmc(logdensity, 1.2, num_leapfrog_steps, unroll=unroll)
    num_steps = 200

    @jax.jit
    def run(key, position):
        def body(state, step_key):
            new_state, info = kernel.step(step_key, state)
            return new_state, (state, new_state, info)

        return jax.lax.scan(body, kernel.init(position), jax.random.split(key, num_steps))[1]

    before, after, info = run(jax.random.PRNGKey(13), jnp.array([0.5, -1.0, 2.0]))
    jax.effects_barrier()
    assert counter.calls == 1 + num_steps * num_leapfrog_steps
    rejected = ~np.asarray(info.accepted)
    assert 0 < rejected.sum() < num_steps  # both branches occurred
    for field in ("position", "logdensity", "logdensity_grad"):
        np.testing.assert_array_equal(
            np.asarray(getattr(after, field))[rejected],
            np.asarray(getattr(before, field))[rejected],
            err_msg=field,
        )

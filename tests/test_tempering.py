"""Parallel tempering: exact swap decisions, exact tempered marginals, and mode hopping where
plain random-walk Metropolis is stuck.

Multi-chain runs are jax.vmap over chains of a lax.scan over steps. Statistical checks have
false-fail rate ALPHA = 1e-4 per test, fixed before running: m moment checks use k = z_{α/(2m)}
Monte-Carlo standard errors each (Bonferroni, normal approximation), computed from the spread over
independent chains. Float tolerances come from float32 rounding of the quantities involved.
"""

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import power
import pytest
import scipy.stats

from nflows_jax.sampling.base import Kernel
from nflows_jax.sampling.hmc import hmc
from nflows_jax.sampling.mh import rwmh
from nflows_jax.sampling.tempering import PTState, parallel_tempering, swap_permutation

ALPHA = 1e-4  # false-fail rate per test, fixed before any run
EPS32 = float(np.finfo(np.float32).eps)


def chains(kernel: Kernel, key, initial_positions, num_steps: int, record):
    """Chains from ``initial_positions`` (C, ...); returns final states and ``record(state, info)``
    stacked over steps (C, T, ...). Traceable: callers jit it, several runs in one program when
    they can (on CPU, XLA's compile time dominates these tests)."""

    def one_chain(step_keys, position):
        def body(state, step_key):
            state, info = kernel.step(step_key, state)
            return state, record(state, info)

        return jax.lax.scan(body, kernel.init(position), step_keys)

    step_keys = jax.random.split(key, (initial_positions.shape[0], num_steps))
    return jax.vmap(one_chain)(step_keys, initial_positions)


def run_chains(kernel: Kernel, key, initial_positions, num_steps: int, record):
    """``chains`` compiled on its own."""
    return jax.jit(lambda k, x: chains(kernel, k, x, num_steps, record))(key, initial_positions)


# ------------------------------------------------------------------------------------------------
# The swap move, deterministically


class PositionOnly(NamedTuple):
    position: jax.Array


class PositionAndLogdensity(NamedTuple):
    position: jax.Array
    logdensity: jax.Array


class StayInfo(NamedTuple):
    acceptance_prob: jax.Array
    accepted: jax.Array


def stay_kernel(logdensity_fn, cache_logdensity: bool) -> Kernel:
    """A local kernel that never moves, so only the exchanges act."""

    def init(position):
        if cache_logdensity:
            return PositionAndLogdensity(position, logdensity_fn(position))
        return PositionOnly(position)

    return Kernel(init, lambda key, state: (state, StayInfo(jnp.zeros(()), jnp.zeros((), bool))))


def test_swap_permutation():
    np.testing.assert_array_equal(swap_permutation(jnp.array([True, False, True])), [1, 0, 3, 2])
    np.testing.assert_array_equal(swap_permutation(jnp.array([False, True, False])), [0, 2, 1, 3])
    np.testing.assert_array_equal(swap_permutation(jnp.zeros(4, bool)), np.arange(5))


@pytest.mark.parametrize("cache_logdensity", [True, False], ids=["cached", "re-evaluated"])
def test_swaps_follow_the_acceptance_formula(cache_logdensity):
    """ℓ(x) = -x²/2 and four replicas at known points: each pair's acceptance probability is
    min(1, exp((β_k - β_{k+1})(ℓ(x_{k+1}) - ℓ(x_k)))); even pairs move at even steps, odd at odd."""
    logdensity = lambda x: -0.5 * jnp.sum(x**2)
    betas = np.array([1.0, 0.5, 0.25, 0.125])
    kernel = parallel_tempering(
        lambda f: stay_kernel(f, cache_logdensity), logdensity, jnp.asarray(betas)
    )
    positions = np.array([[3.0], [0.0], [2.0], [0.0]], np.float32)

    def expected_probs(x):
        ell = -0.5 * x[:, 0] ** 2
        return np.minimum(1.0, np.exp((betas[:-1] - betas[1:]) * (ell[1:] - ell[:-1])))

    # x ∈ {0, 2, 3} and β = 2^-k: ℓ, β·ℓ, /β and every difference are exact in binary, so only
    # exp rounds (≤ 2 ulps in XLA's float32): rtol = 4 eps against the float64 reference.
    rtol = 4 * EPS32
    state = kernel.init(jnp.asarray(positions))
    assert isinstance(state, PTState)
    step = jax.jit(kernel.step)
    # Step 0: pairs (0,1) and (2,3) are proposed; both have probability 1 and are exchanged.
    state, info = step(jax.random.PRNGKey(0), state)
    np.testing.assert_allclose(info.swap_acceptance_prob, expected_probs(positions), rtol=rtol)
    np.testing.assert_allclose(info.swap_acceptance_prob, [1.0, np.exp(-0.5), 1.0], rtol=rtol)
    np.testing.assert_array_equal(info.swap_proposed, [True, False, True])
    np.testing.assert_array_equal(info.swap_accepted, [True, False, True])
    positions = positions[[1, 0, 3, 2]]
    np.testing.assert_array_equal(state.replica_states.position, positions)
    np.testing.assert_array_equal(state.position, positions[0])
    if cache_logdensity:  # moved replicas carry the log-density of their new temperature
        np.testing.assert_allclose(
            state.replica_states.logdensity, betas * -0.5 * positions[:, 0] ** 2, rtol=rtol
        )
    # Step 1: only pair (1,2) is proposed, now with probability 1.
    state, info = step(jax.random.PRNGKey(1), state)
    np.testing.assert_allclose(info.swap_acceptance_prob, expected_probs(positions), rtol=rtol)
    np.testing.assert_array_equal(info.swap_proposed, [False, True, False])
    np.testing.assert_array_equal(info.swap_accepted, [False, True, False])
    np.testing.assert_array_equal(state.replica_states.position, positions[[0, 2, 1, 3]])
    assert int(state.step_count) == 2


# ------------------------------------------------------------------------------------------------
# Exact tempered marginals


def test_every_replica_samples_its_tempered_gaussian():
    """On N(0, I₂), replica k targets exp(β_k ℓ) = N(0, I/β_k). Swaps that were accepted with the
    wrong probability would distort these variances; cached states must match their temperature."""
    logdensity = lambda x: -0.5 * jnp.sum(x**2)
    betas = np.array([1.0, 0.5, 0.25])
    kernel = parallel_tempering(lambda f: hmc(f, 0.4, 5), logdensity, betas)
    num_chains, num_steps, burn_in = 1000, 150, 50
    starts = jnp.full((num_chains, 3, 2), 3.0)  # every replica of every chain far out
    final, swap_probs = run_chains(
        kernel, jax.random.PRNGKey(3), starts, num_steps, lambda s, info: info.swap_acceptance_prob
    )
    positions = np.asarray(final.replica_states.position, np.float64)  # (C, R, 2)
    chex.assert_shape(positions, (num_chains, 3, 2))
    np.testing.assert_array_equal(final.position, final.replica_states.position[:, 0])
    # 3 replicas × 2 coordinates × 2 moments, plus 2 swap-acceptance means: 14 checks.
    k_se = power.num_standard_errors(ALPHA, 3 * 2 * 2 + 2)
    for k, beta in enumerate(betas):
        samples = positions[:, k]
        mean_se = samples.std(0, ddof=1) / np.sqrt(num_chains)
        assert np.all(np.abs(samples.mean(0)) < k_se * mean_se), (k, samples.mean(0))
        squares = samples**2  # the true mean is 0
        se = squares.std(0, ddof=1) / np.sqrt(num_chains)
        assert np.all(np.abs(squares.mean(0) - 1.0 / beta) < k_se * se), (k, squares.mean(0))
    # Cached tempered log-densities and gradients belong to each replica's own temperature: the
    # same float32 formula, β·(-½ Σ x²) and -β x, whose terms all have one sign, so each is off
    # by a few eps relative (≤ 8 eps) to the float64 reference at the float32 positions.
    np.testing.assert_allclose(
        final.replica_states.logdensity,
        betas * -0.5 * np.sum(positions**2, axis=-1),
        rtol=8 * EPS32,
        atol=0,
    )
    np.testing.assert_allclose(
        final.replica_states.logdensity_grad, -betas[:, None] * positions, rtol=8 * EPS32, atol=0
    )
    swap_probs = np.asarray(swap_probs, np.float64)  # (C, T, R - 1)
    assert np.all((swap_probs >= 0.0) & (swap_probs <= 1.0))
    # At stationarity the replicas are independent, x_k ~ N(0, I/β_k), and |x_k|² ~ Exp(β_k/2) in
    # two dimensions; integrating min(1, exp((β_k - β_{k+1})(|x_k|² - |x_{k+1}|²)/2)) over the two
    # exponentials gives exactly 2 β_{k+1} / (β_k + β_{k+1}) (2/3 for these halving β).
    exact = 2 * betas[1:] / (betas[:-1] + betas[1:])
    per_chain = swap_probs[:, burn_in:].mean(axis=1)  # (C, R - 1): independent over chains
    swap_se = per_chain.std(axis=0, ddof=1) / np.sqrt(num_chains)
    assert np.all(np.abs(per_chain.mean(axis=0) - exact) < k_se * swap_se), per_chain.mean(0)


# ------------------------------------------------------------------------------------------------
# Mode hopping

MIXTURE_WEIGHTS = np.array([0.3, 0.7])
MIXTURE_MEANS = np.array([-4.0, 4.0])
MIXTURE_STD = 0.5  # the barrier at 0 is 32 nats deep: plain RWMH never crosses it


def mixture_logdensity(x):
    log_components = (
        jnp.log(MIXTURE_WEIGHTS)
        - 0.5 * ((x[0] - MIXTURE_MEANS) / MIXTURE_STD) ** 2
        - jnp.log(MIXTURE_STD * np.sqrt(2 * np.pi))
    )
    return jax.scipy.special.logsumexp(log_components)


def rwmh_crossing_flow(scale: float) -> float:
    """P(one RWMH step goes from x < 0 to y > 0) for x from the light mode's stationary law:
    ∫∫_{x<0<y} p(x)/w₀ · N(y - x; 0, scale²) · min(1, p(y)/p(x)), float64 midpoint quadrature
    on a 0.01 grid (the integrand's widths are ≥ 0.25: the rule is accurate to a few percent, and
    the result only sets a Poisson mean, rounded up to an integer count)."""
    step = 0.01
    x = np.arange(-10.0, 0.0, step) + step / 2
    y = -x[::-1]

    def density(z):
        components = scipy.stats.norm.pdf(z[..., None], MIXTURE_MEANS, MIXTURE_STD)
        return components @ MIXTURE_WEIGHTS

    px, py = density(x)[:, None], density(y)[None, :]
    move = scipy.stats.norm.pdf(y[None, :] - x[:, None], 0.0, scale)
    flow = px / MIXTURE_WEIGHTS[0] * move * np.minimum(1.0, py / px)
    return float(flow.sum() * step**2)


def test_tempering_visits_both_modes_in_proportion_where_rwmh_is_stuck():
    """Two checks at ALPHA / 2: plain RWMH (almost) never crosses the barrier, and PT's time in
    the heavy mode is its weight 0.7 within k SE."""
    num_chains, num_steps, burn_in = 200, 1500, 600  # the hot replicas need ~500 steps to settle
    starts = jnp.full((num_chains, 1), MIXTURE_MEANS[0], jnp.float32)  # all in the light mode
    record_right = lambda state, info: state.position[0] > 0.0

    betas = np.geomspace(1.0, 0.02, 8)
    kernel = parallel_tempering(lambda f: rwmh(f, 1.0), mixture_logdensity, betas)
    replica_starts = jnp.broadcast_to(starts[:, None, :], (num_chains, len(betas), 1))

    @jax.jit
    def both():
        plain = rwmh(mixture_logdensity, 1.0)
        _, rwmh_right = chains(plain, jax.random.PRNGKey(4), starts, num_steps, record_right)
        _, pt_right = chains(kernel, jax.random.PRNGKey(5), replica_starts, num_steps, record_right)
        return rwmh_right, pt_right

    rwmh_right, pt_right = both()
    # Plain RWMH: the expected number of crossings is chains × steps × the stationary one-step
    # flow out of the light mode (float64 quadrature); the chains that ever crossed are at most
    # that many crossings, Poisson, so at most `allowed` of them, with probability ≥ 1 - α/2.
    crossings = num_chains * num_steps * rwmh_crossing_flow(1.0)  # ≈ 0.007
    allowed = int(scipy.stats.poisson.isf(ALPHA / 2, crossings))  # 1
    assert int(np.sum(np.any(np.asarray(rwmh_right), axis=1))) <= allowed
    # Each chain's time fraction in the heavy mode; the chains are independent, so their spread
    # gives the standard error of the overall fraction.
    per_chain = np.asarray(pt_right, np.float64)[:, burn_in:].mean(axis=1)
    se = per_chain.std(ddof=1) / np.sqrt(num_chains)
    k_se = power.num_standard_errors(ALPHA / 2)
    assert abs(per_chain.mean() - MIXTURE_WEIGHTS[1]) < k_se * se, (per_chain.mean(), se)


# ------------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    "betas",
    [
        [0.9, 0.5],  # does not start at 1
        [1.0, 0.5, 0.7],  # not decreasing
        [1.0, 1.0],  # not strictly decreasing
        [1.0, 0.0],  # β = 0: improper
        [1.0, -0.5],
        [1.0, float("nan")],
        [1.0],  # one replica: nothing to exchange
        [[1.0, 0.5]],  # not a vector
    ],
)
def test_bad_betas_raise(betas):
    with pytest.raises(ValueError, match="betas"):
        parallel_tempering(lambda f: rwmh(f, 1.0), mixture_logdensity, betas)


def test_positions_need_one_row_per_replica():
    kernel = parallel_tempering(lambda f: rwmh(f, 1.0), mixture_logdensity, [1.0, 0.5, 0.25])
    with pytest.raises(ValueError, match="replica"):
        kernel.init(jnp.zeros((2, 1)))

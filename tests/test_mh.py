"""Metropolis–Hastings kernels: exact invariance on discrete spaces, moments on continuous ones.

Discrete checks use the kernel's own transition matrix (stationary distribution = target,
detailed balance) and test the kernel's actual ``step`` against that matrix with a chi-square
test whose threshold is fixed up front (p > 1e-3). Continuous checks run many independent
chains (vmap over chains, scan over steps); the final states of independent chains are
independent draws, so the standard error of a moment is its sample standard deviation over
sqrt(number of chains), and every tolerance below is k such standard errors: k = 5 (a two-sided
normal tail of 5.7e-7 per check) for single checks, and ``assert_moments_match``'s default (a
false-fail rate of 1e-4 over its D + D(D+1)/2 checks, Bonferroni) for moment sets.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nflows_jax.sampling import markov
from nflows_jax.sampling.base import Kernel, normal_and_uniform
from nflows_jax.sampling.gibbs import conditional_logits_from_logdensity, discrete_gibbs
from nflows_jax.sampling.mh import MHState, independence_mh, mh, rwmh
from nflows_jax.sampling.tempering import parallel_tempering
from nflows_jax.testing import assert_moments_match

P_VALUE_THRESHOLD = 1e-3
# 5 Monte-Carlo standard errors: a two-sided normal tail of 5.7e-7 per check.
NUM_STANDARD_ERRORS = 5.0
EPS32 = float(np.finfo(np.float32).eps)
# Each matrix entry q·α is a float32 exp of a difference of float32 logs (|log| ≤ 8 here): at most
# 16 ulps of an entry ≤ 1, so a probability flow π_i T_ij is off by at most 16 eps32.
DETAILED_BALANCE_ATOL = 16 * EPS32


def stationary_tolerance(matrix) -> float:
    """Error bound of the float32 least-squares stationary distribution of ``matrix`` (S, S).

    Householder least squares is backward stable: the solution's error is at most about
    S · κ · eps32 with κ the condition number of the system [Tᵀ - I; 1ᵀ] (computed in float64),
    once for the solve and once for the float32 rounding of T's entries themselves.
    """
    matrix = np.asarray(matrix, np.float64)
    size = matrix.shape[0]
    system = np.vstack([matrix.T - np.eye(size), np.ones((1, size))])
    return 2 * size * float(np.linalg.cond(system)) * EPS32


# The markov helpers run op by op when called eagerly; jitted they compile once per shape.
stationary_distribution = jax.jit(markov.stationary_distribution)
satisfies_detailed_balance = jax.jit(markov.satisfies_detailed_balance, static_argnames="atol")
transition_goodness_of_fit = jax.jit(markov.transition_goodness_of_fit)
check_transition_matrix = markov.check_transition_matrix
empirical_transition_counts = markov.empirical_transition_counts


def transition_matrix(kernel, states):
    return jax.jit(lambda s: markov.transition_matrix(kernel, s))(states)


def run_chains_of_kernels(key, kernels, initial_positions, num_steps):
    """For each kernel, (final states, all infos) of independent chains from the same starts.

    vmap over chains, scan over steps; all kernels in ONE jitted program, because on CPU each
    compiled program costs seconds while the chains themselves take milliseconds.
    """

    @jax.jit
    def run(key, positions):
        keys = jax.random.split(key, (num_steps, positions.shape[0]))  # (steps, chains)
        results = []
        for kernel in kernels:
            states = jax.vmap(kernel.init)(positions)
            step = lambda s, step_keys, kernel=kernel: jax.vmap(kernel.step)(step_keys, s)
            results.append(jax.lax.scan(step, states, keys))
        return results

    return run(key, initial_positions)


def run_chains(key, kernel, initial_positions, num_steps):
    """Final states and all infos of independent chains of one kernel."""
    return run_chains_of_kernels(key, [kernel], initial_positions, num_steps)[0]


# --------------------------------------------------------------------------------------------
# Discrete spaces: exact transition matrices.

RING_SIZE = 6
RING_TARGET = jnp.array([1.0, 2.0, 5.0, 3.0, 0.5, 4.0]) / 15.5
STEP_UP_PROB = 0.75  # an asymmetric proposal, so the Hastings factor is not 1


def ring_logdensity(x):
    return jnp.log(RING_TARGET[x[0]])


def ring_proposal_sample(key, x):
    up = jax.random.uniform(key) < STEP_UP_PROB
    return jnp.where(up, (x + 1) % RING_SIZE, (x - 1) % RING_SIZE)


def ring_proposal_logdensity(proposed, x):
    up = proposed[0] == (x[0] + 1) % RING_SIZE
    down = proposed[0] == (x[0] - 1) % RING_SIZE
    return jnp.log(jnp.where(up, STEP_UP_PROB, jnp.where(down, 1.0 - STEP_UP_PROB, 0.0)))


RING_STATES = jnp.arange(RING_SIZE)[:, None]  # (6, 1): positions with event shape (1,)


def ring_matrix_without_hastings_term():
    """A deliberately wrong kernel: the same proposal, acceptance min(1, π(x′)/π(x))."""
    target = np.asarray(RING_TARGET, np.float64)
    matrix = np.zeros((RING_SIZE, RING_SIZE))
    for i in range(RING_SIZE):
        for j, q in (((i + 1) % RING_SIZE, STEP_UP_PROB), ((i - 1) % RING_SIZE, 1 - STEP_UP_PROB)):
            matrix[i, j] = q * min(1.0, target[j] / target[i])
        matrix[i, i] = 1.0 - matrix[i].sum()
    return matrix


def test_mh_asymmetric_ring_leaves_target_invariant_with_detailed_balance():
    kernel = mh(ring_logdensity, ring_proposal_sample, ring_proposal_logdensity)
    matrix = check_transition_matrix(transition_matrix(kernel, RING_STATES))
    tolerance = stationary_tolerance(matrix)
    np.testing.assert_allclose(stationary_distribution(matrix), RING_TARGET, atol=tolerance)
    assert satisfies_detailed_balance(matrix, RING_TARGET, atol=DETAILED_BALANCE_ATOL)
    # The Hastings factor matters here: without it the chain drifts to a different distribution.
    wrong = stationary_distribution(jnp.asarray(ring_matrix_without_hastings_term()))
    # A property of the wrong chain (total variation 0.05 is far above any rounding), not a
    # tolerance.
    assert float(jnp.sum(jnp.abs(wrong - RING_TARGET))) / 2 > 0.05


def test_mh_asymmetric_ring_step_agrees_with_transition():
    kernel = mh(ring_logdensity, ring_proposal_sample, ring_proposal_logdensity)
    matrix = transition_matrix(kernel, RING_STATES)
    counts = empirical_transition_counts(jax.random.key(0), kernel, RING_STATES, 2000)
    _, _, p_value = transition_goodness_of_fit(counts, matrix)
    assert p_value > P_VALUE_THRESHOLD


# A symmetric nearest-neighbour walk on a 4×4 grid of integer points, expressed with `mh`:
# proposals leaving the grid have log π = −inf and are always rejected.
GRID_SIDE = 4
GRID_STATES = jnp.stack(
    jnp.meshgrid(jnp.arange(GRID_SIDE), jnp.arange(GRID_SIDE), indexing="ij"), axis=-1
).reshape(-1, 2)
GRID_MOVES = jnp.array([[1, 0], [-1, 0], [0, 1], [0, -1]])


def grid_logdensity(x):
    inside = jnp.all((x >= 0) & (x < GRID_SIDE))
    centred = x - jnp.array([1.2, 2.0])
    energy = 0.5 * centred[0] ** 2 + 0.3 * centred[0] * centred[1] + 0.4 * centred[1] ** 2
    return jnp.where(inside, -energy, -jnp.inf)


def grid_target():
    logits = jax.jit(jax.vmap(grid_logdensity))(GRID_STATES)
    return jax.nn.softmax(logits)


def grid_proposal_sample(key, x):
    return x + GRID_MOVES[jax.random.randint(key, (), 0, 4)]


def grid_proposal_logdensity(proposed, x):
    return jnp.where(jnp.sum(jnp.abs(proposed - x)) == 1, jnp.log(0.25), -jnp.inf)


def test_lattice_random_walk_mh_is_exact():
    kernel = mh(grid_logdensity, grid_proposal_sample, grid_proposal_logdensity)
    matrix = check_transition_matrix(transition_matrix(kernel, GRID_STATES))
    target = grid_target()
    tolerance = stationary_tolerance(matrix)
    np.testing.assert_allclose(stationary_distribution(matrix), target, atol=tolerance)
    assert satisfies_detailed_balance(matrix, target, atol=DETAILED_BALANCE_ATOL)
    counts = empirical_transition_counts(jax.random.key(1), kernel, GRID_STATES, 2000)
    _, _, p_value = transition_goodness_of_fit(counts, matrix)
    assert p_value > P_VALUE_THRESHOLD


# Independence MH on 5 states with a proposal unlike the target.
IMH_TARGET = jnp.array([0.05, 0.4, 0.1, 0.3, 0.15])
IMH_PROPOSAL = jnp.array([0.3, 0.1, 0.25, 0.15, 0.2])
IMH_STATES = jnp.arange(5)[:, None]


def imh_kernel():
    return independence_mh(
        lambda x: jnp.log(IMH_TARGET[x[0]]) + 7.0,  # unnormalised on purpose
        lambda key: jax.random.categorical(key, jnp.log(IMH_PROPOSAL), shape=(1,)),
        lambda x: jnp.log(IMH_PROPOSAL[x[0]]),
    )


def test_independence_mh_discrete_is_exact():
    kernel = imh_kernel()
    matrix = check_transition_matrix(transition_matrix(kernel, IMH_STATES))
    tolerance = stationary_tolerance(matrix)
    np.testing.assert_allclose(stationary_distribution(matrix), IMH_TARGET, atol=tolerance)
    assert satisfies_detailed_balance(matrix, IMH_TARGET, atol=DETAILED_BALANCE_ATOL)
    counts = empirical_transition_counts(jax.random.key(2), kernel, IMH_STATES, 2000)
    _, _, p_value = transition_goodness_of_fit(counts, matrix)
    assert p_value > P_VALUE_THRESHOLD


def test_independence_mh_without_hastings_term_targets_pi_times_q():
    """What blackjax's irmh does when no proposal density is given: the chain targets π·q."""
    wrong_kernel = independence_mh(
        lambda x: jnp.log(IMH_TARGET[x[0]]),
        lambda key: jax.random.categorical(key, jnp.log(IMH_PROPOSAL), shape=(1,)),
        lambda x: jnp.zeros(()),  # "forgot" q: log q treated as constant
    )
    # The transition still needs the true proposal probabilities; rebuild them: q(c)·α.
    target, proposal = np.asarray(IMH_TARGET, np.float64), np.asarray(IMH_PROPOSAL, np.float64)
    matrix = np.zeros((5, 5))
    for i in range(5):
        for j in range(5):
            if i != j:
                matrix[i, j] = proposal[j] * min(1.0, target[j] / target[i])
        matrix[i, i] = 1.0 - matrix[i].sum()
    stationary = np.asarray(stationary_distribution(jnp.asarray(matrix)))
    np.testing.assert_allclose(
        stationary,
        target * proposal / np.sum(target * proposal),
        atol=stationary_tolerance(matrix),
    )
    assert np.abs(stationary - target).sum() / 2 > 0.1  # a property of π·q ≠ π, not a tolerance
    # The wrong kernel's step really behaves like this matrix (its α ignores q).
    counts = empirical_transition_counts(jax.random.key(3), wrong_kernel, IMH_STATES, 2000)
    _, _, p_value = transition_goodness_of_fit(counts, jnp.asarray(matrix, jnp.float32))
    assert p_value > P_VALUE_THRESHOLD
    # ... and the chi-square test has the power to tell it from the correct kernel.
    right_matrix = transition_matrix(imh_kernel(), IMH_STATES)
    _, _, p_value = transition_goodness_of_fit(counts, right_matrix)
    assert p_value < P_VALUE_THRESHOLD


# --------------------------------------------------------------------------------------------
# Continuous targets: moments from many chains.

GAUSS_MEAN = np.array([1.0, -0.5])
GAUSS_COV = np.array([[1.0, 0.6], [0.6, 0.8]])
GAUSS_PRECISION = np.linalg.inv(GAUSS_COV)


def gaussian_logdensity(x):
    centred = x - jnp.asarray(GAUSS_MEAN, jnp.float32)
    return -0.5 * centred @ jnp.asarray(GAUSS_PRECISION, jnp.float32) @ centred


def overdispersed_starts(seed, num_chains):
    """Draws from N(mean, 9·cov): a chain that does not move fails the covariance check.

    (numpy draws: set-up data need no compiled jax program.)
    """
    chol = np.linalg.cholesky(9.0 * GAUSS_COV)
    normals = np.random.default_rng(seed).standard_normal((num_chains, 2))
    return jnp.asarray(GAUSS_MEAN + normals @ chol.T, jnp.float32)


def test_rwmh_moments_on_correlated_gaussian():
    kernels = [
        rwmh(gaussian_logdensity, 0.9, noise="gaussian"),
        rwmh(gaussian_logdensity, jnp.array([1.5, 1.2]), noise="uniform"),  # per-dimension
    ]
    results = run_chains_of_kernels(jax.random.key(4), kernels, overdispersed_starts(4, 1000), 200)
    for noise, (states, infos) in zip(["gaussian", "uniform"], results, strict=True):
        assert_moments_match(states.position, GAUSS_MEAN, GAUSS_COV)
        probs = np.asarray(infos.acceptance_prob, np.float64)
        assert 0.2 < probs.mean() < 0.9, noise  # sanity, not a tolerance: the chains moved
        # Given its probability each acceptance is an independent Bernoulli draw.
        bernoulli_se = np.sqrt(np.sum(probs * (1 - probs))) / probs.size
        accept_rate = float(infos.accepted.mean())
        assert abs(accept_rate - probs.mean()) < NUM_STANDARD_ERRORS * bernoulli_se, noise


def test_rwmh_uses_one_draw_per_step():
    """Proposal noise and acceptance uniform come from ONE ``normal_and_uniform`` draw."""
    kernel = rwmh(lambda x: jnp.zeros(()), jnp.array([0.5, 2.0]))  # flat target: always accept
    position = jnp.array([0.3, -1.0])

    @jax.jit
    def step_and_reference(key):
        return kernel.step(key, kernel.init(position)), normal_and_uniform(key, (2,))[0]

    (new_state, info), noise = step_and_reference(jax.random.key(5))
    expected = position + jnp.array([0.5, 2.0]) * noise
    # One multiply and one add, each rounded (maybe fused into an FMA): ≤ 2 ulps of the terms.
    atol = 2 * EPS32 * (jnp.abs(position) + jnp.abs(jnp.array([0.5, 2.0]) * noise))
    assert bool(jnp.all(jnp.abs(new_state.position - expected) <= atol))
    assert bool(info.accepted)


def test_rwmh_accepts_pytree_positions():
    logdensity = lambda p: gaussian_logdensity(jnp.stack([p["a"], p["b"]]))
    kernel = rwmh(logdensity, {"a": 0.9, "b": 0.9})
    state, _ = jax.jit(kernel.step)(
        jax.random.key(6), kernel.init({"a": jnp.zeros(()), "b": jnp.zeros(())})
    )
    assert set(state.position) == {"a", "b"}
    # A 2-d quadratic form: at most 8 rounded operations on terms no larger than
    # |centred|² · max|precision| (float64 bound), in either evaluation.
    centred = np.array([state.position["a"], state.position["b"]], np.float64) - GAUSS_MEAN
    magnitude = np.sum(np.abs(centred)) ** 2 * np.max(np.abs(GAUSS_PRECISION))
    assert abs(float(state.logdensity) - float(logdensity(state.position))) <= 8 * EPS32 * (
        magnitude + EPS32
    )


def test_independence_mh_with_proposal_equal_to_target_always_accepts():
    chol = np.linalg.cholesky(GAUSS_COV)
    mean, chol32 = jnp.asarray(GAUSS_MEAN, jnp.float32), jnp.asarray(chol, jnp.float32)
    log_norm = -np.log(2 * np.pi) - np.log(np.diag(chol)).sum()
    kernel = independence_mh(
        lambda x: gaussian_logdensity(x) + 3.0,  # π up to a constant
        lambda key: mean + chol32 @ jax.random.normal(key, (2,)),
        lambda x: gaussian_logdensity(x) + log_norm,
    )
    states, infos = run_chains(jax.random.key(7), kernel, jnp.zeros((2000, 2)), 5)
    # log w = log π + 3 - log q is a float32 cancellation: Δ log w is off by at most 4 ulps of the
    # largest term, |log π| + 3 + |log_norm|, and |log π| ≤ 20 for all 10⁴ draws except with
    # probability 10⁴ e^-20 < 1e-4 (χ²₂/2 tail), so the acceptance is within that of 1.
    acceptance_atol = 4 * EPS32 * (20.0 + 3.0 + abs(log_norm))
    np.testing.assert_allclose(infos.acceptance_prob, 1.0, atol=acceptance_atol)
    assert bool(jnp.all(infos.accepted))
    assert_moments_match(states.position, GAUSS_MEAN, GAUSS_COV)


def test_independence_mh_sample_and_logdensity_path_matches():
    chol32 = jnp.asarray(np.linalg.cholesky(GAUSS_COV), jnp.float32)
    sample = lambda key: chol32 @ jax.random.normal(key, (2,))
    log_q = lambda x: -0.5 * jnp.sum(jax.scipy.linalg.solve_triangular(chol32, x, lower=True) ** 2)
    plain = independence_mh(gaussian_logdensity, sample, log_q)
    fused = independence_mh(
        gaussian_logdensity, sample, log_q, lambda key: (sample(key), log_q(sample(key)))
    )
    start = jnp.array([0.5, 0.5])

    @jax.jit
    def both_steps(key):
        return plain.step(key, plain.init(start)), fused.step(key, fused.init(start))

    (state_a, info_a), (state_b, info_b) = both_steps(jax.random.key(8))
    # The same 2-term matrix-vector product in one program: at most 2 roundings apart per entry.
    position_atol = 2 * EPS32 * float(jnp.max(jnp.abs(state_a.position)))
    np.testing.assert_allclose(state_a.position, state_b.position, rtol=0, atol=position_atol)
    # The same float32 operations in one program; fusion may move each of the 4 log terms of
    # Δ log w by an ulp (|terms| ≤ 20 here: the start and a N(0, Σ) draw), so the acceptance
    # probabilities agree to 4 · 20 · eps32 relative.
    np.testing.assert_allclose(
        info_a.acceptance_prob, info_b.acceptance_prob, rtol=4 * 20.0 * EPS32
    )


# --------------------------------------------------------------------------------------------
# NaN safety.


def nan_right_half_logdensity(x):
    """A standard normal whose log-density is NaN for x[0] > 0.5 (e.g. a broken energy)."""
    return jnp.where(x[0] > 0.5, jnp.nan, -0.5 * jnp.sum(x**2))


def test_nan_logdensity_is_never_accepted():
    kernels = {
        "rwmh": rwmh(nan_right_half_logdensity, 1.0),
        "mh": mh(
            nan_right_half_logdensity,
            lambda key, x: x + jax.random.normal(key, x.shape),
            lambda y, x: -0.5 * jnp.sum((y - x) ** 2),
        ),
        "independence_mh": independence_mh(
            nan_right_half_logdensity,
            lambda key: 2.0 * jax.random.normal(key, (2,)),
            lambda x: -jnp.sum(x**2) / 8.0,
        ),
    }
    # Half the chains start at a point whose log-density is NaN: read as −inf, so they leave it
    # at the first valid proposal (each step does so with probability > 0.38; 50 steps).
    nan_start = jnp.array([0.8, 0.0])
    starts = jnp.concatenate([jnp.zeros((250, 2)), jnp.tile(nan_start, (250, 1))])
    results = run_chains_of_kernels(jax.random.key(9), list(kernels.values()), starts, 50)
    for (name, kernel), (states, infos) in zip(kernels.items(), results, strict=True):
        assert float(kernel.init(nan_start).logdensity) == -np.inf, name
        assert bool(jnp.all(states.position[:, 0] <= 0.5)), name
        assert bool(jnp.all(jnp.isfinite(states.logdensity))), name
        assert bool(jnp.all(infos.acceptance_prob >= 0) & jnp.all(infos.acceptance_prob <= 1)), name
        # Sanity, not a tolerance: the chains do move where the density is valid.
        assert float(infos.accepted.mean()) > 0.1, name


# --------------------------------------------------------------------------------------------
# Configuration errors.


@pytest.mark.parametrize(
    ("scale", "shown"),
    [
        (0.0, "0.0"),
        (-0.5, "-0.5"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (np.float32(-2.0), "-2.0"),  # a plain number, not numpy's repr
        (jnp.array([1.0, 0.0]), "0.0"),
        ({"a": 1.0, "b": -1.0}, "-1.0"),
    ],
)
def test_rwmh_rejects_non_positive_or_non_finite_scales(scale, shown):
    """scale = 0 froze the chain while reporting 100 % acceptance; now it raises at
    construction."""
    with pytest.raises(
        ValueError, match=rf"^rwmh: scale must be positive and finite, got {shown}$"
    ):
        rwmh(gaussian_logdensity, scale)


def test_rwmh_accepts_a_traced_scale():
    """A step size tuned inside jit is data, not checked at construction."""
    position = jnp.array([0.3, -1.0])
    step = jax.jit(lambda s, key: rwmh(gaussian_logdensity, s).step(key, MHState(position, 0.0)))
    state, _ = step(0.5, jax.random.key(0))
    chex.assert_shape(state.position, (2,))


def vector_logdensity(x):
    """The sum forgotten: one log-density per coordinate, (D,)."""
    return -0.5 * x**2


@pytest.mark.parametrize(
    ("who", "build"),
    [
        ("rwmh", lambda f: rwmh(f, 0.5)),
        (
            "mh",
            lambda f: mh(f, lambda key, x: x + jax.random.normal(key, x.shape), lambda y, x: 0.0),
        ),
        (
            "independence_mh",
            lambda f: independence_mh(f, lambda key: jax.random.normal(key, (2,)), lambda x: 0.0),
        ),
        (
            "parallel_tempering",
            lambda f: parallel_tempering(lambda g: rwmh(g, 0.5), f, [1.0, 0.5]),
        ),
        (
            "conditional_logits_from_logdensity",
            lambda f: discrete_gibbs(conditional_logits_from_logdensity(f, 3), 2),
        ),
    ],
)
def test_non_scalar_logdensity_raises_at_trace_time(who, build):
    """rwmh used to accept a (D,) log-density and make D coupled per-coordinate accepts, which
    samples the wrong law silently; every kernel now raises while tracing, naming itself."""
    kernel = build(vector_logdensity)
    start = jnp.zeros((2, 2)) if who == "parallel_tempering" else jnp.zeros(2)
    if who == "conditional_logits_from_logdensity":  # Gibbs: integer states, only step evaluates
        start = jnp.zeros(2, jnp.int32)
        good_state = kernel.init(start)
        with pytest.raises(ValueError, match=rf"^{who}: the log-density must return a scalar"):
            jax.eval_shape(kernel.step, jax.random.key(0), good_state)
        return
    match = rf"^{who}: the log-density must return a scalar.*shape \(2,\).*forget \.sum\(\)"
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(kernel.init, start)
    good_state = build(lambda x: -0.5 * jnp.sum(x**2)).init(start)
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(kernel.step, jax.random.key(0), good_state)


@pytest.mark.parametrize("which", ["mh", "independence_mh", "fused"])
def test_non_scalar_proposal_logdensity_raises_at_trace_time(which):
    normal = lambda key: jax.random.normal(key, (2,))
    if which == "mh":
        kernel = mh(gaussian_logdensity, lambda key, x: x + normal(key), lambda y, x: -0.5 * y**2)
        what = "proposal_logdensity"
    elif which == "independence_mh":
        kernel = independence_mh(gaussian_logdensity, normal, lambda x: -0.5 * x**2)
        what = "proposal_logdensity"
    else:
        kernel = independence_mh(
            gaussian_logdensity,
            normal,
            lambda x: -0.5 * jnp.sum(x**2),
            lambda key: (normal(key), -0.5 * normal(key) ** 2),
        )
        what = "proposal_sample_and_logdensity's log-density"
    who = "mh" if which == "mh" else "independence_mh"
    match = rf"^{who}: the {what} must return a scalar"
    if which == "independence_mh":  # its init evaluates q (for the cached importance weight)
        with pytest.raises(ValueError, match=match):
            jax.eval_shape(kernel.init, jnp.zeros(2))
        return
    state = jax.eval_shape(kernel.init, jnp.zeros(2))
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(kernel.step, jax.random.key(0), state)


def test_rwmh_rejects_bad_configuration():
    with pytest.raises(ValueError, match="noise"):
        rwmh(gaussian_logdensity, 1.0, noise="cauchy")
    with pytest.raises(ValueError, match="floating-point"):
        rwmh(gaussian_logdensity, 1.0).init(jnp.zeros(2, jnp.int32))
    kernel = rwmh(gaussian_logdensity, jnp.ones(3))
    with pytest.raises(ValueError, match="broadcast"):
        kernel.step(jax.random.key(0), kernel.init(jnp.zeros(2)))


def test_kernels_are_kernels():
    for kernel in (
        rwmh(gaussian_logdensity, 1.0),
        mh(ring_logdensity, ring_proposal_sample, ring_proposal_logdensity),
        imh_kernel(),
    ):
        assert isinstance(kernel, Kernel)

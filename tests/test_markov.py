"""Finite Markov chains: exact stationary distributions, TV bounds, detailed balance, and a
kernel's declared transition matrix checked against its own steps by a chi-square test.

The chi-square tests use a fixed seed and the threshold P_MIN = 1e-3, chosen before running.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nflows_jax.sampling import markov
from nflows_jax.sampling.base import Kernel

P_MIN = 1e-3

# The Land of Oz chain (Kemeny & Snell): rain, nice, snow; π = (2/5, 1/5, 2/5). T[1, 1] = 0.
OZ = jnp.array([[0.5, 0.25, 0.25], [0.5, 0.0, 0.5], [0.25, 0.25, 0.5]])
OZ_PI = jnp.array([0.4, 0.2, 0.4])

# A circulant, hence doubly stochastic, chain with all entries positive: π is uniform, and it
# is not reversible (probability circulates 0 -> 1 -> 2 -> 0 faster than back).
CIRCULANT = jnp.array([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.3, 0.2, 0.5]])


def _birth_death(up, down):
    """Birth–death chain on {0..S-1}: T[k, k+1] = up[k], T[k+1, k] = down[k], rest on the diagonal.

    Its stationary distribution is π_k ∝ Π_{i<k} up[i] / down[i] (detailed balance, in closed
    form), returned alongside.
    """
    up, down = np.asarray(up), np.asarray(down)
    size = len(up) + 1
    matrix = np.zeros((size, size))
    matrix[np.arange(size - 1), np.arange(1, size)] = up
    matrix[np.arange(1, size), np.arange(size - 1)] = down
    matrix[np.arange(size), np.arange(size)] = 1.0 - matrix.sum(axis=1)
    pi = np.concatenate([[1.0], np.cumprod(up / down)])
    return jnp.asarray(matrix, jnp.float32), jnp.asarray(pi / pi.sum(), jnp.float32)


BIRTH_DEATH, BIRTH_DEATH_PI = _birth_death([0.3, 0.5, 0.2, 0.4], [0.4, 0.1, 0.5, 0.3])


@pytest.mark.parametrize(
    ("matrix", "pi"),
    [(OZ, OZ_PI), (CIRCULANT, jnp.full(3, 1 / 3)), (BIRTH_DEATH, BIRTH_DEATH_PI)],
)
def test_stationary_distribution_matches_known_answer(matrix, pi):
    markov.check_transition_matrix(matrix)
    found = jax.jit(markov.stationary_distribution)(matrix)
    np.testing.assert_allclose(found, pi, atol=1e-5)
    np.testing.assert_allclose(found @ matrix, found, atol=1e-5)


def test_stationary_distribution_of_periodic_and_reducible_chains():
    # Periodic (deterministic 3-cycle): unique π, uniform, though p_n never converges.
    cycle = jnp.roll(jnp.eye(3), 1, axis=1)
    np.testing.assert_allclose(markov.stationary_distribution(cycle), jnp.full(3, 1 / 3), atol=1e-5)
    # Reducible: two closed classes {0, 1} and {2, 3} with stationary laws a and b, plus a
    # transient state 4. The answer is documented as the mixture with weights ∝ 1 / ‖π_k‖².
    matrix = jnp.array(
        [
            [0.9, 0.1, 0.0, 0.0, 0.0],
            [0.3, 0.7, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.5, 0.5, 0.0],
            [0.0, 0.0, 0.5, 0.5, 0.0],
            [0.2, 0.0, 0.3, 0.0, 0.5],
        ]
    )
    a = np.array([0.75, 0.25, 0, 0, 0])
    b = np.array([0, 0, 0.5, 0.5, 0])
    weights = np.array([1 / (a @ a), 1 / (b @ b)])
    expected = (weights[0] * a + weights[1] * b) / weights.sum()
    found = markov.stationary_distribution(matrix)
    np.testing.assert_allclose(found, expected, atol=1e-5)
    np.testing.assert_allclose(found @ matrix, found, atol=1e-5)


def test_evolve_matches_matrix_power_and_trajectory():
    p0 = jnp.array([1.0, 0.0, 0.0])
    for steps in (0, 1, 7):
        expected = np.asarray(p0, np.float64) @ np.linalg.matrix_power(np.asarray(OZ), steps)
        np.testing.assert_allclose(markov.evolve(p0, OZ, steps), expected, atol=1e-6)
    trajectory = markov.distribution_trajectory(jnp.eye(3), OZ, 5)  # three starts at once
    assert trajectory.shape == (6, 3, 3)
    np.testing.assert_allclose(trajectory[5], markov.evolve(jnp.eye(3), OZ, 5), atol=1e-6)
    # evolve also takes a traced step count.
    traced = jax.jit(markov.evolve)(p0, OZ, jnp.int32(7))
    np.testing.assert_allclose(traced, markov.evolve(p0, OZ, 7), atol=1e-6)


def test_tv_distance_obeys_the_doeblin_bound_at_every_step():
    pi = markov.stationary_distribution(CIRCULANT)
    delta = markov.ergodicity_constant(CIRCULANT, pi)
    np.testing.assert_allclose(delta, 0.2 / (1 / 3), rtol=1e-5)  # min entry / π
    trajectory = markov.distribution_trajectory(jnp.eye(3), CIRCULANT, 30)  # every start state
    tv = markov.total_variation(trajectory, pi)  # (31, 3)
    bound = (1.0 - delta) ** jnp.arange(31.0)
    # float32 slack: TV of a converged chain sits at ~1e-7, not 0.
    assert bool(jnp.all(tv <= bound[:, None] + 1e-6))
    assert float(tv[-1].max()) < 1e-6  # and it really converges


def test_doeblin_bound_through_a_k_step_matrix():
    # Oz has a zero entry so δ = 0 for one step; the two-step matrix is positive.
    assert float(markov.ergodicity_constant(OZ, OZ_PI)) == 0.0
    two_step = jnp.linalg.matrix_power(OZ, 2)
    delta = float(markov.ergodicity_constant(two_step, OZ_PI))
    assert 0.0 < delta <= 1.0
    trajectory = markov.distribution_trajectory(jnp.eye(3), OZ, 20)
    tv = markov.total_variation(trajectory, OZ_PI)
    bound = (1.0 - delta) ** (np.arange(21) // 2)
    assert np.all(np.asarray(tv) <= bound[:, None] + 1e-6)


def test_detailed_balance():
    assert bool(markov.satisfies_detailed_balance(BIRTH_DEATH, BIRTH_DEATH_PI))
    assert float(markov.detailed_balance_violation(BIRTH_DEATH, BIRTH_DEATH_PI)) < 1e-6
    # Cyclic chains with a uniform π are stationary but not reversible.
    uniform = jnp.full(3, 1 / 3)
    assert not bool(markov.satisfies_detailed_balance(CIRCULANT, uniform))
    np.testing.assert_allclose(
        markov.detailed_balance_violation(CIRCULANT, uniform), (0.3 - 0.2) / 3, rtol=1e-5
    )
    cycle = jnp.roll(jnp.eye(3), 1, axis=1)
    assert not bool(markov.satisfies_detailed_balance(cycle, uniform))
    # Reversible, but with respect to its own π, not any π.
    assert not bool(markov.satisfies_detailed_balance(BIRTH_DEATH, jnp.full(5, 0.2)))


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.ones((2, 3)) / 3, "shape"),
        (np.array([[0.5, 0.5], [1.2, -0.2]]), "non-negative"),
        (np.array([[0.5, 0.4], [0.5, 0.5]]), "sum to 1"),
        (np.array([[np.nan, 1.0], [0.5, 0.5]]), "non-finite"),
        (np.ones(3) / 3, "shape"),
    ],
)
def test_bad_matrices_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        markov.check_transition_matrix(bad)


# ------------------------------------------------------------------------------ kernels

TARGET = jnp.array([1.0, 2.0, 4.0, 2.0, 0.5])  # unnormalised target on {0, ..., 4}
STATES = jnp.arange(5)


class _State(NamedTuple):
    position: jax.Array
    log_density: jax.Array


def _metropolis_on_a_line(log_target, right_prob: float = 0.5) -> Kernel:
    """Metropolis on {0..4}: propose x ± 1, reject moves off the ends. Declares `transition`.

    ``right_prob != 0.5`` makes the proposal asymmetric while ``transition`` still claims the
    symmetric kernel — a deliberately wrong kernel that the chi-square test must catch.
    """
    num = log_target.shape[0]

    def init(position):
        return _State(position, log_target[position])

    def step(key, state):
        u_move, u_accept = jax.random.uniform(key, (2,))
        proposal = state.position + jnp.where(u_move < right_prob, 1, -1)
        inside = (proposal >= 0) & (proposal < num)
        log_ratio = log_target[jnp.clip(proposal, 0, num - 1)] - state.log_density
        accept = inside & (jnp.log(u_accept) < log_ratio)
        return init(jnp.where(accept, proposal, state.position)), accept

    def transition(position, candidates):
        step_size = jnp.abs(candidates - position)
        accept_prob = jnp.minimum(1.0, jnp.exp(log_target[candidates] - log_target[position]))
        move = jnp.where(step_size == 1, 0.5 * accept_prob, 0.0)
        stay = 1.0 - jnp.sum(move)  # rejected moves, including proposals off the ends
        return move + jnp.where(step_size == 0, stay, 0.0)

    return Kernel(init, step, transition)


def test_kernel_transition_matrix_is_exact_and_leaves_target_invariant():
    kernel = _metropolis_on_a_line(jnp.log(TARGET))
    matrix = markov.transition_matrix(kernel, STATES)
    assert matrix.shape == (5, 5)
    markov.check_transition_matrix(matrix)
    pi = TARGET / TARGET.sum()
    np.testing.assert_allclose(markov.stationary_distribution(matrix), pi, atol=1e-5)
    assert bool(markov.satisfies_detailed_balance(matrix, pi))
    # Spot-check one row by hand: from 2 (weight 4) to 1 and 3 (weight 2): 0.5 · 2/4 each.
    np.testing.assert_allclose(matrix[2], [0.0, 0.25, 0.5, 0.25, 0.0], atol=1e-6)


def test_kernel_steps_agree_with_declared_transition():
    # 4000 draws per state: the smallest nonzero expected count is 4000 · 0.0625 = 250,
    # far above the chi-square approximation's ~5.
    kernel = _metropolis_on_a_line(jnp.log(TARGET))
    matrix = markov.transition_matrix(kernel, STATES)
    counts = markov.empirical_transition_counts(jax.random.PRNGKey(0), kernel, STATES, 4000)
    assert counts.shape == (5, 5) and int(counts.sum()) == 5 * 4000
    statistic, dof, p_value = markov.transition_goodness_of_fit(counts, matrix)
    assert int(dof) == 3 * 2 + 2 * 1  # rows 1-3 have 3 possible moves, the ends 2
    assert float(p_value) > P_MIN, (float(statistic), int(dof))
    frequencies = markov.empirical_transition_matrix(jax.random.PRNGKey(0), kernel, STATES, 4000)
    np.testing.assert_allclose(frequencies, counts / 4000)


def test_goodness_of_fit_catches_a_wrong_kernel():
    # The proposal goes right 60% of the time but `transition` says 50%: must be rejected.
    kernel = _metropolis_on_a_line(jnp.log(TARGET), right_prob=0.6)
    matrix = markov.transition_matrix(kernel, STATES)
    counts = markov.empirical_transition_counts(jax.random.PRNGKey(0), kernel, STATES, 4000)
    _, _, p_value = markov.transition_goodness_of_fit(counts, matrix)
    assert float(p_value) < 1e-10
    # A landing where the declared matrix has zero probability gives p = 0 outright.
    impossible = jnp.array([[5, 5], [0, 10]])
    statistic, _, p_value = markov.transition_goodness_of_fit(impossible, jnp.eye(2))
    assert float(statistic) == np.inf and float(p_value) == 0.0


def test_transition_matrix_errors():
    kernel = _metropolis_on_a_line(jnp.log(TARGET))
    with pytest.raises(ValueError, match="no `transition`"):
        markov.transition_matrix(Kernel(kernel.init, kernel.step), STATES)
    bad_shape = Kernel(kernel.init, kernel.step, lambda position, candidates: jnp.ones(3))
    with pytest.raises(ValueError, match=r"expected \(5,\)"):
        markov.transition_matrix(bad_shape, STATES)
    with pytest.raises(ValueError, match="not in `states`"):
        markov.empirical_transition_counts(jax.random.PRNGKey(0), kernel, STATES[:3], 50)

"""Finite Markov chains: exact stationary distributions, TV bounds, detailed balance, and a
kernel's declared transition matrix checked against its own steps by a chi-square test.

Float tolerances come from float32 rounding: a least-squares solve errs by about
(number of states) · κ · eps with κ the condition number of the stacked system (computed here in
float64), a product of k stochastic-matrix steps by k · S · eps in ℓ1. The chi-square test has
false-fail rate ALPHA = 1e-4, fixed before running, and its number of draws per state comes from
a noncentral-χ² power calculation against a named wrong kernel (``tests/power.py``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import power
import pytest

from nflows_jax.sampling import markov
from nflows_jax.sampling.base import Kernel

ALPHA = 1e-4  # false-fail rate of the chi-square test, fixed before any run
BETA = 0.01  # 1 - power against the named wrong kernel
EPS32 = float(np.finfo(np.float32).eps)

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


def _solve_atol(matrix) -> float:
    """Float32 error bound of ``stationary_distribution``: see ``power.stationary_solve_atol``."""
    return power.stationary_solve_atol(matrix)


def _steps_atol(num_steps: int, size: int) -> float:
    """ℓ1 float32 error of p0 T^k: each vector-matrix product of a distribution with a stochastic
    matrix errs by ≤ S eps in ℓ1, and stochastic matrices do not expand ℓ1 errors."""
    return max(num_steps, 1) * size * EPS32


@pytest.mark.parametrize(
    ("matrix", "pi"),
    [(OZ, OZ_PI), (CIRCULANT, jnp.full(3, 1 / 3)), (BIRTH_DEATH, BIRTH_DEATH_PI)],
)
def test_stationary_distribution_matches_known_answer(matrix, pi):
    markov.check_transition_matrix(matrix)
    found = jax.jit(markov.stationary_distribution)(matrix)
    atol = _solve_atol(matrix)
    np.testing.assert_allclose(found, pi, rtol=0, atol=atol)
    # π T - π: the error of π carried through T and I (ℓ1 ≤ 2 atol S), plus one product's rounding.
    residual_atol = 2 * atol * matrix.shape[0] + _steps_atol(1, matrix.shape[0])
    np.testing.assert_allclose(found @ matrix, found, rtol=0, atol=residual_atol)


def test_stationary_distribution_of_periodic_and_reducible_chains():
    # Periodic (deterministic 3-cycle): unique π, uniform, though p_n never converges.
    cycle = jnp.roll(jnp.eye(3), 1, axis=1)
    np.testing.assert_allclose(
        markov.stationary_distribution(cycle), jnp.full(3, 1 / 3), rtol=0, atol=_solve_atol(cycle)
    )
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
    atol = _solve_atol(matrix)  # κ over the nonzero singular values: the minimum-norm solution
    np.testing.assert_allclose(found, expected, rtol=0, atol=atol)
    residual_atol = 2 * atol * 5 + _steps_atol(1, 5)
    np.testing.assert_allclose(found @ matrix, found, rtol=0, atol=residual_atol)


def test_evolve_matches_matrix_power_and_trajectory():
    p0 = jnp.array([1.0, 0.0, 0.0])
    # The entries of OZ (quarters and halves) are exact in float32: the float64 reference differs
    # only by the products' rounding.
    for steps in (0, 1, 7):
        expected = np.asarray(p0, np.float64) @ np.linalg.matrix_power(
            np.asarray(OZ, np.float64), steps
        )
        atol = _steps_atol(steps, 3)
        np.testing.assert_allclose(markov.evolve(p0, OZ, steps), expected, rtol=0, atol=atol)
    trajectory = markov.distribution_trajectory(jnp.eye(3), OZ, 5)  # three starts at once
    assert trajectory.shape == (6, 3, 3)
    # Both are within _steps_atol(5, 3) of the exact answer, so within twice that of each other.
    np.testing.assert_allclose(
        trajectory[5], markov.evolve(jnp.eye(3), OZ, 5), rtol=0, atol=2 * _steps_atol(5, 3)
    )
    # evolve also takes a traced step count.
    traced = jax.jit(markov.evolve)(p0, OZ, jnp.int32(7))
    np.testing.assert_allclose(traced, markov.evolve(p0, OZ, 7), rtol=0, atol=2 * _steps_atol(7, 3))


def test_tv_distance_obeys_the_doeblin_bound_at_every_step():
    pi = markov.stationary_distribution(CIRCULANT)
    delta = markov.ergodicity_constant(CIRCULANT, pi)
    solve_atol = _solve_atol(CIRCULANT)
    # min entry / π: π errs by ≤ solve_atol (relative: / (1/3)), the entry and division by eps.
    np.testing.assert_allclose(delta, 0.2 / (1 / 3), rtol=3 * solve_atol + 2 * EPS32)
    trajectory = markov.distribution_trajectory(jnp.eye(3), CIRCULANT, 30)  # every start state
    tv = markov.total_variation(trajectory, pi)  # (31, 3)
    bound = (1.0 - delta) ** jnp.arange(31.0)
    # float32 slack: ½ (ℓ1 error of p_n + ℓ1 error of π) plus the sum's rounding; the bound is
    # computed from a δ off by δ·rtol, which moves (1 - δ)^n by ≤ n (1 - δ)^(n-1) δ rtol ≤ rtol
    # (n · 0.4^(n-1) ≤ 1).
    slack = 0.5 * (_steps_atol(30, 3) + 3 * solve_atol) + 3 * EPS32
    slack += 3 * solve_atol + 2 * EPS32
    assert bool(jnp.all(tv <= bound[:, None] + slack))
    # And it really converges: (1 - δ)^30 = 0.4^30 ≈ 1e-12, so TV is rounding only.
    assert float(tv[-1].max()) < 0.5 * (_steps_atol(30, 3) + 3 * solve_atol) + 3 * EPS32


def test_doeblin_bound_through_a_k_step_matrix():
    # Oz has a zero entry so δ = 0 for one step; the two-step matrix is positive.
    assert float(markov.ergodicity_constant(OZ, OZ_PI)) == 0.0
    two_step = jnp.linalg.matrix_power(OZ, 2)
    delta = float(markov.ergodicity_constant(two_step, OZ_PI))
    assert 0.0 < delta <= 1.0
    trajectory = markov.distribution_trajectory(jnp.eye(3), OZ, 20)
    tv = markov.total_variation(trajectory, OZ_PI)
    bound = (1.0 - delta) ** (np.arange(21) // 2)
    # ½ ℓ1 error of p_n, plus OZ_PI's float32 rounding and the sum's (OZ_PI is the exact π).
    slack = 0.5 * _steps_atol(20, 3) + 3 * EPS32
    assert np.all(np.asarray(tv) <= bound[:, None] + slack)


def test_detailed_balance():
    assert bool(markov.satisfies_detailed_balance(BIRTH_DEATH, BIRTH_DEATH_PI))
    # π_i T_ij = π_j T_ji in float64; rounding π, T (to float32) and the product errs by ≤ 1.5 eps
    # relative per flow, and flows are ≤ 1.
    assert float(markov.detailed_balance_violation(BIRTH_DEATH, BIRTH_DEATH_PI)) < 4 * EPS32
    # Cyclic chains with a uniform π are stationary but not reversible.
    uniform = jnp.full(3, 1 / 3)
    assert not bool(markov.satisfies_detailed_balance(CIRCULANT, uniform))
    # Flows 0.3/3 and 0.2/3 round by ≤ 2 eps each; their difference then errs relatively by
    # ≤ 2 eps (0.3 + 0.2) / (0.3 - 0.2) = 10 eps.
    np.testing.assert_allclose(
        markov.detailed_balance_violation(CIRCULANT, uniform), (0.3 - 0.2) / 3, rtol=12 * EPS32
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


def _line_matrix(target, right_prob: float) -> np.ndarray:
    """The exact (float64) transition matrix of ``_metropolis_on_a_line`` with ``right_prob``."""
    target = np.asarray(target, np.float64)
    size = target.shape[0]
    matrix = np.zeros((size, size))
    for x in range(size):
        for y, propose in ((x + 1, right_prob), (x - 1, 1.0 - right_prob)):
            if 0 <= y < size:
                matrix[x, y] = propose * min(1.0, target[y] / target[x])
        matrix[x, x] = 1.0 - matrix[x].sum()
    return matrix


# The named wrong kernel: a proposal that goes right 52 % of the time while `transition` claims
# 50 %. Pearson's χ² pooled over the 5 rows (8 dof) catches it with power 0.99 at ALPHA from
# NUM_DRAWS draws per state (noncentral χ², λ = n Σ_ij (P'_ij - P_ij)² / P_ij).
WRONG_RIGHT_PROB = 0.52
_DECLARED = _line_matrix(TARGET, 0.5)
_POSSIBLE = _DECLARED > 0
NUM_DRAWS = power.chi_square_sample_size(
    _DECLARED[_POSSIBLE],
    _line_matrix(TARGET, WRONG_RIGHT_PROB)[_POSSIBLE],
    ALPHA,
    BETA,
    dof=int(np.sum(_POSSIBLE.sum(axis=1) - 1)),
)


def test_kernel_transition_matrix_is_exact_and_leaves_target_invariant():
    kernel = _metropolis_on_a_line(jnp.log(TARGET))
    matrix = markov.transition_matrix(kernel, STATES)
    assert matrix.shape == (5, 5)
    markov.check_transition_matrix(matrix)
    # Every entry is a product of 0.5 and exp of a difference of float32 logs: a few eps.
    np.testing.assert_allclose(matrix, _DECLARED, rtol=0, atol=8 * EPS32)
    pi = TARGET / TARGET.sum()
    np.testing.assert_allclose(
        markov.stationary_distribution(matrix), pi, rtol=0, atol=_solve_atol(_DECLARED)
    )
    assert bool(markov.satisfies_detailed_balance(matrix, pi))
    # Spot-check one row by hand: from 2 (weight 4) to 1 and 3 (weight 2): 0.5 · 2/4 each.
    np.testing.assert_allclose(matrix[2], [0.0, 0.25, 0.5, 0.25, 0.0], rtol=0, atol=8 * EPS32)


def test_kernel_steps_agree_with_declared_transition():
    """χ² at ALPHA; NUM_DRAWS per state gives power 0.99 against WRONG_RIGHT_PROB (next test)."""
    # The smallest nonzero expected count is NUM_DRAWS · 0.0625, far above the χ² rule's ~5.
    kernel = _metropolis_on_a_line(jnp.log(TARGET))
    matrix = markov.transition_matrix(kernel, STATES)
    counts = markov.empirical_transition_counts(jax.random.PRNGKey(0), kernel, STATES, NUM_DRAWS)
    assert counts.shape == (5, 5) and int(counts.sum()) == 5 * NUM_DRAWS
    statistic, dof, p_value = markov.transition_goodness_of_fit(counts, matrix)
    assert int(dof) == 3 * 2 + 2 * 1  # rows 1-3 have 3 possible moves, the ends 2
    assert float(p_value) > ALPHA, (float(statistic), int(dof))
    frequencies = markov.empirical_transition_matrix(
        jax.random.PRNGKey(0), kernel, STATES, NUM_DRAWS
    )
    # The same counts divided by the same number: one float32 rounding.
    np.testing.assert_allclose(frequencies, counts / NUM_DRAWS, rtol=EPS32)


def test_goodness_of_fit_catches_a_wrong_kernel():
    """The named wrong kernel, at the same seed and NUM_DRAWS: rejected at ALPHA (power ≥ 0.99
    by construction, so this fixed-seed check fails with probability ≤ 0.01)."""
    kernel = _metropolis_on_a_line(jnp.log(TARGET), right_prob=WRONG_RIGHT_PROB)
    matrix = markov.transition_matrix(kernel, STATES)  # still claims 50 %
    counts = markov.empirical_transition_counts(jax.random.PRNGKey(0), kernel, STATES, NUM_DRAWS)
    _, _, p_value = markov.transition_goodness_of_fit(counts, matrix)
    assert float(p_value) < ALPHA
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

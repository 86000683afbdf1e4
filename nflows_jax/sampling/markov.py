"""Finite Markov chains: transition matrices, evolution, stationarity, detailed balance, mixing.

Conventions: ``T[i, j] = P(z_{t+1} = j | z_t = i)`` (rows sum to 1) and distributions are row
vectors, so one step is ``p @ T``. These are also the tools that check our MCMC kernels on small
discrete spaces::

    T = transition_matrix(kernel, states)                 # from the kernel's declared transition
    assert jnp.allclose(stationary_distribution(T), target_probs, atol=1e-5)
    assert satisfies_detailed_balance(T, target_probs)
    counts = empirical_transition_counts(key, kernel, states, 2000)   # from kernel.step itself
    chi2, dof, p_value = transition_goodness_of_fit(counts, T)

Everything is jittable except the functions that say they run on the host (they validate values
or raise on what the kernel did).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nflows_jax.sampling.base import Kernel

Array = jax.Array
PRNGKey = jax.Array


def check_transition_matrix(transition: Array, atol: float = 1e-5) -> Array:
    """Validate a transition matrix on the host; return it as a jax array.

    Checks: square (S, S) with S >= 1, finite, entries >= -atol, rows summing to 1 within
    ``atol``. Values are inspected, so call it outside ``jit``.

    Raises:
      ValueError: naming the first failed check (and the worst row/entry).
    """
    try:
        matrix = np.asarray(transition, dtype=np.float64)
    except jax.errors.TracerArrayConversionError as err:
        raise ValueError("check_transition_matrix inspects values: call it outside jit") from err
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"a transition matrix must have shape (S, S), S >= 1; got {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError("the transition matrix has non-finite entries")
    if np.any(matrix < -atol):
        i, j = np.unravel_index(np.argmin(matrix), matrix.shape)
        raise ValueError(
            f"transition probabilities must be non-negative; T[{i}, {j}] = {matrix[i, j]}"
        )
    row_error = np.abs(matrix.sum(axis=1) - 1.0)
    if np.any(row_error > atol):
        i = int(np.argmax(row_error))
        raise ValueError(
            f"each row of a transition matrix must sum to 1; row {i} sums to {matrix[i].sum()}"
        )
    return jnp.asarray(transition)


def _check_square(transition: Array) -> Array:
    transition = jnp.asarray(transition)
    if transition.ndim != 2 or transition.shape[0] != transition.shape[1]:
        raise ValueError(f"a transition matrix must have shape (S, S); got {transition.shape}")
    return transition


def _check_distribution(name: str, p: Array, num_states: int) -> Array:
    p = jnp.asarray(p)
    if p.ndim < 1 or p.shape[-1] != num_states:
        raise ValueError(f"{name} must have shape (..., {num_states}); got {p.shape}")
    return p


def evolve(p0: Array, transition: Array, num_steps: int | Array) -> Array:
    """The distribution after ``num_steps`` steps: ``p0 @ T^n``.

    Uses ``lax.fori_loop`` of vector-matrix products (O(n S²), no matrix powers, so no error
    amplification from squaring); ``num_steps`` may be traced.

    Args:
      p0: (..., S) initial distribution(s).
      transition: (S, S).
      num_steps: n >= 0.

    Returns:
      (..., S).
    """
    transition = _check_square(transition)
    p0 = _check_distribution("p0", p0, transition.shape[0])
    return jax.lax.fori_loop(0, num_steps, lambda _, p: p @ transition, p0)


def distribution_trajectory(p0: Array, transition: Array, num_steps: int) -> Array:
    """All of p0, p0 T, ..., p0 T^n: shape (n + 1, ..., S). ``num_steps`` is a static int."""
    transition = _check_square(transition)
    p0 = _check_distribution("p0", p0, transition.shape[0])

    def step(p, _):
        nxt = p @ transition
        return nxt, nxt

    _, rest = jax.lax.scan(step, p0, None, length=num_steps)
    return jnp.concatenate([p0[None], rest])


def stationary_distribution(transition: Array) -> Array:
    """A stationary distribution π = π T, π >= 0, Σπ = 1, by least squares.

    Solves the stacked system ``[Tᵀ - I; 1ᵀ] π = [0; 1]`` with ``lstsq``. For an irreducible chain
    (periodic or not) the solution is unique and this is it. Replacing one equation of
    ``(Tᵀ - I) π = 0`` instead would make the solve singular for reducible chains; least squares
    does not: the solutions then form the affine hull of the stationary distributions π_k of the
    closed classes, which have disjoint supports, and the minimum-norm member is the mixture
    Σ a_k π_k with a_k ∝ 1/‖π_k‖² — still a valid (non-negative) stationary distribution, but
    only one of many; which one the chain reaches depends on where it starts (use ``evolve``).
    Rounding-level negative entries are clipped to 0 and the result renormalised.

    Args:
      transition: (S, S).

    Returns:
      (S,). Accuracy is that of the dtype (about 1e-6 in float32 for a well-conditioned chain;
      nearly decomposable chains are ill-conditioned: enable x64 for those).
    """
    transition = _check_square(transition)
    num_states = transition.shape[0]
    system = jnp.concatenate(
        [
            transition.T - jnp.eye(num_states, dtype=transition.dtype),
            jnp.ones((1, num_states), transition.dtype),
        ]
    )
    rhs = jnp.zeros(num_states + 1, transition.dtype).at[-1].set(1.0)
    pi, *_ = jnp.linalg.lstsq(system, rhs)
    pi = jnp.maximum(pi, 0.0)
    return pi / jnp.sum(pi)


def probability_flows(transition: Array, pi: Array) -> Array:
    """F[i, j] = π_i T_ij, the stationary probability flow from i to j: (S, S)."""
    transition = _check_square(transition)
    pi = _check_distribution("pi", pi, transition.shape[0])
    if pi.ndim != 1:
        raise ValueError(f"pi must have shape (S,); got {pi.shape}")
    return pi[:, None] * transition


def detailed_balance_violation(transition: Array, pi: Array) -> Array:
    """``max_ij |π_i T_ij - π_j T_ji|``; zero iff the chain is reversible with respect to π.

    ``transition`` (S, S) (rows sum to 1) and ``pi`` (S,) -> a scalar.
    """
    flows = probability_flows(transition, pi)
    return jnp.max(jnp.abs(flows - flows.T))


def satisfies_detailed_balance(transition: Array, pi: Array, atol: float = 1e-6) -> Array:
    """Whether ``detailed_balance_violation(T, pi) <= atol`` (a boolean array scalar)."""
    return detailed_balance_violation(transition, pi) <= atol


def ergodicity_constant(transition: Array, pi: Array) -> Array:
    """The Doeblin (minorisation) constant δ = min_z min_{z'} T(z → z') / π(z').

    It is the largest δ with T(z, ·) >= δ π(·) for every z; then every step couples with
    probability δ and ``‖p_n - π‖_TV <= (1 - δ)^n ‖p_0 - π‖_TV <= (1 - δ)^n``. States with
    π(z') = 0 impose no condition and are skipped. δ lies in [0, 1]; it is 0 as soon as one
    entry T(z, z') with π(z') > 0 is 0 (e.g. a local proposal) — then apply this to a k-step
    matrix ``jnp.linalg.matrix_power(T, k)`` with all entries positive, which gives
    ``‖p_n - π‖_TV <= (1 - δ_k)^⌊n/k⌋``.

    Returns:
      scalar δ.
    """
    transition = _check_square(transition)
    pi = _check_distribution("pi", pi, transition.shape[0])
    support = pi > 0
    # Divide by 1 off the support (instead of 0) and then exclude those columns with +inf.
    ratios = transition / jnp.where(support, pi, 1.0)
    return jnp.min(jnp.where(support[None, :], ratios, jnp.inf))


def total_variation(p: Array, q: Array) -> Array:
    """``‖p - q‖_TV = ½ Σ |p - q|`` over the last axis: (..., S), (..., S) -> (...)."""
    return 0.5 * jnp.sum(jnp.abs(jnp.asarray(p) - jnp.asarray(q)), axis=-1)


def _num_states(states: Any) -> int:
    leaves = jax.tree_util.tree_leaves(states)
    if not leaves or any(jnp.ndim(leaf) < 1 for leaf in leaves):
        raise ValueError("states must be an array (S, *event) or a pytree of such arrays")
    num = leaves[0].shape[0]
    if any(leaf.shape[0] != num for leaf in leaves):
        raise ValueError("every leaf of states must have the same leading size S")
    return num


def transition_matrix(kernel: Kernel, states: Any) -> Array:
    """The exact (S, S) transition matrix of ``kernel`` on ``states`` from its ``transition``.

    Row i is ``kernel.transition(states[i], states)``. ``states`` must list every state the
    kernel can reach from a listed state, or the rows will not sum to 1 (check with
    ``check_transition_matrix``).

    Args:
      kernel: a ``Kernel`` with a ``transition`` field.
      states: ``(S, *event)`` array (or pytree of arrays with leading axis S).

    Raises:
      ValueError: if the kernel has no ``transition`` or it returns the wrong shape.
    """
    if not isinstance(kernel, Kernel) and not hasattr(kernel, "transition"):
        raise ValueError(f"expected a Kernel; got {type(kernel).__name__}")
    if getattr(kernel, "transition", None) is None:
        raise ValueError(
            "this kernel has no `transition` function, so its exact transition matrix is unknown. "
            "Kernels on small discrete spaces declare Kernel(init, step, transition=...); for any "
            "other kernel use empirical_transition_counts to estimate it from kernel.step."
        )
    num_states = _num_states(states)
    first = jax.tree_util.tree_map(lambda leaf: leaf[0], states)
    row_shape = jax.eval_shape(kernel.transition, first, states).shape
    if row_shape != (num_states,):
        raise ValueError(
            f"kernel.transition(position, candidates) returned shape {row_shape}; expected "
            f"({num_states},), one probability per candidate state"
        )
    return jax.vmap(kernel.transition, in_axes=(0, None))(states, states)


def _match_states(positions: Any, states: Any, atol: float) -> Array:
    """Index of the listed state equal (within atol) to each position, or -1: (N,) int32."""

    def distance(leaf_pos, leaf_states):
        diff = jnp.abs(leaf_pos[:, None] - leaf_states[None, :]).astype(jnp.float32)
        return jnp.max(diff.reshape(diff.shape[0], diff.shape[1], -1), axis=-1, initial=0.0)

    dists = jax.tree_util.tree_map(distance, positions, states)
    dist = jnp.max(jnp.stack(jax.tree_util.tree_leaves(dists)), axis=0)  # (N, S)
    nearest = jnp.argmin(dist, axis=1)
    matched = jnp.take_along_axis(dist, nearest[:, None], axis=1)[:, 0] <= atol
    return jnp.where(matched, nearest, -1).astype(jnp.int32)


def empirical_transition_counts(
    key: PRNGKey, kernel: Kernel, states: Any, num_draws: int, atol: float = 1e-6
) -> Array:
    """Run ``kernel.step`` ``num_draws`` times from each state; count where it lands: (S, S) int32.

    ``counts[i, j]`` is how many of the ``num_draws`` one-step moves from ``states[i]`` (each from
    a fresh ``kernel.init(states[i])`` with its own key) ended at ``states[j]``. A landing is
    matched to the listed state within ``atol`` (max abs difference over the event). The kernel's
    state must have a ``position`` field. This tests the kernel's actual ``step`` against its
    declared ``transition`` (see ``transition_goodness_of_fit``).

    Runs the steps jitted and then checks on the host, so it cannot itself be jitted.

    Raises:
      ValueError: if some step landed on a position not in ``states``.
    """
    if not isinstance(num_draws, int) or num_draws < 1:
        raise ValueError(f"num_draws must be a Python int >= 1; got {num_draws!r}")
    num_states = _num_states(states)

    def one_step(step_key, position):
        state = kernel.init(position)
        new_state, _ = kernel.step(step_key, state)
        if not hasattr(new_state, "position"):
            raise ValueError("empirical_transition_counts needs kernel states with a `position`")
        return new_state.position

    @jax.jit
    def run(key, states):
        keys = jax.random.split(key, (num_states, num_draws))
        per_state = jax.vmap(jax.vmap(one_step, in_axes=(0, None)), in_axes=(0, 0))
        landed = per_state(keys, states)  # leaves (S, num_draws, *event)
        flat = jax.tree_util.tree_map(lambda leaf: leaf.reshape(-1, *leaf.shape[2:]), landed)
        return _match_states(flat, states, atol).reshape(num_states, num_draws)

    landed_index = run(key, states)
    unmatched = int(jnp.sum(landed_index < 0))
    if unmatched:
        raise ValueError(
            f"{unmatched} of {num_states * num_draws} steps landed on a position that is not in "
            "`states`; list every reachable state"
        )
    rows = jnp.repeat(jnp.arange(num_states), num_draws)
    counts = jnp.zeros((num_states, num_states), jnp.int32)
    return counts.at[rows, landed_index.reshape(-1)].add(1)


def empirical_transition_matrix(
    key: PRNGKey, kernel: Kernel, states: Any, num_draws: int, atol: float = 1e-6
) -> Array:
    """``empirical_transition_counts / num_draws``: the observed transition frequencies (S, S)."""
    counts = empirical_transition_counts(key, kernel, states, num_draws, atol)
    return counts / num_draws


def transition_goodness_of_fit(counts: Array, transition: Array) -> tuple[Array, Array, Array]:
    """Pearson chi-square test of observed one-step counts against a transition matrix.

    Pools the rows: statistic Σ_ij (c_ij - N_i T_ij)² / (N_i T_ij) over entries with T_ij > 0,
    with Σ_i (#{j: T_ij > 0} - 1) degrees of freedom (N_i = Σ_j c_ij). Any count where
    T_ij = 0 is a certain mismatch: the statistic is then +inf and the p-value 0. The
    chi-square approximation wants expected counts N_i T_ij of about 5 or more.

    Args:
      counts: (S, S) observed counts (e.g. from ``empirical_transition_counts``).
      transition: (S, S) the declared transition matrix.

    Returns:
      (statistic, degrees_of_freedom, p_value) as array scalars.
    """
    transition = _check_square(transition)
    counts = jnp.asarray(counts, transition.dtype)
    if counts.shape != transition.shape:
        raise ValueError(f"counts {counts.shape} and transition {transition.shape} differ")
    expected = counts.sum(axis=1, keepdims=True) * transition
    possible = transition > 0
    # Divide by 1 where nothing is expected; those cells are handled by `impossible` below.
    terms = (counts - expected) ** 2 / jnp.where(possible, expected, 1.0)
    statistic = jnp.sum(jnp.where(possible, terms, 0.0))
    impossible = jnp.any((~possible) & (counts > 0))
    statistic = jnp.where(impossible, jnp.inf, statistic)
    dof = jnp.sum(jnp.maximum(jnp.sum(possible, axis=1) - 1, 0))
    # Survival function of chi²(dof): Q(dof/2, x/2). dof = 0 (deterministic rows) -> p = 1.
    safe_dof = jnp.maximum(dof, 1).astype(transition.dtype)
    p_value = jax.scipy.special.gammaincc(safe_dof / 2.0, statistic / 2.0)
    p_value = jnp.where(dof > 0, p_value, jnp.where(impossible, 0.0, 1.0))
    return statistic, dof, p_value


__all__ = [
    "check_transition_matrix",
    "detailed_balance_violation",
    "distribution_trajectory",
    "empirical_transition_counts",
    "empirical_transition_matrix",
    "ergodicity_constant",
    "evolve",
    "probability_flows",
    "satisfies_detailed_balance",
    "stationary_distribution",
    "total_variation",
    "transition_goodness_of_fit",
    "transition_matrix",
]

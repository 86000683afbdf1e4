"""Hamiltonian Monte Carlo: a fixed number of leapfrog steps (``hmc``) or a jittered trajectory
length (``jittered_hmc``, the sampler ChEES adapts), with a diagonal or dense mass matrix.

The potential energy is ``-logdensity(x)``, the kinetic energy ``½ pᵀ M⁻¹ p`` with the mass
matrix ``M`` given by its inverse ``inverse_mass_matrix``: a vector (D,) for a diagonal ``M⁻¹`` or
a positive-definite (D, D) matrix for a dense one; momenta are drawn as ``p ~ N(0, M)``. One MCMC
step::

    z, u = normal_and_uniform(key, (D,))          # one random call: momentum and acceptance
    p = M^{1/2} z
    x', p', ℓ', ∇ℓ' = leapfrog(value_and_grad, x, p, ∇ℓ(x), ε, L, M⁻¹)
    accept with probability min(1, exp(H(x, p) - H(x', p')))

Cost per step is ``L`` evaluations of ``jax.value_and_grad(logdensity_fn)`` and nothing else of
note: the state carries the log-density and its gradient at the current position, so the gradient
that ends one trajectory starts the next (rejected proposals keep the old cached pair), and the
half-step momentum kicks of consecutive leapfrog steps are fused into one full kick.

A proposal whose energy is NaN or ±inf is always rejected and flagged ``is_divergent`` — note that
``min(1, exp(ΔH))`` alone would *accept* a proposal whose log-density overflowed to ``+inf``.

Step sizes, trajectory lengths and mass matrices may be traced values (adaptation builds kernels
from its current parameters inside ``jit``); the checks then only look at shapes. A mass matrix
shared by all chains is not batched under ``vmap``, so its Cholesky factor (dense case) is computed
once per step for all chains, not once per chain.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nflows_jax.formatting import show
from nflows_jax.sampling.base import (
    Array,
    Kernel,
    LogDensityFn,
    Position,
    PRNGKey,
    normal_and_uniform,
    uniform,
)
from nflows_jax.sampling.checks import (
    check_flat_size,
    check_positive_finite,
    check_step_size,
    is_tracer,
    ravel_position,
    scalar_logdensity,
)

ValueAndGradFn = Callable[[Array], tuple[Array, Array]]

# hmc(unroll=None) unrolls trajectories up to this many leapfrog steps.
MAX_UNROLLED_STEPS = 16

JITTERS = ("halton", "uniform")


class HMCState(NamedTuple):
    """State of one HMC chain.

    Attributes:
      position: current sample, (D,) or the user's pytree.
      logdensity: () log-density at ``position``.
      logdensity_grad: its gradient, with the position's structure, reused as the first kick of
        the next trajectory.
    """

    position: Position
    logdensity: Array
    logdensity_grad: Position


class JitteredHMCState(NamedTuple):
    """State of one ``jittered_hmc`` chain: an HMC state plus the step counter.

    Attributes:
      position: as in :class:`HMCState`.
      logdensity: as in :class:`HMCState`.
      logdensity_grad: as in :class:`HMCState`.
      step: () int32, how many steps the chain has taken; with ``jitter="halton"`` the trajectory
        length of the next step is a function of it (the same for all chains started together).
    """

    position: Position
    logdensity: Array
    logdensity_grad: Position
    step: Array


class HMCInfo(NamedTuple):
    """What happened in one HMC step (all scalars).

    Attributes:
      acceptance_prob: ``min(1, exp(-energy_error))``; 0 for a divergent proposal.
      accepted: whether the proposal became the new state.
      is_divergent: the proposal's energy is not finite or exceeds the current energy by more than
        ``divergence_threshold``.
      energy_error: ``H(proposal) - H(current)``; NaN/inf are reported as they came out.
      num_leapfrog_steps: () int32, leapfrog steps of this trajectory = gradient evaluations the
        step cost (constant for ``hmc``, jittered for ``jittered_hmc``).
    """

    acceptance_prob: Array
    accepted: Array
    is_divergent: Array
    energy_error: Array
    num_leapfrog_steps: Array


# ------------------------------------------------------------------------------------------------
# Mass matrices


def check_inverse_mass_matrix(inverse_mass_matrix: Array | None, who: str) -> Array | None:
    """Validate an inverse mass matrix: None, a positive (D,) diagonal or a (D, D) SPD matrix.

    Concrete values are checked for positivity (diagonal) or symmetry and positive definiteness
    (dense: its Cholesky factor must be finite); traced values (adaptation) only for shape.
    """
    if inverse_mass_matrix is None:
        return None
    inverse_mass = jnp.asarray(inverse_mass_matrix)
    if not jnp.issubdtype(inverse_mass.dtype, jnp.floating):
        raise ValueError(
            f"{who}: inverse_mass_matrix must be floating point, got {inverse_mass.dtype}"
        )
    if inverse_mass.ndim == 1:
        # numpy, not jnp: a concrete matrix must be checkable inside a jit trace too.
        if not is_tracer(inverse_mass) and not np.all(np.asarray(inverse_mass) > 0):
            raise ValueError(
                f"{who}: inverse_mass_matrix must be strictly positive, got minimum "
                f"{float(np.min(np.asarray(inverse_mass)))}"
            )
        return inverse_mass
    if inverse_mass.ndim != 2 or inverse_mass.shape[0] != inverse_mass.shape[1]:
        raise ValueError(
            f"{who}: inverse_mass_matrix must be a diagonal (D,) or a square dense matrix (D, D); "
            f"got shape {inverse_mass.shape}"
        )
    if not is_tracer(inverse_mass):
        matrix = np.asarray(inverse_mass, np.float64)
        scale = np.max(np.abs(matrix)) if matrix.size else 1.0
        # Symmetric up to the rounding of the matrix's own dtype (a float32 covariance estimate).
        tolerance = 8 * float(np.finfo(inverse_mass.dtype).eps) * scale
        if not np.all(np.isfinite(matrix)) or np.max(np.abs(matrix - matrix.T)) > tolerance:
            raise ValueError(f"{who}: a dense inverse_mass_matrix must be finite and symmetric")
        if np.min(np.linalg.eigvalsh(matrix)) <= 0:
            raise ValueError(f"{who}: a dense inverse_mass_matrix must be positive definite")
    return inverse_mass


def _check_metric_size(flat: Array, inverse_mass: Array | None, who: str) -> None:
    if inverse_mass is None:
        return
    if inverse_mass.ndim == 1:
        check_flat_size(flat, inverse_mass, who)
    elif inverse_mass.shape != flat.shape * 2:
        raise ValueError(
            f"{who}: inverse_mass_matrix has shape {inverse_mass.shape} but the position has "
            f"{flat.size} coordinates (shape {flat.shape} when raveled)"
        )


def _apply(matrix: Array | None, vector: Array) -> Array:
    """``matrix @ vector`` for a dense matrix, elementwise for a diagonal (D,); None: identity."""
    if matrix is None:
        return vector
    return matrix @ vector if matrix.ndim == 2 else matrix * vector


def _momentum_scale(inverse_mass: Array | None) -> Array | None:
    """S with ``S z ~ N(0, M)`` for ``z ~ N(0, I)``, ``M = (M⁻¹)⁻¹``.

    Diagonal: ``M^{1/2} = rsqrt(M⁻¹)``. Dense: with ``M⁻¹ = U Uᵀ`` (Cholesky, U lower),
    ``S = U⁻ᵀ`` gives ``Cov(S z) = U⁻ᵀ U⁻¹ = (U Uᵀ)⁻¹ = M``, and ``½ (Sz)ᵀ M⁻¹ (Sz) = ½ zᵀz``,
    so the kinetic energy at the start of a trajectory needs no mass matrix. M itself is never
    formed (inverting M⁻¹ would square its condition number's effect on rounding).
    """
    if inverse_mass is None:
        return None
    if inverse_mass.ndim == 1:
        return jax.lax.rsqrt(inverse_mass)
    lower = jnp.linalg.cholesky(inverse_mass)
    identity = jnp.eye(inverse_mass.shape[0], dtype=inverse_mass.dtype)
    return jax.scipy.linalg.solve_triangular(lower, identity, lower=True).T


def kinetic_energy(momentum: Array, inverse_mass: Array | None = None) -> Array:
    """``½ pᵀ M⁻¹ p`` for a diagonal (D,) or dense (D, D) ``M⁻¹`` (None: identity) -> scalar."""
    if inverse_mass is None:
        return 0.5 * jnp.sum(momentum**2)
    if inverse_mass.ndim == 2:
        return 0.5 * momentum @ (inverse_mass @ momentum)
    return 0.5 * jnp.sum(inverse_mass * momentum**2)


# ------------------------------------------------------------------------------------------------
# The integrator


def _is_int_array(value) -> bool:
    return (
        isinstance(value, jax.Array)
        and value.shape == ()
        and jnp.issubdtype(value.dtype, jnp.integer)
    )


def leapfrog(
    value_and_grad_fn: ValueAndGradFn,
    position: Array,
    momentum: Array,
    logdensity_grad: Array,
    step_size: float | Array,
    num_steps: int | Array,
    inverse_mass: Array | None = None,
    *,
    unroll: int | bool = 1,
) -> tuple[Array, Array, Array, Array]:
    """Integrate Hamilton's equations for ``num_steps`` leapfrog (velocity Verlet) steps.

    Each step is ``p += ε/2 ∇ℓ(x); x += ε M⁻¹ p; p += ε/2 ∇ℓ(x)``. Consecutive half kicks are
    fused, so ``num_steps`` steps cost exactly ``num_steps`` calls of ``value_and_grad_fn`` given
    the gradient at the starting point. The map is volume preserving and reversible: integrating
    from ``(x', -p')`` returns ``(x, -p)``.

    Args:
      value_and_grad_fn: ``x -> (logdensity(x), ∇logdensity(x))``, e.g.
        ``jax.value_and_grad(logdensity_fn)``.
      position: (D,) start position.
      momentum: (D,) start momentum.
      logdensity_grad: (D,) gradient of the log-density at ``position``.
      step_size: ε, a scalar.
      num_steps: L ≥ 1: a Python int (a ``lax.fori_loop`` of fixed length), or an integer scalar
        array, possibly traced and batched (jittered trajectories: the loop becomes a
        ``while_loop``, unrolling is not available, and L < 1 is not checked).
      inverse_mass: (D,) diagonal or (D, D) dense M⁻¹, or None for the identity.
      unroll: passed to ``lax.fori_loop`` for a static ``num_steps``; unrolling a few steps
        removes loop overhead on accelerators at the price of compile time growing with it.

    Returns:
      ``(position, momentum, logdensity, logdensity_grad)`` at the end of the trajectory, each of
      the input's shape (logdensity a scalar).
    """
    if _is_int_array(num_steps):
        unroll = 1  # a dynamic trip count: fori_loop is a while_loop, which cannot unroll
    elif (
        not isinstance(num_steps, (int, np.integer)) or isinstance(num_steps, bool) or num_steps < 1
    ):
        raise ValueError(
            f"num_steps must be a Python int >= 1 or an integer scalar array, got {show(num_steps)}"
        )
    # ε M⁻¹ is the same for every step: compute the drift scale (or matrix) once.
    drift = step_size if inverse_mass is None else step_size * inverse_mass

    def full_step(_, carry):
        x, p, _, _ = carry
        x = x + (drift * p if inverse_mass is None else _apply(drift, p))
        logdensity, grad = value_and_grad_fn(x)
        # A full kick: the closing half kick of this step fused with the opening one of the next.
        p = p + step_size * grad
        return x, p, logdensity, grad

    # Opening half kick; the loop then ends each step with a full kick, one half too many after
    # the last step, which is taken back below.
    momentum = momentum + 0.5 * step_size * logdensity_grad
    carry = (position, momentum, jnp.zeros((), position.dtype), logdensity_grad)
    position, momentum, logdensity, grad = jax.lax.fori_loop(
        0, num_steps, full_step, carry, unroll=unroll
    )
    momentum = momentum - 0.5 * step_size * grad
    return position, momentum, logdensity, grad


class _Move(NamedTuple):
    """One HMC transition on raveled positions (internal): the new state, the info, and the
    proposal before the accept/reject test (ChEES adapts the trajectory length from it)."""

    position: Array
    logdensity: Array
    logdensity_grad: Array
    info: HMCInfo
    proposal_position: Array
    proposal_momentum: Array


def _hmc_move(
    value_and_grad_fn: ValueAndGradFn,
    position: Array,
    logdensity: Array,
    grad: Array,
    z: Array,
    accept_uniform: Array,
    step_size: float | Array,
    num_steps: int | Array,
    inverse_mass: Array | None,
    momentum_scale: Array | None,
    divergence_threshold: float,
    unroll: int | bool,
) -> _Move:
    """Momentum ``S z``, ``num_steps`` leapfrog steps and the Metropolis test with ``u``."""
    momentum = _apply(momentum_scale, z)
    new_position, new_momentum, new_logdensity, new_grad = leapfrog(
        value_and_grad_fn,
        position,
        momentum,
        grad,
        step_size,
        num_steps,
        inverse_mass,
        unroll=unroll,
    )
    # ½ pᵀM⁻¹p = ½ zᵀz for p = S z: the starting kinetic energy needs no mass matrix.
    energy = -logdensity + 0.5 * jnp.sum(z**2)
    new_energy = -new_logdensity + kinetic_energy(new_momentum, inverse_mass)
    energy_error = new_energy - energy
    finite = jnp.isfinite(new_energy)
    is_divergent = ~finite | (energy_error > divergence_threshold)
    # Substitute before exp so that a non-finite energy never reaches the acceptance test.
    log_accept = jnp.where(finite, jnp.minimum(-energy_error, 0.0), -jnp.inf)
    acceptance_prob = jnp.exp(log_accept)
    accepted = accept_uniform < acceptance_prob  # u ∈ [0, 1): never true for probability 0
    info = HMCInfo(
        acceptance_prob,
        accepted,
        is_divergent,
        energy_error,
        jnp.asarray(num_steps, jnp.int32),
    )
    return _Move(
        jnp.where(accepted, new_position, position),
        jnp.where(accepted, new_logdensity, logdensity),
        jnp.where(accepted, new_grad, grad),
        info,
        new_position,
        new_momentum,
    )


def _flat_value_and_grad(logdensity_fn: LogDensityFn, unravel) -> ValueAndGradFn:
    return jax.value_and_grad(lambda flat: logdensity_fn(unravel(flat)))


# ------------------------------------------------------------------------------------------------
# Fixed-length HMC


def hmc(
    logdensity_fn: LogDensityFn,
    step_size: float | Array,
    num_leapfrog_steps: int,
    inverse_mass_matrix: Array | None = None,
    *,
    divergence_threshold: float = 1000.0,
    unroll: int | bool | None = None,
) -> Kernel:
    """Hamiltonian Monte Carlo kernel with ``num_leapfrog_steps`` leapfrog steps of ``step_size``.

    Positions may be (D,) arrays, arrays of any shape or pytrees of floating arrays: the kernel
    ravels them (``checks.ravel_position``, a no-op for (D,) arrays) and keeps ``state.position``
    and ``state.logdensity_grad`` in the user's structure.

    Args:
      logdensity_fn: unnormalised log-density of one position -> scalar, differentiable. A
        non-scalar output raises a ValueError at trace time.
      step_size: leapfrog step ε > 0 (may be traced).
      num_leapfrog_steps: L ≥ 1 (static).
      inverse_mass_matrix: M⁻¹ (set it to the target's covariance): its diagonal (D,), a dense
        symmetric positive-definite (D, D) matrix, or None for the identity; in the raveled
        position's order for pytree positions. May be traced (then only its shape is checked).
      divergence_threshold: an energy error above this flags ``is_divergent`` (such a proposal has
        acceptance probability below ``exp(-threshold)``, zero in practice); non-finite energies
        are flagged and rejected regardless.
      unroll: ``lax.fori_loop`` unroll factor of the leapfrog loop. None (default) unrolls the
        whole trajectory when ``num_leapfrog_steps <= 16`` (a straight-line body that XLA fuses
        across steps, without per-iteration loop overhead: about 10% faster on a 2-core CPU for
        a 100-d Gaussian, more where loop iterations are dear, as on GPUs) and keeps the loop
        rolled for longer trajectories, whose compile time would grow with L.

    Returns:
      ``Kernel(init, step)`` with ``init(position) -> HMCState`` and
      ``step(key, state) -> (HMCState, HMCInfo)``.
    """
    check_step_size(step_size, who="hmc")
    if (
        not isinstance(num_leapfrog_steps, (int, np.integer))
        or isinstance(num_leapfrog_steps, bool)
        or num_leapfrog_steps < 1
    ):
        raise ValueError(f"num_leapfrog_steps must be an int >= 1, got {show(num_leapfrog_steps)}")
    inverse_mass = check_inverse_mass_matrix(inverse_mass_matrix, "hmc")
    # p = S z with z ~ N(0, I); computed once here, not per step.
    momentum_scale = _momentum_scale(inverse_mass)
    logdensity_fn = scalar_logdensity(logdensity_fn, "hmc")
    if unroll is None:
        unroll = num_leapfrog_steps <= MAX_UNROLLED_STEPS

    def init(position: Position) -> HMCState:
        flat, unravel = ravel_position(position, "hmc.init")
        _check_metric_size(flat, inverse_mass, "hmc.init")
        logdensity, grad = _flat_value_and_grad(logdensity_fn, unravel)(flat)
        return HMCState(unravel(flat), logdensity, unravel(grad))

    def step(key: PRNGKey, state: HMCState) -> tuple[HMCState, HMCInfo]:
        position, unravel = ravel_position(state.position, "hmc.step")
        _check_metric_size(position, inverse_mass, "hmc.step")
        grad, _ = ravel_position(state.logdensity_grad, "hmc.step (logdensity_grad)")
        z, accept_uniform = normal_and_uniform(key, position.shape, position.dtype)
        move = _hmc_move(
            _flat_value_and_grad(logdensity_fn, unravel),
            position,
            state.logdensity,
            grad,
            z,
            accept_uniform,
            step_size,
            int(num_leapfrog_steps),
            inverse_mass,
            momentum_scale,
            divergence_threshold,
            unroll,
        )
        new_state = HMCState(unravel(move.position), move.logdensity, unravel(move.logdensity_grad))
        return new_state, move.info

    return Kernel(init, step)


# ------------------------------------------------------------------------------------------------
# Jittered trajectory lengths


def van_der_corput(index: Array) -> Array:
    """The base-2 van der Corput (1-D Halton) sequence at ``index``: float32 in [0, 1).

    Elementwise over an integer ``index`` of any shape.

    The bits of the index mirrored about the binary point (0, ½, ¼, ¾, ⅛, ...): the first 2^k
    values are evenly spread over [0, 1), so any run of consecutive steps sees trajectory lengths
    spread over their whole range, with less variance than i.i.d. uniforms. The top 24 mirrored
    bits are kept so that the float32 value is exact.
    """
    i = jnp.asarray(index).astype(jnp.uint32)
    i = ((i >> 1) & 0x55555555) | ((i & 0x55555555) << 1)
    i = ((i >> 2) & 0x33333333) | ((i & 0x33333333) << 2)
    i = ((i >> 4) & 0x0F0F0F0F) | ((i & 0x0F0F0F0F) << 4)
    i = ((i >> 8) & 0x00FF00FF) | ((i & 0x00FF00FF) << 8)
    i = (i >> 16) | (i << 16)
    return (i >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)


def _normal_and_uniforms(key: PRNGKey, size: int, dtype) -> tuple[Array, Array, Array]:
    """(size,) normals and two U[0, 1) scalars from one ``uniform`` draw (see
    ``base.normal_and_uniform``: the same inverse-CDF normals, one more uniform)."""
    u = uniform(key, size + 2)
    centred = jnp.maximum(2.0 * u[:size] - 1.0, jnp.nextafter(jnp.float32(-1.0), 0.0))
    normal = jnp.sqrt(jnp.float32(2.0)) * jax.scipy.special.erfinv(centred)
    return normal.astype(dtype), u[size].astype(dtype), u[size + 1]


def jittered_num_steps(
    jitter: Array, step_size: Array, trajectory_length: Array, max_leapfrog_steps: int
) -> Array:
    """``L = ceil(jitter · T / ε)`` clipped to [1, max_leapfrog_steps]: () int32.

    ``jitter`` ∈ (0, 1]; a non-finite ratio (a NaN step size in a diverging adaptation) gives 1.
    """
    ratio = jnp.ceil(jitter * trajectory_length / step_size)
    ratio = jnp.where(jnp.isfinite(ratio), ratio, 1.0)
    return jnp.clip(ratio, 1, max_leapfrog_steps).astype(jnp.int32)


def _jittered_parts(
    logdensity_fn: LogDensityFn,
    step_size: float | Array,
    trajectory_length: float | Array,
    inverse_mass_matrix: Array | None,
    jitter: str,
    max_leapfrog_steps: int,
    divergence_threshold: float,
    who: str,
):
    """``(init, move)``: ``move(key, state) -> (JitteredHMCState, _Move)`` keeps the proposal,
    which ``jittered_hmc`` drops and ChEES adaptation reads."""
    check_step_size(step_size, who=who)
    check_step_size(trajectory_length, name="trajectory_length", who=who)
    if jitter not in JITTERS:
        raise ValueError(f"{who}: jitter must be one of {JITTERS}, got {jitter!r}")
    if (
        not isinstance(max_leapfrog_steps, (int, np.integer))
        or isinstance(max_leapfrog_steps, bool)
        or max_leapfrog_steps < 1
    ):
        raise ValueError(
            f"{who}: max_leapfrog_steps must be an int >= 1, got {show(max_leapfrog_steps)}"
        )
    check_positive_finite(divergence_threshold, "divergence_threshold", who)
    inverse_mass = check_inverse_mass_matrix(inverse_mass_matrix, who)
    momentum_scale = _momentum_scale(inverse_mass)
    logdensity_fn = scalar_logdensity(logdensity_fn, who)

    def init(position: Position) -> JitteredHMCState:
        flat, unravel = ravel_position(position, f"{who}.init")
        _check_metric_size(flat, inverse_mass, f"{who}.init")
        logdensity, grad = _flat_value_and_grad(logdensity_fn, unravel)(flat)
        return JitteredHMCState(unravel(flat), logdensity, unravel(grad), jnp.zeros((), jnp.int32))

    def move(key: PRNGKey, state: JitteredHMCState) -> tuple[JitteredHMCState, _Move]:
        position, unravel = ravel_position(state.position, f"{who}.step")
        _check_metric_size(position, inverse_mass, f"{who}.step")
        grad, _ = ravel_position(state.logdensity_grad, f"{who}.step (logdensity_grad)")
        if jitter == "halton":
            z, accept_uniform = normal_and_uniform(key, position.shape, position.dtype)
            fraction = 1.0 - van_der_corput(state.step)  # in (0, 1]: never a zero-length move
        else:
            z, accept_uniform, u = _normal_and_uniforms(key, position.size, position.dtype)
            fraction = 1.0 - u
        num_steps = jittered_num_steps(fraction, step_size, trajectory_length, max_leapfrog_steps)
        result = _hmc_move(
            _flat_value_and_grad(logdensity_fn, unravel),
            position,
            state.logdensity,
            grad,
            z,
            accept_uniform,
            step_size,
            num_steps,
            inverse_mass,
            momentum_scale,
            divergence_threshold,
            1,
        )
        new_state = JitteredHMCState(
            unravel(result.position),
            result.logdensity,
            unravel(result.logdensity_grad),
            state.step + 1,
        )
        return new_state, result

    return init, move


def jittered_hmc(
    logdensity_fn: LogDensityFn,
    step_size: float | Array,
    trajectory_length: float | Array,
    inverse_mass_matrix: Array | None = None,
    *,
    jitter: str = "halton",
    max_leapfrog_steps: int = 1000,
    divergence_threshold: float = 1000.0,
) -> Kernel:
    """HMC whose integration time is jittered every step: ``L = ceil(u T / ε)`` leapfrog steps.

    The sampler ChEES adapts (Hoffman, Radul & Sountsov 2021): jittering the trajectory length
    ``T`` avoids the periodicities of a fixed length (a Gaussian direction whose half period
    divides ``T`` is never explored), and the mixture over lengths of valid HMC kernels is valid.

    ``u`` ∈ (0, 1]:

    * ``jitter="halton"`` (default): ``u = 1 - van_der_corput(state.step)``, shared by every
      chain that started together. Under ``vmap`` a loop with a batched trip count runs until the
      longest chain is done, so per-chain lengths make every chain pay for the longest one (for
      uniform jitter and many chains about twice the mean); a shared length wastes nothing. Each
      step is a valid HMC kernel, so the (time-inhomogeneous) chain leaves the target invariant.
    * ``jitter="uniform"``: ``u`` drawn per chain per step from the step's key: a time-homogeneous
      kernel (a mixture of HMC kernels), at the price above when vmapped.

    Args:
      logdensity_fn: unnormalised log-density of one position -> scalar, differentiable.
      step_size: ε > 0 (may be traced).
      trajectory_length: T > 0, the largest integration time (may be traced).
      inverse_mass_matrix: (D,) diagonal, (D, D) dense M⁻¹ or None (identity); see ``hmc``.
      jitter: ``"halton"`` or ``"uniform"``, see above.
      max_leapfrog_steps: L is clipped to this (a divergent adaptation cannot run forever).
      divergence_threshold: as in ``hmc``.

    Returns:
      ``Kernel(init, step)``: ``init(position) -> JitteredHMCState`` (step counter 0) and
      ``step(key, state) -> (JitteredHMCState, HMCInfo)``; ``info.num_leapfrog_steps`` is the
      number of gradient evaluations the step cost.
    """
    init, move = _jittered_parts(
        logdensity_fn,
        step_size,
        trajectory_length,
        inverse_mass_matrix,
        jitter,
        max_leapfrog_steps,
        divergence_threshold,
        "jittered_hmc",
    )

    def step(key: PRNGKey, state: JitteredHMCState) -> tuple[JitteredHMCState, HMCInfo]:
        new_state, result = move(key, state)
        return new_state, result.info

    return Kernel(init, step)

"""Langevin kernels: the Metropolis-adjusted (MALA) and the unadjusted (ULA) Langevin algorithm.

Both discretise the Langevin diffusion ``dX = ½ M⁻¹∇ℓ(X) dt + M^{-1/2} dW`` with a time step ``ε``
(the ``step_size``), using the same convention as SGLD (Welling & Teh, 2011)::

    x' = x + (ε/2) M⁻¹ ∇ℓ(x) + √ε M^{-1/2} z,      z ~ N(0, I)

so ``ε`` is the variance of the injected noise (for M = I). blackjax's MALA writes
``x + τ∇ℓ + √(2τ) z``: its ``τ`` is our ``ε/2``. MALA is exactly one-step HMC with leapfrog step
``√ε`` and the same mass matrix, and its state caches the log-density and gradient like HMC's.

ULA never rejects and is therefore biased. For a Gaussian target N(μ, σ²) (M = 1) it is the AR(1)
chain ``x' - μ = (1 - ε/(2σ²))(x - μ) + √ε z``, whose stationary law is N(μ, σ²/(1 - ε/(4σ²))):
the mean is exact, the variance is inflated by a factor ``1 + ε/(4σ²) + O(ε²)``, and the chain
diverges for ``ε ≥ 4σ²``. The bias is O(ε) in general; use MALA unless gradients of a very
high-dimensional target make the rejections too frequent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from nflows_jax.sampling.base import (
    Array,
    Kernel,
    LogDensityFn,
    Position,
    PRNGKey,
    normal_and_uniform,
)
from nflows_jax.sampling.checks import (
    check_flat_size,
    check_inverse_mass,
    check_step_size,
    ravel_position,
    scalar_logdensity,
)


class LangevinState(NamedTuple):
    """State of one MALA/ULA chain.

    Attributes:
      position: current sample, (D,) or the user's pytree.
      logdensity: () log-density at ``position``.
      logdensity_grad: its gradient (the position's structure), which drives the next proposal.
    """

    position: Position
    logdensity: Array
    logdensity_grad: Position


class MALAInfo(NamedTuple):
    """What happened in one MALA step (scalars).

    Attributes:
      acceptance_prob: ``min(1, π(x')q(x|x') / (π(x)q(x'|x)))``; 0 when the proposal's
        log-density or gradient is not finite.
      accepted: whether the proposal became the new state.
      is_divergent: the proposal's log-density or gradient is NaN/inf (it is then rejected).
    """

    acceptance_prob: Array
    accepted: Array
    is_divergent: Array


class ULAInfo(NamedTuple):
    """ULA accepts every move: ``acceptance_prob`` is 1 and ``accepted`` True, for the contract."""

    acceptance_prob: Array
    accepted: Array


class _Flat(NamedTuple):
    """One chain's state raveled to (D,) vectors, and the map back to the user's structure."""

    position: Array
    logdensity: Array
    logdensity_grad: Array
    unravel: Callable[[Array], Position]


def _langevin_setup(logdensity_fn, step_size, inverse_mass_matrix, who):
    check_step_size(step_size, who=who)
    inverse_mass = check_inverse_mass(inverse_mass_matrix)
    # Drift (ε/2) M⁻¹ and noise scale √(ε M⁻¹) are fixed: compute them once, not per step.
    half_drift = 0.5 * step_size if inverse_mass is None else 0.5 * step_size * inverse_mass
    noise_scale = (
        jnp.sqrt(step_size) if inverse_mass is None else jnp.sqrt(step_size * inverse_mass)
    )
    logdensity_fn = scalar_logdensity(logdensity_fn, who)

    def value_and_grad(unravel):
        return jax.value_and_grad(lambda flat: logdensity_fn(unravel(flat)))

    def init(position: Position) -> LangevinState:
        flat, unravel = ravel_position(position, f"{who}.init")
        check_flat_size(flat, inverse_mass, f"{who}.init")
        logdensity, grad = value_and_grad(unravel)(flat)
        return LangevinState(unravel(flat), logdensity, unravel(grad))

    def flatten(state: LangevinState) -> _Flat:
        position, unravel = ravel_position(state.position, f"{who}.step")
        check_flat_size(position, inverse_mass, f"{who}.step")
        grad, _ = ravel_position(state.logdensity_grad, f"{who}.step (logdensity_grad)")
        return _Flat(position, state.logdensity, grad, unravel)

    return half_drift, noise_scale, value_and_grad, init, flatten


def mala(
    logdensity_fn: LogDensityFn,
    step_size: float | Array,
    inverse_mass_matrix: Array | None = None,
) -> Kernel:
    """Metropolis-adjusted Langevin algorithm.

    Proposal ``x' = x + (ε/2) M⁻¹∇ℓ(x) + √ε M^{-1/2} z``, accepted with probability
    ``min(1, exp(ℓ(x') - ℓ(x)) q(x|x') / q(x'|x))`` where ``q(·|x)`` is the Gaussian proposal
    density: the Hastings ratio is required because the drift makes the proposal asymmetric.

    Positions may be (D,) arrays or pytrees of floating arrays, raveled inside the kernel
    (``checks.ravel_position``) as in :func:`~nflows_jax.sampling.hmc.hmc`.

    Args:
      logdensity_fn: unnormalised log-density of one position -> scalar, differentiable. A
        non-scalar output raises a ValueError at trace time.
      step_size: ε > 0, the variance of the injected noise (see the module docstring).
      inverse_mass_matrix: (D,) diagonal preconditioner M⁻¹ (raveled-position order), or None
        for the identity.

    Returns:
      ``Kernel(init, step)``: ``init(position) -> LangevinState``,
      ``step(key, state) -> (LangevinState, MALAInfo)``.
    """
    half_drift, noise_scale, value_and_grad, init, flatten = _langevin_setup(
        logdensity_fn, step_size, inverse_mass_matrix, "mala"
    )
    # Coefficient of (∇ℓ(x) + ∇ℓ(x')) in the whitened reverse-move residual, see below.
    reverse_scale = 0.5 * noise_scale

    def step(key: PRNGKey, state: LangevinState) -> tuple[LangevinState, MALAInfo]:
        position, logdensity, grad, unravel = flatten(state)
        z, uniform = normal_and_uniform(key, position.shape, position.dtype)
        new_position = position + half_drift * grad + noise_scale * z
        new_logdensity, new_grad = value_and_grad(unravel)(new_position)
        # In whitened units, the forward move's residual is z, so log q(x'|x) = -½|z|² + c, and
        # the reverse move's residual x - x' - (ε/2)M⁻¹∇ℓ(x') whitens to
        # -(z + ½√(εM⁻¹)(∇ℓ(x) + ∇ℓ(x'))), so log q(x|x') = -½|w|² + c with w below. Computing it
        # this way avoids dividing by the step size.
        w = z + reverse_scale * (grad + new_grad)
        log_hastings = 0.5 * (jnp.sum(z**2) - jnp.sum(w**2))
        log_ratio = new_logdensity - logdensity + log_hastings
        # A NaN/inf proposal log-density (or gradient, through w) must never be accepted; +inf
        # would otherwise give acceptance probability 1.
        is_divergent = ~(jnp.isfinite(new_logdensity) & jnp.isfinite(log_hastings))
        log_accept = jnp.where(is_divergent, -jnp.inf, jnp.minimum(log_ratio, 0.0))
        acceptance_prob = jnp.exp(log_accept)
        accepted = uniform < acceptance_prob
        new_state = LangevinState(
            unravel(jnp.where(accepted, new_position, position)),
            jnp.where(accepted, new_logdensity, logdensity),
            unravel(jnp.where(accepted, new_grad, grad)),
        )
        return new_state, MALAInfo(acceptance_prob, accepted, is_divergent)

    return Kernel(init, step)


def ula(
    logdensity_fn: LogDensityFn,
    step_size: float | Array,
    inverse_mass_matrix: Array | None = None,
) -> Kernel:
    """Unadjusted Langevin algorithm: the MALA proposal, always accepted.

    Biased by O(ε): for a Gaussian target N(μ, σ²) its stationary variance is
    ``σ²/(1 - ε/(4σ²))`` (see the module docstring). Non-finite values are not guarded against:
    a step size that is too large makes the chain diverge.

    Args and returns as :func:`mala`, with ``ULAInfo`` (acceptance 1).
    """
    half_drift, noise_scale, value_and_grad, init, flatten = _langevin_setup(
        logdensity_fn, step_size, inverse_mass_matrix, "ula"
    )

    def step(key: PRNGKey, state: LangevinState) -> tuple[LangevinState, ULAInfo]:
        position, _, grad, unravel = flatten(state)
        z = jax.random.normal(key, position.shape, position.dtype)
        new_position = position + half_drift * grad + noise_scale * z
        new_logdensity, new_grad = value_and_grad(unravel)(new_position)
        info = ULAInfo(jnp.ones((), position.dtype), jnp.ones((), bool))
        return LangevinState(unravel(new_position), new_logdensity, unravel(new_grad)), info

    return Kernel(init, step)

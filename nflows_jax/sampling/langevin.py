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

from typing import NamedTuple

import jax
import jax.numpy as jnp

from nflows_jax.sampling.base import Array, Kernel, LogDensityFn, PRNGKey, normal_and_uniform
from nflows_jax.sampling.hmc import _check_inverse_mass, _check_position, _check_step_size


class LangevinState(NamedTuple):
    """State of one MALA/ULA chain.

    Attributes:
      position: (D,) current sample.
      logdensity: () log-density at ``position``.
      logdensity_grad: (D,) its gradient, which drives the next proposal.
    """

    position: Array
    logdensity: Array
    logdensity_grad: Array


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


def _langevin_setup(logdensity_fn, step_size, inverse_mass_matrix, who):
    _check_step_size(step_size)
    inverse_mass = _check_inverse_mass(inverse_mass_matrix)
    # Drift (ε/2) M⁻¹ and noise scale √(ε M⁻¹) are fixed: compute them once, not per step.
    half_drift = 0.5 * step_size if inverse_mass is None else 0.5 * step_size * inverse_mass
    noise_scale = (
        jnp.sqrt(step_size) if inverse_mass is None else jnp.sqrt(step_size * inverse_mass)
    )
    value_and_grad_fn = jax.value_and_grad(logdensity_fn)

    def init(position: Array) -> LangevinState:
        position = _check_position(position, inverse_mass, f"{who}.init")
        logdensity, grad = value_and_grad_fn(position)
        return LangevinState(position, logdensity, grad)

    return inverse_mass, half_drift, noise_scale, value_and_grad_fn, init


def mala(
    logdensity_fn: LogDensityFn,
    step_size: float | Array,
    inverse_mass_matrix: Array | None = None,
) -> Kernel:
    """Metropolis-adjusted Langevin algorithm.

    Proposal ``x' = x + (ε/2) M⁻¹∇ℓ(x) + √ε M^{-1/2} z``, accepted with probability
    ``min(1, exp(ℓ(x') - ℓ(x)) q(x|x') / q(x'|x))`` where ``q(·|x)`` is the Gaussian proposal
    density: the Hastings ratio is required because the drift makes the proposal asymmetric.

    Args:
      logdensity_fn: unnormalised log-density of one position (D,) -> scalar, differentiable.
      step_size: ε > 0, the variance of the injected noise (see the module docstring).
      inverse_mass_matrix: (D,) diagonal preconditioner M⁻¹, or None for the identity.

    Returns:
      ``Kernel(init, step)``: ``init(position (D,)) -> LangevinState``,
      ``step(key, state) -> (LangevinState, MALAInfo)``.
    """
    inverse_mass, half_drift, noise_scale, value_and_grad_fn, init = _langevin_setup(
        logdensity_fn, step_size, inverse_mass_matrix, "mala"
    )
    # Coefficient of (∇ℓ(x) + ∇ℓ(x')) in the whitened reverse-move residual, see below.
    reverse_scale = 0.5 * noise_scale

    def step(key: PRNGKey, state: LangevinState) -> tuple[LangevinState, MALAInfo]:
        position = _check_position(state.position, inverse_mass, "mala.step")
        z, uniform = normal_and_uniform(key, position.shape, position.dtype)
        new_position = position + half_drift * state.logdensity_grad + noise_scale * z
        new_logdensity, new_grad = value_and_grad_fn(new_position)
        # In whitened units, the forward move's residual is z, so log q(x'|x) = -½|z|² + c, and
        # the reverse move's residual x - x' - (ε/2)M⁻¹∇ℓ(x') whitens to
        # -(z + ½√(εM⁻¹)(∇ℓ(x) + ∇ℓ(x'))), so log q(x|x') = -½|w|² + c with w below. Computing it
        # this way avoids dividing by the step size.
        w = z + reverse_scale * (state.logdensity_grad + new_grad)
        log_hastings = 0.5 * (jnp.sum(z**2) - jnp.sum(w**2))
        log_ratio = new_logdensity - state.logdensity + log_hastings
        # A NaN/inf proposal log-density (or gradient, through w) must never be accepted; +inf
        # would otherwise give acceptance probability 1.
        is_divergent = ~(jnp.isfinite(new_logdensity) & jnp.isfinite(log_hastings))
        log_accept = jnp.where(is_divergent, -jnp.inf, jnp.minimum(log_ratio, 0.0))
        acceptance_prob = jnp.exp(log_accept)
        accepted = uniform < acceptance_prob
        new_state = LangevinState(
            jnp.where(accepted, new_position, position),
            jnp.where(accepted, new_logdensity, state.logdensity),
            jnp.where(accepted, new_grad, state.logdensity_grad),
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
    inverse_mass, half_drift, noise_scale, value_and_grad_fn, init = _langevin_setup(
        logdensity_fn, step_size, inverse_mass_matrix, "ula"
    )

    def step(key: PRNGKey, state: LangevinState) -> tuple[LangevinState, ULAInfo]:
        position = _check_position(state.position, inverse_mass, "ula.step")
        z = jax.random.normal(key, position.shape, position.dtype)
        new_position = position + half_drift * state.logdensity_grad + noise_scale * z
        new_logdensity, new_grad = value_and_grad_fn(new_position)
        info = ULAInfo(jnp.ones((), position.dtype), jnp.ones((), bool))
        return LangevinState(new_position, new_logdensity, new_grad), info

    return Kernel(init, step)

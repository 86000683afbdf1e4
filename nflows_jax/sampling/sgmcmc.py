"""Stochastic-gradient MCMC: SGLD and SGHMC driven by minibatch gradient estimates.

For a posterior ``p(θ | x₁..x_N) ∝ p(θ) Πᵢ p(xᵢ | θ)`` the gradient of the log-posterior is
estimated from a minibatch ``B`` of ``n`` points as::

    ĝ(θ) = ∇log p(θ) + (N/n) Σ_{i∈B} ∇log p(xᵢ | θ),

which is unbiased whether ``B`` is drawn with or without replacement. The kernels take any
``grad_estimator(key, position) -> gradient``; :func:`minibatch_grad_estimator` builds this one.

Neither kernel has an accept/reject step: the stationary distribution is the posterior only in
the limit of a vanishing step size, with an O(ε) bias from the discretisation and an extra
variance from the gradient noise (the tests derive both in closed form for a Gaussian posterior).
Infos report ``acceptance_prob = 1`` and ``accepted = True`` for the kernel contract.
Positions θ are one chain's, (D,) or a pytree (raveled inside the kernels); the data keep their
leading axis N.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nflows_jax.formatting import show
from nflows_jax.sampling.base import Array, Kernel, Position, PRNGKey
from nflows_jax.sampling.checks import (
    check_scalar_logdensity,
    check_step_size,
    check_tree_like_position,
    is_tracer,
    ravel_position,
)

GradEstimator = Callable[[PRNGKey, Position], Position]
StepSize = float | Array | Callable[[Array], Array]


def subsample_without_replacement(key: PRNGKey, num_items: int, num_samples: int) -> Array:
    """``num_samples`` distinct indices in [0, num_items), a uniformly random subset: (n,) int32.

    The indices of the n largest of N i.i.d. uniform keys (``lax.top_k``, O(N)) form a uniform
    random subset, several times cheaper than slicing ``jax.random.permutation`` (a multi-round
    O(N log N) sort). Float32 keys can tie, and ``top_k`` breaks ties by position, which alone
    would favour low indices; rotating the result by a uniform random offset makes the law
    invariant under rotations, so every index is included with probability n/N, what the
    unbiasedness of the (N/n)-weighted minibatch sum needs. One random call makes both the keys
    and the offset (the offset's float rounding, O(N 2⁻²⁴), only matters in the rare event of a
    tie at the cut).
    """
    uniforms = jax.random.uniform(key, (num_items + 1,))
    _, positions = jax.lax.top_k(uniforms[:num_items], num_samples)
    offset = jnp.minimum(
        jnp.floor(uniforms[num_items] * num_items).astype(jnp.int32), num_items - 1
    )
    return (positions + offset) % num_items


def minibatch_grad_estimator(
    logprior_fn: Callable[[Array], Array],
    loglikelihood_fn: Callable[[Array, Any], Array],
    data: Any,
    batch_size: int,
    *,
    replace: bool = False,
) -> GradEstimator:
    """Unbiased minibatch estimate of the gradient of the log-posterior.

    Args:
      logprior_fn: ``θ -> log p(θ)``, a scalar (θ: (D,) or a pytree).
      loglikelihood_fn: ``(θ, one data point) -> log p(x | θ)``, a scalar; vmapped over the
        minibatch. Non-scalar outputs of either raise a ValueError at trace time.
      data: an array (N, ...) or a pytree of arrays sharing the leading axis N.
      batch_size: n, 1 ≤ n ≤ N.
      replace: False (default) draws the minibatch without replacement (lower variance: the
        finite-population factor (N-n)/(N-1)), see :func:`subsample_without_replacement`; O(N)
        work per call. True draws n indices uniformly with replacement: O(n) work, preferable
        when N is very large. Both are unbiased.

    Returns:
      ``grad_estimator(key, θ) -> ĝ(θ)`` of θ's shape (structure, for a pytree θ). With
      ``batch_size == N`` and ``replace=False`` it is the exact full-data gradient.
    """
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError("data is empty: expected an array or pytree of arrays with a leading axis")
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) > 0 else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"all data leaves need the same leading axis N, got sizes {sizes}")
    (num_data,) = sizes
    if not isinstance(batch_size, (int, np.integer)) or not 1 <= batch_size <= num_data:
        raise ValueError(f"batch_size must be an int in [1, N={num_data}], got {show(batch_size)}")
    scale = num_data / batch_size

    def one_loglikelihood(position: Position, point: Any) -> Array:
        value = loglikelihood_fn(position, point)
        return check_scalar_logdensity(value, "minibatch_grad_estimator", "loglikelihood_fn")

    def minibatch_logdensity(position: Position, batch: Any) -> Array:
        loglikelihoods = jax.vmap(one_loglikelihood, in_axes=(None, 0))(position, batch)
        logprior = check_scalar_logdensity(
            logprior_fn(position), "minibatch_grad_estimator", "logprior_fn"
        )
        return logprior + scale * jnp.sum(loglikelihoods)

    grad_fn = jax.grad(minibatch_logdensity)

    def grad_estimator(key: PRNGKey, position: Position) -> Position:
        if batch_size == num_data and not replace:
            return grad_fn(position, data)  # the whole data set: the exact gradient, no sampling
        if replace:
            indices = jax.random.randint(key, (batch_size,), 0, num_data)
        else:
            indices = subsample_without_replacement(key, num_data, batch_size)
        batch = jax.tree_util.tree_map(lambda leaf: jnp.take(leaf, indices, axis=0), data)
        return grad_fn(position, batch)

    return grad_estimator


def _step_size_at(step_size: StepSize, step_count: Array) -> Array:
    return step_size(step_count) if callable(step_size) else step_size


def _check_schedule(step_size: StepSize, who: str) -> None:
    if not callable(step_size):
        check_step_size(step_size, who=who)


def _flat_gradient(
    grad_estimator: GradEstimator, key: PRNGKey, position: Position, who: str
) -> Array:
    """``grad_estimator(key, position)`` checked against the position's structure, raveled."""
    grad = grad_estimator(key, position)
    check_tree_like_position(grad, position, who, "grad_estimator output")
    return ravel_position(grad, f"{who} (grad_estimator output)")[0]


class SGLDState(NamedTuple):
    """Attributes: position, (D,) or a pytree; step_count () int32, a schedule's argument."""

    position: Position
    step_count: Array


class SGHMCState(NamedTuple):
    """Attributes: position (D,) or a pytree; momentum, the position's structure, carried across
    steps; step_count () int32."""

    position: Position
    momentum: Position
    step_count: Array


class SGMCMCInfo(NamedTuple):
    """``acceptance_prob`` 1 and ``accepted`` True (no Metropolis step); ``step_size`` used."""

    acceptance_prob: Array
    accepted: Array
    step_size: Array


def _info(step_size: Array, dtype) -> SGMCMCInfo:
    return SGMCMCInfo(jnp.ones((), dtype), jnp.ones((), bool), jnp.asarray(step_size, dtype))


def sgld(grad_estimator: GradEstimator, step_size: StepSize) -> Kernel:
    """Stochastic gradient Langevin dynamics (Welling & Teh, 2011).

    ``θ ← θ + (ε/2) ĝ(θ) + N(0, ε I)``: ULA with a noisy gradient. For a Gaussian posterior
    N(μ, σ²) and gradient noise of variance V (independent of θ), the stationary law is Gaussian
    with mean μ and variance ``(ε + ε²V/4) / (1 - (1 - ε/(2σ²))²)``, i.e. σ²/(1 - ε/(4σ²)) for
    exact gradients.

    Args:
      grad_estimator: ``(key, θ) -> ĝ`` with θ's structure, e.g. from
        :func:`minibatch_grad_estimator`; θ is (D,) or a pytree (raveled inside the kernel).
      step_size: ε > 0, or a schedule ``step_count -> ε`` (e.g. ``a (b + t)^-γ``, γ ∈ (0.5, 1],
        for the asymptotically exact decreasing-step version).

    Returns:
      ``Kernel(init, step)``: ``init(θ) -> SGLDState``,
      ``step(key, state) -> (SGLDState, SGMCMCInfo)``.
    """
    _check_schedule(step_size, "sgld")

    def init(position: Position) -> SGLDState:
        flat, unravel = ravel_position(position, "sgld.init")
        return SGLDState(unravel(flat), jnp.zeros((), jnp.int32))

    def step(key: PRNGKey, state: SGLDState) -> tuple[SGLDState, SGMCMCInfo]:
        position, unravel = ravel_position(state.position, "sgld.step")
        grad_key, noise_key = jax.random.split(key)
        epsilon = _step_size_at(step_size, state.step_count)
        grad = _flat_gradient(grad_estimator, grad_key, state.position, "sgld.step")
        noise = jax.random.normal(noise_key, position.shape, position.dtype)
        new_position = position + 0.5 * epsilon * grad + jnp.sqrt(epsilon) * noise
        new_state = SGLDState(unravel(new_position), state.step_count + 1)
        return new_state, _info(epsilon, position.dtype)

    return Kernel(init, step)


def sghmc(
    grad_estimator: GradEstimator,
    step_size: StepSize,
    friction: float | Array,
    gradient_noise: float | Array = 0.0,
) -> Kernel:
    """Stochastic gradient Hamiltonian Monte Carlo (Chen, Fox & Guestrin, 2014), unit mass.

    The Euler discretisation of the dynamics with friction C (their eq. 13, M = I)::

        θ ← θ + ε r
        r ← r + ε ĝ(θ) - ε C r + N(0, 2 (C - B̂) ε)

    The friction C damps the momentum; B̂ is an estimate of the gradient noise's contribution to
    the momentum noise, ``B̂ = ε V / 2`` for gradient noise of variance V, so that the total
    injected momentum noise stays ``2Cε``. It is set to 0 by default, which is the common choice
    (the extra gradient noise then inflates the stationary variance; it vanishes with ε).
    Momentum starts at 0 (``init`` takes no key) and is carried across steps, not resampled.

    Args:
      grad_estimator: ``(key, θ) -> ĝ`` with θ's structure (θ: (D,) or a pytree).
      step_size: ε > 0, or a schedule ``step_count -> ε``.
      friction: C > 0, a scalar or a (D,) vector (raveled-position order); ``ε C < 1`` is needed
        for a stable chain.
      gradient_noise: B̂, with 0 ≤ B̂ ≤ C, a scalar or (D,).

    Returns:
      ``Kernel(init, step)``: ``init(θ) -> SGHMCState``,
      ``step(key, state) -> (SGHMCState, SGMCMCInfo)``.
    """
    _check_schedule(step_size, "sghmc")
    for name, value in (("friction", friction), ("gradient_noise", gradient_noise)):
        if not is_tracer(value) and not np.all(np.isfinite(np.asarray(value))):
            raise ValueError(f"sghmc: {name} must be finite, got {show(value)}")
    if not is_tracer(friction) and np.any(np.asarray(friction) <= 0):
        raise ValueError(f"sghmc: friction must be positive, got {show(friction)}")
    if not (is_tracer(friction) or is_tracer(gradient_noise)):
        noise = np.asarray(gradient_noise)
        if np.any(noise < 0) or np.any(noise > np.asarray(friction)):
            raise ValueError(
                f"sghmc: gradient_noise must lie in [0, friction]: got {show(gradient_noise)} "
                f"with friction {show(friction)} (the injected noise variance 2(C - B̂)ε would "
                "be negative)"
            )
    # Clamped so a traced B̂ slightly above C gives zero noise, not the NaN of sqrt(negative).
    noise_rate = 2.0 * jnp.maximum(jnp.asarray(friction) - jnp.asarray(gradient_noise), 0.0)

    def init(position: Position) -> SGHMCState:
        flat, unravel = ravel_position(position, "sghmc.init")
        return SGHMCState(unravel(flat), unravel(jnp.zeros_like(flat)), jnp.zeros((), jnp.int32))

    def step(key: PRNGKey, state: SGHMCState) -> tuple[SGHMCState, SGMCMCInfo]:
        position, unravel = ravel_position(state.position, "sghmc.step")
        momentum, _ = ravel_position(state.momentum, "sghmc.step (momentum)")
        grad_key, noise_key = jax.random.split(key)
        epsilon = _step_size_at(step_size, state.step_count)
        new_position = position + epsilon * momentum
        grad = _flat_gradient(grad_estimator, grad_key, unravel(new_position), "sghmc.step")
        noise = jax.random.normal(noise_key, position.shape, position.dtype)
        new_momentum = (
            (1.0 - epsilon * friction) * momentum
            + epsilon * grad
            + jnp.sqrt(noise_rate * epsilon) * noise
        )
        new_state = SGHMCState(unravel(new_position), unravel(new_momentum), state.step_count + 1)
        return new_state, _info(epsilon, position.dtype)

    return Kernel(init, step)

"""Parallel tempering (replica exchange) over a ladder of inverse temperatures.

Replica ``k`` targets ``π_k(x) ∝ exp(β_k ℓ(x))`` with ``1 = β_0 > β_1 > ... > β_{R-1} > 0``. Each
step moves every replica with a local kernel at its own temperature, then proposes to exchange the
states of adjacent replicas ``(k, k+1)``, accepted with probability::

    min(1, exp((β_k - β_{k+1}) (ℓ(x_{k+1}) - ℓ(x_k)))),

on the even pairs (0,1), (2,3), ... at even steps and the odd pairs (1,2), (3,4), ... at odd steps
(the deterministic even/odd scheme of Okabe et al. 2001 / Syed et al. 2019: the proposed pairs are
disjoint, so they are decided independently and at once). Both moves leave the product
``Π_k π_k`` invariant, so the β = 1 replica samples the target; the hot replicas cross the barriers
that trap it and hand their states down.

The local kernel is built *inside* the vmap over temperatures, from a tempered log-density in
which β is a traced array, so there is one compiled kernel for all replicas rather than R.
A chain's state holds all R replicas (positions (R, D)); ``state.position`` is the β = 1
replica's (D,), so ``sample_chains`` traces the target's samples as for any kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nflows_jax.formatting import show
from nflows_jax.sampling.base import Array, Kernel, LogDensityFn, PRNGKey
from nflows_jax.sampling.checks import scalar_logdensity


class PTState(NamedTuple):
    """State of one parallel-tempering chain with R replicas.

    Attributes:
      position: (D,) the β = 1 replica's position, the sample (a copy of
        ``replica_states.position[0]``, so runners can read ``state.position`` as for any kernel).
      replica_states: the local kernel's state for every replica, stacked on a leading axis R
        (so ``replica_states.position`` is (R, D)); replica k is at temperature ``betas[k]``.
      step_count: () int32; its parity selects the even or odd swap pairs.
    """

    position: Array
    replica_states: Any
    step_count: Array


class PTInfo(NamedTuple):
    """What happened in one parallel-tempering step.

    Attributes:
      acceptance_prob: (R,) local-move acceptance probability of each replica.
      accepted: (R,) whether each replica's local move was accepted.
      swap_acceptance_prob: (R-1,) acceptance probability of exchanging replicas k and k+1,
        computed for every pair at every step (also for the pairs not proposed this step), so its
        mean over steps estimates each pair's swap acceptance rate with half the variance.
      swap_proposed: (R-1,) whether the exchange of pair k was proposed this step.
      swap_accepted: (R-1,) whether it was proposed and accepted.
      local_info: the local kernel's info, stacked over replicas.
    """

    acceptance_prob: Array
    accepted: Array
    swap_acceptance_prob: Array
    swap_proposed: Array
    swap_accepted: Array
    local_info: Any


def _check_betas(betas) -> np.ndarray:
    if isinstance(betas, jax.core.Tracer):
        raise ValueError("betas must be concrete (a list or array known before tracing)")
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or betas.size < 2:
        raise ValueError(f"betas must be a vector of at least 2 temperatures, got {betas.shape}")
    if not np.all(np.isfinite(betas)):
        raise ValueError(f"betas must be finite, got {show(betas)}")
    if betas[0] != 1.0:
        raise ValueError(f"betas[0] must be 1 (the target's replica), got {float(betas[0])}")
    if np.any(np.diff(betas) >= 0):
        raise ValueError(f"betas must be strictly decreasing, got {show(betas)}")
    if betas[-1] <= 0:
        raise ValueError(f"betas must be positive (β·ℓ with β=0 is improper), got {show(betas)}")
    return betas


def _expand(mask: Array, ndim: int) -> Array:
    """Append singleton axes to a (R,) mask so it broadcasts against an (R, ...) leaf."""
    return mask.reshape(mask.shape + (1,) * (ndim - 1))


def swap_permutation(swap_accepted: Array) -> Array:
    """Replica index each slot takes after the accepted exchanges of disjoint adjacent pairs.

    ``swap_accepted`` (R-1,) bool, entry k exchanging slots k and k+1 (no two accepted pairs may
    share a slot). Returns (R,) int32 ``perm`` with ``new[k] = old[perm[k]]``.
    """
    moved = swap_accepted.astype(jnp.int32)
    up = jnp.pad(moved, (0, 1))  # slot k takes k+1 if pair k was exchanged
    down = jnp.pad(moved, (1, 0))  # slot k takes k-1 if pair k-1 was exchanged
    return jnp.arange(moved.shape[0] + 1, dtype=jnp.int32) + up - down


def parallel_tempering(
    make_kernel: Callable[[LogDensityFn], Kernel],
    logdensity_fn: LogDensityFn,
    betas: Array | list[float],
) -> Kernel:
    """Replica-exchange kernel over the inverse temperatures ``betas``.

    Args:
      make_kernel: ``tempered_logdensity_fn -> Kernel``, e.g. ``lambda f: hmc(f, 0.1, 10)``. It is
        called with β a traced scalar, so it must not branch in Python on the log-density's
        values. Its state needs a ``position`` field; if it also has a ``logdensity`` field
        holding the tempered log-density β·ℓ(x) (every kernel in this library does), the swap
        test reads ℓ from it instead of evaluating ``logdensity_fn`` again.
      logdensity_fn: the target's log-density ℓ, one position -> scalar (a non-scalar output
        raises a ValueError at trace time).
      betas: (R,) inverse temperatures, strictly decreasing from ``betas[0] = 1`` to a positive
        ``betas[-1]`` (geometric spacing is the usual start).

    Returns:
      ``Kernel(init, step)``: ``init(positions (R, D)) -> PTState`` (one start per replica; use
      ``jnp.broadcast_to(x, (R, D))`` to start them all at ``x``) and
      ``step(key, state) -> (PTState, PTInfo)``.

    Cost per step: one local step per replica, plus one ``init`` per replica after the exchange
    (computed for all replicas under vmap, kept for those that received another's position),
    because a state that moves to another temperature carries the cached log-density (and
    gradient) of its old one and must be rebuilt: one more log-density/gradient evaluation. A
    rebuilt replica's other state (e.g. an SGHMC momentum) restarts from ``init``.
    """
    betas_np = _check_betas(betas)
    num_replicas = betas_np.size
    logdensity_fn = scalar_logdensity(logdensity_fn, "parallel_tempering")

    def tempered_kernel(beta: Array) -> Kernel:
        return make_kernel(lambda x: beta * logdensity_fn(x))

    def init_one(beta: Array, position: Array) -> Any:
        return tempered_kernel(beta).init(position)

    def step_one(beta: Array, key: PRNGKey, state: Any) -> tuple[Any, Any]:
        return tempered_kernel(beta).step(key, state)

    def check_positions(positions: Array, who: str) -> Array:
        positions = jnp.asarray(positions)
        if positions.ndim < 1 or positions.shape[0] != num_replicas:
            raise ValueError(
                f"{who}: positions need a leading replica axis of size R={num_replicas} (one per "
                f"temperature), got shape {positions.shape}"
            )
        return positions

    def betas_like(dtype) -> Array:
        return jnp.asarray(betas_np, dtype)

    def init(positions: Array) -> PTState:
        positions = check_positions(positions, "parallel_tempering.init")
        replica_states = jax.vmap(init_one)(betas_like(positions.dtype), positions)
        return PTState(positions[0], replica_states, jnp.zeros((), jnp.int32))

    def untempered_logdensities(betas_arr: Array, replica_states: Any) -> Array:
        if hasattr(replica_states, "logdensity"):
            return replica_states.logdensity / betas_arr
        return jax.vmap(logdensity_fn)(replica_states.position)

    def step(key: PRNGKey, state: PTState) -> tuple[PTState, PTInfo]:
        positions = check_positions(state.replica_states.position, "parallel_tempering.step")
        betas_arr = betas_like(positions.dtype)
        keys = jax.random.split(key, num_replicas + 1)
        replica_states, local_info = jax.vmap(step_one)(betas_arr, keys[1:], state.replica_states)

        logdensities = untempered_logdensities(betas_arr, replica_states)
        log_ratio = (betas_arr[:-1] - betas_arr[1:]) * (logdensities[1:] - logdensities[:-1])
        # NaN (e.g. -inf - -inf) must reject, not propagate: substitute before exp.
        log_accept = jnp.where(jnp.isnan(log_ratio), -jnp.inf, jnp.minimum(log_ratio, 0.0))
        swap_acceptance_prob = jnp.exp(log_accept)
        uniforms = jax.random.uniform(keys[0], (num_replicas - 1,), positions.dtype)
        pair_parity = jnp.arange(num_replicas - 1) % 2
        swap_proposed = pair_parity == state.step_count % 2
        swap_accepted = swap_proposed & (uniforms < swap_acceptance_prob)

        perm = swap_permutation(swap_accepted)
        new_positions = replica_states.position[perm]
        # Only positions move between temperatures: a replica that received another's position
        # is rebuilt by ``init`` at its own temperature (its cached β·ℓ and gradient belonged to
        # the old one); the others keep their full local state (momenta, counters, ...).
        rebuilt = jax.vmap(init_one)(betas_arr, new_positions)
        moved = perm != jnp.arange(num_replicas)
        replica_states = jax.tree_util.tree_map(
            lambda fresh, kept: jnp.where(_expand(moved, fresh.ndim), fresh, kept),
            rebuilt,
            replica_states,
        )
        new_state = PTState(new_positions[0], replica_states, state.step_count + 1)
        info = PTInfo(
            local_info.acceptance_prob,
            local_info.accepted,
            swap_acceptance_prob,
            swap_proposed,
            swap_accepted,
            local_info,
        )
        return new_state, info

    return Kernel(init, step)

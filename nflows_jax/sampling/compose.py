"""Kernel combinators: several MCMC kernels run one after another as one kernel.

::

    kernel = cycle(flow_independence_mh(logdensity, flow, params), rwmh(logdensity, 0.3))
    state = kernel.init(position)              # CycleState(position, (imh_state, rwmh_state))
    state, (imh_info, rwmh_info) = kernel.step(key, state)

Each sub-kernel leaves the target invariant, so their composition does too (the transition
matrix of a cycle is the product of its sub-kernels' matrices, and π T_k = π for each k gives
π T_1 ⋯ T_n = π). Mixing a global move (independence MH with a flow proposal) with a local one
(random walk, HMC) is the classic use: the global move jumps between modes, the local move
explores where the proposal is poor. Positions are one chain's, of whatever shape the
sub-kernels share.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from nflows_jax.sampling.base import Array, Kernel, Position, PRNGKey

__all__ = ["CycleState", "cycle"]


class CycleState(NamedTuple):
    """State of a :func:`cycle`.

    Attributes:
      position: the chain's current position (that of the last sub-kernel's state).
      kernel_states: a tuple with each sub-kernel's state as it left it, in cycle order.
    """

    position: Position
    kernel_states: tuple


def _same_position(a: Position, b: Position) -> Array:
    """A scalar bool: every leaf of ``a`` equals the matching leaf of ``b``."""
    equal = jax.tree.map(lambda x, y: jnp.all(x == y), a, b)
    return jnp.all(jnp.stack(jax.tree.leaves(equal)))


def _state_position(state: Any, index: int) -> Position:
    if not hasattr(state, "position"):
        raise ValueError(
            f"cycle: the state of sub-kernel {index} ({type(state).__name__}) has no `position` "
            "field; cycle moves the position between sub-kernels and needs to read it"
        )
    return state.position


def _at_position(kernel: Kernel, state: Any, position: Position, index: int) -> Any:
    """``state`` if it is already at ``position``, else ``kernel.init(position)``.

    A ``lax.cond``, so a single (unbatched) chain pays for ``init`` only when an earlier
    sub-kernel moved. Under ``vmap`` (``sample_chains``) the predicate is batched and ``cond``
    becomes a select that evaluates both branches: every step then pays one ``init`` per
    sub-kernel.
    """

    def reinit(_):
        new = kernel.init(position)
        # init may return weakly typed leaves; both cond branches must have the carried types.
        return jax.tree.map(lambda n, s: jnp.asarray(n, jnp.result_type(s)), new, state)

    return jax.lax.cond(
        _same_position(_state_position(state, index), position),
        lambda _: state,
        reinit,
        None,
    )


def cycle(*kernels: Kernel) -> Kernel:
    """One step of each of ``kernels`` in turn, passing the position along: T = T_1 T_2 ⋯ T_n.

    The state is ``CycleState(position, kernel_states)``. Before sub-kernel k steps, its own
    state is re-initialised with ``kernels[k].init(position)`` when the position differs from
    the one it left (another sub-kernel moved the chain), so its cached log-density, gradient
    or importance weight is that of the current position. Cost: for one unbatched chain, one
    ``init`` (one log-density evaluation; its gradient too for HMC; a flow inverse pass for a
    flow proposal) per sub-kernel whose position changed; under ``vmap``, as in
    ``sample_chains``, one ``init`` per sub-kernel per step whatever happened (a batched
    ``cond`` evaluates both branches). Parts of a sub-kernel's state that are not a function of
    the position are reset by that ``init``, so a sub-kernel must not rely on them across steps.

    The same kernel may appear several times (``cycle(imh, rw, rw, rw)``: one global move per
    three local ones); each occurrence keeps a state of its own.

    Args:
      kernels: one or more ``Kernel``s on the same position space whose states have a
        ``position`` field (every kernel in ``nflows_jax.sampling`` has one).

    Returns:
      ``Kernel(init, step, transition)``. ``step(key, state) -> (state, infos)`` where ``infos``
      is a tuple of the sub-kernels' infos in cycle order; sub-kernel k receives
      ``jax.random.split(key, n)[k]``. ``transition`` is present when every sub-kernel has one:
      the row of ``T_1 ⋯ T_n`` on the candidates, which must be closed under every sub-kernel
      (an (S, S) matrix per sub-kernel after the first is built for each row: small spaces only).
    """
    if not kernels:
        raise ValueError("cycle() needs at least one kernel")
    for index, kernel in enumerate(kernels):
        if not isinstance(kernel, Kernel):
            raise ValueError(
                f"cycle: argument {index} must be a nflows_jax.sampling.base.Kernel, got "
                f"{type(kernel).__name__}"
            )

    def init(position: Position) -> CycleState:
        return CycleState(position, tuple(kernel.init(position) for kernel in kernels))

    def step(key: PRNGKey, state: CycleState) -> tuple[CycleState, tuple]:
        if len(state.kernel_states) != len(kernels):
            raise ValueError(
                f"cycle of {len(kernels)} kernels got a state with {len(state.kernel_states)} "
                "sub-states; build it with this cycle's init"
            )
        keys = jax.random.split(key, len(kernels))
        position = state.position
        new_states, infos = [], []
        for index, (kernel, sub_state) in enumerate(zip(kernels, state.kernel_states, strict=True)):
            sub_state = _at_position(kernel, sub_state, position, index)
            sub_state, info = kernel.step(keys[index], sub_state)
            position = _state_position(sub_state, index)
            new_states.append(sub_state)
            infos.append(info)
        return CycleState(position, tuple(new_states)), tuple(infos)

    transition = None
    if all(kernel.transition is not None for kernel in kernels):

        def transition(position: Position, candidates: Array) -> Array:
            row = kernels[0].transition(position, candidates)
            for kernel in kernels[1:]:
                matrix = jax.vmap(kernel.transition, in_axes=(0, None))(candidates, candidates)
                row = row @ matrix
            return row

    return Kernel(init, step, transition)

"""Metropolis–Hastings kernels: general MH, random-walk MH and independence MH.

Every kernel follows ``nflows_jax.sampling.base.Kernel``: pure single-chain functions, the
current log-density cached in the state so that a step costs one log-density evaluation::

    kernel = rwmh(logdensity_fn, scale=0.5)
    state = kernel.init(jnp.zeros(2))
    state, info = kernel.step(key, state)        # info.acceptance_prob, info.accepted

A position is one chain's: an array of any shape or a pytree (floating for ``rwmh``).

The Hastings correction is never optional. ``mh`` and ``independence_mh`` take the proposal's
log-density as a required argument and always use it; only ``rwmh``, whose proposal is symmetric
by construction, leaves the q terms out (they cancel exactly). For comparison, blackjax's
``irmh`` (independent Metropolis) takes ``proposal_logdensity_fn`` as an optional argument and
when it is left out silently drops q from the ratio; the chain then targets π·q, not π.

Non-finite log-densities: a NaN (from a proposal outside the target's domain, an overflow in a
user's energy, ...) is read as −inf, so a NaN proposal is never accepted and a chain that starts
at a NaN point leaves it at the first proposal with a finite log-density.

Kernels whose proposal can be enumerated (``mh``, ``independence_mh`` on discrete spaces) also
provide ``transition(position, candidates) -> probs``, the exact row of the transition matrix,
computed with the same acceptance function the step uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nflows_jax.sampling.base import (
    Array,
    Kernel,
    LogDensityFn,
    Position,
    PRNGKey,
    normal_and_uniform,
)
from nflows_jax.sampling.checks import (
    check_positive_finite,
    check_scalar_logdensity,
    ravel_position,
    scalar_logdensity,
)

__all__ = [
    "IndependenceMHState",
    "MHInfo",
    "MHState",
    "independence_mh",
    "mh",
    "rwmh",
]


class MHState(NamedTuple):
    """``position``: the chain's current point; ``logdensity``: log π(position), a scalar."""

    position: Position
    logdensity: Array


class IndependenceMHState(NamedTuple):
    """As ``MHState`` plus ``log_weight`` = log π(position) − log q(position), cached so a step
    evaluates q only at the proposal."""

    position: Position
    logdensity: Array
    log_weight: Array


class MHInfo(NamedTuple):
    """``acceptance_prob``: min(1, Hastings ratio), a scalar in [0, 1]; ``accepted``: bool."""

    acceptance_prob: Array
    accepted: Array


# --------------------------------------------------------------------------------------------
# The acceptance rule, shared by every step and every ``transition`` in this module.


def _nan_to_neg_inf(log_value: Array) -> Array:
    """Read a NaN log-density (or log-ratio) as −inf: a point we can never move to."""
    return jnp.where(jnp.isnan(log_value), -jnp.inf, log_value)


def _acceptance_probability(log_ratio: Array) -> Array:
    """min(1, exp(log_ratio)); NaN ratios (e.g. −inf − (−inf)) give 0, never an acceptance.

    A NaN proposed log-density makes the ratio NaN, so this is the one place NaNs need to be
    caught during a step: the proposal is then rejected and its NaN is never stored. (Only
    ``init`` sanitises too, for a chain started at a NaN point.)
    """
    return jnp.exp(jnp.minimum(_nan_to_neg_inf(log_ratio), 0.0))


def _accept_or_reject(
    state: NamedTuple, proposed_state: NamedTuple, acceptance_prob: Array, uniform: Array
) -> tuple[NamedTuple, MHInfo]:
    """Keep ``proposed_state`` with probability ``acceptance_prob`` using a U[0, 1) draw.

    ``uniform < acceptance_prob`` holds with probability exactly ``acceptance_prob`` and is
    never true when it is 0, so a rejected-for-sure proposal cannot slip through.
    """
    accepted = uniform < acceptance_prob
    new_state = jax.tree.map(lambda new, old: jnp.where(accepted, new, old), proposed_state, state)
    return new_state, MHInfo(acceptance_prob=acceptance_prob, accepted=accepted)


def _same_position(a: Position, b: Position) -> Array:
    """True where every leaf of ``a`` equals the matching leaf of ``b`` (a scalar bool)."""
    equal_leaves = jax.tree.map(lambda x, y: jnp.all(x == y), a, b)
    return jnp.all(jnp.stack(jax.tree.leaves(equal_leaves)))


def _row_from_moves(position: Position, candidates: Position, move_prob_fn: Callable) -> Array:
    """A transition-matrix row from ``move_prob_fn(candidate) = q(candidate|x)·α(x→candidate)``.

    Off the diagonal the probability of moving to a candidate is proposing it and accepting it;
    the diagonal collects everything else (proposals of ``position`` itself and rejections), so
    it is 1 − Σ off-diagonal. ``candidates`` must hold ``position`` and every point the chain
    can move to from it (q·α > 0); proposals outside the candidates are then always rejected
    (π = 0 there, e.g. off the edge of a grid) and staying is the right place for their mass.
    """
    is_current = jax.vmap(lambda c: _same_position(c, position))(candidates)
    moves = jnp.where(is_current, 0.0, jax.vmap(move_prob_fn)(candidates))
    # Rounding can leave 1 − Σ a hair below 0 when the chain almost surely moves.
    stay = jnp.maximum(1.0 - jnp.sum(moves), 0.0)
    return jnp.where(is_current, stay, moves)


# --------------------------------------------------------------------------------------------
# General Metropolis–Hastings.


def mh(
    logdensity_fn: LogDensityFn,
    proposal_sample: Callable[[PRNGKey, Position], Position],
    proposal_logdensity: Callable[[Position, Position], Array],
) -> Kernel:
    """Metropolis–Hastings with an arbitrary proposal q(x′ | x).

    The acceptance probability is min(1, π(x′) q(x | x′) / (π(x) q(x′ | x))); the Hastings
    factor q(x | x′) / q(x′ | x) is always applied (pass a symmetric proposal and it is 1, at the
    cost of two q evaluations per step; ``rwmh`` skips them when symmetry holds by construction).

    Args:
      logdensity_fn: unnormalised log π(x) for one position -> scalar.
      proposal_sample: ``proposal_sample(key, position) -> proposed`` (same structure/shape).
      proposal_logdensity: ``proposal_logdensity(proposed, position)`` = log q(proposed |
        position), a scalar. It must be normalised over ``proposed`` when ``transition`` is used.

    Returns:
      ``Kernel(init, step, transition)``. ``transition(position, candidates)`` with candidates
      ``(S, *event)`` gives the exact probabilities (S,) of moving from ``position`` to each
      candidate; candidates must include ``position`` and every point the chain can move to
      (proposals outside them must have π = 0, so they are rejected).

    A non-scalar output of ``logdensity_fn`` or ``proposal_logdensity`` raises a ValueError at
    trace time.
    """
    logdensity_fn = scalar_logdensity(logdensity_fn, "mh")
    proposal_logdensity = scalar_logdensity(proposal_logdensity, "mh", "proposal_logdensity")

    def init(position: Position) -> MHState:
        return MHState(position, _nan_to_neg_inf(logdensity_fn(position)))

    def log_hastings_ratio(position, logdensity, proposed, proposed_logdensity):
        forward = proposal_logdensity(proposed, position)
        backward = proposal_logdensity(position, proposed)
        return proposed_logdensity - logdensity + backward - forward

    def step(key: PRNGKey, state: MHState) -> tuple[MHState, MHInfo]:
        # A general user proposal consumes a key of its own; the split is the price of that.
        proposal_key, uniform_key = jax.random.split(key)
        proposed = proposal_sample(proposal_key, state.position)
        proposed_logdensity = logdensity_fn(proposed)
        log_ratio = log_hastings_ratio(
            state.position, state.logdensity, proposed, proposed_logdensity
        )
        uniform = jax.random.uniform(uniform_key, dtype=jnp.result_type(float))
        proposed_state = MHState(proposed, proposed_logdensity)
        return _accept_or_reject(state, proposed_state, _acceptance_probability(log_ratio), uniform)

    def transition(position: Position, candidates: Position) -> Array:
        logdensity = _nan_to_neg_inf(logdensity_fn(position))

        def move_prob(candidate):
            candidate_logdensity = logdensity_fn(candidate)
            log_ratio = log_hastings_ratio(position, logdensity, candidate, candidate_logdensity)
            proposal_prob = jnp.exp(proposal_logdensity(candidate, position))
            return proposal_prob * _acceptance_probability(log_ratio)

        return _row_from_moves(position, candidates, move_prob)

    return Kernel(init=init, step=step, transition=transition)


# --------------------------------------------------------------------------------------------
# Random-walk Metropolis.


def _is_array_like(value) -> bool:
    return isinstance(value, (int, float, np.ndarray, np.generic, jax.Array))


def _flat_scale(scale, position: Position) -> Array:
    """``scale`` broadcast to the flattened position: (total number of coordinates,).

    ``scale`` is a scalar, an array that broadcasts to an array position's shape, or a pytree
    with the position's structure whose leaves broadcast to the position's leaves.
    """
    leaves = jax.tree.leaves(position)
    if _is_array_like(scale):
        scale = jnp.asarray(scale)
        if len(leaves) > 1 and scale.ndim > 0:
            raise ValueError(
                f"scale has shape {scale.shape} but the position is a pytree of {len(leaves)} "
                "arrays; pass a scalar or a pytree of scales with the position's structure"
            )
        scale = jax.tree.map(lambda _: scale, position)
    try:
        scale = jax.tree.map(
            lambda s, p: jnp.broadcast_to(jnp.asarray(s), jnp.shape(p)).astype(jnp.result_type(p)),
            scale,
            position,
        )
    except ValueError as err:
        shapes = jax.tree.map(jnp.shape, position)
        raise ValueError(
            f"scale does not broadcast to the position's shape(s) {shapes}: {err}"
        ) from None
    return ravel_position(scale, "rwmh (scale)")[0]


def _check_floating(position: Position) -> None:
    for leaf in jax.tree.leaves(position):
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(
                f"rwmh needs floating-point positions, got dtype {jnp.result_type(leaf)}; for "
                "a walk on integers pass a discrete proposal to `mh`"
            )


def rwmh(
    logdensity_fn: LogDensityFn,
    scale: float | Array,
    noise: Literal["gaussian", "uniform"] = "gaussian",
) -> Kernel:
    """Random-walk Metropolis: x′ = x + scale · ε, accepted with probability min(1, π(x′)/π(x)).

    The proposal is symmetric, so the q terms cancel and are not evaluated. This is the sampler
    for energy-based models (log π = −E) and the benchmark kernel: one step costs one
    log-density evaluation and ONE random draw (``normal_and_uniform``: the noise and the
    acceptance uniform from a single key, no per-chain key split).

    Args:
      logdensity_fn: unnormalised log π(x) for one position -> scalar (a non-scalar output
        raises a ValueError at trace time).
      scale: step size; a scalar, an array broadcasting to the position's shape (per-dimension
        scales), or a pytree matching a pytree position. Every entry must be positive and
        finite (checked at construction when concrete; a zero scale would freeze the chain
        while reporting 100 % acceptance).
      noise: ``"gaussian"``: ε ~ N(0, I); ``"uniform"``: ε ~ U[−1, 1] per coordinate, i.e. steps
        uniform on [−scale, scale].

    Returns:
      ``Kernel(init, step)``; positions must be floating point (an array or a pytree of arrays).
    """
    if noise not in ("gaussian", "uniform"):
        raise ValueError(f"noise must be 'gaussian' or 'uniform', got {noise!r}")
    check_positive_finite(scale, "scale", "rwmh")
    logdensity_fn = scalar_logdensity(logdensity_fn, "rwmh")

    def init(position: Position) -> MHState:
        _check_floating(position)
        return MHState(position, _nan_to_neg_inf(logdensity_fn(position)))

    def draw_noise(key: PRNGKey, size: int, dtype) -> tuple[Array, Array]:
        if noise == "gaussian":
            return normal_and_uniform(key, (size,), dtype)
        # One draw: `size` uniforms for the step, one more for the acceptance test.
        uniforms = jax.random.uniform(key, (size + 1,), dtype)
        return 2.0 * uniforms[:size] - 1.0, uniforms[size]

    def step(key: PRNGKey, state: MHState) -> tuple[MHState, MHInfo]:
        _check_floating(state.position)
        flat_position, unravel = ravel_position(state.position, "rwmh.step")
        flat_scale = _flat_scale(scale, state.position).astype(flat_position.dtype)
        steps, uniform = draw_noise(key, flat_position.size, flat_position.dtype)
        proposed = unravel(flat_position + flat_scale * steps)
        proposed_logdensity = logdensity_fn(proposed)
        acceptance_prob = _acceptance_probability(proposed_logdensity - state.logdensity)
        proposed_state = MHState(proposed, proposed_logdensity)
        return _accept_or_reject(state, proposed_state, acceptance_prob, uniform)

    return Kernel(init=init, step=step)


# --------------------------------------------------------------------------------------------
# Independence Metropolis–Hastings.


def independence_mh(
    logdensity_fn: LogDensityFn,
    proposal_sample: Callable[[PRNGKey], Position],
    proposal_logdensity: Callable[[Position], Array],
    proposal_sample_and_logdensity: Callable[[PRNGKey], tuple[Position, Array]] | None = None,
) -> Kernel:
    """Independence Metropolis–Hastings: proposals x′ ~ q drawn independently of x.

    With importance weights w(x) = π(x) / q(x) the acceptance probability is
    min(1, w(x′) / w(x)); log w of the current state is cached, so a step evaluates π and q once
    each, at the proposal. With q = π every proposal is accepted and the chain draws exact
    independent samples; the closer q is to π, the higher the acceptance.

    A trained normalizing flow (``nflows_jax.flows``) makes a good proposal. One chain, one
    sample per step::

        kernel = independence_mh(
            target_logdensity,
            proposal_sample=lambda key: flows.sample(flow, params, key, 1)[0],
            proposal_logdensity=lambda x: flows.log_prob(flow, params, x[None])[0],
            # optional: both from one forward pass instead of a forward plus an inverse pass
            proposal_sample_and_logdensity=lambda key: jax.tree.map(
                lambda a: a[0], flows.sample_and_log_prob(flow, params, key, 1)),
        )

    Args:
      logdensity_fn: unnormalised log π(x) for one position -> scalar.
      proposal_sample: ``proposal_sample(key) -> position``.
      proposal_logdensity: ``proposal_logdensity(position)`` = log q(position), a scalar; it
        need not be normalised for sampling, only for ``transition``.
      proposal_sample_and_logdensity: optional ``key -> (position, log q(position))``; when
        given the step uses it instead of the two functions above (must agree with them).

    Returns:
      ``Kernel(init, step, transition)``; ``transition`` as in ``mh``, candidates must include
      the position and every point of the proposal's support where π > 0. Non-scalar
      log-densities (of π or q) raise a ValueError at trace time.
    """
    who = "independence_mh"
    logdensity_fn = scalar_logdensity(logdensity_fn, who)
    proposal_logdensity = scalar_logdensity(proposal_logdensity, who, "proposal_logdensity")

    def init(position: Position) -> IndependenceMHState:
        logdensity = _nan_to_neg_inf(logdensity_fn(position))
        log_weight = logdensity - proposal_logdensity(position)
        return IndependenceMHState(position, logdensity, _nan_to_neg_inf(log_weight))

    def propose(key: PRNGKey) -> tuple[Position, Array]:
        if proposal_sample_and_logdensity is not None:
            proposed, log_q = proposal_sample_and_logdensity(key)
            what = "proposal_sample_and_logdensity's log-density"
            return proposed, check_scalar_logdensity(log_q, who, what)
        proposed = proposal_sample(key)
        return proposed, proposal_logdensity(proposed)

    def step(key: PRNGKey, state: IndependenceMHState) -> tuple[IndependenceMHState, MHInfo]:
        proposal_key, uniform_key = jax.random.split(key)
        proposed, proposed_log_q = propose(proposal_key)
        proposed_logdensity = logdensity_fn(proposed)
        proposed_log_weight = proposed_logdensity - proposed_log_q
        acceptance_prob = _acceptance_probability(proposed_log_weight - state.log_weight)
        uniform = jax.random.uniform(uniform_key, dtype=jnp.result_type(float))
        proposed_state = IndependenceMHState(proposed, proposed_logdensity, proposed_log_weight)
        return _accept_or_reject(state, proposed_state, acceptance_prob, uniform)

    def transition(position: Position, candidates: Position) -> Array:
        log_weight = init(position).log_weight

        def move_prob(candidate):
            candidate_log_q = proposal_logdensity(candidate)
            candidate_log_weight = logdensity_fn(candidate) - candidate_log_q
            acceptance_prob = _acceptance_probability(candidate_log_weight - log_weight)
            return jnp.exp(candidate_log_q) * acceptance_prob

        return _row_from_moves(position, candidates, move_prob)

    return Kernel(init=init, step=step, transition=transition)

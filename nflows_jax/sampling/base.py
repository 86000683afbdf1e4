"""The kernel contract shared by every MCMC method.

A kernel is a NamedTuple of pure functions acting on ONE chain; ``sample_chains`` vmaps it over
chains and scans it over steps::

    kernel = rwmh(logdensity_fn, scale=0.5)
    state = kernel.init(position)            # position: (D,) (or any pytree), unbatched
    state, info = kernel.step(key, state)    # info.acceptance_prob, info.accepted

Every kernel checks at trace time that its log-density returns a scalar
(``checks.scalar_logdensity``: a (D,) result would otherwise make a Metropolis test per coordinate
and sample the wrong law) and ravels pytree positions the same way (``checks.ravel_position``, a
no-op for (D,) arrays), keeping ``state.position`` in the user's structure.

States and infos are NamedTuples of arrays. ``transition`` is optional: kernels on small discrete
spaces provide it so that ``markov.transition_matrix(kernel, states)`` can build the exact
transition matrix and tests can prove the kernel leaves its target invariant.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.extend.random
import jax.numpy as jnp

Array = jax.Array
PRNGKey = jax.Array
Position = Any  # an array (D,) or a pytree of arrays, for one chain
LogDensityFn = Callable[[Position], Array]


class Kernel(NamedTuple):
    """An MCMC transition kernel for a single chain.

    Attributes:
      init: ``init(position) -> state``.
      step: ``step(key, state) -> (state, info)``; pure and jit/vmap-compatible.
      transition: optional, discrete spaces only: ``transition(position, candidates) -> probs``
        where ``candidates`` is ``(S, *event)`` and ``probs`` (S,) are the probabilities of moving
        from ``position`` to each candidate in one step (the row of the transition matrix).
    """

    init: Callable[[Position], Any]
    step: Callable[[PRNGKey, Any], tuple[Any, Any]]
    transition: Callable[[Position, Array], Array] | None = None


def _threefry_key_words(key: PRNGKey) -> Array | None:
    """The (2,) uint32 words of a threefry key (legacy uint32 or typed), else None."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if jax.random.key_impl(key) != jax.random.key_impl(jax.random.key(0)):
            return None  # another PRNG implementation: leave the draw to jax.random
        return jax.random.key_data(key)
    return key if key.shape == (2,) and key.dtype == jnp.uint32 else None


def uniform(key: PRNGKey, size: int) -> Array:
    """``size`` U[0, 1) float32 draws from ``ceil(size / 2)`` threefry blocks: (size,).

    With JAX's default ``jax_threefry_partitionable`` mode, ``jax.random.uniform`` hashes one
    threefry-2x32 block per 32-bit word. Both output words of a block are pseudo-random (threefry
    in counter mode, as Random123 uses it), so hashing the counters 0..size-1 directly gives
    draws of the same quality for half the hashing, which is most of an MCMC step's cost on cheap
    targets. Keys of other PRNG implementations fall back to ``jax.random.uniform``.
    """
    words = _threefry_key_words(key)
    if words is None:
        return jax.random.uniform(key, (size,), jnp.float32)
    bits = jax.extend.random.threefry_2x32(words, jnp.arange(size, dtype=jnp.uint32))
    # 23 random mantissa bits under a zero exponent give a float in [1, 2); subtract 1.
    one_to_two = jax.lax.bitcast_convert_type((bits >> 9) | jnp.uint32(0x3F800000), jnp.float32)
    return one_to_two - 1.0


def normal_and_uniform(
    key: PRNGKey, shape: tuple[int, ...], dtype=jnp.float32
) -> tuple[Array, Array]:
    """A standard-normal array of ``shape`` and one U[0, 1) scalar from a single draw.

    MH-type kernels need a Gaussian proposal and an acceptance uniform. Splitting the key for them
    runs the threefry hash again per chain per step, which for cheap targets costs more than the
    target itself; one ``uniform`` draw of size ``prod(shape) + 1`` serves both, with the normals
    made by the inverse CDF, ``sqrt(2) * erfinv(2u - 1)``, as ``jax.random.normal`` makes them.
    The draws are made in float32 and cast to ``dtype``.
    """
    size = math.prod(shape)
    u = uniform(key, size + 1)
    # 2u - 1 lies in [-1, 1); -1 would map to -inf, so move it to the next float inward.
    centred = jnp.maximum(2.0 * u[:size] - 1.0, jnp.nextafter(jnp.float32(-1.0), 0.0))
    normal = jnp.sqrt(jnp.float32(2.0)) * jax.scipy.special.erfinv(centred)
    return normal.reshape(shape).astype(dtype), u[size].astype(dtype)

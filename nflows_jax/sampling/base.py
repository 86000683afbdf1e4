"""The kernel contract shared by every MCMC method.

A kernel is a NamedTuple of pure functions acting on ONE chain; ``sample_chains`` vmaps it over
chains and scans it over steps::

    kernel = rwmh(logdensity_fn, scale=0.5)
    state = kernel.init(position)            # position: (D,) (or any pytree), unbatched
    state, info = kernel.step(key, state)    # info.acceptance_prob, info.accepted

States and infos are NamedTuples of arrays. ``transition`` is optional: kernels on small discrete
spaces provide it so that ``markov.transition_matrix(kernel, states)`` can build the exact
transition matrix and tests can prove the kernel leaves its target invariant.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
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
        where ``candidates`` is (S, *event) and ``probs`` (S,) are the probabilities of moving from
        ``position`` to each candidate in one step (the row of the transition matrix).
    """

    init: Callable[[Position], Any]
    step: Callable[[PRNGKey, Any], tuple[Any, Any]]
    transition: Callable[[Position, Array], Array] | None = None


def normal_and_uniform(
    key: PRNGKey, shape: tuple[int, ...], dtype=jnp.float32
) -> tuple[Array, Array]:
    """A standard-normal array of ``shape`` and one U[0, 1) scalar from a single draw.

    MH-type kernels need a Gaussian proposal and an acceptance uniform. Splitting the key for them
    runs the threefry hash once more per chain per step, which for cheap targets costs more than
    the target itself; one ``uniform`` call of size ``prod(shape) + 1`` gives the same random
    numbers a batched draw would, with the normals made as ``jax.random.normal`` makes them
    (the inverse CDF, ``sqrt(2) * erfinv(2u - 1)``).
    """
    size = math.prod(shape)
    u = jax.random.uniform(key, (size + 1,), dtype)
    # 2u - 1 lies in [-1, 1); -1 would map to -inf, so move it to the next float inward.
    centred = jnp.maximum(2.0 * u[:size] - 1.0, jnp.nextafter(jnp.array(-1.0, dtype), 0.0))
    normal = jnp.sqrt(jnp.array(2.0, dtype)) * jax.scipy.special.erfinv(centred)
    return normal.reshape(shape), u[size]

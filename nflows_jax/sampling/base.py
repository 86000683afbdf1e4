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

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

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

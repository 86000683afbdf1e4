"""Bijectors: pure ``(init, forward, inverse)`` triples with explicit log-determinants."""

from nflows_jax.bijectors.base import (
    Bijector,
    chain,
    invert,
    permutation,
    random_permutation,
    repeat,
    reverse_permutation,
    sum_event,
)

__all__ = [
    "Bijector",
    "chain",
    "invert",
    "permutation",
    "random_permutation",
    "repeat",
    "reverse_permutation",
    "sum_event",
]

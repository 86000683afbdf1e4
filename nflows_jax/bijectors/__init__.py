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
from nflows_jax.bijectors.coupling import additive_coupling, affine_coupling
from nflows_jax.bijectors.elementwise import elementwise_affine, logit, sigmoid, tanh
from nflows_jax.bijectors.planar import planar, radial

__all__ = [
    "Bijector",
    "additive_coupling",
    "affine_coupling",
    "chain",
    "elementwise_affine",
    "invert",
    "logit",
    "permutation",
    "planar",
    "radial",
    "random_permutation",
    "repeat",
    "reverse_permutation",
    "sigmoid",
    "sum_event",
    "tanh",
]

"""Bijectors: pure ``(init, forward, inverse)`` triples with explicit log-determinants."""

from nflows_jax.bijectors.architectures import glow, realnvp_multiscale
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
from nflows_jax.bijectors.coupling import additive_coupling, affine_coupling, bounded_log_scale
from nflows_jax.bijectors.elementwise import elementwise_affine, logit, sigmoid, tanh
from nflows_jax.bijectors.glow import actnorm, invertible_conv1x1, invertible_conv1x1_lu, squeeze
from nflows_jax.bijectors.image_coupling import image_additive_coupling, image_affine_coupling
from nflows_jax.bijectors.multiscale import on_channels
from nflows_jax.bijectors.planar import planar, radial

__all__ = [
    "Bijector",
    "actnorm",
    "additive_coupling",
    "affine_coupling",
    "bounded_log_scale",
    "chain",
    "elementwise_affine",
    "glow",
    "image_additive_coupling",
    "image_affine_coupling",
    "invert",
    "invertible_conv1x1",
    "invertible_conv1x1_lu",
    "logit",
    "on_channels",
    "permutation",
    "planar",
    "radial",
    "random_permutation",
    "realnvp_multiscale",
    "repeat",
    "reverse_permutation",
    "sigmoid",
    "squeeze",
    "sum_event",
    "tanh",
]

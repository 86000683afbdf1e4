"""Bijectors: pure ``(init, forward, inverse)`` triples with explicit log-determinants.

Arrays are ``(B, *event)`` with one leading batch axis and log-dets (B,); ``forward`` is base ->
data (sampling), ``inverse`` data -> base (density). The contract is in
:mod:`nflows_jax.bijectors.base`.
"""

from nflows_jax.bijectors.architectures import glow, realnvp_multiscale
from nflows_jax.bijectors.autoregressive import inverse_autoregressive, masked_autoregressive
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
from nflows_jax.bijectors.coupling import (
    additive_coupling,
    affine_coupling,
    bounded_log_scale,
    coupling_layer,
    spline_coupling,
)
from nflows_jax.bijectors.elementwise import elementwise_affine, logit, sigmoid, tanh
from nflows_jax.bijectors.glow import actnorm, invertible_conv1x1, invertible_conv1x1_lu, squeeze
from nflows_jax.bijectors.image_coupling import (
    image_additive_coupling,
    image_affine_coupling,
    image_coupling_layer,
    image_spline_coupling,
)
from nflows_jax.bijectors.multiscale import on_channels
from nflows_jax.bijectors.planar import planar, radial
from nflows_jax.bijectors.spline import rational_quadratic_spline
from nflows_jax.bijectors.transformers import Transformer, affine_transformer

__all__ = [
    "Bijector",
    "Transformer",
    "actnorm",
    "additive_coupling",
    "affine_coupling",
    "affine_transformer",
    "bounded_log_scale",
    "chain",
    "coupling_layer",
    "elementwise_affine",
    "glow",
    "image_additive_coupling",
    "image_affine_coupling",
    "image_coupling_layer",
    "image_spline_coupling",
    "inverse_autoregressive",
    "invert",
    "invertible_conv1x1",
    "invertible_conv1x1_lu",
    "logit",
    "masked_autoregressive",
    "on_channels",
    "permutation",
    "planar",
    "radial",
    "random_permutation",
    "rational_quadratic_spline",
    "realnvp_multiscale",
    "repeat",
    "reverse_permutation",
    "sigmoid",
    "spline_coupling",
    "squeeze",
    "sum_event",
    "tanh",
]

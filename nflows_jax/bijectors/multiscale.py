"""Multi-scale structure: apply a bijector to some channels and pass the others through.

Glow and multi-scale RealNVP factor out half of the channels after each level: those go straight
to the latent, and the rest goes on through the next, coarser levels. Written as one bijector
(the whole model stays one bijector from data to a standard-normal latent of the data's shape),
a level is "transform all channels, then let the remaining levels transform only the first
channels"::

    level = chain(inner_on_first_half, steps)   # base -> data: inner first, then the steps
    inner_on_first_half = on_channels(inner, num_channels=C // 2)

where the factored-out half is left alone by ``on_channels``. Glow's learned prior on the factored
half (``z2 | z1 ~ N(μ(z1), σ(z1)²)``) is a channel-mask affine coupling conditioned on the first
half, placed next to ``on_channels``, so ``log_prob`` needs no special case.

Arrays are NHWC, ``(B, H, W, C)``.
"""

from __future__ import annotations

import jax.numpy as jnp

from nflows_jax.bijectors.base import Array, Bijector, Params, PRNGKey, check_batched
from nflows_jax.formatting import show


def _check_channels(x: Array, num_channels: int, name: str) -> None:
    check_batched(x, name)
    if x.ndim < 2 or x.shape[-1] <= num_channels:
        raise ValueError(
            f"on_channels(num_channels={show(num_channels)}) needs {name} with more than "
            f"{show(num_channels)} channels on its last axis; got shape {x.shape}"
        )


def on_channels(inner: Bijector, num_channels: int) -> Bijector:
    """``inner`` on the first ``num_channels`` channels; the remaining channels pass through.

    Shapes: x (B, ..., C) with C > ``num_channels``; ``inner`` sees (B, ..., num_channels).
    ``forward`` and ``inverse`` are ``inner``'s on those channels, and so is each log-det (B,):
    the identity on the rest contributes 0. A ``context`` is passed to ``inner`` unchanged.
    """
    if not isinstance(num_channels, int) or num_channels < 1:
        raise ValueError(
            f"on_channels needs an integer num_channels >= 1, got {show(num_channels)}"
        )

    def split(x: Array) -> tuple[Array, Array]:
        return x[..., :num_channels], x[..., num_channels:]

    def init(key: PRNGKey, x: Array, context: Array | None = None) -> Params:
        _check_channels(x, num_channels, "x")
        return inner.init(key, split(x)[0], context)

    def apply(transform, params: Params, x: Array, context: Array | None, name: str):
        _check_channels(x, num_channels, name)
        first, rest = split(x)
        first, log_det = transform(params, first, context)
        return jnp.concatenate([first, rest.astype(first.dtype)], axis=-1), log_det

    def forward(params: Params, x: Array, context: Array | None = None):
        return apply(inner.forward, params, x, context, "x")

    def inverse(params: Params, y: Array, context: Array | None = None):
        return apply(inner.inverse, params, y, context, "y")

    return Bijector(init, forward, inverse)


__all__ = ["on_channels"]

"""Elementwise transformers: the monotone maps that coupling layers and MAF/IAF share.

A conditioner (an MLP, a ConvResNet, a MADE) outputs ``P`` raw numbers ``theta`` per entry it
changes; a :class:`Transformer` turns them into a strictly increasing map of that entry::

    y, log_dy_dx = transformer.forward(x, theta)     # x: (*S), theta: (*S, P) -> (*S), (*S)
    x, log_dx_dy = transformer.inverse(y, theta)

The log-derivatives are returned per entry, not summed: the caller knows which axes are its
event axes (a coupling layer sums over the changed entries, an image layer over H, W, C).

Every transformer is the identity at ``theta = 0``, so a layer whose conditioner ends in a
zero-initialised Dense starts as the identity. Coupling layers and MAF/IAF take any transformer:
:func:`affine_transformer` here, :func:`nflows_jax.bijectors.spline.rational_quadratic_spline`
for the neural-spline flows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from nflows_jax.formatting import show

Array = jax.Array


class Transformer(NamedTuple):
    """A strictly increasing elementwise bijection ``y = tau(x; theta)``.

    Attributes:
      params_per_entry: P, the size of ``theta``'s last axis.
      forward: ``forward(x, theta) -> (y, log dy/dx)``; ``x`` ``(*S)``, ``theta`` ``(*S, P)``;
        both outputs ``(*S)``. A bijector built on the transformer runs it in its own
        ``forward`` (base -> data).
      inverse: ``inverse(y, theta) -> (x, log dx/dy)``; the exact inverse of ``forward``.
      name: a short label for error messages and figures.
    """

    params_per_entry: int
    forward: Callable[[Array, Array], tuple[Array, Array]]
    inverse: Callable[[Array, Array], tuple[Array, Array]]
    name: str


def check_theta(transformer: Transformer, x: Array, theta: Array) -> None:
    """Raise a clear trace-time error unless ``theta`` has shape ``x.shape + (P,)``."""
    expected = (*jnp.shape(x), transformer.params_per_entry)
    if jnp.shape(theta) != expected:
        raise ValueError(
            f"{transformer.name} transformer needs theta of shape {expected} (x's shape plus "
            f"{transformer.params_per_entry} params per entry); got {jnp.shape(theta)}"
        )


def bounded_log_scale(raw: Array, max_log_scale: float) -> Array:
    """``max_log_scale · tanh(raw / max_log_scale)``: ``|s| < max_log_scale``, s ≈ raw near 0.

    The log-scale of every affine layer in the library, so one layer scales an entry by at most
    ``exp(±max_log_scale)``.
    """
    return max_log_scale * jnp.tanh(raw * (1.0 / max_log_scale))


def affine_transformer(max_log_scale: float = 5.0) -> Transformer:
    """``y = x · exp(s) + t`` with ``theta = (t, raw_s)`` and ``s = bounded_log_scale(raw_s)``.

    P = 2. ``forward`` is that map with ``log dy/dx = s``; ``inverse`` is ``(y - t) · exp(-s)``
    with log-derivative ``-s``.
    """
    if not max_log_scale > 0:
        raise ValueError(
            f"affine_transformer: max_log_scale must be > 0, got {show(max_log_scale)}"
        )

    def shift_and_log_scale(theta):
        return theta[..., 0], bounded_log_scale(theta[..., 1], max_log_scale)

    transformer: Transformer

    def forward(x, theta):
        check_theta(transformer, x, theta)
        shift, log_scale = shift_and_log_scale(theta)
        return x * jnp.exp(log_scale) + shift, log_scale

    def inverse(y, theta):
        check_theta(transformer, y, theta)
        shift, log_scale = shift_and_log_scale(theta)
        return (y - shift) * jnp.exp(-log_scale), -log_scale

    transformer = Transformer(2, forward, inverse, "affine")
    return transformer


__all__ = ["Transformer", "affine_transformer", "bounded_log_scale", "check_theta"]

"""Elementwise bijectors: learnable affine, sigmoid, logit and tanh.

All act on any event shape ``(B, *event)`` and sum their log-dets over the event axes, giving
(B,). Each formula below is the ``forward`` map (base -> data); ``inverse`` (data -> base) is
its inverse, with the negated log-det.

Domains. ``sigmoid``'s inverse (= ``logit``'s forward) needs inputs in the open interval (0, 1) and
``tanh``'s inverse needs (-1, 1). When the input is a concrete array (eager mode) an input outside
the open interval, an endpoint included, raises ``ValueError``. Under ``jit``/``vmap``/``grad`` the
values are tracers and cannot be inspected, so the input is instead clamped to the closest
representable values just inside the open interval before any ``log``: no NaN or inf appears, and
an endpoint maps to a large finite value (about ±17 for float32 sigmoid, ±9 for tanh) with a
correspondingly large but finite log-det. Check your data's range before jitting if that matters.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nflows_jax.bijectors.base import (
    Array,
    Bijector,
    Params,
    PRNGKey,
    check_batched,
    invert,
    no_params,
    sum_event,
)


class AffineParams(NamedTuple):
    """``y = x * exp(log_scale) + shift``; both fields have the event shape."""

    shift: Array
    log_scale: Array


def _check_open_interval(values: Array, low: float, high: float, where: str) -> None:
    """Raise ``ValueError`` if concrete ``values`` leave (low, high); tracers pass unchecked."""
    try:
        concrete = np.asarray(values)
    except jax.errors.TracerArrayConversionError:
        return  # traced (jit/vmap/grad): the caller clamps instead, see the module docstring
    inside = (concrete > low) & (concrete < high)  # NaN counts as outside
    if not np.all(inside):
        raise ValueError(
            f"{where} needs inputs in the open interval ({low:g}, {high:g}); got "
            f"{int(np.size(inside) - np.count_nonzero(inside))} value(s) outside it "
            f"(min {np.nanmin(concrete):.6g}, max {np.nanmax(concrete):.6g})"
        )


def _just_inside(dtype) -> tuple[float, float]:
    """The smallest positive normal number and the largest number below 1 in ``dtype``."""
    info = jnp.finfo(dtype)
    return float(info.tiny), 1.0 - float(info.epsneg)


def elementwise_affine() -> Bijector:
    """A learnable ``y = x * exp(log_scale) + shift`` with one shift/log-scale per event element.

    Params: ``AffineParams(shift, log_scale)``, each of the event shape, zero at init (identity).
    ``forward`` (base -> data) is the map above with log-det ``sum(log_scale)`` for every row;
    ``inverse`` is ``x = (y - shift) * exp(-log_scale)`` with log-det ``-sum(log_scale)``.
    """

    def init(key: PRNGKey, x: Array, context: Array | None = None) -> AffineParams:
        del key, context
        check_batched(x)
        zeros = jnp.zeros(x.shape[1:], x.dtype)
        return AffineParams(shift=zeros, log_scale=zeros)

    def check_event(params: AffineParams, x: Array) -> None:
        check_batched(x)
        if x.shape[1:] != params.shift.shape:
            raise ValueError(
                f"elementwise_affine initialised for event shape {params.shift.shape}; "
                f"got input of shape {x.shape}"
            )

    def forward(params: AffineParams, x: Array, context: Array | None = None):
        del context
        check_event(params, x)
        y = x * jnp.exp(params.log_scale) + params.shift
        log_det = jnp.broadcast_to(jnp.sum(params.log_scale), x.shape[:1])
        return y, log_det

    def inverse(params: AffineParams, y: Array, context: Array | None = None):
        del context
        check_event(params, y)
        x = (y - params.shift) * jnp.exp(-params.log_scale)
        log_det = jnp.broadcast_to(-jnp.sum(params.log_scale), y.shape[:1])
        return x, log_det

    return Bijector(init, forward, inverse)


def sigmoid() -> Bijector:
    """``forward`` is ``y = 1 / (1 + exp(-x))``: R -> (0, 1). No params.

    log sigmoid'(x) = log σ(x) + log σ(-x) = -softplus(-x) - softplus(x), stable for any x.
    The inverse (the logit) checks/clamps its input to (0, 1) as described in the module
    docstring.
    """

    def forward(params: Params, x: Array, context: Array | None = None):
        del params, context
        check_batched(x)
        log_det = sum_event(-jax.nn.softplus(-x) - jax.nn.softplus(x))
        return jax.nn.sigmoid(x), log_det

    def inverse(params: Params, y: Array, context: Array | None = None):
        del params, context
        check_batched(y, "y")
        _check_open_interval(y, 0.0, 1.0, "sigmoid inverse (= logit forward)")
        low, high = _just_inside(y.dtype)
        y = jnp.clip(y, low, high)
        log_y, log_one_minus_y = jnp.log(y), jnp.log1p(-y)
        return log_y - log_one_minus_y, sum_event(-log_y - log_one_minus_y)

    return Bijector(no_params, forward, inverse)


def logit() -> Bijector:
    """``y = log(x / (1 - x))``: (0, 1) -> R, the inverse of ``sigmoid()``. No params.

    Its forward checks/clamps the input to (0, 1) as described in the module docstring.
    """
    return invert(sigmoid())


def tanh() -> Bijector:
    """``forward`` is ``y = tanh(x)``: R -> (-1, 1). No params.

    log tanh'(x) = log(1 - tanh²x) = 2 (log 2 - x - softplus(-2x)), stable for any x.
    The inverse (``atanh``) checks/clamps its input to (-1, 1) as described in the module
    docstring.
    """

    def forward(params: Params, x: Array, context: Array | None = None):
        del params, context
        check_batched(x)
        log_det = sum_event(2.0 * (jnp.log(2.0) - x - jax.nn.softplus(-2.0 * x)))
        return jnp.tanh(x), log_det

    def inverse(params: Params, y: Array, context: Array | None = None):
        del params, context
        check_batched(y, "y")
        _check_open_interval(y, -1.0, 1.0, "tanh inverse")
        _, high = _just_inside(y.dtype)
        y = jnp.clip(y, -high, high)
        # atanh(y) = (log(1 + y) - log(1 - y)) / 2 and log(1 - y²) share the two log1p terms.
        log_one_plus_y, log_one_minus_y = jnp.log1p(y), jnp.log1p(-y)
        x = 0.5 * (log_one_plus_y - log_one_minus_y)
        return x, sum_event(-log_one_plus_y - log_one_minus_y)

    return Bijector(no_params, forward, inverse)


__all__ = ["AffineParams", "elementwise_affine", "logit", "sigmoid", "tanh"]

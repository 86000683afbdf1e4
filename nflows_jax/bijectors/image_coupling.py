"""Coupling layers on NHWC images (RealNVP's masks), with a convolutional ResNet conditioner.

:func:`image_coupling_layer` takes any elementwise
:class:`~nflows_jax.bijectors.transformers.Transformer`
(``image_affine_coupling`` and ``image_spline_coupling`` are it with the affine transformer and
the rational-quadratic spline).

The event of ``x`` (B, H, W, C) is split by a static boolean mask ``m`` into kept entries
(``m = 1``) and changed ones (``m = 0``). A :class:`~nflows_jax.nets.resnet.ConvResNet` sees the
masked image ``x · m`` and outputs, at every entry, a shift ``t`` (and a log-scale ``s``); only
the changed entries use them::

    additive:  y = x·m + (1 - m)·(x + t(x·m))               log-det = 0 exactly
    affine:    y = x·m + (1 - m)·(x·exp(s(x·m)) + t(x·m))   log-det = sum over m = 0 of s

These are the ``forward`` maps (base -> data); ``inverse`` (data -> base) evaluates the
conditioner at ``y·m = x·m`` and undoes the change of the ``m = 0`` entries, with the negated
log-det. Log-dets have shape (B,).

with ``s = max_log_scale * tanh(raw / max_log_scale)``, the bound of
``nflows_jax.bijectors.transformers.affine_transformer``. The blend is computed with ``jnp.where``
rather than arithmetic, so kept entries pass through bitwise (``x · 1 + 0`` would turn ``-0.0``
into ``0.0``) and their derivatives with respect to the changed entries are exactly zero.

Masks (RealNVP, Dinh et al. 2017, section 3.4):

* ``"channel"``: parity 0 keeps the first ``C // 2`` channels and changes the rest; parity 1
  keeps channels ``C // 2 ...`` and changes the first ``C // 2``, so a parity-0 layer followed by
  a parity-1 layer changes every channel (also for odd ``C``). Needs ``C >= 2``.
* ``"checkerboard"``: keeps the pixels with ``(h + w) % 2 == parity`` (all their channels).
  Needs at least two pixels.

The conditioner's output layer is zero-initialised, so a fresh layer is exactly the identity.
Its params take the dtype of the ``x`` given to ``init`` (float64 under ``jax_enable_x64``).
No context yet: passing one raises a ValueError rather than being silently ignored.

Params: the conditioner's flax params dict (``{"Conv_0": {"kernel", "bias"}, ...}``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from nflows_jax.bijectors.base import Array, Bijector, Params, PRNGKey, sum_event
from nflows_jax.bijectors.spline import rational_quadratic_spline
from nflows_jax.bijectors.transformers import Transformer, affine_transformer
from nflows_jax.formatting import show
from nflows_jax.nets.resnet import ConvResNet

MASKS = ("channel", "checkerboard")


def channel_mask(channels: int, parity: int) -> np.ndarray:
    """The kept entries of the channel mask, a static bool array of shape (1, 1, 1, C)."""
    kept = np.arange(channels) < channels // 2
    return (kept if parity == 0 else ~kept).reshape(1, 1, 1, channels)


def checkerboard_mask(height: int, width: int, parity: int) -> np.ndarray:
    """The kept pixels ``(h + w) % 2 == parity``, a static bool array of shape (1, H, W, 1)."""
    h, w = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return ((h + w) % 2 == parity).reshape(1, height, width, 1)


def _param_dtype(x: Array) -> jnp.dtype:
    """The input's floating dtype, else JAX's default float (integer or boolean images)."""
    dtype = jnp.result_type(x)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)


class _Conditioner(NamedTuple):
    """The masked ConvResNet of an image coupling layer and its trace-time checks."""

    init: Callable[[PRNGKey, Array], Params]  # (key, x) -> params
    apply: Callable[[Params, Array, np.ndarray], Array]  # (params, x, kept) -> (B, H, W, k·C)
    kept_mask: Callable[[Array, str, Array | None], np.ndarray]  # (x, name, context) -> mask


def _validate_config(layer: str, channels, hidden, num_blocks, mask, parity) -> None:
    """Raise a clear ValueError for a configuration no image coupling can be built from."""
    if mask not in MASKS:
        raise ValueError(f"{layer}: mask must be one of {MASKS}; got {show(mask)}")
    if isinstance(parity, bool) or parity not in (0, 1):
        raise ValueError(f"{layer}: parity must be 0 or 1; got {show(parity)}")
    minimum_channels = 2 if mask == "channel" else 1
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < minimum_channels:
        why = (
            " (the channel mask must keep at least one channel and change at least one; use "
            "mask='checkerboard' for a single channel)"
            if mask == "channel"
            else ""
        )
        raise ValueError(
            f"{layer}: channels must be an int >= {minimum_channels} for mask={mask!r}{why}; "
            f"got {show(channels)}"
        )
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise ValueError(f"{layer}: hidden must be an int >= 1; got {show(hidden)}")
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 0:
        raise ValueError(f"{layer}: num_blocks must be an int >= 0; got {show(num_blocks)}")


def _conditioner(
    layer: str,
    channels: int,
    hidden: int,
    num_blocks: int,
    mask: str,
    parity: int,
    outputs_per_channel: int,
) -> _Conditioner:
    _validate_config(layer, channels, hidden, num_blocks, mask, parity)

    def net(dtype) -> ConvResNet:
        # Only init reads param_dtype; apply computes in the promoted dtype of input and params.
        return ConvResNet(hidden, outputs_per_channel * channels, num_blocks, param_dtype=dtype)

    def kept_mask(x: Array, name: str, context: Array | None) -> np.ndarray:
        if context is not None:
            raise ValueError(
                f"{layer} does not take a context yet; got a context of shape "
                f"{jnp.shape(context)}. Call it with context=None."
            )
        if jnp.ndim(x) != 4 or jnp.shape(x)[-1] != channels:
            raise ValueError(
                f"{layer}(channels={channels}) needs NHWC {name} of shape "
                f"(batch, height, width, {channels}); got shape {jnp.shape(x)}"
            )
        height, width = x.shape[1:3]
        if mask == "channel":
            return channel_mask(channels, parity)
        if height * width < 2:
            raise ValueError(
                f"{layer}: the checkerboard mask needs at least 2 pixels (one kept, one changed); "
                f"got {name} of shape {x.shape}"
            )
        return checkerboard_mask(height, width, parity)

    def masked(x: Array, kept: np.ndarray) -> Array:
        return jnp.where(kept, x, jnp.zeros((), x.dtype))

    def init(key: PRNGKey, x: Array) -> Params:
        kept = kept_mask(x, "x", None)
        first = masked(x[:1], kept)  # one image is enough to fix the shapes
        return net(_param_dtype(x)).init(key, first)["params"]

    def apply(params: Params, x: Array, kept: np.ndarray) -> Array:
        return net(_param_dtype(x)).apply({"params": params}, masked(x, kept))

    return _Conditioner(init, apply, kept_mask)


def image_additive_coupling(
    channels: int,
    hidden: int = 64,
    num_blocks: int = 2,
    mask: str = "channel",
    parity: int = 0,
) -> Bijector:
    """NICE's additive coupling ``y = x·m + (1 - m)·(x + t(x·m))`` on NHWC (B, H, W, C).

    Args:
      channels: C (>= 2 for the channel mask, >= 1 for the checkerboard).
      hidden: channels of the ConvResNet conditioner's hidden feature maps.
      num_blocks: residual blocks of the conditioner.
      mask: ``"channel"`` or ``"checkerboard"`` (see the module docstring).
      parity: 0 or 1, which half of the mask is kept.

    ``forward`` (base -> data) adds ``t`` to the changed entries, ``inverse`` (data -> base)
    subtracts ``t(y·m)``; the log-det is exactly 0 in both directions, shape (B,).
    """
    layer = "image_additive_coupling"
    conditioner = _conditioner(layer, channels, hidden, num_blocks, mask, parity, 1)

    def init(key: PRNGKey, x: Array, context: Array | None = None) -> Params:
        conditioner.kept_mask(x, "x", context)
        return conditioner.init(key, x)

    def forward(params: Params, x: Array, context: Array | None = None):
        kept = conditioner.kept_mask(x, "x", context)
        shift = conditioner.apply(params, x, kept)
        return jnp.where(kept, x, x + shift), jnp.zeros(x.shape[:1], x.dtype)

    def inverse(params: Params, y: Array, context: Array | None = None):
        kept = conditioner.kept_mask(y, "y", context)
        shift = conditioner.apply(params, y, kept)
        return jnp.where(kept, y, y - shift), jnp.zeros(y.shape[:1], y.dtype)

    return Bijector(init, forward, inverse)


def _image_coupling(
    layer: str,
    channels: int,
    transformer: Transformer,
    hidden: int,
    num_blocks: int,
    mask: str,
    parity: int,
) -> Bijector:
    if not isinstance(transformer, Transformer):
        raise TypeError(f"{layer} needs a Transformer, got {type(transformer).__name__}")
    params_per_entry = transformer.params_per_entry
    conditioner = _conditioner(layer, channels, hidden, num_blocks, mask, parity, params_per_entry)

    def theta(params: Params, x: Array, kept: np.ndarray) -> Array:
        out = conditioner.apply(params, x, kept)  # (B, H, W, P·C), P blocks of C channels
        return jnp.moveaxis(out.reshape(*out.shape[:3], params_per_entry, channels), 3, 4)

    def changed_sum(log_derivative: Array, kept: np.ndarray) -> Array:
        return sum_event(jnp.where(kept, jnp.zeros((), log_derivative.dtype), log_derivative))

    def init(key: PRNGKey, x: Array, context: Array | None = None) -> Params:
        conditioner.kept_mask(x, "x", context)
        return conditioner.init(key, x)

    def forward(params: Params, x: Array, context: Array | None = None):
        kept = conditioner.kept_mask(x, "x", context)
        y, log_dy_dx = transformer.forward(x, theta(params, x, kept))
        return jnp.where(kept, x, y), changed_sum(log_dy_dx, kept)

    def inverse(params: Params, y: Array, context: Array | None = None):
        kept = conditioner.kept_mask(y, "y", context)
        x, log_dx_dy = transformer.inverse(y, theta(params, y, kept))
        return jnp.where(kept, y, x), changed_sum(log_dx_dy, kept)

    return Bijector(init, forward, inverse)


def image_coupling_layer(
    channels: int,
    transformer: Transformer,
    hidden: int = 64,
    num_blocks: int = 2,
    mask: str = "channel",
    parity: int = 0,
) -> Bijector:
    """A coupling ``y = x·m + (1 - m)·tau(x; theta(x·m))`` on NHWC (B, H, W, C), any transformer.

    The ConvResNet outputs (B, H, W, P·C) at ``x·m``, ``P = transformer.params_per_entry``, laid
    out in P blocks of C channels and rearranged to ``theta`` of shape (B, H, W, C, P). The
    transformer runs on every entry; the kept ones are then copied from ``x`` by ``jnp.where``.
    ``forward`` (base -> data) runs ``transformer.forward``, ``inverse`` (data -> base)
    ``transformer.inverse`` with ``theta`` from ``y·m``.

    Args:
      channels: C (>= 2 for the channel mask, >= 1 for the checkerboard).
      transformer: a :class:`~nflows_jax.bijectors.transformers.Transformer`.
      hidden: channels of the ConvResNet conditioner's hidden feature maps.
      num_blocks: residual blocks of the conditioner.
      mask: ``"channel"`` or ``"checkerboard"`` (see the module docstring).
      parity: 0 or 1, which half of the mask is kept.

    The log-det, shape (B,), is the sum of the transformer's log-derivatives over the changed
    entries.
    """
    name = getattr(transformer, "name", "?")
    layer = f"image_coupling_layer({name})"
    return _image_coupling(layer, channels, transformer, hidden, num_blocks, mask, parity)


def image_affine_coupling(
    channels: int,
    hidden: int = 64,
    num_blocks: int = 2,
    mask: str = "channel",
    parity: int = 0,
    max_log_scale: float = 5.0,
) -> Bijector:
    """RealNVP's affine coupling ``y = x·m + (1 - m)·(x·exp(s) + t)`` on NHWC (B, H, W, C).

    ``t`` and ``s`` are the two halves of the ConvResNet's (B, H, W, 2C) output at ``x·m``: the
    :func:`image_coupling_layer` of ``affine_transformer(max_log_scale)``.

    Args:
      channels: C (>= 2 for the channel mask, >= 1 for the checkerboard).
      hidden: channels of the ConvResNet conditioner's hidden feature maps.
      num_blocks: residual blocks of the conditioner.
      mask: ``"channel"`` or ``"checkerboard"`` (see the module docstring).
      parity: 0 or 1, which half of the mask is kept.
      max_log_scale: bound on ``|s|``: ``s = max_log_scale * tanh(raw / max_log_scale)``, so
        one layer scales each entry by at most ``exp(±max_log_scale)``.

    The log-det, shape (B,), is the sum of ``s`` over the changed entries forward and minus that
    sum inverse.
    """
    layer = "image_affine_coupling"
    if not (isinstance(max_log_scale, int | float) and max_log_scale > 0):
        raise ValueError(f"{layer}: max_log_scale must be a number > 0; got {show(max_log_scale)}")
    transformer = affine_transformer(max_log_scale)
    return _image_coupling(layer, channels, transformer, hidden, num_blocks, mask, parity)


def image_spline_coupling(
    channels: int,
    hidden: int = 64,
    num_blocks: int = 2,
    mask: str = "channel",
    parity: int = 0,
    num_bins: int = 8,
    bound: float = 3.0,
) -> Bijector:
    """A neural-spline coupling on NHWC (B, H, W, C): each changed entry goes through a monotone
    rational-quadratic spline on ``[-bound, bound]`` (identity outside), the
    :func:`image_coupling_layer` of ``rational_quadratic_spline(num_bins, bound)``.

    The ConvResNet outputs ``(3·num_bins - 1)·C`` channels. ``forward`` (base -> data)
    evaluates the spline, ``inverse`` (data -> base) solves it per entry in closed form;
    log-dets (B,). Other arguments as :func:`image_affine_coupling`.
    """
    layer = "image_spline_coupling"
    transformer = rational_quadratic_spline(num_bins, bound)
    return _image_coupling(layer, channels, transformer, hidden, num_blocks, mask, parity)


__all__ = [
    "MASKS",
    "channel_mask",
    "checkerboard_mask",
    "image_additive_coupling",
    "image_affine_coupling",
    "image_coupling_layer",
    "image_spline_coupling",
]

"""Masked 2-D convolutions for raster-order autoregressive image models (PixelCNN).

Pixels are generated in raster order (row by row, left to right), and within a pixel the channel
groups in order (R -> G -> B for colour; one group for grey or binary images). A ``k×k`` kernel
centred on pixel (i, j) may read:

* every pixel in the rows above the centre row,
* the pixels left of the centre in the centre row,
* at the centre pixel itself: with mask ``"A"`` the input groups strictly before the output's
  group, with mask ``"B"`` the groups up to and including the output's group,
* nothing right of the centre in the centre row, nothing below it.

Mask A is for the first layer (an output must not see its own pixel value); mask B for every
later layer, whose inputs at the centre are already features of the allowed context. Channels are
split into ``groups`` contiguous blocks (channel c of C belongs to group ``c // (C / groups)``), so
the image input with C = groups has one channel per group and a head with ``groups · K`` outputs
has K consecutive outputs per colour.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nflows_jax.formatting import show

MASK_TYPES = ("A", "B")


def channel_groups(num_channels: int, groups: int) -> np.ndarray:
    """The group of each of ``num_channels`` channels: (C,) ints in 0..groups-1, contiguous."""
    if num_channels % groups:
        raise ValueError(
            f"masked convolution: {num_channels} channels do not split into {groups} equal "
            f"channel groups; use a multiple of {groups}"
        )
    return np.arange(num_channels) // (num_channels // groups)


def conv_mask(
    kernel_size: tuple[int, int],
    in_channels: int,
    out_channels: int,
    mask_type: str,
    groups: int = 1,
) -> np.ndarray:
    """The (kh, kw, C_in, C_out) 0/1 mask of a raster-order masked convolution (module docstring).

    Kernel sizes must be odd, so that the kernel has a centre.
    """
    if mask_type not in MASK_TYPES:
        raise ValueError(f"mask_type must be one of {MASK_TYPES}; got {show(mask_type)}")
    height, width = kernel_size
    if height % 2 == 0 or width % 2 == 0 or height < 1 or width < 1:
        raise ValueError(f"masked convolution needs an odd kernel size; got {kernel_size}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be an int >= 1; got {show(groups)}")
    ci, cj = height // 2, width // 2
    mask = np.zeros((height, width, in_channels, out_channels), np.float32)
    mask[:ci] = 1.0  # rows above
    mask[ci, :cj] = 1.0  # left of the centre in the centre row
    g_in = channel_groups(in_channels, groups)[:, None]
    g_out = channel_groups(out_channels, groups)[None, :]
    mask[ci, cj] = (g_in < g_out) if mask_type == "A" else (g_in <= g_out)
    return mask


class MaskedConv2D(nn.Module):
    """A 'SAME'-padded NHWC convolution whose kernel is multiplied by :func:`conv_mask`.

    Attributes:
      features: output channels (a multiple of ``groups``).
      kernel_size: odd (kh, kw).
      mask_type: ``"A"`` or ``"B"``.
      groups: channel groups (3 for RGB, 1 for grey/binary).
      kernel_init: initialiser of the unmasked kernel (fan-in counts the unmasked inputs).
      param_dtype: params' dtype.

    Shapes: (B, H, W, C_in) -> (B, H, W, features). With ``window=True`` the convolution reads
    no padding above, left or right (only the zero rows below, which the mask ignores anyway):
    (B, H, W, C_in) -> (B, H - kh//2, W - 2·(kw//2), features), the outputs whose inputs all lie
    in the given window. Cached sampling evaluates shrinking windows this way.
    """

    features: int
    kernel_size: tuple[int, int]
    mask_type: str
    groups: int = 1
    kernel_init: Callable[..., jax.Array] | None = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, window: bool = False) -> jax.Array:
        if jnp.ndim(x) != 4:
            raise ValueError(f"MaskedConv2D needs NHWC input (B, H, W, C); got {jnp.shape(x)}")
        in_channels = x.shape[-1]
        mask = conv_mask(
            tuple(self.kernel_size), in_channels, self.features, self.mask_type, self.groups
        )
        fan_in = max(float(mask.sum(axis=(0, 1, 2)).mean()), 1.0)
        init = self.kernel_init or nn.initializers.variance_scaling(
            1.0 / fan_in * np.prod(mask.shape[:3]), "fan_in", "truncated_normal"
        )
        kernel = self.param("kernel", init, mask.shape, self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        dtype = jnp.result_type(x, kernel)
        y = jax.lax.conv_general_dilated(
            x.astype(dtype),
            (kernel * mask).astype(dtype),
            window_strides=(1, 1),
            padding=((0, mask.shape[0] // 2), (0, 0)) if window else "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return y + bias


__all__ = ["MASK_TYPES", "MaskedConv2D", "channel_groups", "conv_mask"]

"""A convolutional ResNet on NHWC images, the conditioner of image coupling layers."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nflows_jax.formatting import show
from nflows_jax.nets.mlp import fan_in_uniform

_KERNEL = (3, 3)


def _check_positive_int(name: str, value: Any, minimum: int) -> None:
    """Raise a ValueError unless ``value`` is a (non-bool) int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"ConvResNet: {name} must be an int >= {minimum}; got {show(value)}")


def _conv(features: int, in_channels: int, param_dtype: Any) -> nn.Conv:
    """A 3×3 'SAME' conv whose kernel and bias are drawn from U(±1/sqrt(9·in_channels))."""
    init = fan_in_uniform(_KERNEL[0] * _KERNEL[1] * in_channels)
    return nn.Conv(
        features,
        _KERNEL,
        padding="SAME",
        kernel_init=init,
        bias_init=init,
        param_dtype=param_dtype,
    )


class ConvResNet(nn.Module):
    """``x (B, H, W, C_in) -> (B, H, W, out_channels)``, every conv 3×3 with 'SAME' padding.

    Structure: a conv to ``hidden`` channels; ``num_blocks`` residual blocks
    ``h <- h + conv(relu(conv(relu(h))))``; then ``relu`` and a zero-initialised output conv.

    Initialisation:

    * The output conv starts at exactly zero (kernel and bias), so the network's output is
      exactly zero and a coupling layer built on it starts at exactly the identity.
    * Every other kernel and bias is drawn from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with
      ``fan_in = 9 · in_channels`` (:func:`nflows_jax.nets.mlp.fan_in_uniform`, as in ``MLP``:
      random biases keep the ReLU kinks away from a common origin).

    No normalisation layer: batch statistics would make one image's output depend on the
    others, which a bijector must not do.

    Attributes:
      hidden: channels of the hidden feature maps, >= 1.
      out_channels: channels of the output, >= 1.
      num_blocks: residual blocks, >= 0.
      param_dtype: dtype of the params at ``init``; the computation runs in the promoted dtype of
        the input and the params (float64 params on float64 input compute in float64).
    """

    hidden: int
    out_channels: int
    num_blocks: int = 2
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        _check_positive_int("hidden", self.hidden, 1)
        _check_positive_int("out_channels", self.out_channels, 1)
        _check_positive_int("num_blocks", self.num_blocks, 0)
        if jnp.ndim(x) != 4:
            raise ValueError(
                f"ConvResNet needs NHWC input of shape (batch, height, width, channels); "
                f"got shape {jnp.shape(x)}"
            )
        h = _conv(self.hidden, x.shape[-1], self.param_dtype)(x)
        for _ in range(self.num_blocks):
            residual = _conv(self.hidden, self.hidden, self.param_dtype)(nn.relu(h))
            residual = _conv(self.hidden, self.hidden, self.param_dtype)(nn.relu(residual))
            h = h + residual
        return nn.Conv(
            self.out_channels,
            _KERNEL,
            padding="SAME",
            kernel_init=nn.initializers.zeros,
            bias_init=nn.initializers.zeros,
            param_dtype=self.param_dtype,
        )(nn.relu(h))


__all__ = ["ConvResNet"]

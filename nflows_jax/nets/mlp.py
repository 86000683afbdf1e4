"""A plain multilayer perceptron, the conditioner of coupling layers."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax


class MLP(nn.Module):
    """``x (B, F_in) -> (B, out_features)`` through ``Dense -> activation`` for each hidden width.

    The output ``Dense`` starts at exactly zero (kernel and bias), so a coupling layer whose
    shift and log-scale come from this network is the identity at initialisation; the hidden
    layers keep the default LeCun-normal init so gradients reach them after the first step.

    Attributes:
      hidden: widths of the hidden layers, e.g. ``(64, 64)``; may be empty (a single affine map).
      out_features: width of the output.
      activation: applied after every hidden ``Dense`` (not after the output).
    """

    hidden: Sequence[int]
    out_features: int
    activation: Callable[[jax.Array], jax.Array] = nn.relu

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden:
            x = self.activation(nn.Dense(width)(x))
        return nn.Dense(self.out_features, kernel_init=nn.initializers.zeros)(x)

"""flax.linen conditioner networks.

Each maps a batch to a batch with the same leading axis B: :class:`~nflows_jax.nets.mlp.MLP`
(B, F) -> (B, out), :class:`~nflows_jax.nets.made.MADE` (B, D) -> (B, D, K) and
:class:`~nflows_jax.nets.resnet.ConvResNet` (B, H, W, C) -> (B, H, W, out).
"""

from nflows_jax.nets.made import MADE, MadeDegrees, connectivity, made_degrees
from nflows_jax.nets.mlp import MLP, fan_in_uniform
from nflows_jax.nets.resnet import ConvResNet

__all__ = [
    "MADE",
    "MLP",
    "ConvResNet",
    "MadeDegrees",
    "connectivity",
    "fan_in_uniform",
    "made_degrees",
]

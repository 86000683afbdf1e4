"""flax.linen conditioner networks."""

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

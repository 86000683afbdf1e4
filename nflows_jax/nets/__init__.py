"""flax.linen conditioner networks."""

from nflows_jax.nets.mlp import MLP, fan_in_uniform
from nflows_jax.nets.resnet import ConvResNet

__all__ = ["MLP", "ConvResNet", "fan_in_uniform"]

"""flax.linen conditioner networks."""

from nflows_jax.nets.mlp import MLP, fan_in_uniform

__all__ = ["MLP", "fan_in_uniform"]

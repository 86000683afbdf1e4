"""flax.linen conditioner networks."""

from nflows_jax.nets.mlp import MLP, fan_in_uniform_bias

__all__ = ["MLP", "fan_in_uniform_bias"]

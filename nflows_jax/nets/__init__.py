"""flax.linen conditioner networks."""

from nflows_jax.nets.mlp import MLP

__all__ = ["MLP"]

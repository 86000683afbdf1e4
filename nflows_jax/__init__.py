"""nflows_jax: sampling methods, normalizing flows and autoregressive models in functional JAX."""

__version__ = "0.1.0"

"""Autoregressive models: MADE distributions, PixelCNN, WaveNet and Parallel WaveNet.

The MADE models are re-exported here; the others live in their submodules. Data carry one
leading batch axis: vectors (B, D), images (B, H, W, G) of integer levels, sequences (B, T), and
every ``log_prob`` returns (B,) in nats.
"""

from nflows_jax.models.made import (
    BernoulliMADE,
    bernoulli_made,
    ensemble_log_prob,
    gaussian_autoregressive,
)

__all__ = ["BernoulliMADE", "bernoulli_made", "ensemble_log_prob", "gaussian_autoregressive"]

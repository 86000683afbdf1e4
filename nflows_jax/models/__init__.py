"""Autoregressive models: MADE distributions (and, later, PixelCNN and WaveNet)."""

from nflows_jax.models.made import (
    BernoulliMADE,
    bernoulli_made,
    ensemble_log_prob,
    gaussian_autoregressive,
)

__all__ = ["BernoulliMADE", "bernoulli_made", "ensemble_log_prob", "gaussian_autoregressive"]

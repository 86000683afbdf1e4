"""Per-entry likelihoods for autoregressive image and audio models.

A :class:`Likelihood` reads K network outputs per entry and gives the log-probability (or
log-density) of the data and a sampler that uses exactly one key per entry, so that a naive
sampling loop and a cached one draw the same values from the same key::

    log_p = likelihood.log_prob(outputs, x)     # outputs (*S, K), x (*S) -> (*S)
    x = likelihood.sample(key, outputs)         # (*S, K) -> (*S)

* :func:`bernoulli`: K = 1 logit, x in {0, 1}.
* :func:`categorical`: K = L logits over x in 0..L-1 (PixelCNN's 256-way softmax, μ-law audio).
* :func:`discretized_logistic_mixture`: K = 3M (mixture logits, means, log-scales) over x in
  0..L-1 mapped to the bin centres ``v = 2x/(L-1) - 1`` in [-1, 1], each bin of half-width
  ``1/(L-1)``, the two end bins extended to ±inf (PixelCNN++, Salimans et al. 2017). Every
  discrete distribution here sums to exactly one over its L values (up to rounding).
* :func:`gaussian`: K = 2 (mean, log-std) for real-valued data (``num_levels = None``): the
  teacher of Parallel WaveNet's density distillation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from nflows_jax.formatting import show

Array = jax.Array


class Likelihood(NamedTuple):
    """K outputs per entry -> a distribution over ``num_levels`` integer values (or the reals).

    Attributes:
      params_per_entry: K, the network outputs read per entry.
      num_levels: L, the values are 0..L-1; None for real-valued data.
      log_prob: ``(outputs (*S, K), x (*S)) -> (*S)`` in nats.
      sample: ``(key, outputs (*S, K)) -> (*S)``, int32 for discrete data.
      name: for messages.
    """

    params_per_entry: int
    num_levels: int | None
    log_prob: Callable[[Array, Array], Array]
    sample: Callable[[jax.Array, Array], Array]
    name: str


def bernoulli() -> Likelihood:
    """One logit per entry; ``log p(1) = log sigmoid(l)``, ``log p(0) = log sigmoid(-l)``."""

    def log_prob(outputs, x):
        logit = outputs[..., 0]
        return jnp.where(x > 0, jax.nn.log_sigmoid(logit), jax.nn.log_sigmoid(-logit))

    def sample(key, outputs):
        return jax.random.bernoulli(key, jax.nn.sigmoid(outputs[..., 0])).astype(jnp.int32)

    return Likelihood(1, 2, log_prob, sample, "bernoulli")


def _check_levels(num_levels: int, name: str) -> None:
    if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 2:
        raise ValueError(f"{name}: num_levels must be an int >= 2; got {show(num_levels)}")


def categorical(num_levels: int = 256) -> Likelihood:
    """A softmax over ``num_levels`` values (K = num_levels)."""
    _check_levels(num_levels, "categorical")

    def log_prob(outputs, x):
        log_probs = jax.nn.log_softmax(outputs, axis=-1)
        return jnp.take_along_axis(log_probs, x[..., None].astype(jnp.int32), axis=-1)[..., 0]

    def sample(key, outputs):
        return jax.random.categorical(key, outputs, axis=-1).astype(jnp.int32)

    return Likelihood(num_levels, num_levels, log_prob, sample, "categorical")


def _log_sigmoid_difference(upper: Array, lower: Array) -> Array:
    """log(sigmoid(upper) - sigmoid(lower)) for upper > lower, without cancellation.

    sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(b - a)).
    """
    return (
        jax.nn.log_sigmoid(upper) + jax.nn.log_sigmoid(-lower) + jnp.log(-jnp.expm1(lower - upper))
    )


def discretized_logistic_mixture(
    num_components: int = 5, num_levels: int = 256, min_log_scale: float = -7.0
) -> Likelihood:
    """A mixture of M logistics discretised to ``num_levels`` bins on [-1, 1] (K = 3M).

    Outputs per entry: M mixture logits, M means, M raw log-scales (clamped below at
    ``min_log_scale`` so a bin's probability stays representable).
    """
    _check_levels(num_levels, "discretized_logistic_mixture")
    if (
        isinstance(num_components, bool)
        or not isinstance(num_components, int)
        or num_components < 1
    ):
        raise ValueError(
            f"discretized_logistic_mixture: num_components must be an int >= 1; got "
            f"{show(num_components)}"
        )
    m = num_components
    half_width = 1.0 / (num_levels - 1)

    def split(outputs):
        logits, means = outputs[..., :m], outputs[..., m : 2 * m]
        log_scales = jnp.maximum(outputs[..., 2 * m :], min_log_scale)
        return logits, means, log_scales

    def log_prob(outputs, x):
        logits, means, log_scales = split(outputs)
        centre = 2.0 * x[..., None].astype(outputs.dtype) * half_width - 1.0
        inverse_scale = jnp.exp(-log_scales)
        upper = (centre + half_width - means) * inverse_scale
        lower = (centre - half_width - means) * inverse_scale
        first = x[..., None] == 0
        last = x[..., None] == num_levels - 1
        # Clamp the unused side of the end bins before the formula, not after (no NaN gradients).
        interior = _log_sigmoid_difference(
            jnp.where(last, lower + 1.0, upper), jnp.where(first, upper - 1.0, lower)
        )
        per_component = jnp.where(
            first,
            jax.nn.log_sigmoid(upper),
            jnp.where(last, jax.nn.log_sigmoid(-lower), interior),
        )
        return jax.nn.logsumexp(per_component + jax.nn.log_softmax(logits, axis=-1), axis=-1)

    def sample(key, outputs):
        logits, means, log_scales = split(outputs)
        component_key, logistic_key = jax.random.split(key)
        component = jax.random.categorical(component_key, logits, axis=-1)[..., None]
        mean = jnp.take_along_axis(means, component, axis=-1)[..., 0]
        log_scale = jnp.take_along_axis(log_scales, component, axis=-1)[..., 0]
        value = mean + jnp.exp(log_scale) * jax.random.logistic(logistic_key, mean.shape)
        # The bin whose interval holds the continuous draw; the end bins reach to ±inf.
        level = jnp.round((value + 1.0) / (2.0 * half_width))
        return jnp.clip(level, 0, num_levels - 1).astype(jnp.int32)

    return Likelihood(3 * m, num_levels, log_prob, sample, "discretized logistic mixture")


def gaussian_mean_and_log_std(outputs: Array, min_log_std: float = -7.0) -> tuple[Array, Array]:
    """(mean, log-std) from K = 2 outputs, the log-std clamped below at ``min_log_std``.

    ``outputs (*S, 2) -> ((*S), (*S))``.
    """
    return outputs[..., 0], jnp.maximum(outputs[..., 1], min_log_std)


def gaussian(min_log_std: float = -7.0) -> Likelihood:
    """A Gaussian density per entry: outputs (mean, raw log-std), real-valued x."""

    def log_prob(outputs, x):
        mean, log_std = gaussian_mean_and_log_std(outputs, min_log_std)
        standardised = (x - mean) * jnp.exp(-log_std)
        return -0.5 * standardised**2 - log_std - 0.5 * math.log(2 * math.pi)

    def sample(key, outputs):
        mean, log_std = gaussian_mean_and_log_std(outputs, min_log_std)
        return mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)

    return Likelihood(2, None, log_prob, sample, "gaussian")


__all__ = [
    "Likelihood",
    "bernoulli",
    "categorical",
    "discretized_logistic_mixture",
    "gaussian",
    "gaussian_mean_and_log_std",
]

"""Flows on discrete images: dequantized training in bits/dim, evaluation, samples, a baseline.

An image flow is a standard-normal latent of the image's shape pushed through a core bijector
(Glow, multi-scale RealNVP, ...) into logit space, then through ``logit_preprocess`` into pixel
space [0, 1). Integer images (uint8, NHWC) are dequantized uniformly, ``y = (x + u)/K``, so the
flow's bits/dim bound the discrete model's (``nflows_jax.dequantize``)::

    flow = image_flow(glow((28, 28, 1)), (28, 28, 1))
    params = init_image_flow(flow, key, train_images[:256], num_bits=8)
    loss_fn = bits_per_dim_loss(flow, num_bits=8)         # fit(loss_fn, params, ...)
    bpd = evaluate_bits_per_dim(flow, params, test_images, num_bits=8, key=key)

The whole chain is written in the density direction (pixels -> logit -> latent) and inverted,
so ``init`` carries the example batch through the layers the way data flows: actnorm's
data-dependent initialisation then sees what the earlier layers made of real images.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from nflows_jax import flows
from nflows_jax.bijectors.base import Array, Bijector, Params, PRNGKey, chain, invert
from nflows_jax.dequantize import bits_per_dim, logit_preprocess, uniform_dequantize
from nflows_jax.formatting import show


def image_flow(core: Bijector, image_shape: tuple[int, int, int], alpha: float = 0.05):
    """``Flow``: N(0, I) on ``image_shape`` -> ``core`` -> logit space -> pixels in [0, 1).

    ``core`` is a latent -> logit-space bijector such as ``glow(image_shape)``.
    """
    density = chain(invert(logit_preprocess(alpha)), invert(core))  # pixels -> latent
    return flows.Flow(flows.standard_normal(tuple(image_shape)), invert(density))


def _pixels(key: PRNGKey, images: Array, num_bits: int) -> Array:
    return uniform_dequantize(key, images, num_bits)


def init_image_flow(flow: flows.Flow, key: PRNGKey, images: Array, num_bits: int) -> Params:
    """Initialise on a dequantized example batch of integer ``images`` (B, H, W, C)."""
    dequantize_key, init_key = jax.random.split(key)
    return flows.init(flow, init_key, _pixels(dequantize_key, images, num_bits))


def bits_per_dim_loss(flow: flows.Flow, num_bits: int) -> Callable[[Params, Array, PRNGKey], Array]:
    """``loss(params, images, key)``: mean bits/dim of a fresh uniform dequantization.

    ``images`` (B, H, W, C) integers -> a scalar, the mean of :func:`bits_per_dim_per_image`.
    """
    per_image = bits_per_dim_per_image(flow, num_bits)
    return lambda params, images, key: jnp.mean(per_image(params, images, key))


def evaluate_bits_per_dim(
    flow: flows.Flow,
    params: Params,
    images: np.ndarray,
    num_bits: int,
    key: PRNGKey,
    batch_size: int = 500,
) -> float:
    """Mean bits/dim over ``images`` (N, H, W, C), one dequantization each, in batches.

    The last partial batch is padded to ``batch_size`` (one compiled shape) and the padding is
    left out of the mean. Returns a Python float.
    """
    total, count = 0.0, 0
    for start in range(0, len(images), batch_size):
        chunk = np.asarray(images[start : start + batch_size])
        padded = np.concatenate([chunk, np.zeros_like(images[: batch_size - len(chunk)])])
        values = _bits_per_dim_batch(
            flow, num_bits, params, jnp.asarray(padded), jax.random.fold_in(key, start)
        )
        total += float(jnp.sum(values[: len(chunk)]))
        count += len(chunk)
    return total / count


@functools.partial(jax.jit, static_argnums=(0, 1))
def _bits_per_dim_batch(
    flow: flows.Flow, num_bits: int, params: Params, images: Array, key: PRNGKey
) -> Array:
    # Module-level and keyed on (flow, num_bits), so repeated evaluations during training reuse
    # one compiled program instead of compiling a fresh closure per call.
    return bits_per_dim_per_image(flow, num_bits)(params, images, key)


def bits_per_dim_per_image(flow: flows.Flow, num_bits: int) -> Callable:
    """``f(params, images, key) -> (B,)`` bits/dim of each image under one dequantization."""
    num_dims = math.prod(flow.base.event_shape)

    def per_image(params: Params, images: Array, key: PRNGKey) -> Array:
        log_p = flows.log_prob(flow, params, _pixels(key, images, num_bits))
        return bits_per_dim(log_p, num_dims, num_bits)

    return per_image


def sample_images(
    flow: flows.Flow,
    params: Params,
    key: PRNGKey,
    num_images: int,
    num_bits: int,
    temperature: float = 1.0,
    num_levels: int | None = None,
) -> np.ndarray:
    """``num_images`` samples as integer images (N, H, W, C), quantized back to the data's bins.

    ``num_levels`` caps the values (e.g. 17 for sklearn's digits, stored with ``num_bits=5``).
    """
    pixels = flows.sample(flow, params, key, num_images, temperature=temperature)
    top = 2**num_bits if num_levels is None else num_levels
    return np.clip(np.floor(np.asarray(pixels) * 2**num_bits), 0, top - 1).astype(np.int32)


def pixel_histogram_bits_per_dim(train: np.ndarray, test: np.ndarray, num_levels: int) -> float:
    """The independent per-pixel baseline: a categorical per pixel from the training counts.

    Each pixel's distribution over ``num_levels`` values is its training histogram with one
    pseudo-count per value (so no test value has probability 0). Returns the test set's mean
    negative log2-likelihood per pixel, exactly (no dequantization bound involved).
    """
    train, test = np.asarray(train), np.asarray(test)
    if train.shape[1:] != test.shape[1:]:
        raise ValueError(f"train {train.shape} and test {test.shape} images differ in shape")
    if min(train.min(), test.min()) < 0 or max(train.max(), test.max()) >= num_levels:
        raise ValueError(f"pixel values must lie in [0, {show(num_levels)})")
    flat_train = train.reshape(len(train), -1)
    counts = np.ones((flat_train.shape[1], num_levels))
    for level in range(num_levels):
        counts[:, level] += np.sum(flat_train == level, axis=0)
    log2_probs = np.log2(counts / counts.sum(axis=1, keepdims=True))  # (D, num_levels)
    flat_test = test.reshape(len(test), -1)
    picked = log2_probs[np.arange(flat_test.shape[1]), flat_test]  # (N, D)
    return float(-picked.mean())


__all__ = [
    "bits_per_dim_loss",
    "bits_per_dim_per_image",
    "evaluate_bits_per_dim",
    "image_flow",
    "init_image_flow",
    "pixel_histogram_bits_per_dim",
    "sample_images",
]

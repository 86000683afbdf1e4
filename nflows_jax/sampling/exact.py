"""Exact samplers: categorical (inverse CDF and alias table), inverse CDF, bisection, Box–Muller.

Every sampler takes an explicit PRNG key and a static number of draws, and is ``jit``/``vmap``
compatible; only ``alias_table`` runs on the host (once, in float64). ``num_samples`` may be an
int ``n`` (draws of shape (n,)) or a tuple (draws of that shape)::

    idx = sample_categorical(key, 1000, probs=jnp.array([0.2, 0.0, 0.8]))   # (1000,) int32
    table = alias_table(probs)                                              # host side, O(K)
    idx = sample_alias(key, table, 1000)                                    # O(1) per draw
    x = inverse_cdf_sample(key, lambda u: -jnp.log1p(-u), 1000)             # Exp(1)
    x = bisection_inverse_cdf_sample(key, cdf, -10.0, 10.0, 1000)           # any monotone CDF
    z = box_muller(key, 1001)                                               # N(0, 1), (1001,)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
PRNGKey = jax.Array
Shape = int | tuple[int, ...]


def _as_shape(num_samples: Shape) -> tuple[int, ...]:
    """``n`` -> ``(n,)``; a tuple is kept. Raises for negative or non-integer sizes."""
    shape = (num_samples,) if isinstance(num_samples, (int, np.integer)) else tuple(num_samples)
    if not all(isinstance(s, (int, np.integer)) and s >= 0 for s in shape):
        raise ValueError(
            f"num_samples must be a non-negative int or a tuple of them; got {num_samples!r}"
        )
    return tuple(int(s) for s in shape)


def open_uniform(key: PRNGKey, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
    """Uniforms on the open interval (0, 1): [tiny, 1) with ``tiny`` the smallest normal float.

    ``jax.random.uniform`` can return exactly 0, where quantile functions such as the normal's
    are -inf; moving the lower end to ``finfo.tiny`` keeps every quantile finite while changing
    the distribution by less than one float's worth of probability. Every continuous sampler
    here draws its uniforms through this function, so the same key gives the same ``u``.
    """
    tiny = jnp.finfo(dtype).tiny
    return jax.random.uniform(key, shape, dtype, minval=tiny, maxval=1.0)


# --------------------------------------------------------------------------------------------
# Categorical: inverse CDF
# --------------------------------------------------------------------------------------------


def _probs_from(probs: Array | None, logits: Array | None) -> Array:
    if (probs is None) == (logits is None):
        raise ValueError("give exactly one of probs= or logits=")
    weights = probs if logits is None else logits
    weights = jnp.asarray(weights)
    if weights.ndim != 1 or weights.shape[0] == 0:
        raise ValueError(
            f"{'probs' if logits is None else 'logits'} must have shape (K,) with K >= 1; got "
            f"{weights.shape}. For a batch of distributions, jax.vmap over the leading axis."
        )
    if not jnp.issubdtype(weights.dtype, jnp.floating):
        weights = weights.astype(jnp.float32)
    if logits is None:
        return weights
    # Subtracting the max keeps exp() from overflowing; -inf logits give exactly zero weight.
    return jnp.exp(weights - jnp.max(weights))


def sample_categorical(
    key: PRNGKey,
    num_samples: Shape,
    *,
    probs: Array | None = None,
    logits: Array | None = None,
) -> Array:
    """Categorical draws by inverting the CDF: ``searchsorted(cumsum(p), u)``.

    Args:
      key: PRNG key.
      num_samples: an int n or a shape; the result has that shape.
      probs: (K,) non-negative weights; need not be normalised (they are divided by their sum).
      logits: (K,) unnormalised log-probabilities instead of ``probs``; ``-inf`` means zero
        probability. At least one logit must be finite (otherwise the result is meaningless).

    Returns:
      int32 array of shape ``num_samples`` with values in [0, K).

    Cost: O(K) to build the CDF, then O(log K) per draw. A zero-probability category is never
    drawn: its CDF step is empty, and with ``side='right'`` a draw ``u`` lands in category
    ``k`` only if ``cdf[k-1] <= u < cdf[k]``. The CDF is divided by its own last entry, so its
    end is exactly 1 > u and the index can never run past K - 1.
    """
    probs = None if probs is None else jnp.asarray(probs)
    logits = None if logits is None else jnp.asarray(logits)
    return _sample_categorical(key, _as_shape(num_samples), probs, logits)


# Jitted as a whole: one compiled program per shape instead of one small compile per op.
@functools.partial(jax.jit, static_argnums=1)
def _sample_categorical(key, shape, probs, logits):
    weights = _probs_from(probs, logits)
    cdf = jnp.cumsum(weights)
    cdf = cdf / cdf[-1]  # x / x == 1 exactly in IEEE arithmetic
    # u in [0, 1): u = 0 is harmless here (category of the first positive weight); what must
    # never happen is u = 1 = cdf[-1], which would index past the end.
    u = jax.random.uniform(key, shape, cdf.dtype)
    return jnp.searchsorted(cdf, u, side="right").astype(jnp.int32)


# --------------------------------------------------------------------------------------------
# Categorical: alias table (Walker 1977, Vose 1991)
# --------------------------------------------------------------------------------------------


class AliasTable(NamedTuple):
    """Walker's alias table for K categories.

    Attributes:
      prob: (K,) float32: keep column ``i`` with this probability ...
      alias: (K,) int32: ... otherwise return ``alias[i]``.

    Category k has probability ``(prob[k] + sum_{i: alias[i]=k} (1 - prob[i])) / K``.
    """

    prob: Array
    alias: Array


def alias_table(probs) -> AliasTable:
    """Build an alias table with Vose's stable O(K) algorithm, on the host in float64.

    The construction is a data-dependent worklist, cheap in numpy and awkward in a jitted loop,
    and a table is built once and sampled many times, so it runs on the host: ``probs`` must be
    concrete (not traced). The result holds jax arrays and can be passed into jitted code.

    Args:
      probs: (K,) non-negative finite weights with a positive sum (normalised here).

    Raises:
      ValueError: for a wrong shape, negative/non-finite weights or a zero sum.
    """
    try:
        p = np.asarray(probs, dtype=np.float64)
    except jax.errors.TracerArrayConversionError as err:
        raise ValueError(
            "alias_table runs on the host: build the table outside jit and pass it in"
        ) from err
    if p.ndim != 1 or p.shape[0] == 0:
        raise ValueError(f"probs must have shape (K,) with K >= 1; got {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError(f"probs must be finite and non-negative; got {p}")
    total = p.sum()
    if total <= 0:
        raise ValueError("probs must have a positive sum")

    num = p.shape[0]
    scaled = p * (num / total)  # mean 1: columns below 1 borrow from columns above
    prob = np.ones(num)
    alias = np.arange(num)
    small = [i for i in range(num) if scaled[i] < 1.0]
    large = [i for i in range(num) if scaled[i] >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        prob[s], alias[s] = scaled[s], g
        # Vose's update: subtract the donated mass as (g + s) - 1 to lose less precision.
        scaled[g] = (scaled[g] + scaled[s]) - 1.0
        (small if scaled[g] < 1.0 else large).append(g)
    # Leftovers (either list) are 1 up to rounding: they keep their whole column.
    for i in small + large:
        prob[i], alias[i] = 1.0, i
    return AliasTable(jnp.asarray(prob, jnp.float32), jnp.asarray(alias, jnp.int32))


def sample_alias(key: PRNGKey, table: AliasTable, num_samples: Shape) -> Array:
    """Draw categories from an ``AliasTable`` in O(1) each: a column, then a biased coin.

    Two independent draws per sample (a uniform column and a uniform coin) rather than splitting
    one float into both, which would leave the coin only ~23 - log2(K) bits of resolution.

    Returns:
      int32 array of shape ``num_samples`` with values in [0, K).
    """
    return _sample_alias(key, table, _as_shape(num_samples))


@functools.partial(jax.jit, static_argnums=2)
def _sample_alias(key, table, shape):
    num = table.prob.shape[0]
    column_key, coin_key = jax.random.split(key)
    column = jax.random.randint(column_key, shape, 0, num, dtype=jnp.int32)
    coin = jax.random.uniform(coin_key, shape, table.prob.dtype)
    # coin < prob with coin in [0, 1): a column with prob 0 (a zero-probability category) is
    # never kept, and a column with prob 1 always is.
    return jnp.where(coin < table.prob[column], column, table.alias[column])


# --------------------------------------------------------------------------------------------
# Continuous: inverse CDF and bisection
# --------------------------------------------------------------------------------------------


def inverse_cdf_sample(
    key: PRNGKey,
    quantile_fn: Callable[[Array], Array],
    num_samples: Shape,
    dtype=jnp.float32,
) -> Array:
    """Draws ``quantile_fn(u)`` with ``u ~ U(0, 1)``, e.g. ``-log1p(-u) / rate`` for Exp(rate).

    ``quantile_fn`` must be vectorised (elementwise on an array of uniforms); wrap it in
    ``jax.vmap`` if it is not. ``u`` comes from ``open_uniform`` so it is never exactly 0
    (quantiles at 0 are often -inf); it is also below 1.

    Returns:
      array of shape ``num_samples``.
    """
    return _inverse_cdf_sample(key, quantile_fn, _as_shape(num_samples), dtype)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _inverse_cdf_sample(key, quantile_fn, shape, dtype):
    return quantile_fn(open_uniform(key, shape, dtype))


def bisection_inverse_cdf_sample(
    key: PRNGKey,
    cdf_fn: Callable[[Array], Array],
    lower: float,
    upper: float,
    num_samples: Shape,
    num_iters: int = 32,
    dtype=jnp.float32,
) -> Array:
    """Invert a CDF numerically by bisection, all draws at once, a fixed number of iterations.

    For each ``u`` this finds the generalised inverse ``inf{x : cdf(x) >= u}`` inside
    ``[lower, upper]``: each iteration halves the bracket, so after ``num_iters`` iterations
    the returned midpoint is within ``(upper - lower) / 2**(num_iters + 1)`` of it, below the
    documented bound ``(upper - lower) / 2**num_iters``. Float resolution sets the floor: once
    the bracket is a few ulps of x wide (in float32 about ``24 + log2((upper - lower) / |x|)``
    halvings) more iterations change nothing. The loop count is static, so it jits and vmaps.

    Args:
      key: PRNG key.
      cdf_fn: vectorised, non-decreasing CDF (elementwise on arrays).
      lower, upper: a bracket holding all but negligible mass. Mass below ``lower`` is returned
        at ``lower`` and mass above ``upper`` at ``upper``.
      num_samples: an int n or a shape.
      num_iters: number of halvings (a Python int >= 1).

    Returns:
      array of shape ``num_samples`` in [lower, upper].
    """
    shape = _as_shape(num_samples)
    if not isinstance(num_iters, (int, np.integer)) or num_iters < 1:
        raise ValueError(f"num_iters must be a Python int >= 1; got {num_iters!r}")
    if isinstance(lower, (int, float)) and isinstance(upper, (int, float)) and lower >= upper:
        raise ValueError(f"need lower < upper; got lower={lower}, upper={upper}")
    return _bisection(key, cdf_fn, lower, upper, shape, int(num_iters), dtype)


@functools.partial(jax.jit, static_argnums=(1, 4, 5, 6))
def _bisection(key, cdf_fn, lower, upper, shape, num_iters, dtype):
    u = open_uniform(key, shape, dtype)
    lo = jnp.full(shape, lower, dtype)
    hi = jnp.full(shape, upper, dtype)

    def halve(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        # The invariant is cdf(lo) < u <= cdf(hi) (wherever the bracket allows it).
        below = cdf_fn(mid) < u
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(0, num_iters, halve, (lo, hi))
    return 0.5 * (lo + hi)


# --------------------------------------------------------------------------------------------
# Box–Muller
# --------------------------------------------------------------------------------------------


def box_muller_transform(u1: Array, u2: Array) -> tuple[Array, Array]:
    """Two independent N(0, 1) arrays from two independent U[0, 1) arrays of the same shape.

    ``r = sqrt(-2 log u1)`` and angle ``2 pi u2``. ``u1`` is clamped to ``finfo.tiny`` first:
    ``u1 = 0`` has probability ~2^-23 per pair in float32 and would give ``log(0) = -inf``;
    clamping caps the radius at sqrt(-2 log tiny) (about 13.2 in float32) instead.
    """
    u1 = jnp.maximum(u1, jnp.finfo(u1.dtype).tiny)
    radius = jnp.sqrt(-2.0 * jnp.log(u1))
    angle = (2.0 * math.pi) * u2
    return radius * jnp.cos(angle), radius * jnp.sin(angle)


def box_muller(key: PRNGKey, num_samples: Shape, dtype=jnp.float32) -> Array:
    """Standard normal draws by the Box–Muller transform.

    Each pair of uniforms gives two normals, so ``ceil(n / 2)`` pairs are drawn and, for odd n,
    the last normal is dropped (the pair's members are independent, so the rest stay i.i.d.).

    Returns:
      array of shape ``num_samples``.
    """
    return _box_muller(key, _as_shape(num_samples), dtype)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _box_muller(key, shape, dtype):
    size = math.prod(shape)
    num_pairs = (size + 1) // 2
    u = jax.random.uniform(key, (2, num_pairs), dtype)
    z_cos, z_sin = box_muller_transform(u[0], u[1])
    return jnp.concatenate([z_cos, z_sin])[:size].reshape(shape)


__all__ = [
    "AliasTable",
    "alias_table",
    "bisection_inverse_cdf_sample",
    "box_muller",
    "box_muller_transform",
    "inverse_cdf_sample",
    "open_uniform",
    "sample_alias",
    "sample_categorical",
]

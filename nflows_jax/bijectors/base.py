"""The bijector contract and its combinators.

A bijector is a NamedTuple of three pure functions; its parameters are a plain pytree that the
user owns (optax updates it, orbax saves it, ``jax.tree`` maps over it)::

    params = b.init(key, x, context)            # x: an example batch, shape (B, *event)
    y, log_det = b.forward(params, x, context)  # base -> data; log_det = log|det dy/dx|, shape (B,)
    x, log_det = b.inverse(params, y, context)  # data -> base; log_det = log|det dx/dy|, shape (B,)

Conventions, shared by every layer in the library:

* Arrays carry exactly one leading batch axis; every other axis is an event axis, so the
  log-determinant is summed over all axes but the first. Use ``jax.vmap`` for more batch axes.
* ``forward`` generates (base -> data), ``inverse`` evaluates densities (data -> base), as in
  distrax and TFP.
* ``context`` is ``None`` or an array of shape (B, C); every layer takes it (conditional flows)
  and layers that have no use for it ignore it.
* Layers without parameters use ``()`` as their params, so optax sees no leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nflows_jax.formatting import show

Array = jax.Array
PRNGKey = jax.Array
Params = Any

InitFn = Callable[..., Params]
TransformFn = Callable[..., tuple[Array, Array]]


class Bijector(NamedTuple):
    """A bijection ``f: base -> data`` with explicit log-determinants.

    Attributes:
      init: ``init(key, x, context=None) -> params``; ``x`` is an example batch
        ``(B, *event)``.
      forward: ``forward(params, x, context=None) -> (y, log|det dy/dx|)``, base -> data
        (sampling), with log-det (B,).
      inverse: ``inverse(params, y, context=None) -> (x, log|det dx/dy|)``, data -> base
        (density evaluation), with log-det (B,).
    """

    init: InitFn
    forward: TransformFn
    inverse: TransformFn


def sum_event(a: Array) -> Array:
    """Sum over every axis but the leading batch axis: ``(B, *event) -> (B,)``."""
    return jnp.sum(a.reshape(a.shape[0], -1), axis=1)


def check_batched(x: Array, name: str = "x") -> None:
    """Raise a clear error when ``x`` has no batch axis (a static, trace-time check)."""
    if jnp.ndim(x) < 2:
        raise ValueError(
            f"{name} must have shape (batch, *event) with at least one event axis; got shape "
            f"{jnp.shape(x)}. Add a batch axis with x[None] or an event axis with x[:, None]."
        )


def no_params(key: PRNGKey, x: Array, context: Array | None = None) -> Params:
    """The ``init`` of a layer without parameters."""
    del key, x, context
    return ()


def chain(*bijectors: Bijector) -> Bijector:
    """Compose bijectors; ``forward`` applies them in the order given (first listed, first applied).

    So ``chain(a, b).forward = b.forward ∘ a.forward`` and the inverse runs b⁻¹ then a⁻¹. (distrax's
    ``Chain`` lists them the other way round, like function composition; here the list reads in the
    direction samples flow, base to data.) The params are a tuple, one entry per bijector, so layers
    of different shapes (Glow levels) chain naturally. For n copies of one layer use ``repeat``.
    """
    if not bijectors:
        raise ValueError("chain() needs at least one bijector")

    def init(key, x, context=None):
        params = []
        for k, b in zip(jax.random.split(key, len(bijectors)), bijectors, strict=True):
            p = b.init(k, x, context)
            params.append(p)
            x, _ = b.forward(p, x, context)
        return tuple(params)

    def forward(params, x, context=None):
        total = jnp.zeros(x.shape[:1], x.dtype)
        for b, p in zip(bijectors, params, strict=True):
            x, log_det = b.forward(p, x, context)
            total = total + log_det
        return x, total

    def inverse(params, y, context=None):
        total = jnp.zeros(y.shape[:1], y.dtype)
        for b, p in zip(reversed(bijectors), reversed(params), strict=True):
            y, log_det = b.inverse(p, y, context)
            total = total + log_det
        return y, total

    return Bijector(init, forward, inverse)


def _carry_dtype(x: Array, params: Params) -> jnp.dtype:
    """The dtype a scan over layers must carry: ``x``'s promoted with the float params'.

    A scan carry keeps one dtype, so integer data (uint8 images) and float32 data under float64
    params enter the loop already promoted, as the layers' arithmetic would promote them.
    """
    float_dtypes = [
        leaf.dtype
        for leaf in jax.tree_util.tree_leaves(params)
        if jnp.issubdtype(leaf.dtype, jnp.floating)
    ]
    dtype = jnp.result_type(x.dtype, *float_dtypes)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)


def repeat(layer: Bijector, num_layers: int, unroll: bool = False) -> Bijector:
    """``num_layers`` copies of ``layer`` with independent parameters, compiled once.

    ``init`` is a ``jax.lax.scan`` over split keys whose carry is the example batch: layer k is
    initialised on the batch as layers 1..k-1 transformed it (what data-dependent initialisation
    such as actnorm needs), and every params leaf gains a leading axis of size ``num_layers``.
    ``forward`` is one ``jax.lax.scan`` over that axis and ``inverse`` the same scan with
    ``reverse=True``. The traced program holds one copy of the layer whatever ``num_layers``
    is, which keeps compile time flat in depth. Parameterless constants such as permutations belong
    inside ``layer`` (e.g. ``repeat(chain(coupling, reverse_permutation()), n)``).

    ``unroll=True`` unrolls the forward and inverse scans (same params, same results): compile
    time then grows with depth, but no loop is left. Use it for convolutional layers on CPU,
    where XLA runs a convolution's kernel gradient inside a loop body about 30× slower than
    outside one (``benchmarks/glow.py``); the image architectures choose it per backend.
    """
    if isinstance(num_layers, bool) or not isinstance(num_layers, int | np.integer):
        raise TypeError(f"repeat needs an integer num_layers, got {show(num_layers)}")
    if num_layers < 1:
        raise ValueError(f"repeat needs num_layers >= 1, got {int(num_layers)}")
    num_layers = int(num_layers)

    def init(key, x, context=None):
        def init_layer(x, layer_key):
            params = layer.init(layer_key, x, context)
            y, _ = layer.forward(params, x, context)
            return y.astype(x.dtype), params

        x = x.astype(_carry_dtype(x, ()))  # integer example data initialise as floats
        _, params = jax.lax.scan(init_layer, x, jax.random.split(key, num_layers))
        return params

    def scan_layers(transform, params, x, context, reverse):
        def body(carry, layer_params):
            x, total = carry
            x, log_det = transform(layer_params, x, context)
            return (x, total + log_det), None

        x = x.astype(_carry_dtype(x, params))
        init_carry = (x, jnp.zeros(x.shape[:1], x.dtype))
        (x, total), _ = jax.lax.scan(
            body, init_carry, params, length=num_layers, reverse=reverse, unroll=unroll
        )
        return x, total

    def forward(params, x, context=None):
        return scan_layers(layer.forward, params, x, context, reverse=False)

    def inverse(params, y, context=None):
        return scan_layers(layer.inverse, params, y, context, reverse=True)

    return Bijector(init, forward, inverse)


def invert(bijector: Bijector) -> Bijector:
    """Swap ``forward`` and ``inverse`` (e.g. a MAF becomes an IAF). Params are unchanged."""
    return Bijector(bijector.init, bijector.inverse, bijector.forward)


def _check_permutation(perm: Sequence[int]) -> jnp.ndarray:
    perm_array = jnp.asarray(perm)
    if perm_array.ndim != 1 or sorted(int(i) for i in perm) != list(range(len(perm))):
        raise ValueError(f"not a permutation of 0..n-1: {list(perm)}")
    return perm_array


def permutation(perm: Sequence[int]) -> Bijector:
    """Permute the last axis: ``forward`` is ``y[..., i] = x[..., perm[i]]`` (log-det 0, no params).

    ``inverse`` applies the inverse permutation ``argsort(perm)``; both log-dets are zeros (B,).
    The permutation is a constant closed over by the functions, never a trainable integer param.
    """
    perm_array = _check_permutation(perm)
    inverse_perm = jnp.argsort(perm_array)
    size = perm_array.shape[0]

    def apply(index, x):
        if x.shape[-1] != size:
            raise ValueError(f"permutation of size {size} applied to last axis {x.shape[-1]}")
        return jnp.take(x, index, axis=-1), jnp.zeros(x.shape[:1], x.dtype)

    return Bijector(
        no_params,
        lambda params, x, context=None: apply(perm_array, x),
        lambda params, y, context=None: apply(inverse_perm, y),
    )


def reverse_permutation() -> Bijector:
    """Reverse the last axis (log-det 0, no params). Works for any size.

    ``forward`` and ``inverse`` are the same flip, since it is its own inverse.
    """

    def flip(params, x, context=None):
        return jnp.flip(x, axis=-1), jnp.zeros(x.shape[:1], x.dtype)

    return Bijector(no_params, flip, flip)


def random_permutation(seed: int, size: int) -> Bijector:
    """A fixed permutation of the last axis of ``size`` drawn from ``seed`` (no params).

    :func:`permutation` of that draw: ``forward`` permutes, ``inverse`` undoes it, log-det 0.
    """
    perm = jax.random.permutation(jax.random.PRNGKey(seed), size)
    return permutation([int(i) for i in perm])

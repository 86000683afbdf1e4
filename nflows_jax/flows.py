"""Flows as distributions: a distrax base distribution pushed through a ``Bijector``.

``Flow`` holds no parameters; functions take ``params`` explicitly so the same flow can be
``jit``-ed, ``vmap``-ed over parameter sets and differentiated like any pure function::

    flow = Flow(distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2)), bijector)
    params = init(flow, key, x_example)
    log_p = log_prob(flow, params, x)                 # x (B, 2) -> (B,)
    x, log_p = sample_and_log_prob(flow, params, key, 512)

Data carry one leading batch axis, ``x (B, *event)`` with ``*event`` the base's event shape,
and densities come back as (B,). Sampling runs ``bijector.forward`` (base -> data), densities
``bijector.inverse`` (data -> base), the library's convention (``nflows_jax.bijectors.base``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import distrax
import jax.numpy as jnp
import numpy as np

from nflows_jax.bijectors.base import Array, Bijector, Params, PRNGKey, check_batched
from nflows_jax.formatting import show


class Flow(NamedTuple):
    """``base`` is a distrax distribution whose event shape is the data's event shape."""

    base: distrax.Distribution
    bijector: Bijector


def standard_normal(event_shape: tuple[int, ...] | int, dtype=None) -> distrax.Distribution:
    """An isotropic standard normal base with the given event shape (an int means (D,)).

    ``dtype`` defaults to JAX's default float when the base is made (float64 under x64), and
    is the dtype of the noise ``sample`` draws.
    """
    if isinstance(event_shape, int):
        event_shape = (event_shape,)
    dtype = jnp.result_type(float) if dtype is None else dtype
    normal = distrax.Normal(jnp.zeros(event_shape, dtype), jnp.ones(event_shape, dtype))
    return distrax.Independent(normal, reinterpreted_batch_ndims=len(event_shape))


def _as_data(flow: Flow, x: Array) -> Array:
    """Check ``x`` is ``(batch, *event)``; cast integer data (uint8 images) to floating point.

    A density of integer data is only meaningful after dequantization (add uniform noise first);
    the cast only spares every layer from handling integer dtypes.
    """
    check_batched(x)
    event_shape = tuple(flow.base.event_shape)
    if tuple(x.shape[1:]) != event_shape:
        raise ValueError(
            f"x has shape {x.shape}; this flow expects (batch, *{event_shape}) "
            f"(the base distribution's event shape)"
        )
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _sample_shape(num_samples: int | tuple[int, ...]) -> tuple[int, ...]:
    shape = (num_samples,) if isinstance(num_samples, int | np.integer) else tuple(num_samples)
    if not shape or any(
        isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1 for n in shape
    ):
        raise ValueError(
            "num_samples must be a positive int or a tuple of positive ints, got "
            f"{show(num_samples)}"
        )
    return tuple(int(n) for n in shape)


def init(flow: Flow, key: PRNGKey, x: Array, context: Array | None = None) -> Params:
    """Initialise the bijector's params from an example batch ``x`` of shape ``(B, *event)``."""
    return flow.bijector.init(key, _as_data(flow, x), context)


def log_prob(flow: Flow, params: Params, x: Array, context: Array | None = None) -> Array:
    """``log p(x) = log p_base(f⁻¹(x)) + log|det ∂f⁻¹/∂x|``. Shapes: ``x (B, *event) -> (B,)``.

    One ``bijector.inverse`` pass (data -> base). Integer data (uint8 images) is cast to JAX's
    default float first; dequantize it before (``nflows_jax.dequantize``) for a real density.
    """
    z, log_det = flow.bijector.inverse(params, _as_data(flow, x), context)
    return flow.base.log_prob(z) + log_det


def sample_and_log_prob(
    flow: Flow,
    params: Params,
    key: PRNGKey,
    num_samples: int | tuple[int, ...],
    context: Array | None = None,
    temperature: float = 1.0,
) -> tuple[Array, Array]:
    """Draw samples and their log-density in one forward pass.

    ``num_samples`` is an int ``N`` or a sample shape ``S``: returns ``((*S, *event), S)``. With a
    ``context`` of shape ``(*S, C)`` each sample is drawn under its own context row.

    ``temperature`` T scales the base draw about 0 (Glow's reduced-temperature sampling): for a
    standard-normal base the samples come from the flow with base N(0, T² I), and the returned
    log-density is that tempered model's, ``log N(z; 0, T²) - log|det|``.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {show(temperature)}")
    shape = _sample_shape(num_samples)
    total = math.prod(shape)
    if context is not None:
        if tuple(jnp.shape(context)[:-1]) != shape:
            raise ValueError(
                f"context has shape {jnp.shape(context)}; expected (*sample_shape, C) with "
                f"sample_shape = num_samples = {shape}"
            )
        context = jnp.reshape(context, (total, jnp.shape(context)[-1]))
    z, base_log_prob = flow.base.sample_and_log_prob(seed=key, sample_shape=(total,))
    if temperature != 1.0:
        event_size = math.prod(flow.base.event_shape)
        z = temperature * z
        base_log_prob = base_log_prob - event_size * math.log(temperature)
    x, log_det = flow.bijector.forward(params, z, context)
    return x.reshape(shape + x.shape[1:]), (base_log_prob - log_det).reshape(shape)


def sample(
    flow: Flow,
    params: Params,
    key: PRNGKey,
    num_samples: int | tuple[int, ...],
    context: Array | None = None,
    temperature: float = 1.0,
) -> Array:
    """Draw samples of shape ``(*sample_shape, *event)``; see :func:`sample_and_log_prob`."""
    return sample_and_log_prob(flow, params, key, num_samples, context, temperature)[0]


class _DistraxBijector(distrax.Bijector):
    """Our bijector with fixed params (and context), seen by distrax.

    Flattens any batch shape to the one batch axis our bijectors take; a context (C,) is
    broadcast to every row.
    """

    def __init__(self, bijector: Bijector, params: Params, event_ndims: int, context=None):
        super().__init__(event_ndims_in=event_ndims)
        self._bijector = bijector
        self._params = params
        self._context = context

    def _apply(self, transform, x):
        event_shape = x.shape[x.ndim - self.event_ndims_in :]
        batch_shape = x.shape[: x.ndim - self.event_ndims_in]
        flat = x.reshape((-1, *event_shape))
        context = None
        if self._context is not None:
            context = jnp.broadcast_to(self._context, (flat.shape[0], self._context.shape[0]))
        y, log_det = transform(self._params, flat, context)
        return y.reshape(x.shape), log_det.reshape(batch_shape)

    def forward_and_log_det(self, x):
        return self._apply(self._bijector.forward, x)

    def inverse_and_log_det(self, y):
        return self._apply(self._bijector.inverse, y)


def to_distrax(flow: Flow, params: Params, context: Array | None = None) -> distrax.Transformed:
    """A ``distrax.Transformed`` with the params bound; agrees with ``log_prob``/``sample``.

    For a conditional flow pass one ``context`` vector (C,): the result is the distribution
    ``p(x | context)``, and every sample or density evaluation uses that context.
    """
    if context is not None:
        context = jnp.asarray(context)
        if context.ndim != 1:
            raise ValueError(
                f"to_distrax takes one context vector of shape (C,), got shape {context.shape}; "
                f"for per-row contexts call log_prob/sample_and_log_prob directly"
            )
    event_ndims = len(flow.base.event_shape)
    bijector = _DistraxBijector(flow.bijector, params, event_ndims, context)
    return distrax.Transformed(flow.base, bijector)


__all__ = [
    "Flow",
    "init",
    "log_prob",
    "sample",
    "sample_and_log_prob",
    "standard_normal",
    "to_distrax",
]

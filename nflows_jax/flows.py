"""Flows as distributions: a distrax base distribution pushed through a ``Bijector``.

``Flow`` holds no parameters; functions take ``params`` explicitly so the same flow can be
``jit``-ed, ``vmap``-ed over parameter sets and differentiated like any pure function::

    flow = Flow(distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2)), bijector)
    params = init(flow, key, x_example)
    log_p = log_prob(flow, params, x)                 # x (B, 2) -> (B,)
    x, log_p = sample_and_log_prob(flow, params, key, 512)
"""

from __future__ import annotations

from typing import NamedTuple

import distrax
import jax.numpy as jnp

from nflows_jax.bijectors.base import Array, Bijector, Params, PRNGKey, check_batched


class Flow(NamedTuple):
    """``base`` is a distrax distribution whose event shape is the data's event shape."""

    base: distrax.Distribution
    bijector: Bijector


def standard_normal(event_shape: tuple[int, ...] | int) -> distrax.Distribution:
    """An isotropic standard normal base with the given event shape (an int means (D,))."""
    if isinstance(event_shape, int):
        event_shape = (event_shape,)
    normal = distrax.Normal(jnp.zeros(event_shape), jnp.ones(event_shape))
    return distrax.Independent(normal, reinterpreted_batch_ndims=len(event_shape))


def _check_event_shape(flow: Flow, x: Array) -> None:
    check_batched(x)
    event_shape = tuple(flow.base.event_shape)
    if tuple(x.shape[1:]) != event_shape:
        raise ValueError(
            f"x has shape {x.shape}; this flow expects (batch, *{event_shape}) "
            f"(the base distribution's event shape)"
        )


def init(flow: Flow, key: PRNGKey, x: Array, context: Array | None = None) -> Params:
    """Initialise the bijector's params from an example batch ``x`` of shape (B, *event)."""
    _check_event_shape(flow, x)
    return flow.bijector.init(key, x, context)


def log_prob(flow: Flow, params: Params, x: Array, context: Array | None = None) -> Array:
    """log p(x) = log p_base(f⁻¹(x)) + log|det ∂f⁻¹/∂x|. Shapes: x (B, *event) -> (B,)."""
    _check_event_shape(flow, x)
    z, log_det = flow.bijector.inverse(params, x, context)
    return flow.base.log_prob(z) + log_det


def sample_and_log_prob(
    flow: Flow, params: Params, key: PRNGKey, num_samples: int, context: Array | None = None
) -> tuple[Array, Array]:
    """Draw ``num_samples`` and their log-density in one forward pass: ((N, *event), (N,)).

    With a ``context`` of shape (N, C) each sample is drawn under its own context row.
    """
    if context is not None and context.shape[0] != num_samples:
        raise ValueError(f"context has {context.shape[0]} rows; expected num_samples={num_samples}")
    z, base_log_prob = flow.base.sample_and_log_prob(seed=key, sample_shape=(num_samples,))
    x, log_det = flow.bijector.forward(params, z, context)
    return x, base_log_prob - log_det


def sample(
    flow: Flow, params: Params, key: PRNGKey, num_samples: int, context: Array | None = None
) -> Array:
    """Draw ``num_samples`` samples: (N, *event)."""
    return sample_and_log_prob(flow, params, key, num_samples, context)[0]


class _DistraxBijector(distrax.Bijector):
    """Our bijector with fixed params, seen by distrax. Flattens any batch shape to one axis."""

    def __init__(self, bijector: Bijector, params: Params, event_ndims: int):
        super().__init__(event_ndims_in=event_ndims)
        self._bijector = bijector
        self._params = params

    def _apply(self, transform, x):
        event_shape = x.shape[x.ndim - self.event_ndims_in :]
        batch_shape = x.shape[: x.ndim - self.event_ndims_in]
        flat = x.reshape((-1, *event_shape))
        y, log_det = transform(self._params, flat)
        return y.reshape(x.shape), log_det.reshape(batch_shape)

    def forward_and_log_det(self, x):
        return self._apply(self._bijector.forward, x)

    def inverse_and_log_det(self, y):
        return self._apply(self._bijector.inverse, y)


def to_distrax(flow: Flow, params: Params) -> distrax.Transformed:
    """A ``distrax.Transformed`` with the params bound; agrees with ``log_prob``/``sample``."""
    event_ndims = len(flow.base.event_shape)
    return distrax.Transformed(flow.base, _DistraxBijector(flow.bijector, params, event_ndims))


__all__ = [
    "Flow",
    "init",
    "log_prob",
    "sample",
    "sample_and_log_prob",
    "standard_normal",
    "to_distrax",
]

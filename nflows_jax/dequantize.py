"""Dequantization of discrete images, logit pre-processing and bits per dimension.

Images arrive from ``nflows_jax.data`` as integers ``x`` in ``{0, ..., K-1}^D`` (uint8 NHWC,
``K = 2**num_bits``). A flow is a density on a continuous space, so it is fitted to the
*dequantized* ``y = (x + u) / K`` in ``[0, 1)^D``. Each integer ``x`` owns the bin
``[x/K, (x+1)/K)^D`` of volume ``K^-D``, and a continuous density ``p̂`` on ``[0, 1)^D`` defines the
discrete model ``P(x) = ∫_bin p̂``. Two lower bounds on ``log P(x)`` follow (Theis et al. 2016;
Ho et al. 2019, Flow++):

* **uniform** (:func:`uniform_dequantize`, :func:`uniform_dequantization_elbo`), u ~ U[0, 1)^D::

      E_u[log p̂((x + u)/K)] - D log K  <=  log E_u[p̂((x + u)/K)] - D log K  =  log P(x)

  by Jensen's inequality; equality iff ``p̂`` is constant on the bin (a piecewise-constant p̂).
* **variational** (:func:`variational_dequantization_elbo`), u ~ q(u | x) on (0, 1)^D::

      E_q[log p̂((x + u)/K) - log q(u | x)] - D log K  <=  log P(x),

  with equality iff ``q(u | x) ∝ p̂((x + u)/K)``; uniform q recovers the uniform bound.

Bits per dimension of the discrete data are ``-log P(x) / (D log 2)``; computed from either bound
(:func:`bits_per_dim`) they are an *upper* bound on the discrete model's bits/dim.

The flow's ``log_prob`` must be a density on the pixel space ``[0, 1)^D`` itself: chain every
pre-processing map into the bijector (e.g. ``chain(coupling_layers..., logit_preprocess())``,
forward = base -> pixels) so its Jacobian is counted, and leave the ``1/K`` of the dequantization
to this module (the ``- D log K`` above).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nflows_jax.bijectors.base import (
    Array,
    Bijector,
    Params,
    PRNGKey,
    chain,
    check_batched,
    no_params,
    sum_event,
)
from nflows_jax.bijectors.elementwise import sigmoid
from nflows_jax.formatting import show
from nflows_jax.nets.mlp import MLP

LogProbFn = Callable[[Array], Array]


# ------------------------------------------------------------------------------------------------
# Checks
# ------------------------------------------------------------------------------------------------


def _check_num_bits(num_bits: int, minimum: int = 1) -> int:
    """Validate ``num_bits`` (a Python/NumPy int in [minimum, 16]) and return it as an int."""
    if isinstance(num_bits, bool) or not isinstance(num_bits, int | np.integer):
        raise TypeError(f"num_bits must be an int, got {show(num_bits)}")
    if not minimum <= num_bits <= 16:
        raise ValueError(f"num_bits must be in [{minimum}, 16], got {int(num_bits)}")
    return int(num_bits)


def _check_positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {show(value)}")
    return int(value)


def check_discrete(x: Array, num_bits: int) -> None:
    """Raise if ``x`` is not integer data in ``[0, 2**num_bits)``; shape ``(B, *event)``.

    The dtype is checked always (float data is most likely already dequantized or scaled, and
    dequantizing it again would give a wrong likelihood); the range only when ``x`` is concrete
    (under ``jit`` the values are tracers and cannot be inspected).
    """
    check_batched(x)
    num_levels = 2 ** _check_num_bits(num_bits)
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(
            f"dequantization needs integer data (uint8 images in 0..{num_levels - 1}); got dtype "
            f"{dtype}. Float data is already continuous: do not dequantize it again"
        )
    try:
        concrete = np.asarray(x)
    except jax.errors.TracerArrayConversionError:
        return
    low, high = int(concrete.min()), int(concrete.max())
    if low < 0 or high >= num_levels:
        raise ValueError(
            f"data must lie in [0, {num_levels}) for num_bits={num_bits}; got values in "
            f"[{low}, {high}]"
        )


def _float_dtype(dtype) -> jnp.dtype:
    return jnp.result_type(float) if dtype is None else jnp.dtype(dtype)


def _to_bin(x: Array, u: Array, num_levels: int) -> Array:
    """``(x + u) / K`` kept inside x's bin ``[x/K, (x+1)/K)``, with u in [0, 1] (any float).

    In float32 ``255 + u`` rounds to 256 for u within 2^-17 of 1, which would move the point into
    the next bin (or to 1.0, outside the pixel space). ``x/K`` and ``(x+1)/K`` are exact (K is a
    power of two), so the result is clipped to the largest float below ``(x+1)/K``.
    """
    y = (x + u) / num_levels
    upper = jnp.nextafter((x + 1) / num_levels, jnp.zeros((), y.dtype))
    return jnp.clip(y, x / num_levels, upper)


# ------------------------------------------------------------------------------------------------
# Uniform dequantization
# ------------------------------------------------------------------------------------------------


def uniform_dequantize(key: PRNGKey, x: Array, num_bits: int = 8, dtype=None) -> Array:
    """``y = (x + u) / K`` with ``u ~ U[0, 1)^D`` and ``K = 2**num_bits``: ``(B, *event)`` -> same.

    ``x`` is integer data in ``[0, K)`` (checked, see :func:`check_discrete`); ``y`` is float
    (``dtype``, default JAX's default float) in ``[0, 1)``, inside x's bin ``[x/K, (x+1)/K)``.
    For a continuous density p̂ on [0, 1)^D, ``E_u[log p̂(y)] - D log K <= log P(x)`` (Jensen,
    see the module docstring), so bits/dim computed from ``log p̂(y)`` with :func:`bits_per_dim`
    upper-bound the discrete model's bits/dim.
    """
    check_discrete(x, num_bits)
    dtype = _float_dtype(dtype)
    u = jax.random.uniform(key, jnp.shape(x), dtype)
    return _to_bin(jnp.asarray(x).astype(dtype), u, 2**num_bits)


def _num_dims(x: Array) -> int:
    return math.prod(jnp.shape(x)[1:])


def _flat_log_prob(model_log_prob: LogProbFn, y: Array) -> Array:
    """Evaluate ``model_log_prob`` on samples ``(S, B, *event)`` as one batch: returns (S, B)."""
    num_samples, batch = y.shape[:2]
    log_p = model_log_prob(y.reshape((num_samples * batch, *y.shape[2:])))
    if jnp.shape(log_p) != (num_samples * batch,):
        raise ValueError(
            f"model_log_prob must map (N, *event) to (N,); got shape {jnp.shape(log_p)} for "
            f"N = {num_samples * batch}"
        )
    return log_p.reshape(num_samples, batch)


def uniform_elbo_samples(
    key: PRNGKey,
    x: Array,
    model_log_prob: LogProbFn,
    num_bits: int = 8,
    num_samples: int = 1,
    dtype=None,
) -> Array:
    """Per-sample terms ``log p̂((x + u)/K) - D log K``, u ~ U[0, 1)^D: shape (S, B).

    Their mean over the S axis is :func:`uniform_dequantization_elbo`; their spread gives its
    Monte-Carlo standard error. ``model_log_prob`` maps ``(N, *event)`` pixels in [0, 1) to (N,).
    """
    check_discrete(x, num_bits)
    num_samples = _check_positive_int(num_samples, "num_samples")
    dtype = _float_dtype(dtype)
    u = jax.random.uniform(key, (num_samples, *jnp.shape(x)), dtype)
    y = _to_bin(jnp.asarray(x).astype(dtype), u, 2**num_bits)
    return _flat_log_prob(model_log_prob, y) - _num_dims(x) * num_bits * math.log(2.0)


def uniform_dequantization_elbo(
    key: PRNGKey,
    x: Array,
    model_log_prob: LogProbFn,
    num_bits: int = 8,
    num_samples: int = 1,
    dtype=None,
) -> Array:
    """Monte-Carlo ``E_u[log p̂((x + u)/K)] - D log K <= log P(x)``, per example: (B,) nats."""
    return jnp.mean(uniform_elbo_samples(key, x, model_log_prob, num_bits, num_samples, dtype), 0)


# ------------------------------------------------------------------------------------------------
# Bits per dimension
# ------------------------------------------------------------------------------------------------


def bits_per_dim(log_likelihood: Array, num_dims: int, num_bits: int = 8) -> Array:
    """Bits/dim of discrete data from the continuous log-density of ``y = (x + u)/K``.

    ``bpd = -(log p̂(y) - D log K) / (D log 2) = num_bits - log p̂(y) / (D log 2)``, elementwise
    over ``log_likelihood`` (nats, per example, e.g. (B,)). The ``1/K`` scaling of the
    dequantization is counted here (the ``D log K``); every other pre-processing Jacobian
    (logit, centring) must already be in ``log_likelihood``, i.e. the flow's ``log_prob`` is a
    density on the pixel space [0, 1)^D (chain :func:`logit_preprocess` into the flow).
    A log-likelihood of the discrete data itself, or an ELBO from this module (which already
    subtracts ``D log K``), takes ``num_bits=0``.
    """
    num_dims = _check_positive_int(num_dims, "num_dims")
    num_bits = _check_num_bits(num_bits, minimum=0)
    log_likelihood = jnp.asarray(log_likelihood)
    return num_bits - log_likelihood / (num_dims * math.log(2.0))


# ------------------------------------------------------------------------------------------------
# Logit pre-processing
# ------------------------------------------------------------------------------------------------


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float | np.floating | np.integer):
        raise TypeError(f"alpha must be a float, got {show(alpha)}")
    if not 0.0 <= alpha < 0.5:
        raise ValueError(f"alpha must be in [0, 0.5), got {show(alpha)}")
    return float(alpha)


def _check_pixel_domain(y: Array, low: float, high: float) -> None:
    """Raise if concrete ``y`` leaves (low, high), the inverse domain; tracers pass unchecked."""
    try:
        concrete = np.asarray(y)
    except jax.errors.TracerArrayConversionError:
        return
    inside = (concrete > low) & (concrete < high)
    if not np.all(inside):
        raise ValueError(
            f"logit_preprocess inverse needs pixels in ({low:.6g}, {high:.6g}) (this contains "
            f"[0, 1)); got {int(inside.size - np.count_nonzero(inside))} value(s) outside it "
            f"(min {np.nanmin(concrete):.6g}, max {np.nanmax(concrete):.6g})"
        )


def logit_preprocess(alpha: float = 0.05) -> Bijector:
    """Logit space <-> pixel space, as in RealNVP: no params.

    ``forward`` (base -> data): ``y = (sigmoid(z) - alpha) / (1 - 2 alpha)``, R -> pixels.
    ``inverse`` (data -> base): ``z = logit(alpha + (1 - 2 alpha) y)``, needs
    ``alpha + (1 - 2 alpha) y`` in (0, 1), so every pixel in [0, 1) is inside the domain (also
    for ``alpha = 0`` except y = 0 exactly). Log-dets, summed over the event::

        forward: sum(log sigmoid'(z)) - D log(1 - 2 alpha)
        inverse: D log(1 - 2 alpha) - sum(log s + log(1 - s)),   s = alpha + (1 - 2 alpha) y

    ``alpha`` keeps pixels near 0 and 1 away from logit's singularities. Chain it last in the
    flow (``chain(..., logit_preprocess())``) so ``log_prob`` is a density on [0, 1)^D pixels.
    Outside ``jit`` an input outside the domain raises ``ValueError``; under ``jit`` it is
    clamped as in :func:`nflows_jax.bijectors.elementwise.sigmoid`.
    """
    alpha = _check_alpha(alpha)
    scale = 1.0 - 2.0 * alpha
    low, high = -alpha / scale, (1.0 - alpha) / scale
    squash = sigmoid()

    def forward(params: Params, z: Array, context: Array | None = None):
        del params, context
        s, log_det = squash.forward((), z)
        return (s - alpha) / scale, log_det - _num_dims(z) * math.log(scale)

    def inverse(params: Params, y: Array, context: Array | None = None):
        del params, context
        check_batched(y, "y")
        _check_pixel_domain(y, low, high)
        z, log_det = squash.inverse((), alpha + scale * y)
        return z, log_det + _num_dims(y) * math.log(scale)

    return Bijector(no_params, forward, inverse)


# ------------------------------------------------------------------------------------------------
# Variational dequantization
# ------------------------------------------------------------------------------------------------


def image_context(x: Array, num_bits: int = 8, dtype=None) -> Array:
    """The context a noise model sees: ``2 x / K - 1`` flattened, ``(B, *event) -> (B, D)``.

    In ``dtype`` (default: JAX's default float), values in [-1, 1).
    """
    check_batched(x)
    num_levels = 2 ** _check_num_bits(num_bits)
    dtype = _float_dtype(dtype)
    x = jnp.asarray(x).astype(dtype)
    return (2.0 * x / num_levels - 1.0).reshape(x.shape[0], -1)


def conditional_affine(hidden: Sequence[int] = (64,), max_log_scale: float = 3.0) -> Bijector:
    """``y = x * exp(s(c)) + t(c)`` elementwise, ``t, s`` from an MLP of the context c (B, C).

    ``s = max_log_scale * tanh(raw / max_log_scale)`` (bounded). ``forward`` is the map above
    with log-det ``sum(s)``, ``inverse`` is ``(y - t) * exp(-s)`` with ``-sum(s)``; x and y are
    ``(B, *event)``, log-dets (B,), and a context is required (also at ``init``). The MLP's
    output layer is zero at init, so a fresh layer is the identity. Params: the MLP's flax
    params (dtype of ``x``).
    """
    if not max_log_scale > 0:
        raise ValueError(f"max_log_scale must be > 0, got {show(max_log_scale)}")
    hidden = tuple(hidden)

    def net(x: Array) -> MLP:
        return MLP(hidden, 2 * _num_dims(x), param_dtype=x.dtype)

    def shift_and_log_scale(params: Params, x: Array, context: Array | None):
        check_batched(x)
        if context is None or jnp.ndim(context) != 2 or jnp.shape(context)[0] != x.shape[0]:
            raise ValueError(
                f"conditional_affine needs a context of shape (B, C) with B = {x.shape[0]}; got "
                f"{None if context is None else jnp.shape(context)}"
            )
        out = net(x).apply(params, context).reshape(x.shape[0], 2, *x.shape[1:])
        return out[:, 0], max_log_scale * jnp.tanh(out[:, 1] / max_log_scale)

    def init(key: PRNGKey, x: Array, context: Array | None = None) -> Params:
        check_batched(x)
        if context is None:
            raise ValueError("conditional_affine needs a context of shape (B, C) at init")
        return net(x).init(key, jnp.asarray(context, x.dtype))

    def forward(params: Params, x: Array, context: Array | None = None):
        shift, log_scale = shift_and_log_scale(params, x, context)
        return x * jnp.exp(log_scale) + shift, sum_event(log_scale)

    def inverse(params: Params, y: Array, context: Array | None = None):
        shift, log_scale = shift_and_log_scale(params, y, context)
        return (y - shift) * jnp.exp(-log_scale), -sum_event(log_scale)

    return Bijector(init, forward, inverse)


def dequantization_noise(hidden: Sequence[int] = (64,), max_log_scale: float = 3.0) -> Bijector:
    """A conditional noise bijector for q(u | x): ``u = sigmoid(eps * exp(s(x)) + t(x))``.

    ``forward`` maps logistic noise ``eps`` ``(B, *event)`` to ``u`` in (0, 1) given the context
    :func:`image_context` (B, D), with ``log|det du/deps|`` (B,); ``inverse`` maps u back to eps.
    At init (``s = t = 0``) u = sigmoid(eps) is exactly uniform,
    so q is the uniform dequantization. Any conditional bijector R^D -> (0, 1)^D works in its
    place (e.g. coupling layers chained before the sigmoid).
    """
    return chain(conditional_affine(hidden, max_log_scale), sigmoid())


def init_dequantization_noise(
    key: PRNGKey, noise: Bijector, x: Array, num_bits: int = 8, dtype=None
) -> Params:
    """Initialise ``noise``'s params from an example image batch ``x`` ``(B, *event)`` integers."""
    check_discrete(x, num_bits)
    dtype = _float_dtype(dtype)
    eps = jnp.zeros(jnp.shape(x), dtype)
    return noise.init(key, eps, image_context(x, num_bits, dtype))


def _logistic_log_prob(eps: Array) -> Array:
    """log density of the standard logistic, summed over the event: ``(N, *event)`` -> (N,)."""
    return sum_event(-jax.nn.softplus(-eps) - jax.nn.softplus(eps))


def variational_elbo_samples(
    key: PRNGKey,
    x: Array,
    model_log_prob: LogProbFn,
    noise: Bijector,
    noise_params: Params,
    num_bits: int = 8,
    num_samples: int = 1,
    dtype=None,
) -> Array:
    """Per-sample terms ``log p̂((x + u)/K) - log q(u | x) - D log K``, u ~ q(u | x): (S, B).

    ``eps`` is standard logistic, drawn as ``logit(v)`` from ``v ~ U(0, 1)`` with the same key and
    shape as :func:`uniform_elbo_samples` draws its u (so at identity noise params the two share
    their samples); ``u, log|det| = noise.forward(noise_params, eps, image_context(x))`` and
    ``log q(u | x) = log p_logistic(eps) - log|det|``. In float32 a saturated sigmoid
    (``|arg| > ~17``) returns u = 0 or 1; y is then clipped into x's bin as in
    :func:`uniform_dequantize` while log q keeps its (finite) value.
    """
    check_discrete(x, num_bits)
    num_samples = _check_positive_int(num_samples, "num_samples")
    dtype = _float_dtype(dtype)
    shape = jnp.shape(x)
    v = jax.random.uniform(key, (num_samples, *shape), dtype)
    tiny, below_one = float(jnp.finfo(dtype).tiny), 1.0 - float(jnp.finfo(dtype).epsneg)
    v = jnp.clip(v, tiny, below_one).reshape((num_samples * shape[0], *shape[1:]))
    eps = jnp.log(v) - jnp.log1p(-v)
    context = jnp.tile(image_context(x, num_bits, dtype), (num_samples, 1))
    u, log_det = noise.forward(noise_params, eps, context)
    log_q = (_logistic_log_prob(eps) - log_det).reshape(num_samples, shape[0])
    x_tiled = jnp.tile(jnp.asarray(x).astype(dtype), (num_samples, *(1,) * (len(shape) - 1)))
    y = _to_bin(x_tiled, u, 2**num_bits).reshape((num_samples, *shape))
    log_p = _flat_log_prob(model_log_prob, y)
    return log_p - log_q - _num_dims(x) * num_bits * math.log(2.0)


def variational_dequantization_elbo(
    key: PRNGKey,
    x: Array,
    model_log_prob: LogProbFn,
    noise: Bijector,
    noise_params: Params,
    num_bits: int = 8,
    num_samples: int = 1,
    dtype=None,
) -> Array:
    """Monte-Carlo ``E_q[log p̂((x+u)/K) - log q(u|x)] - D log K <= log P(x)``: (B,) nats.

    Maximise it jointly over the flow's and the noise's params; bits/dim of the discrete data are
    ``bits_per_dim(elbo, D, num_bits=0)`` (an upper bound on the model's true bits/dim).
    """
    terms = variational_elbo_samples(
        key, x, model_log_prob, noise, noise_params, num_bits, num_samples, dtype
    )
    return jnp.mean(terms, 0)


__all__ = [
    "bits_per_dim",
    "check_discrete",
    "conditional_affine",
    "dequantization_noise",
    "image_context",
    "init_dequantization_noise",
    "logit_preprocess",
    "uniform_dequantization_elbo",
    "uniform_dequantize",
    "uniform_elbo_samples",
    "variational_dequantization_elbo",
    "variational_elbo_samples",
]

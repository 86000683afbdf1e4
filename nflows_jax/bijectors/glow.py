"""Glow's layers on NHWC images: actnorm, invertible 1×1 convolutions, squeeze.

Every layer takes arrays of shape (B, H, W, C) (batch, height, width, channels) and returns a
log-determinant of shape (B,). Actnorm and the 1×1 convolutions act on the last axis only, so they
also accept any ``(B, *spatial, C)``, e.g. (B, D) vectors; squeeze needs exactly (B, H, W, C).
``forward`` is base -> data with ``log|det dy/dx|``, ``inverse`` data -> base with
``log|det dx/dy|`` (``nflows_jax.bijectors.base``); the formulas below are the forward maps.

* :func:`actnorm`: per-channel affine ``y = x * exp(log_scale) + bias`` with data-dependent
  initialisation (the init batch leaves the layer with zero mean and unit variance per channel).
* :func:`invertible_conv1x1`: ``y[b, h, w, :] = W x[b, h, w, :]`` with a free (C, C) matrix ``W``
  (log-det by ``slogdet``, inverse by ``inv``), initialised to a random rotation.
* :func:`invertible_conv1x1_lu`: the same map with ``W = P L (U + diag(sign · exp(log_abs_s)))``
  (Kingma & Dhariwal 2018, sec. 3.2), log-det ``H·W·sum(log_abs_s)`` in O(C), inverse by two
  triangular solves. ``P`` and ``sign`` are constants closed over by the functions (never params
  that optax would update); built with the same seed, it starts equal to the plain version.
* :func:`squeeze`: space-to-depth (B, H, W, C) -> (B, H/f, W/f, f²C), a permutation of the
  entries (log-det exactly 0). It changes the event shape.

Params take the floating dtype of the ``x`` given to ``init`` (float64 data under x64 gives
float64 params; integer data gives JAX's default float).

Initialisation batches flow in the ``forward`` direction, as in ``chain`` and ``repeat``:
actnorm standardises what *enters its forward pass* at init.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from nflows_jax.bijectors.base import Array, Bijector, PRNGKey, check_batched, no_params
from nflows_jax.formatting import show

DEFAULT_MIN_STD = 1e-6


def _float_dtype(x: Array) -> jnp.dtype:
    """``x``'s floating dtype, or JAX's default float for integer or boolean ``x``."""
    dtype = jnp.result_type(x)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)


def _pixels(x: Array) -> int:
    """The number of positions a per-channel map acts on: prod(x.shape[1:-1]) (H·W for NHWC)."""
    return int(np.prod(x.shape[1:-1], dtype=np.int64))


def _check_channels(layer: str, x: Array, channels: int, name: str) -> None:
    """Trace-time check that ``x`` is (B, ..., channels)."""
    check_batched(x, name)
    if x.shape[-1] != channels:
        raise ValueError(
            f"{layer} has {channels} channels but {name} has shape {x.shape} "
            f"(last axis {x.shape[-1]}); images are NHWC: (batch, height, width, channels)"
        )


def _check_channels_arg(layer: str, channels) -> int:
    if isinstance(channels, bool) or not isinstance(channels, int | np.integer) or channels < 1:
        raise ValueError(f"{layer} needs an integer channels >= 1, got {show(channels)}")
    return int(channels)


# ------------------------------------------------------------------------------------------------
# Actnorm
# ------------------------------------------------------------------------------------------------


class ActNormParams(NamedTuple):
    """Per-channel affine ``y = x * exp(log_scale) + bias``; both leaves have shape (C,)."""

    log_scale: Array
    bias: Array


def actnorm(min_std: float = DEFAULT_MIN_STD) -> Bijector:
    """Glow's activation normalisation: ``y = x * exp(log_scale) + bias`` per channel.

    ``init(key, x)`` is data-dependent: with ``mean`` and ``var`` the per-channel mean and
    population variance (ddof = 0) of ``x`` over every axis but the last,
    ``log_scale = -log(std)`` and ``bias = -mean / std`` where ``std = sqrt(max(var, min_std²))``,
    so ``forward(params, x)`` has zero mean and unit variance per channel (exactly, up to
    rounding, unless a channel's std is below the floor ``min_std``: a constant channel is then
    only centred, scaled by ``1 / min_std`` at most). The key is unused.

    Shapes: x ``(B, *spatial, C)``, typically NHWC; params :class:`ActNormParams` of (C,) leaves.
    The log-det is ``prod(spatial) · sum(log_scale)`` for every row (``H·W·sum(log_scale)``),
    its negative for the inverse ``x = (y - bias) * exp(-log_scale)``.
    """
    if not min_std > 0:
        raise ValueError(f"actnorm needs min_std > 0, got {show(min_std)}")

    def init(key: PRNGKey, x: Array, context: Array | None = None) -> ActNormParams:
        del key, context
        check_batched(x, "x")
        x = jnp.asarray(x, _float_dtype(x))
        axes = tuple(range(x.ndim - 1))
        mean = jnp.mean(x, axis=axes)
        var = jnp.mean(jnp.square(x - mean), axis=axes)
        # Clamp before the log (not after, in a where): a constant channel gets std = min_std.
        log_std = 0.5 * jnp.log(jnp.maximum(var, jnp.asarray(min_std, x.dtype) ** 2))
        return ActNormParams(log_scale=-log_std, bias=-mean * jnp.exp(-log_std))

    def log_det(params: ActNormParams, x: Array) -> Array:
        total = _pixels(x) * jnp.sum(params.log_scale)
        return jnp.broadcast_to(total, x.shape[:1]).astype(jnp.result_type(x, total))

    def forward(params: ActNormParams, x: Array, context: Array | None = None):
        _check_channels("actnorm", x, params.log_scale.shape[-1], "x")
        return x * jnp.exp(params.log_scale) + params.bias, log_det(params, x)

    def inverse(params: ActNormParams, y: Array, context: Array | None = None):
        _check_channels("actnorm", y, params.log_scale.shape[-1], "y")
        return (y - params.bias) * jnp.exp(-params.log_scale), -log_det(params, y)

    return Bijector(init, forward, inverse)


# ------------------------------------------------------------------------------------------------
# Invertible 1x1 convolutions
# ------------------------------------------------------------------------------------------------


def random_rotation(channels: int, seed: int = 0) -> np.ndarray:
    """A random rotation (C, C) in float64: QR of a Gaussian, signs fixed, det = +1.

    ``Q`` of ``A = QR`` times ``sign(diag(R))`` is Haar-distributed on the orthogonal group; one
    column is negated when its determinant is -1, so the result is a rotation (``|det| = 1`` either
    way; det = +1 makes the LU sign vector's product +1).
    """
    channels = _check_channels_arg("random_rotation", channels)
    gaussian = np.random.default_rng(seed).standard_normal((channels, channels))
    q, r = np.linalg.qr(gaussian)
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _apply_matrix(matrix: Array, x: Array) -> Array:
    """``y[..., :] = matrix @ x[..., :]`` at every position: (C, C), (B, ..., C) -> (B, ..., C)."""
    return jnp.einsum("...c,dc->...d", x, matrix)


class Conv1x1Params(NamedTuple):
    """The (C, C) matrix of a plain invertible 1×1 convolution."""

    weight: Array


def invertible_conv1x1(channels: int, seed: int = 0) -> Bijector:
    """Glow's invertible 1×1 convolution ``y[b, h, w, :] = W x[b, h, w, :]`` with a free W.

    ``init`` sets ``W`` to :func:`random_rotation` ``(channels, seed)`` in ``x``'s dtype (the key
    is unused, so every copy inside ``repeat`` starts at the same rotation; powers of a rotation
    still mix channels differently at each depth). The log-det is ``H·W·log|det W|``
    (``jnp.linalg.slogdet``, O(C³)) forward, and its negative for the inverse, which applies
    ``inv(W)``.

    Shapes: x (B, H, W, C) (any ``(B, *spatial, C)``); params :class:`Conv1x1Params` with (C, C).
    """
    channels = _check_channels_arg("invertible_conv1x1", channels)
    rotation = random_rotation(channels, seed)

    def init(key: PRNGKey, x: Array, context: Array | None = None) -> Conv1x1Params:
        del key, context
        _check_channels("invertible_conv1x1", x, channels, "x")
        return Conv1x1Params(jnp.asarray(rotation, _float_dtype(x)))

    def log_det(weight: Array, x: Array) -> Array:
        total = _pixels(x) * jnp.linalg.slogdet(weight)[1]
        return jnp.broadcast_to(total, x.shape[:1]).astype(jnp.result_type(x, total))

    def forward(params: Conv1x1Params, x: Array, context: Array | None = None):
        _check_channels("invertible_conv1x1", x, channels, "x")
        return _apply_matrix(params.weight, x), log_det(params.weight, x)

    def inverse(params: Conv1x1Params, y: Array, context: Array | None = None):
        _check_channels("invertible_conv1x1", y, channels, "y")
        return _apply_matrix(jnp.linalg.inv(params.weight), y), -log_det(params.weight, y)

    return Bijector(init, forward, inverse)


class Conv1x1LUParams(NamedTuple):
    """``W = P L (U + diag(sign · exp(log_abs_s)))``, the trainable parts.

    Only the strictly lower triangle of ``lower`` (C, C) and the strictly upper triangle of
    ``upper`` (C, C) are used (the rest is masked, so updates there change nothing); ``L`` has a
    unit diagonal. ``log_abs_s`` (C,) is log|diag| of the upper factor.
    """

    lower: Array
    upper: Array
    log_abs_s: Array


class _LUConstants(NamedTuple):
    """The fixed parts of an LU-parameterised 1×1 convolution and its initial factors (float64)."""

    permutation: np.ndarray  # (C, C) permutation matrix P
    sign: np.ndarray  # (C,) signs of diag(U), each ±1
    lower: np.ndarray  # (C, C) strictly lower part of L at init
    upper: np.ndarray  # (C, C) strictly upper part of U at init
    log_abs_s: np.ndarray  # (C,) log|diag(U)| at init


def _lu_constants(channels: int, seed: int) -> _LUConstants:
    """LU-decompose :func:`random_rotation`: ``rotation = P L U`` (scipy, partial pivoting)."""
    permutation, lower, upper = scipy.linalg.lu(random_rotation(channels, seed))
    diag = np.diag(upper)
    return _LUConstants(
        permutation=permutation,
        sign=np.sign(diag),
        lower=np.tril(lower, -1),
        upper=np.triu(upper, 1),
        log_abs_s=np.log(np.abs(diag)),
    )


def invertible_conv1x1_lu(channels: int, seed: int = 0) -> Bijector:
    """The invertible 1×1 convolution with an LU-parameterised matrix (Glow, sec. 3.2).

    ``W = P L (U + diag(sign · exp(log_abs_s)))`` with ``P`` a fixed permutation matrix, ``L``
    unit lower triangular, ``U`` strictly upper triangular and ``sign`` a fixed ±1 vector; ``P``
    and ``sign`` are computed at construction from ``seed`` and closed over (not params). ``init``
    sets the params to the LU factors of :func:`random_rotation` ``(channels, seed)``, in ``x``'s
    dtype, so it starts equal (up to rounding) to ``invertible_conv1x1(channels, seed)``; the key
    is unused. The forward log-det is ``H·W·sum(log_abs_s)``; the inverse solves with ``U'`` and
    ``L`` (triangular solves), applies ``Pᵀ`` and returns the negated log-det.

    Shapes: x (B, H, W, C) (any ``(B, *spatial, C)``); params :class:`Conv1x1LUParams`.
    """
    channels = _check_channels_arg("invertible_conv1x1_lu", channels)
    constants = _lu_constants(channels, seed)
    strictly_lower = np.tril(np.ones((channels, channels), bool), -1)
    strictly_upper = strictly_lower.T

    def init(key: PRNGKey, x: Array, context: Array | None = None) -> Conv1x1LUParams:
        del key, context
        _check_channels("invertible_conv1x1_lu", x, channels, "x")
        dtype = _float_dtype(x)
        return Conv1x1LUParams(
            lower=jnp.asarray(constants.lower, dtype),
            upper=jnp.asarray(constants.upper, dtype),
            log_abs_s=jnp.asarray(constants.log_abs_s, dtype),
        )

    def factors(params: Conv1x1LUParams) -> tuple[Array, Array, Array]:
        """(P, L, U') in the params' dtype, U' = U + diag(sign · exp(log_abs_s))."""
        dtype = params.log_abs_s.dtype
        lower = jnp.where(strictly_lower, params.lower, 0) + jnp.eye(channels, dtype=dtype)
        diag = jnp.asarray(constants.sign, dtype) * jnp.exp(params.log_abs_s)
        upper = jnp.where(strictly_upper, params.upper, 0) + jnp.diag(diag)
        return jnp.asarray(constants.permutation, dtype), lower, upper

    def log_det(params: Conv1x1LUParams, x: Array) -> Array:
        total = _pixels(x) * jnp.sum(params.log_abs_s)
        return jnp.broadcast_to(total, x.shape[:1]).astype(jnp.result_type(x, total))

    def forward(params: Conv1x1LUParams, x: Array, context: Array | None = None):
        _check_channels("invertible_conv1x1_lu", x, channels, "x")
        permutation, lower, upper = factors(params)
        return _apply_matrix(permutation @ (lower @ upper), x), log_det(params, x)

    def inverse(params: Conv1x1LUParams, y: Array, context: Array | None = None):
        _check_channels("invertible_conv1x1_lu", y, channels, "y")
        permutation, lower, upper = factors(params)
        columns = (y.reshape(-1, channels) @ permutation).T  # Pᵀ y at every position: (C, N)
        columns = jax.scipy.linalg.solve_triangular(lower, columns, lower=True, unit_diagonal=True)
        columns = jax.scipy.linalg.solve_triangular(upper, columns, lower=False)
        return columns.T.reshape(y.shape), -log_det(params, y)

    return Bijector(init, forward, inverse)


# ------------------------------------------------------------------------------------------------
# Squeeze
# ------------------------------------------------------------------------------------------------


def _check_factor(factor) -> int:
    if isinstance(factor, bool) or not isinstance(factor, int | np.integer) or factor < 1:
        raise ValueError(f"squeeze needs an integer factor >= 1, got {show(factor)}")
    return int(factor)


def squeeze(factor: int = 2) -> Bijector:
    """Space-to-depth: (B, H, W, C) -> (B, H/f, W/f, f·f·C); log-det exactly 0, no params.

    ``y[b, i, j, (p·f + q)·C + c] = x[b, i·f + p, j·f + q, c]`` for ``0 <= p, q < f``: each
    f×f patch becomes one position whose channels list the patch row by row (``forward``).
    ``inverse`` is depth-to-space. This changes the event shape (a pure reshape-and-transpose,
    i.e. a permutation of the entries). H and W must be divisible by ``factor`` (checked at trace
    time).
    """
    factor = _check_factor(factor)

    def check_image(x: Array, name: str) -> None:
        if jnp.ndim(x) != 4:
            raise ValueError(
                f"squeeze needs {name} of shape (batch, height, width, channels) (NHWC); "
                f"got shape {jnp.shape(x)}"
            )

    def forward(params, x: Array, context: Array | None = None):
        check_image(x, "x")
        batch, height, width, channels = x.shape
        if height % factor or width % factor:
            raise ValueError(
                f"squeeze(factor={factor}) needs height and width divisible by {factor}; got "
                f"x of shape {x.shape} (height {height}, width {width})"
            )
        patches = x.reshape(batch, height // factor, factor, width // factor, factor, channels)
        patches = patches.transpose(0, 1, 3, 2, 4, 5)
        y = patches.reshape(batch, height // factor, width // factor, factor * factor * channels)
        return y, jnp.zeros((batch,), _float_dtype(x))

    def inverse(params, y: Array, context: Array | None = None):
        check_image(y, "y")
        batch, height, width, depth = y.shape
        if depth % (factor * factor):
            raise ValueError(
                f"squeeze(factor={factor}).inverse needs a channel count divisible by "
                f"{factor * factor}; got y of shape {y.shape} ({depth} channels)"
            )
        channels = depth // (factor * factor)
        patches = y.reshape(batch, height, width, factor, factor, channels)
        patches = patches.transpose(0, 1, 3, 2, 4, 5)
        x = patches.reshape(batch, height * factor, width * factor, channels)
        return x, jnp.zeros((batch,), _float_dtype(y))

    return Bijector(no_params, forward, inverse)


__all__ = [
    "ActNormParams",
    "Conv1x1LUParams",
    "Conv1x1Params",
    "actnorm",
    "invertible_conv1x1",
    "invertible_conv1x1_lu",
    "random_rotation",
    "squeeze",
]

"""Continuous target densities for flows and MCMC: log-densities on points of shape (..., d).

Every log-density here is a pure, jit-able function of one argument that takes a single point
(d,) or any batch (..., d) and returns shape (...,), so it composes with ``jax.grad`` (on one
point) and ``jax.vmap``. Factories (``funnel_logdensity(dim)``, ``gaussian_logdensity(...)``,
...) validate their configuration eagerly and return such a function.

* Rezende & Mohamed (2015), Table 1: ``u1_logdensity`` .. ``u4_logdensity`` return ``-U(z)``,
  unnormalised. U1 is normalisable; U2-U4 are not integrable over all of R² (they do not decay
  along z1) and are meant on the box [-4, 4]², as in the paper's figures.
* For MCMC tests, normalised (they integrate to 1) with known moments: ``banana_logdensity``,
  ``funnel_logdensity``, ``gaussian_logdensity``, ``ill_conditioned_gaussian``,
  ``gaussian_mixture_logdensity`` (+ ``gaussian_mixture_moments``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from nflows_jax.formatting import show

Array = jax.Array
LogDensity = Callable[[Array], Array]

_LOG_2PI = math.log(2.0 * math.pi)


def _check_last_axis(z: Array, size: int, name: str) -> None:
    if jnp.ndim(z) < 1 or jnp.shape(z)[-1] != size:
        raise ValueError(f"{name} takes points of shape (..., {size}); got shape {jnp.shape(z)}")


# ---------------------------------------------------------------------------------------------
# Rezende & Mohamed (2015), "Variational inference with normalizing flows", Table 1.
# ---------------------------------------------------------------------------------------------


def _w1(z1: Array) -> Array:
    return jnp.sin(2.0 * jnp.pi * z1 / 4.0)


def _w2(z1: Array) -> Array:
    return 3.0 * jnp.exp(-0.5 * ((z1 - 1.0) / 0.6) ** 2)


def _w3(z1: Array) -> Array:
    return 3.0 * jax.nn.sigmoid((z1 - 1.0) / 0.3)


def u1_logdensity(z: Array) -> Array:
    """-U1(z): a ring of radius 2 cut into two arcs by the bimodal factor in z1.

    U1(z) = ½((‖z‖ - 2)/0.4)² - log(exp(-½((z1 - 2)/0.6)²) + exp(-½((z1 + 2)/0.6)²)).
    Shapes: (..., 2) -> (...).
    """
    _check_last_axis(z, 2, "u1_logdensity")
    z = jnp.asarray(z)
    z1 = z[..., 0]
    # Clamp the squared norm away from 0 so the gradient of the sqrt stays finite at the origin.
    norm = jnp.sqrt(jnp.maximum(jnp.sum(z**2, axis=-1), jnp.finfo(z.dtype).tiny))
    ring = 0.5 * ((norm - 2.0) / 0.4) ** 2
    modes = jnp.stack([-0.5 * ((z1 - 2.0) / 0.6) ** 2, -0.5 * ((z1 + 2.0) / 0.6) ** 2], axis=-1)
    return -ring + logsumexp(modes, axis=-1)


def u2_logdensity(z: Array) -> Array:
    """-U2(z) with U2(z) = ½((z2 - w1(z))/0.4)², a sine-shaped ridge. Shapes: (..., 2) -> (...)."""
    _check_last_axis(z, 2, "u2_logdensity")
    z = jnp.asarray(z)
    return -0.5 * ((z[..., 1] - _w1(z[..., 0])) / 0.4) ** 2


def u3_logdensity(z: Array) -> Array:
    """-U3(z), two sine ridges that split around z1 = 1.

    U3(z) = -log(exp(-½((z2 - w1)/0.35)²) + exp(-½((z2 - w1 + w2)/0.35)²)).
    Shapes: (..., 2) -> (...).
    """
    _check_last_axis(z, 2, "u3_logdensity")
    z = jnp.asarray(z)
    z1, z2 = z[..., 0], z[..., 1]
    w1, w2 = _w1(z1), _w2(z1)
    terms = jnp.stack(
        [-0.5 * ((z2 - w1) / 0.35) ** 2, -0.5 * ((z2 - w1 + w2) / 0.35) ** 2], axis=-1
    )
    return logsumexp(terms, axis=-1)


def u4_logdensity(z: Array) -> Array:
    """-U4(z), a sine ridge and a shifted copy that separates smoothly (sigmoid) past z1 = 1.

    U4(z) = -log(exp(-½((z2 - w1)/0.4)²) + exp(-½((z2 - w1 + w3)/0.35)²)).
    Shapes: (..., 2) -> (...).
    """
    _check_last_axis(z, 2, "u4_logdensity")
    z = jnp.asarray(z)
    z1, z2 = z[..., 0], z[..., 1]
    w1, w3 = _w1(z1), _w3(z1)
    terms = jnp.stack([-0.5 * ((z2 - w1) / 0.4) ** 2, -0.5 * ((z2 - w1 + w3) / 0.35) ** 2], axis=-1)
    return logsumexp(terms, axis=-1)


REZENDE_ENERGIES: dict[str, LogDensity] = {
    "u1": u1_logdensity,
    "u2": u2_logdensity,
    "u3": u3_logdensity,
    "u4": u4_logdensity,
}


# ---------------------------------------------------------------------------------------------
# Normalised targets with known moments.
# ---------------------------------------------------------------------------------------------


def _normal_logpdf(x: Array, mean: Array | float, log_scale: Array | float) -> Array:
    """log N(x; mean, exp(log_scale)²), written with log_scale so no log of a variance is taken."""
    return -0.5 * ((x - mean) * jnp.exp(-log_scale)) ** 2 - log_scale - 0.5 * _LOG_2PI


REZENDE_BOX = 4.0  # the half-width of the box [-4, 4]² on which the paper shows U1–U4


def confined_logdensity(
    logdensity: LogDensity, limit: float = REZENDE_BOX, wall_width: float = 0.1
) -> LogDensity:
    """``logdensity`` plus a steep Gaussian wall outside the box [-limit, limit]^d.

    U2–U4 do not decay along z1, so exp(-U) has infinite mass; the wall
    ``-½ Σ_i (relu(|x_i| - limit) / wall_width)²`` makes the target normalisable without
    changing it inside the box, so log Z, KL and moments are well defined (and MCMC on it is
    positive recurrent). Shapes as ``logdensity``: (..., d) -> (...).
    """
    if not limit > 0 or not wall_width > 0:
        raise ValueError(f"limit and wall_width must be > 0; got {show(limit)}, {show(wall_width)}")

    def confined(x: Array) -> Array:
        outside = jax.nn.relu(jnp.abs(x) - limit) / wall_width
        return logdensity(x) - 0.5 * jnp.sum(outside**2, axis=-1)

    return confined


class GridReference(NamedTuple):
    """Quadrature of a 2-D density on a grid (float64 sums of float32 log-densities).

    Attributes:
      log_normaliser: log ∫ exp(logdensity).
      mean: (2,) E[x].
      second_moment: (2,) E[x²] per coordinate.
    """

    log_normaliser: float
    mean: np.ndarray
    second_moment: np.ndarray


def grid_reference(
    logdensity: LogDensity, half_width: float, resolution: int = 1000
) -> GridReference:
    """The normaliser and moments of a 2-D density: the midpoint rule on [-w, w]², w = half_width.

    Exact up to the rule's O(h²) error for densities that hold no measurable mass outside the
    square (e.g. a ``confined_logdensity`` with ``half_width = limit + 10 wall_width``).
    """
    step = 2.0 * half_width / resolution
    axis = -half_width + step * (np.arange(resolution) + 0.5)
    xx, yy = np.meshgrid(axis, axis)
    points = np.stack([xx.ravel(), yy.ravel()], axis=1)
    log_p = np.asarray(jax.jit(logdensity)(jnp.asarray(points, jnp.float32)), np.float64)
    shift = log_p.max()
    weights = np.exp(log_p - shift)
    total = weights.sum()
    mean = weights @ points / total
    second = weights @ points**2 / total
    return GridReference(float(shift + np.log(total * step**2)), mean, second)


def banana_logdensity(z: Array, curvature: float = 0.1, x1_variance: float = 100.0) -> Array:
    """Haario et al.'s "twisted Gaussian" (banana), normalised. Shapes: (..., 2) -> (...).

    x1 ~ N(0, s²) with s² = ``x1_variance``, and x2 | x1 ~ N(b (x1² - s²), 1) with b =
    ``curvature``: a Gaussian N(0, diag(s², 1)) bent by the volume-preserving map
    x2 -> x2 + b (x1² - s²), so it integrates to 1. The defaults (s² = 100, b = 0.1) are the
    strongly twisted target of Haario, Saksman & Tamminen (1999, 2001).

    Moments (``banana_moments``): E[x] = 0, Var x1 = s², Var x2 = 1 + 2 b² s⁴, Cov(x1, x2) = 0.
    """
    _check_last_axis(z, 2, "banana_logdensity")
    z = jnp.asarray(z)
    x1, x2 = z[..., 0], z[..., 1]
    log_scale_x1 = 0.5 * math.log(x1_variance)
    return _normal_logpdf(x1, 0.0, log_scale_x1) + _normal_logpdf(
        x2, curvature * (x1**2 - x1_variance), 0.0
    )


def banana_moments(curvature: float = 0.1, x1_variance: float = 100.0) -> tuple[Array, Array]:
    """The exact (mean (2,), covariance (2, 2)) of ``banana_logdensity`` with these settings."""
    var_x2 = 1.0 + 2.0 * curvature**2 * x1_variance**2
    return jnp.zeros(2), jnp.diag(jnp.array([x1_variance, var_x2]))


def funnel_logdensity(dim: int = 10, v_scale: float = 3.0) -> LogDensity:
    """Neal's (2003) funnel in ``dim`` dimensions, normalised.

    The point is (v, x_1, ..., x_{dim-1}): v ~ N(0, v_scale²) and x_i | v ~ N(0, e^v)
    independently. Moments: E = 0, Var v = v_scale², Var x_i = E[e^v] = exp(v_scale² / 2),
    all covariances 0. Returns ``logdensity((..., dim)) -> (...)``.
    """
    if not isinstance(dim, int) or dim < 2:
        raise ValueError(f"the funnel needs dim >= 2 (v plus at least one x); got {show(dim)}")
    log_v_scale = math.log(v_scale)

    def logdensity(z: Array) -> Array:
        _check_last_axis(z, dim, "funnel_logdensity")
        z = jnp.asarray(z)
        v, x = z[..., 0], z[..., 1:]
        # x_i has log-scale v / 2, so the variance e^v is never formed and then logged.
        log_px = jnp.sum(_normal_logpdf(x, 0.0, 0.5 * v[..., None]), axis=-1)
        return _normal_logpdf(v, 0.0, log_v_scale) + log_px

    return logdensity


class GaussianTarget(NamedTuple):
    """A Gaussian log-density with its exact moments: unpacks as ``logdensity, mean, cov``."""

    logdensity: LogDensity
    mean: Array
    cov: Array


def _gaussian_from_eigen(mean: np.ndarray, eigvals: np.ndarray, eigvecs: np.ndarray) -> LogDensity:
    """N(mean, V diag(λ) Vᵀ): the quadratic form in the eigenbasis, stable at any conditioning."""
    dim = mean.shape[0]
    mean_j = jnp.asarray(mean, jnp.float32)
    # An axis-aligned Gaussian needs no rotation: skipping the (d, d) product makes its
    # log-density O(d) instead of O(d²), which is what MCMC benchmarks on it should measure.
    axis_aligned = np.array_equal(eigvecs, np.eye(dim))
    eigvecs_j = jnp.asarray(eigvecs, jnp.float32)
    inv_sqrt_eig = jnp.asarray(1.0 / np.sqrt(eigvals), jnp.float32)
    log_norm = float(-0.5 * np.sum(np.log(eigvals)) - 0.5 * dim * _LOG_2PI)

    def logdensity(x: Array) -> Array:
        _check_last_axis(x, dim, "gaussian logdensity")
        centred = jnp.asarray(x) - mean_j
        rotated = centred if axis_aligned else centred @ eigvecs_j
        whitened = rotated * inv_sqrt_eig
        return -0.5 * jnp.sum(whitened**2, axis=-1) + log_norm

    return logdensity


def gaussian_logdensity(
    mean: Array, cov: Array | None = None, *, precision: Array | None = None
) -> LogDensity:
    """Normalised N(mean, cov), given the covariance or (keyword) the precision matrix.

    ``mean`` (d,), ``cov`` or ``precision`` (d, d) symmetric positive definite (checked here, on
    the host). Returns ``logdensity((..., d)) -> (...)``.
    """
    if (cov is None) == (precision is None):
        raise ValueError("give exactly one of cov and precision")
    mean = np.asarray(mean, np.float64)
    matrix = np.asarray(cov if cov is not None else precision, np.float64)
    if mean.ndim != 1 or matrix.shape != (mean.shape[0], mean.shape[0]):
        raise ValueError(f"need mean (d,) and a (d, d) matrix; got {mean.shape}, {matrix.shape}")
    if not np.allclose(matrix, matrix.T, rtol=1e-6, atol=1e-8):
        raise ValueError("the covariance/precision matrix must be symmetric")
    eigvals, eigvecs = np.linalg.eigh(matrix)
    if eigvals.min() <= 0:
        raise ValueError(f"the matrix must be positive definite; smallest eigenvalue {eigvals[0]}")
    if precision is not None:
        eigvals = 1.0 / eigvals  # the covariance shares eigenvectors, with inverted eigenvalues
    return _gaussian_from_eigen(mean, eigvals, eigvecs)


def ill_conditioned_gaussian(
    dim: int = 100, condition_number: float = 1e4, *, rotate: bool = False, seed: int = 0
) -> GaussianTarget:
    """A zero-mean Gaussian whose covariance eigenvalues are log-spaced in [1/κ, 1].

    κ = ``condition_number``. Without ``rotate`` the covariance is diagonal
    (variances ``logspace``); with it the eigenvectors are a Haar-random rotation drawn from
    ``seed`` (QR of a Gaussian matrix with the signs fixed), so no coordinate is aligned with
    the scales. Returns ``GaussianTarget(logdensity, mean (dim,), cov (dim, dim))``.
    """
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int; got {show(dim)}")
    if not condition_number >= 1.0:
        raise ValueError(f"condition_number must be >= 1; got {condition_number}")
    eigvals = np.logspace(-math.log10(condition_number), 0.0, dim)
    if rotate:
        gaussian = np.random.default_rng(seed).standard_normal((dim, dim))
        q, r = np.linalg.qr(gaussian)
        eigvecs = q * np.sign(np.diag(r))  # the sign fix makes Q Haar-distributed
    else:
        eigvecs = np.eye(dim)
    mean = np.zeros(dim)
    cov = (eigvecs * eigvals) @ eigvecs.T
    logdensity = _gaussian_from_eigen(mean, eigvals, eigvecs)
    return GaussianTarget(logdensity, jnp.asarray(mean, jnp.float32), jnp.asarray(cov, jnp.float32))


def _mixture_arrays(weights, means, scales) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    weights = np.asarray(weights, np.float64)
    means = np.asarray(means, np.float64)
    scales = np.asarray(scales, np.float64)
    if weights.ndim != 1 or means.ndim != 2 or means.shape[0] != weights.shape[0]:
        raise ValueError(f"need weights (K,) and means (K, d); got {weights.shape}, {means.shape}")
    if scales.ndim == 1:
        scales = np.broadcast_to(scales[:, None], means.shape)
    if scales.shape != means.shape:
        raise ValueError(f"scales must be (K,) or (K, d) = {means.shape}; got {scales.shape}")
    if np.any(weights <= 0) or np.any(scales <= 0):
        raise ValueError("mixture weights and scales must be positive")
    return weights / weights.sum(), means, scales


def gaussian_mixture_logdensity(weights: Array, means: Array, scales: Array) -> LogDensity:
    """Normalised mixture Σ_k w_k N(means[k], diag(scales[k]²)).

    ``weights`` (K,) positive (normalised here), ``means`` (K, d), ``scales`` (K,) isotropic or
    (K, d) per-axis standard deviations. Returns ``logdensity((..., d)) -> (...)``; exact moments
    from ``gaussian_mixture_moments``.
    """
    weights, means, scales = _mixture_arrays(weights, means, scales)
    dim = means.shape[1]
    log_weights = jnp.asarray(np.log(weights), jnp.float32)
    means_j = jnp.asarray(means, jnp.float32)
    log_scales = jnp.asarray(np.log(scales), jnp.float32)

    def logdensity(x: Array) -> Array:
        _check_last_axis(x, dim, "gaussian_mixture_logdensity")
        x = jnp.asarray(x)[..., None, :]  # (..., 1, d) against (K, d)
        per_component = jnp.sum(_normal_logpdf(x, means_j, log_scales), axis=-1)
        return logsumexp(per_component + log_weights, axis=-1)

    return logdensity


def gaussian_mixture_moments(weights: Array, means: Array, scales: Array) -> tuple[Array, Array]:
    """Exact (mean (d,), covariance (d, d)) of ``gaussian_mixture_logdensity``'s mixture.

    mean = Σ w_k μ_k; cov = Σ w_k (diag(σ_k²) + μ_k μ_kᵀ) - mean meanᵀ.
    """
    weights, means, scales = _mixture_arrays(weights, means, scales)
    mean = weights @ means
    second = np.einsum("k,ki,kj->ij", weights, means, means) + np.diag(weights @ scales**2)
    return jnp.asarray(mean, jnp.float32), jnp.asarray(second - np.outer(mean, mean), jnp.float32)


__all__ = [
    "REZENDE_BOX",
    "REZENDE_ENERGIES",
    "GaussianTarget",
    "GridReference",
    "banana_logdensity",
    "banana_moments",
    "confined_logdensity",
    "funnel_logdensity",
    "gaussian_logdensity",
    "gaussian_mixture_logdensity",
    "gaussian_mixture_moments",
    "grid_reference",
    "ill_conditioned_gaussian",
    "u1_logdensity",
    "u2_logdensity",
    "u3_logdensity",
    "u4_logdensity",
]

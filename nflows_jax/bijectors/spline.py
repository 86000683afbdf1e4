"""The monotone rational-quadratic spline transformer of neural spline flows (Durkan et al. 2019).

On ``[-bound, bound]`` the map is a piecewise rational-quadratic spline through ``K + 1`` knots
``(x_k, y_k)`` with positive derivatives ``d_k`` at the knots; outside it is the identity (linear
tails of slope 1, so the boundary derivatives ``d_0 = d_K = 1`` are fixed and value and slope are
continuous at ``±bound``). In bin ``k``, with ``w = x_{k+1} - x_k``, ``h = y_{k+1} - y_k``,
``s = h / w`` and ``xi = (x - x_k) / w`` in ``[0, 1)``, the paper's equations are::

    y = y_k + h (s xi² + d_k xi (1 - xi)) / D,        D = s + (d_k + d_{k+1} - 2s) xi (1 - xi)
    dy/dx = s² (d_{k+1} xi² + 2 s xi (1 - xi) + d_k (1 - xi)²) / D²

The code evaluates algebraically equal forms written as "identity plus deviation", e.g.
``y = x + (y_k - x_k) + (s - 1)(x - x_k) + h xi (1 - xi)(d_k - s - g xi) / D`` with
``g = d_k + d_{k+1} - 2s``, in which every deviation term is an exact zero at ``theta = 0``
(equal knots, ``s = 1``, ``d = 1``): a layer whose conditioner is zero-initialised is then the
identity bitwise, log-determinant exactly 0, in both directions. The inverse solves the paper's
quadratic for ``xi`` shifted to ``e = xi - t`` with ``t = (y - y_k) / h``:
``A e² + B e - A t (1 - t) = 0``, whose discriminant ``B² + 4A² t (1 - t)`` is a sum of
non-negative terms, and whose root is taken as ``2c / (-b - sqrt(b² - 4ac))`` when ``B > 0`` and
as the textbook ``(-b + sqrt(·)) / 2a`` otherwise, so neither form cancels.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from nflows_jax.bijectors.transformers import Transformer, check_theta
from nflows_jax.formatting import show

Array = jax.Array


def _validate(num_bins, bound, min_bin_width, min_bin_height, min_derivative) -> None:
    name = "rational_quadratic_spline"
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"{name}: num_bins must be an int >= 1; got {show(num_bins)}")
    if isinstance(bound, bool) or not isinstance(bound, int | float) or not 0 < bound < math.inf:
        raise ValueError(f"{name}: bound must be a finite number > 0; got {show(bound)}")
    for label, value in (("min_bin_width", min_bin_width), ("min_bin_height", min_bin_height)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"{name}: {label} must be a number > 0; got {show(value)}")
        if not value * num_bins < 1:
            raise ValueError(
                f"{name}: {label} * num_bins must be < 1 (the bins must fit in the interval); "
                f"got {show(value)} * {num_bins} = {show(value * num_bins)}"
            )
    if (
        isinstance(min_derivative, bool)
        or not isinstance(min_derivative, int | float)
        or not 0 < min_derivative < 1
    ):
        raise ValueError(
            f"{name}: min_derivative must be a number in (0, 1) (theta = 0 must give derivative "
            f"1); got {show(min_derivative)}"
        )


def rational_quadratic_spline(
    num_bins: int = 8,
    bound: float = 3.0,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> Transformer:
    """The monotone rational-quadratic spline on ``[-bound, bound]``, identity outside it.

    ``theta`` has ``P = 3K - 1`` entries per input entry (``K = num_bins``): ``K`` unnormalised bin
    widths, ``K`` unnormalised bin heights, ``K - 1`` unnormalised interior knot derivatives.

    * widths: ``w = min_bin_width + (1 - K·min_bin_width) · softmax(raw)`` as fractions of
      ``2·bound`` (heights alike), so every bin is at least ``2·bound·min_bin_width`` wide;
    * derivatives: ``d = min_derivative + softplus(raw + c)`` with ``c = log(expm1(1 -
      min_derivative))``, so ``raw = 0`` gives ``d = 1`` (evaluated for ``raw <= 0`` as
      ``1 + log1p(sigmoid(c) · expm1(raw))``, the same number, which is exactly 1 at 0).

    ``theta = 0`` gives uniform bins and unit derivatives: the identity map, exactly.

    Args:
      num_bins: K >= 1.
      bound: the spline acts on ``[-bound, bound]``; entries outside pass unchanged with
        log-derivative 0.
      min_bin_width, min_bin_height: > 0 with ``num_bins · min < 1``.
      min_derivative: in (0, 1), the least knot derivative.

    Returns:
      A :class:`~nflows_jax.bijectors.transformers.Transformer` whose ``forward(x, theta)`` /
      ``inverse(y, theta)`` take ``x`` of any shape ``S`` and ``theta`` of shape
      ``S + (3K - 1,)`` and return the transformed values
      and the per-entry log-derivatives, both of shape ``S``, in the promoted dtype of ``x`` and
      ``theta`` (float32 or float64).
    """
    _validate(num_bins, bound, min_bin_width, min_bin_height, min_derivative)
    k_bins = num_bins
    bound = float(bound)
    mins = (float(min_bin_width), float(min_bin_height))
    shift = math.log(math.expm1(1.0 - min_derivative))  # c: min_derivative + softplus(c) = 1
    sigmoid_shift = -math.expm1(min_derivative - 1.0)  # sigmoid(c) = 1 - exp(min_derivative - 1)
    transformer: Transformer

    def knots(raw: Array, minimum: float) -> Array:
        """(..., K) unnormalised sizes -> (..., K + 1) knots from -bound to bound."""
        # fraction = 1/K + (1 - K·min)(softmax - 1/K), with softmax - 1/K computed so that it is
        # an exact zero at raw = 0: widths and heights then agree bitwise there.
        e = jnp.exp(raw - jnp.max(raw, axis=-1, keepdims=True))
        deviation = (e - jnp.mean(e, axis=-1, keepdims=True)) / jnp.sum(e, axis=-1, keepdims=True)
        fraction = 1.0 / k_bins + (1.0 - k_bins * minimum) * deviation
        interior = -bound + 2.0 * bound * jnp.cumsum(fraction[..., :-1], axis=-1)
        ends = jnp.full((*raw.shape[:-1], 1), bound, raw.dtype)
        return jnp.concatenate([-ends, interior, ends], axis=-1)

    def derivatives(raw: Array) -> Array:
        """(..., K - 1) unnormalised -> (..., K + 1) knot derivatives, the ends fixed to 1."""
        negative = 1.0 + jnp.log1p(sigmoid_shift * jnp.expm1(jnp.minimum(raw, 0.0)))
        positive = min_derivative + jax.nn.softplus(jnp.maximum(raw, 0.0) + shift)
        interior = jnp.where(raw <= 0.0, negative, positive)
        ends = jnp.ones((*raw.shape[:-1], 1), raw.dtype)
        return jnp.concatenate([ends, interior, ends], axis=-1)

    def bin_params(value: Array, theta: Array, along_y: bool):
        """The spline's bin containing ``value`` (clamped into the interval), gathered."""
        x_knots = knots(theta[..., :k_bins], mins[0])
        y_knots = knots(theta[..., k_bins : 2 * k_bins], mins[1])
        d_knots = derivatives(theta[..., 2 * k_bins :])
        search = y_knots if along_y else x_knots
        # Compare-and-sum bin search over the interior knots: index in 0..K-1.
        index = jnp.sum(value[..., None] >= search[..., 1:-1], axis=-1)[..., None]

        def at(array, offset):
            return jnp.take_along_axis(array, index + offset, axis=-1)[..., 0]

        return (at(x_knots, 0), at(x_knots, 1), at(y_knots, 0), at(y_knots, 1)), (
            at(d_knots, 0),
            at(d_knots, 1),
        )

    def log_derivative(xi, slope, d_left, d_right):
        """log dy/dx in the bin at ``xi``; an exact 0 when ``slope = d_left = d_right = 1``."""
        one_minus = 1.0 - xi
        a, b = d_left - slope, d_right - slope
        # Numerator d_{k+1} xi² + 2s xi(1 - xi) + d_k (1 - xi)²: as s + b xi² + a (1 - xi)²
        # (exact at the identity) when a, b >= 0, else as the paper's sum of positive terms.
        deviation_form = slope + b * xi * xi + a * one_minus * one_minus
        positive_form = d_right * xi * xi + 2.0 * slope * xi * one_minus + d_left * one_minus**2
        numerator = jnp.where((a >= 0) & (b >= 0), deviation_form, positive_form)
        denominator = slope + (a + b) * xi * one_minus
        return 2.0 * jnp.log(slope) + jnp.log(numerator) - 2.0 * jnp.log(denominator)

    def prepare(value: Array, theta: Array):
        check_theta(transformer, value, theta)
        dtype = jnp.result_type(value, theta)
        if not jnp.issubdtype(dtype, jnp.floating):
            dtype = jnp.result_type(float)
        value, theta = value.astype(dtype), theta.astype(dtype)
        inside = (value > -bound) & (value < bound)
        # Clamp before any spline formula: the masked-out branch stays finite, and so do its
        # gradients, for entries in the tails.
        return value, theta, inside, jnp.clip(value, -bound, bound)

    def forward(x: Array, theta: Array) -> tuple[Array, Array]:
        x, theta, inside, x_in = prepare(x, theta)
        (x_lo, x_hi, y_lo, y_hi), (d_left, d_right) = bin_params(x_in, theta, along_y=False)
        width, height = x_hi - x_lo, y_hi - y_lo
        slope = height / width
        offset = x_in - x_lo
        xi = offset / width  # in [0, 1]: x_lo <= x_in <= x_hi and rounding is monotone
        curvature = d_left + d_right - 2.0 * slope
        denominator = slope + curvature * xi * (1.0 - xi)
        y = (
            x_in
            + (y_lo - x_lo)
            + (height - width) / width * offset
            + height * xi * (1.0 - xi) * (d_left - slope - curvature * xi) / denominator
        )
        log_dy_dx = log_derivative(xi, slope, d_left, d_right)
        return jnp.where(inside, y, x), jnp.where(inside, log_dy_dx, jnp.zeros((), x.dtype))

    def inverse(y: Array, theta: Array) -> tuple[Array, Array]:
        y, theta, inside, y_in = prepare(y, theta)
        (x_lo, x_hi, y_lo, y_hi), (d_left, d_right) = bin_params(y_in, theta, along_y=True)
        width, height = x_hi - x_lo, y_hi - y_lo
        slope = height / width
        offset = y_in - y_lo
        t = offset / height  # the linear guess for xi, in [0, 1]
        u = t * (1.0 - t)
        # xi = t + e with A e² + B e - A u = 0 (the paper's quadratic shifted by t).
        quad = (slope - d_left) + (d_left + d_right - 2.0 * slope) * t
        lin = (
            d_left * (1.0 - t) ** 2
            + (4.0 * slope - d_left - d_right) * u
            + d_right * t * t  # = 2 A t + b of the paper's quadratic
        )
        root = jnp.sqrt(lin * lin + 4.0 * quad * quad * u)
        positive = lin > 0
        # Two forms of the same root; each branch's denominator is made safe where it is unused.
        citardauq = 2.0 * quad * u / jnp.where(positive, lin + root, 1.0)
        textbook = (root - lin) / jnp.where(positive, 1.0, 2.0 * quad)
        e = jnp.where(positive, citardauq, textbook)
        x = y_in + (x_lo - y_lo) + (width - height) / height * offset + width * e
        log_dx_dy = -log_derivative(t + e, slope, d_left, d_right)
        return jnp.where(inside, x, y), jnp.where(inside, log_dx_dy, jnp.zeros((), y.dtype))

    transformer = Transformer(3 * k_bins - 1, forward, inverse, "rational_quadratic_spline")
    return transformer


__all__ = ["rational_quadratic_spline"]

"""The rational-quadratic spline transformer (neural spline flows, Durkan et al. 2019).

The identity at ``theta = 0`` is checked bitwise. Every other comparison runs in float64 with the
rounding allowance of ``nflows_jax.testing``: ``steps`` counted from the traced program, amplified
by ``A = max(dy/dx, dx/dy)`` (how much the map or its inverse can magnify an input error) and
scaled by the size of the values compared.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nflows_jax.bijectors.spline import rational_quadratic_spline
from nflows_jax.testing import assert_within_rounding, rounding_steps, rounding_tolerance

K, BOUND, MIN = 5, 3.0, 1e-3
P = 3 * K - 1
F64 = jnp.float64


def _theta(num: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return scale * np.random.default_rng(seed).standard_normal((num, P))


def _knots(theta: np.ndarray, offset: int) -> np.ndarray:
    """The knots from the definition (float64 NumPy): -B + 2B·cumsum(min + (1 - K·min)·softmax)."""
    raw = theta[..., offset : offset + K]
    soft = np.exp(raw - raw.max(-1, keepdims=True))
    soft /= soft.sum(-1, keepdims=True)
    fraction = MIN + (1 - K * MIN) * soft
    inner = -BOUND + 2 * BOUND * np.cumsum(fraction[..., :-1], axis=-1)
    ends = np.full((*raw.shape[:-1], 1), BOUND)
    return np.concatenate([-ends, inner, ends], axis=-1)


def _reference(x: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """The paper's equations, entry by entry in float64 NumPy (identity outside the bound)."""
    out = np.array(x, np.float64)
    c = np.log(np.expm1(1 - MIN))
    for i, (value, th) in enumerate(zip(x, theta, strict=True)):
        if abs(value) >= BOUND:
            continue
        xk, yk = _knots(th, 0), _knots(th, K)
        d = np.concatenate([[1.0], MIN + np.logaddexp(0.0, th[2 * K :] + c), [1.0]])
        k = min(int(np.searchsorted(xk, value, side="right")) - 1, K - 1)
        w, h = xk[k + 1] - xk[k], yk[k + 1] - yk[k]
        s, xi = h / w, (value - xk[k]) / w
        numerator = s * xi**2 + d[k] * xi * (1 - xi)
        out[i] = yk[k] + h * numerator / (s + (d[k] + d[k + 1] - 2 * s) * xi * (1 - xi))
    return out


def _points(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inputs covering each row's knots exactly and one ulp either side, both tails, ±bound,
    and random interior points; with the theta row of each."""
    rows, values = [], []
    for i, th in enumerate(theta):
        knots = _knots(th, 0)
        candidates = [knots, np.nextafter(knots, -np.inf), np.nextafter(knots, np.inf)]
        candidates.append([-7.0, -BOUND - 1e-9, BOUND + 1e-9, 5.0, 0.0, 0.3 * (i - 2)])
        for value in np.concatenate([np.ravel(c) for c in candidates]):
            rows.append(i)
            values.append(value)
    return np.asarray(values), theta[np.asarray(rows)]


def _allowance_inputs(transformer, x, theta):
    forward = jax.jit(transformer.forward)
    steps = rounding_steps(transformer.forward, x, theta) + rounding_steps(
        transformer.inverse, x, theta
    )
    y, log_dy_dx = forward(x, theta)
    slope = np.exp(np.asarray(log_dy_dx))
    amplification = np.maximum(slope, 1 / slope)
    return steps, np.asarray(y), np.asarray(log_dy_dx), amplification


# ------------------------------------------------------------------------------------------------
# Identity at theta = 0
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("num_bins", [1, 3, 8])
def test_identity_at_zero_theta_bitwise(dtype, num_bins):
    transformer = rational_quadratic_spline(num_bins, BOUND)
    with jax.enable_x64(dtype == "float64"):
        grid = np.concatenate([np.linspace(-4, 4, 801), [-BOUND, BOUND, -1e-30, 2.25, -0.75]])
        x = jnp.asarray(grid, dtype)
        theta = jnp.zeros((x.shape[0], 3 * num_bins - 1), dtype)
        for transform in (transformer.forward, transformer.inverse):
            for fn in (transform, jax.jit(transform)):
                out, log_derivative = fn(x, theta)
                assert out.dtype == jnp.dtype(dtype) and log_derivative.dtype == jnp.dtype(dtype)
                np.testing.assert_array_equal(np.asarray(out), np.asarray(x))
                np.testing.assert_array_equal(np.asarray(log_derivative), 0.0)


# ------------------------------------------------------------------------------------------------
# Values, inverse and log-derivatives at random theta (float64)
# ------------------------------------------------------------------------------------------------


def test_forward_matches_paper_equations():
    transformer = rational_quadratic_spline(K, BOUND)
    with jax.enable_x64(True):
        x_np, theta_np = _points(_theta(4, seed=1))
        x, theta = jnp.asarray(x_np, F64), jnp.asarray(theta_np, F64)
        steps, y, _, amplification = _allowance_inputs(transformer, x, theta)
        # The reference rounds too: twice the allowance, on values of size <= max(|x|, bound).
        magnitude = np.maximum(np.abs(x_np), BOUND)
        assert_within_rounding(
            "forward vs paper", y, _reference(x_np, theta_np), 2 * steps, F64, amplification,
            magnitude,
        )  # fmt: skip


def test_round_trip_and_inverse_log_derivative():
    transformer = rational_quadratic_spline(K, BOUND)
    with jax.enable_x64(True):
        x_np, theta_np = _points(_theta(6, seed=2))
        x, theta = jnp.asarray(x_np, F64), jnp.asarray(theta_np, F64)
        steps, y, log_dy_dx, amplification = _allowance_inputs(transformer, x, theta)
        x_back, log_dx_dy = jax.jit(transformer.inverse)(jnp.asarray(y), theta)
        magnitude = np.maximum(np.maximum(np.abs(x_np), np.abs(y)), BOUND)
        assert_within_rounding("x round trip", x_back, x_np, steps, F64, amplification, magnitude)
        assert_within_rounding(
            "inverse log-derivative", log_dx_dy, -log_dy_dx, steps, F64, amplification,
            1 + np.abs(log_dy_dx),
        )  # fmt: skip
        # Starting from y: f(f⁻¹(y)) for y on a grid that covers the y-knots and the tails.
        y_grid = jnp.asarray(np.tile(np.linspace(-4, 4, 41), 6), F64)
        theta_grid = jnp.asarray(np.repeat(_theta(6, seed=3), 41, axis=0), F64)
        x_grid, _ = jax.jit(transformer.inverse)(y_grid, theta_grid)
        y_again, log_slope = jax.jit(transformer.forward)(x_grid, theta_grid)
        slope = np.exp(np.asarray(log_slope))
        assert_within_rounding(
            "y round trip", y_again, y_grid, steps, F64, np.maximum(slope, 1 / slope),
            np.maximum(np.abs(np.asarray(x_grid)), BOUND),
        )  # fmt: skip


def test_log_derivative_matches_autodiff_at_knots_tails_and_bound():
    transformer = rational_quadratic_spline(K, BOUND)
    with jax.enable_x64(True):
        x_np, theta_np = _points(_theta(6, seed=4))
        x_np = np.concatenate([x_np, [-BOUND, BOUND]])
        theta_np = np.concatenate([theta_np, theta_np[:2]])
        x, theta = jnp.asarray(x_np, F64), jnp.asarray(theta_np, F64)
        steps, _, log_dy_dx, amplification = _allowance_inputs(transformer, x, theta)
        for transform, sign, at in (
            (transformer.forward, 1.0, x),
            (transformer.inverse, -1.0, None),
        ):
            if at is None:  # the inverse, at the forward's outputs
                at = transformer.forward(x, theta)[0]
            slope = jax.jit(jax.vmap(jax.grad(lambda v, t, f=transform: f(v, t)[0])))(at, theta)
            log_slope = np.log(np.asarray(slope))
            # autodiff's derivative rounds like the value does: its log is off by its relative
            # error, at most steps·eps·(1 + A) (A for the cancellations of the slope's terms).
            assert_within_rounding(
                "log-derivative vs autodiff", sign * log_dy_dx, log_slope, 2 * steps, F64,
                amplification, 1 + np.abs(log_dy_dx),
            )  # fmt: skip
        tails = np.abs(x_np) >= BOUND
        np.testing.assert_array_equal(log_dy_dx[tails], 0.0)


def test_monotone():
    transformer = rational_quadratic_spline(K, BOUND)
    grid = np.linspace(-4, 4, 4001)
    theta = np.repeat(_theta(5, seed=5, scale=2.0), grid.size, axis=0)
    with jax.enable_x64(True):
        y, _ = jax.jit(transformer.forward)(jnp.asarray(np.tile(grid, 5)), jnp.asarray(theta))
        assert np.all(np.diff(np.asarray(y).reshape(5, -1), axis=1) > 0)
    y32, _ = jax.jit(transformer.forward)(
        jnp.asarray(np.tile(grid, 5), jnp.float32), jnp.asarray(theta, jnp.float32)
    )
    assert np.all(np.diff(np.asarray(y32).reshape(5, -1), axis=1) >= 0)


def test_value_and_derivative_continuous_across_knots_and_bound():
    """Left and right limits at each knot (and at ±bound) agree to rounding: one ulp to the left
    of the knot is evaluated in the bin below (or the tail), the knot itself in the bin above."""
    transformer = rational_quadratic_spline(K, BOUND)
    with jax.enable_x64(True):
        theta_rows = _theta(6, seed=6)
        knots = np.stack([_knots(th, 0) for th in theta_rows])  # (6, K + 1), from -B to B
        right = knots.ravel()
        left = np.nextafter(right, -np.inf)
        beyond = np.nextafter(right, np.inf)  # at +bound the right limit is the tail
        at = np.where(np.isclose(right, BOUND), beyond, right)
        at = np.where(np.isclose(right, -BOUND), np.nextafter(right, np.inf), at)
        theta = jnp.asarray(np.repeat(theta_rows, K + 1, axis=0), F64)
        forward = jax.jit(transformer.forward)
        y_left, log_left = (np.asarray(a) for a in forward(jnp.asarray(left), theta))
        y_right, log_right = (np.asarray(a) for a in forward(jnp.asarray(at), theta))
        steps, _, _, amplification = _allowance_inputs(transformer, jnp.asarray(at), theta)
        slope = np.exp(np.maximum(log_left, log_right))
        # y moves by at most slope·|Δx| between the two points, plus rounding.
        gap = slope * np.abs(at - left)
        tolerance = rounding_tolerance(2 * steps, F64, amplification, BOUND) + gap
        assert np.all(np.abs(y_left - y_right) <= tolerance), "value across a knot"
        assert_within_rounding(
            "log-derivative across a knot", log_left, log_right, 2 * steps, F64, amplification,
            1 + np.abs(log_right),
        )  # fmt: skip


def test_theta_gradients_finite_in_tails_and_at_bound():
    transformer = rational_quadratic_spline(K, BOUND)
    x = jnp.asarray([-50.0, -BOUND, BOUND, 1e4, -3.0000002, 0.0])
    theta = jnp.asarray(_theta(6, seed=7, scale=3.0), jnp.float32)

    def total(theta, transform):
        out, log_derivative = transform(x, theta)
        return jnp.sum(out) + jnp.sum(log_derivative)

    for transform in (transformer.forward, transformer.inverse):
        grad = jax.jit(jax.grad(total), static_argnums=1)(theta, transform)
        assert np.all(np.isfinite(np.asarray(grad)))
        # Tail entries do not depend on theta at all.
        np.testing.assert_array_equal(np.asarray(grad)[[0, 1, 2, 3]], 0.0)


# ------------------------------------------------------------------------------------------------
# Clear errors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_bins=0), r"num_bins must be an int >= 1; got 0"),
        (dict(num_bins=2.0), r"num_bins must be an int >= 1; got 2.0"),
        (dict(num_bins=True), r"num_bins must be an int >= 1; got True"),
        (dict(bound=0.0), r"bound must be a finite number > 0; got 0.0"),
        (dict(bound=float("inf")), r"bound must be a finite number > 0"),
        (dict(min_bin_width=0.0), r"min_bin_width must be a number > 0"),
        (dict(num_bins=10, min_bin_width=0.1), r"min_bin_width \* num_bins must be < 1"),
        (dict(num_bins=4, min_bin_height=0.3), r"min_bin_height \* num_bins must be < 1"),
        (dict(min_derivative=0.0), r"min_derivative must be a number in \(0, 1\)"),
        (dict(min_derivative=1.0), r"min_derivative must be a number in \(0, 1\)"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rational_quadratic_spline(**kwargs)


def test_bad_theta_shape_raises():
    transformer = rational_quadratic_spline(K, BOUND)
    x = jnp.zeros((3, 2))
    for theta in (jnp.zeros((3, 2, P + 1)), jnp.zeros((3, P)), jnp.zeros((3, 1, P))):
        for transform in (transformer.forward, transformer.inverse):
            with pytest.raises(ValueError, match=r"needs theta of shape \(3, 2, 14\)"):
                transform(x, theta)
    assert transformer.params_per_entry == P

"""Targets: normalisers on grids, transcriptions of Rezende & Mohamed's Table 1, moments, shapes.

Tolerances come from float32 rounding, never from a run that passed. A float32 log-density errs
by at most a few roundings of the magnitudes it combines; ``evaluation_atol`` bounds that per
point by NUM_OPS · eps · (1 + |log p| + Σ_j (|x_j| + 1) |∂_j log p|): the |log p| term for
the rounding of the result, |x_j ∂_j log p| for the rounding of the inputs, and |∂_j log p| for
O(1) intermediates rounded inside. Grid integrals inherit it through the density's weights, and
their quadrature and truncation errors are shown to be negligible (or bounded) test by test.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from nflows_jax.targets.energies import (
    REZENDE_ENERGIES,
    banana_logdensity,
    banana_moments,
    confined_logdensity,
    funnel_logdensity,
    gaussian_logdensity,
    gaussian_mixture_logdensity,
    gaussian_mixture_moments,
    grid_reference,
    ill_conditioned_gaussian,
    u1_logdensity,
    u2_logdensity,
    u3_logdensity,
    u4_logdensity,
)

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)
NUM_OPS = 16  # roundings a float32 log-density may accumulate, counted generously


def evaluation_atol(logdensity, points, num_ops: int = NUM_OPS) -> np.ndarray:
    """Per-point bound on the float32 error of ``logdensity`` at ``points`` (..., 2): (...)."""
    points = jnp.asarray(points, jnp.float32)
    flat = points.reshape(-1, points.shape[-1])
    values, grads = jax.jit(jax.vmap(jax.value_and_grad(logdensity)))(flat)
    x = np.abs(np.asarray(flat, np.float64))
    g = np.abs(np.asarray(grads, np.float64))
    bound = num_ops * EPS32 * (1.0 + np.abs(np.asarray(values, np.float64)) + ((x + 1) * g).sum(1))
    return bound.reshape(points.shape[:-1])


def assert_within(actual, expected, atol, what: str = "") -> None:
    """|actual - expected| ≤ atol elementwise (atol may be an array)."""
    error = np.abs(np.asarray(actual, np.float64) - np.asarray(expected, np.float64))
    assert np.all(error <= atol), f"{what} max error {float(error.max()):.3g} > bound"


class GridMoments(NamedTuple):
    """Grid integrals of p and their float32 error bounds."""

    mass: float
    mean: np.ndarray  # (2,)
    cov: np.ndarray  # (2, 2)
    mass_err: float
    mean_err: np.ndarray  # (2,)
    cov_err: np.ndarray  # (2, 2)


def grid_moments(logdensity, x1_range, x2_range, step) -> GridMoments:
    """Riemann sums of p, x p and x xᵀ p on a regular grid (float64 accumulation on the host).

    Quadrature: for these smooth densities the midpoint rule's error is like exp(-2π² (σ/h)²)
    with σ the narrowest local width; every grid here has σ/h ≥ 3, so it is below 1e-70. The
    float32 evaluation is the error left: a relative error δ(x) = evaluation_atol in p perturbs
    the mass by Σ w δ, the mean by Σ w δ |x - μ| / mass and the covariance by
    Σ w δ |c_k c_l - Σ_kl| / mass (first order), which are the bounds returned.
    """
    x1 = np.arange(x1_range[0], x1_range[1], step) + step / 2
    x2 = np.arange(x2_range[0], x2_range[1], step) + step / 2
    points = np.stack(np.meshgrid(x1, x2, indexing="ij"), axis=-1)
    density = np.exp(np.asarray(jax.jit(logdensity)(jnp.asarray(points, jnp.float32)), np.float64))
    weight = density * step**2
    mass = weight.sum()
    mean = np.einsum("ij,ijk->k", weight, points) / mass
    centred = points - mean
    products = centred[..., :, None] * centred[..., None, :]
    cov = np.einsum("ij,ijkl->kl", weight, products) / mass
    relative = weight * evaluation_atol(logdensity, points)  # w δ
    mass_err = relative.sum()
    mean_err = np.einsum("ij,ijk->k", relative, np.abs(centred)) / mass
    cov_err = np.einsum("ij,ijkl->kl", relative, np.abs(products - cov)) / mass
    return GridMoments(mass, mean, cov, mass_err, mean_err, cov_err)


def assert_grid_matches(grid: GridMoments, mean, cov, truncation: float = 0.0) -> None:
    """Mass 1, mean and covariance within the float32 bounds plus a truncation allowance."""
    assert_within(grid.mass, 1.0, grid.mass_err + truncation, "mass")
    assert_within(grid.mean, mean, grid.mean_err + truncation, "mean")
    assert_within(grid.cov, cov, grid.cov_err + truncation, "covariance")


def gaussian_outside(mean, sd, low, high) -> float:
    """P(N(mean, sd²) ∉ [low, high]), float64."""
    return float(stats.norm.cdf(low, mean, sd) + stats.norm.sf(high, mean, sd))


def test_gaussian_integrates_to_one_and_matches_scipy():
    mean = np.array([0.5, -1.0])
    cov = np.array([[1.5, 0.6], [0.6, 0.8]])
    from_cov = gaussian_logdensity(mean, cov)
    from_precision = gaussian_logdensity(mean, precision=np.linalg.inv(cov))
    grid = grid_moments(from_cov, (-8, 9), (-8, 6), 0.05)
    # The box holds all but ≤ 1e-10 of each marginal (≥ 7σ): truncation is far below float32.
    outside = gaussian_outside(mean[0], np.sqrt(cov[0, 0]), -8, 9)
    outside += gaussian_outside(mean[1], np.sqrt(cov[1, 1]), -8, 6)
    assert outside < 1e-10
    assert_grid_matches(grid, mean, cov)

    points = np.float32(np.random.default_rng(0).normal(size=(20, 2)) * 2)
    expected = stats.multivariate_normal(mean, cov).logpdf(np.float64(points))  # float64 reference
    atol = evaluation_atol(from_cov, points)
    assert_within(from_cov(jnp.asarray(points)), expected, atol, "from cov")
    assert_within(from_precision(jnp.asarray(points)), expected, atol, "from precision")


def test_gaussian_rejects_bad_matrices():
    with pytest.raises(ValueError, match="exactly one"):
        gaussian_logdensity(np.zeros(2))
    with pytest.raises(ValueError, match="positive definite"):
        gaussian_logdensity(np.zeros(2), np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="symmetric"):
        gaussian_logdensity(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"\(d, d\)"):
        gaussian_logdensity(np.zeros(2), np.eye(3))


def test_mixture_integrates_to_one_with_exact_moments():
    weights = np.array([0.5, 0.3, 0.2])
    means = np.array([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]])
    scales = np.array([[0.5, 1.0], [0.8, 0.4], [0.6, 0.6]])
    logdensity = gaussian_mixture_logdensity(weights, means, scales)
    grid = grid_moments(logdensity, (-7, 7), (-7, 7), 0.04)
    mean, cov = gaussian_mixture_moments(weights, means, scales)
    # Every component's marginals are ≥ 6.25σ inside the box: truncation below 1e-9.
    outside = sum(
        w * (gaussian_outside(m[0], s[0], -7, 7) + gaussian_outside(m[1], s[1], -7, 7))
        for w, m, s in zip(weights, means, scales, strict=True)
    )
    assert outside < 1e-9
    assert_grid_matches(grid, mean, cov)


def test_mixture_matches_direct_sum_and_accepts_isotropic_scales():
    weights, means, scales = [2.0, 1.0], [[0.0, 0.0], [1.0, 3.0]], [1.0, 0.5]  # weights normalised
    points = np.float32(np.random.default_rng(1).normal(size=(10, 2)) * 2)
    points64 = np.float64(points)  # the float64 reference at the same (float32) points
    direct = np.log(
        2 / 3 * stats.multivariate_normal([0, 0], np.eye(2)).pdf(points64)
        + 1 / 3 * stats.multivariate_normal([1, 3], 0.25 * np.eye(2)).pdf(points64)
    )
    logdensity = jax.jit(gaussian_mixture_logdensity(weights, means, scales))
    points32 = jnp.asarray(points)
    assert_within(logdensity(points32), direct, evaluation_atol(logdensity, points32))
    with pytest.raises(ValueError, match="positive"):
        gaussian_mixture_logdensity([1.0, -1.0], means, scales)


def test_banana_integrates_to_one_with_known_moments():
    curvature, x1_variance = 0.5, 2.0
    logdensity = lambda z: banana_logdensity(z, curvature=curvature, x1_variance=x1_variance)
    # x1 to ±7σ; x2's mean b(x1² - s²) reaches 0.5 * (98 - 2) = 48 there.
    grid = grid_moments(logdensity, (-10, 10), (-9, 52), 0.04)
    mean, cov = banana_moments(curvature, x1_variance)
    # Mass outside: x1 beyond ±7.07σ, or x2 | x1 ~ N(b(x1² - s²), 1) outside [-9, 52], integrated
    # over x1 in float64; the moments it carries are bounded by it times the box's (52²) extent.
    x1 = np.linspace(-10, 10, 20_001)
    conditional_mean = curvature * (x1**2 - x1_variance)
    x2_outside = stats.norm.cdf(-9 - conditional_mean) + stats.norm.sf(52 - conditional_mean)
    outside = gaussian_outside(0.0, np.sqrt(x1_variance), -10, 10)
    outside += np.sum(stats.norm.pdf(x1, 0, np.sqrt(x1_variance)) * x2_outside) * (x1[1] - x1[0])
    assert outside < 1e-9
    assert_grid_matches(grid, mean, cov, truncation=outside * 52**2)
    # The closed form itself, in float64: exact to rounding.
    np.testing.assert_allclose(np.diag(cov), [2.0, 1.0 + 2 * 0.25 * 4.0], rtol=4 * EPS64)


def test_banana_defaults_are_haario_twisted_gaussian():
    points = np.array([[0.0, 0.0], [5.0, -7.5], [-12.0, 3.0]])  # exact in float32
    x1, x2 = points[:, 0], points[:, 1]
    direct = stats.norm(0, 10).logpdf(x1) + stats.norm(0.1 * (x1**2 - 100), 1).logpdf(x2)
    actual = banana_logdensity(jnp.asarray(points, jnp.float32))
    assert_within(actual, direct, evaluation_atol(banana_logdensity, points))
    _, cov = banana_moments()
    np.testing.assert_allclose(np.diag(cov), [100.0, 201.0], rtol=4 * EPS64)  # float64 closed form


def test_funnel_matches_its_factorisation():
    dim = 5
    logdensity = jax.jit(funnel_logdensity(dim))
    points = np.float32(np.random.default_rng(2).normal(size=(7, dim)) * np.array([3, 1, 1, 1, 1]))
    v, x = np.float64(points[:, 0]), np.float64(points[:, 1:])
    direct = stats.norm(0, 3).logpdf(v) + stats.norm(0, np.exp(v / 2)[:, None]).logpdf(x).sum(1)
    assert_within(logdensity(jnp.asarray(points)), direct, evaluation_atol(logdensity, points))
    # The gradient stays finite deep in the neck (v = -12), where e^v underflows float32 soon.
    grad = jax.jit(jax.grad(funnel_logdensity(dim)))(jnp.array([-12.0, 1e-3, 0.0, 0.0, 0.0]))
    assert np.all(np.isfinite(grad))
    with pytest.raises(ValueError, match="dim >= 2"):
        funnel_logdensity(1)


def test_funnel_2d_integrates_to_one():
    # With v_scale = 1 one grid resolves both ends: over v in [-5.5, 5.5] the width e^(v/2) of
    # x | v runs from 0.064 (three grid steps: plenty for the midpoint rule on a Gaussian) to 15.6;
    # the mass outside the box is below 1e-5.
    grid = grid_moments(funnel_logdensity(2, v_scale=1.0), (-5.5, 5.5), (-30, 30), 0.02)
    # Mass outside, in float64: |v| > 5.5, or |x| > 30 given v (x | v ~ N(0, e^v)).
    v = np.linspace(-5.5, 5.5, 11_001)
    x_outside = 2 * stats.norm.sf(30 * np.exp(-v / 2))
    outside_density = stats.norm.pdf(v) * x_outside
    outside = gaussian_outside(0.0, 1.0, -5.5, 5.5) + np.sum(outside_density) * (v[1] - v[0])
    assert outside < 1e-4
    assert_within(grid.mass, 1.0 - outside, grid.mass_err, "mass")
    # Mean of v: the box removes E[v; outside]; of x: 0 by symmetry of the density and the grid.
    tail_moment = np.sum(v * outside_density) * (v[1] - v[0])  # the |v| > 5.5 part cancels
    assert_within(grid.mean, [-tail_moment / (1 - outside), 0.0], grid.mean_err, "mean")


@pytest.mark.parametrize("rotate", [False, True])
def test_ill_conditioned_gaussian(rotate):
    dim, kappa = 10, 1e3
    logdensity, mean, cov = ill_conditioned_gaussian(dim, kappa, rotate=rotate, seed=3)
    cov64 = np.asarray(cov, np.float64)  # the float32 covariance the target returns
    eig = np.linalg.eigvalsh(cov64)
    # Rounding the float64 covariance to float32 moves each entry by ≤ eps/2 |C_ij|, so the
    # eigenvalues by ≤ ‖E‖_F ≤ (eps/2) ‖C‖_F ≤ (eps/2) √d λ_max (Weyl).
    np.testing.assert_allclose(
        eig, np.logspace(-3, 0, dim), rtol=EPS32, atol=0.5 * EPS32 * math.sqrt(dim)
    )
    off_diagonal = np.abs(cov64 - np.diag(np.diag(cov64))).max()
    # Rotated: off-diagonals far above what rounding a diagonal matrix could leave (nothing).
    assert (off_diagonal > dim * EPS32) if rotate else (off_diagonal == 0)
    points = np.float32(np.random.default_rng(4).normal(size=(6, dim)) * 0.3)
    expected = stats.multivariate_normal(np.asarray(mean), cov64).logpdf(np.float64(points))
    # The log-density whitens z = Vᵀ(x - m) / √λ: each z_i errs by ≤ d eps |x - m| / √λ_i, so
    # ½ Σ z² by ≤ Σ |z_i| d eps |x - m| / √λ_i, plus a few roundings of ½ Σ z² and of the
    # normaliser (a float64 constant, rounded once).
    eigvals, eigvecs = np.linalg.eigh(cov64)
    centred = np.float64(points) - np.asarray(mean, np.float64)
    z = centred @ eigvecs / np.sqrt(eigvals)
    radius = np.linalg.norm(centred, axis=1)
    whitening = dim * EPS32 * radius * np.sum(np.abs(z) / np.sqrt(eigvals), axis=1)
    atol = 4 * whitening + NUM_OPS * EPS32 * (np.abs(expected) + np.sum(z**2, axis=1))
    assert_within(logdensity(jnp.asarray(points)), expected, atol, "ill-conditioned")


def numpy_rezende(name, z):
    """Table 1 of Rezende & Mohamed (2015), transcribed literally: returns -U(z)."""
    z1, z2 = z[..., 0], z[..., 1]
    w1 = np.sin(2 * np.pi * z1 / 4)
    w2 = 3 * np.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
    w3 = 3 / (1 + np.exp(-(z1 - 1) / 0.3))
    if name == "u1":
        u = 0.5 * ((np.linalg.norm(z, axis=-1) - 2) / 0.4) ** 2 - np.log(
            np.exp(-0.5 * ((z1 - 2) / 0.6) ** 2) + np.exp(-0.5 * ((z1 + 2) / 0.6) ** 2)
        )
    elif name == "u2":
        u = 0.5 * ((z2 - w1) / 0.4) ** 2
    elif name == "u3":
        u = -np.log(
            np.exp(-0.5 * ((z2 - w1) / 0.35) ** 2) + np.exp(-0.5 * ((z2 - w1 + w2) / 0.35) ** 2)
        )
    else:
        u = -np.log(
            np.exp(-0.5 * ((z2 - w1) / 0.4) ** 2) + np.exp(-0.5 * ((z2 - w1 + w3) / 0.35) ** 2)
        )
    return -u


@pytest.mark.parametrize("name", ["u1", "u2", "u3", "u4"])
def test_rezende_energies_match_table_1(name):
    logdensity = jax.jit(REZENDE_ENERGIES[name])
    points = np.float32([[0.3, -1.2], [2.0, 0.1], [-1.5, 1.7], [1.0, 2.5], [-3.0, -0.4]])
    expected = numpy_rezende(name, np.float64(points))  # float64 at the float32 points
    atol = evaluation_atol(REZENDE_ENERGIES[name], points)
    assert_within(logdensity(jnp.asarray(points)), expected, atol, name)
    # Finite on the paper's [-4, 4]² box, and further out where the naive log(sum exp) underflows.
    grid = jnp.stack(jnp.meshgrid(jnp.linspace(-4, 4, 81), jnp.linspace(-4, 4, 81)), axis=-1)
    assert jnp.all(jnp.isfinite(logdensity(grid)))
    far = jnp.array([[30.0, -25.0], [-40.0, 40.0]])
    assert jnp.all(jnp.isfinite(logdensity(far)))
    assert jnp.all(jnp.isfinite(jax.jit(jax.vmap(jax.grad(REZENDE_ENERGIES[name])))(far)))


def test_u1_gradient_finite_at_origin():
    assert jnp.all(jnp.isfinite(jax.jit(jax.grad(u1_logdensity))(jnp.zeros(2))))


TWO_D_TARGETS = [
    u1_logdensity,
    u2_logdensity,
    u3_logdensity,
    u4_logdensity,
    banana_logdensity,
    funnel_logdensity(2),
    gaussian_logdensity(np.zeros(2), np.eye(2)),
    gaussian_mixture_logdensity([0.5, 0.5], [[0.0, 1.0], [1.0, 0.0]], [1.0, 2.0]),
]


@pytest.mark.parametrize("logdensity", TWO_D_TARGETS)
def test_shapes_broadcast(logdensity):
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        logdensity(jnp.zeros((4, 3)))
    logdensity = jax.jit(logdensity)
    points = jax.random.normal(jax.random.PRNGKey(5), (3, 4, 2))
    batched = logdensity(points)
    assert batched.shape == (3, 4)
    single = logdensity(points[1, 2])
    assert single.shape == ()
    # Two float32 evaluations of one formula (batched vs single, vectorised differently): each is
    # within evaluation_atol of the exact value, so within twice that of each other.
    atol = 2 * evaluation_atol(logdensity, points)
    assert_within(single, batched[1, 2], atol[1, 2])
    assert_within(jax.vmap(jax.vmap(logdensity))(points), batched, atol)


def test_normalisers_hold_in_log_space():
    # The Gaussian's log-normaliser is exact: at the mean, log p = -d/2 log 2π - ½ log det Σ.
    logdensity, mean, _ = ill_conditioned_gaussian(50, 1e6)
    log_eigvals = np.log(np.logspace(-6, 0, 50))
    expected = -25 * math.log(2 * math.pi) - 0.5 * np.sum(log_eigvals)
    # At the mean only the normaliser is left: ≤ d roundings of magnitudes summing to
    # 25 log 2π + ½ Σ |log λ| (if it is summed in float32; once if it is a float64 constant).
    atol = 50 * EPS32 * (25 * math.log(2 * math.pi) + 0.5 * np.sum(np.abs(log_eigvals)))
    np.testing.assert_allclose(logdensity(mean), expected, rtol=0, atol=atol)


def test_grid_reference_integrates_a_known_gaussian():
    # N((0.5, -1), diag(0.8², 1.2²)) on [-8, 8]² (>= 5.4 sd of margin: tail mass < 1e-7).
    mean, scale = np.array([0.5, -1.0]), np.array([0.8, 1.2])

    def logdensity(x):
        z = (x - mean) / scale
        return -0.5 * jnp.sum(z**2, -1) - jnp.sum(np.log(scale)) - np.log(2 * np.pi)

    reference = grid_reference(logdensity, 8.0, resolution=800)
    # Midpoint rule error O(h² f'') with h = 0.02 (~1e-4 relative at the 0.8 scale), plus float32
    # log-densities (~1e-6 relative): 1e-3 bounds both with a margin.
    np.testing.assert_allclose(reference.log_normaliser, 0.0, atol=1e-3)
    np.testing.assert_allclose(reference.mean, mean, atol=1e-3)
    np.testing.assert_allclose(reference.second_moment, scale**2 + mean**2, rtol=1e-3)


def test_confined_logdensity_adds_a_wall_outside_the_box_only():
    confined = confined_logdensity(u2_logdensity, limit=4.0, wall_width=0.1)
    inside = jnp.array([[3.9, -3.9], [0.0, 1.0]])
    np.testing.assert_array_equal(confined(inside), u2_logdensity(inside))
    outside = jnp.array([4.2, 0.0])  # 0.2 past the wall: -½ (0.2 / 0.1)² = -2
    np.testing.assert_allclose(confined(outside) - u2_logdensity(outside), -2.0, rtol=1e-5)
    # U2 does not decay along z1; the confined version holds finite mass.
    assert np.isfinite(grid_reference(confined, 5.0, 400).log_normaliser)
    with pytest.raises(ValueError, match="wall_width"):
        confined_logdensity(u2_logdensity, wall_width=0.0)

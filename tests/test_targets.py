"""Targets: normalisers on grids, transcriptions of Rezende & Mohamed's Table 1, moments, shapes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from nflows_jax.targets.energies import (
    REZENDE_ENERGIES,
    banana_logdensity,
    banana_moments,
    funnel_logdensity,
    gaussian_logdensity,
    gaussian_mixture_logdensity,
    gaussian_mixture_moments,
    ill_conditioned_gaussian,
    u1_logdensity,
    u2_logdensity,
    u3_logdensity,
    u4_logdensity,
)


def grid_moments(logdensity, x1_range, x2_range, step):
    """Riemann sums of p, x p and x xᵀ p on a regular grid (float64 accumulation on the host).

    For smooth densities that are negligible at the grid's edges the midpoint rule converges
    faster than any power of the step, so errors here are dominated by float32 evaluation (~1e-6).
    """
    x1 = np.arange(x1_range[0], x1_range[1], step) + step / 2
    x2 = np.arange(x2_range[0], x2_range[1], step) + step / 2
    points = np.stack(np.meshgrid(x1, x2, indexing="ij"), axis=-1)
    density = np.exp(np.asarray(jax.jit(logdensity)(jnp.asarray(points, jnp.float32)), np.float64))
    weight = density * step**2
    mass = weight.sum()
    mean = np.einsum("ij,ijk->k", weight, points) / mass
    centred = points - mean
    cov = np.einsum("ij,ijk,ijl->kl", weight, centred, centred) / mass
    return mass, mean, cov


def test_gaussian_integrates_to_one_and_matches_scipy():
    mean = np.array([0.5, -1.0])
    cov = np.array([[1.5, 0.6], [0.6, 0.8]])
    from_cov = gaussian_logdensity(mean, cov)
    from_precision = gaussian_logdensity(mean, precision=np.linalg.inv(cov))
    mass, grid_mean, grid_cov = grid_moments(from_cov, (-8, 9), (-8, 6), 0.05)
    np.testing.assert_allclose(mass, 1.0, atol=1e-4)
    np.testing.assert_allclose(grid_mean, mean, atol=1e-3)
    np.testing.assert_allclose(grid_cov, cov, atol=1e-3)

    points = np.random.default_rng(0).normal(size=(20, 2)) * 2
    expected = stats.multivariate_normal(mean, cov).logpdf(points)
    np.testing.assert_allclose(from_cov(jnp.asarray(points, jnp.float32)), expected, rtol=1e-5)
    np.testing.assert_allclose(
        from_precision(jnp.asarray(points, jnp.float32)), expected, rtol=1e-5
    )


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
    mass, grid_mean, grid_cov = grid_moments(logdensity, (-7, 7), (-7, 7), 0.04)
    mean, cov = gaussian_mixture_moments(weights, means, scales)
    np.testing.assert_allclose(mass, 1.0, atol=1e-4)
    np.testing.assert_allclose(grid_mean, mean, atol=1e-3)
    np.testing.assert_allclose(grid_cov, cov, atol=1e-3)


def test_mixture_matches_direct_sum_and_accepts_isotropic_scales():
    weights, means, scales = [2.0, 1.0], [[0.0, 0.0], [1.0, 3.0]], [1.0, 0.5]  # weights normalised
    points = np.random.default_rng(1).normal(size=(10, 2)) * 2
    direct = np.log(
        2 / 3 * stats.multivariate_normal([0, 0], np.eye(2)).pdf(points)
        + 1 / 3 * stats.multivariate_normal([1, 3], 0.25 * np.eye(2)).pdf(points)
    )
    logdensity = jax.jit(gaussian_mixture_logdensity(weights, means, scales))
    np.testing.assert_allclose(logdensity(jnp.asarray(points, jnp.float32)), direct, rtol=1e-5)
    with pytest.raises(ValueError, match="positive"):
        gaussian_mixture_logdensity([1.0, -1.0], means, scales)


def test_banana_integrates_to_one_with_known_moments():
    curvature, x1_variance = 0.5, 2.0
    logdensity = lambda z: banana_logdensity(z, curvature=curvature, x1_variance=x1_variance)
    # x1 to ±7σ; x2's mean b(x1² - s²) reaches 0.5 * (98 - 2) = 48 there.
    mass, grid_mean, grid_cov = grid_moments(logdensity, (-10, 10), (-9, 52), 0.04)
    mean, cov = banana_moments(curvature, x1_variance)
    np.testing.assert_allclose(mass, 1.0, atol=1e-4)
    np.testing.assert_allclose(grid_mean, mean, atol=2e-3)
    np.testing.assert_allclose(grid_cov, cov, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(np.diag(cov), [2.0, 1.0 + 2 * 0.25 * 4.0])


def test_banana_defaults_are_haario_twisted_gaussian():
    points = np.array([[0.0, 0.0], [5.0, -7.5], [-12.0, 3.0]])
    x1, x2 = points[:, 0], points[:, 1]
    direct = stats.norm(0, 10).logpdf(x1) + stats.norm(0.1 * (x1**2 - 100), 1).logpdf(x2)
    np.testing.assert_allclose(banana_logdensity(jnp.asarray(points)), direct, rtol=1e-5)
    _, cov = banana_moments()
    np.testing.assert_allclose(np.diag(cov), [100.0, 201.0])


def test_funnel_matches_its_factorisation():
    dim = 5
    logdensity = jax.jit(funnel_logdensity(dim))
    points = np.random.default_rng(2).normal(size=(7, dim)) * np.array([3.0, 1, 1, 1, 1])
    v, x = points[:, 0], points[:, 1:]
    direct = stats.norm(0, 3).logpdf(v) + stats.norm(0, np.exp(v / 2)[:, None]).logpdf(x).sum(1)
    np.testing.assert_allclose(logdensity(jnp.asarray(points, jnp.float32)), direct, rtol=1e-5)
    # The gradient stays finite deep in the neck (v = -12), where e^v underflows float32 soon.
    grad = jax.jit(jax.grad(funnel_logdensity(dim)))(jnp.array([-12.0, 1e-3, 0.0, 0.0, 0.0]))
    assert np.all(np.isfinite(grad))
    with pytest.raises(ValueError, match="dim >= 2"):
        funnel_logdensity(1)


def test_funnel_2d_integrates_to_one():
    # With v_scale = 1 one grid resolves both ends: over v in [-5.5, 5.5] the width e^(v/2) of
    # x | v runs from 0.064 (three grid steps: plenty for the midpoint rule on a Gaussian) to 15.6;
    # the mass outside the box is below 1e-5.
    mass, grid_mean, _ = grid_moments(
        funnel_logdensity(2, v_scale=1.0), (-5.5, 5.5), (-30, 30), 0.02
    )
    np.testing.assert_allclose(mass, 1.0, atol=1e-3)
    np.testing.assert_allclose(grid_mean, [0.0, 0.0], atol=1e-3)


@pytest.mark.parametrize("rotate", [False, True])
def test_ill_conditioned_gaussian(rotate):
    dim, kappa = 10, 1e3
    logdensity, mean, cov = ill_conditioned_gaussian(dim, kappa, rotate=rotate, seed=3)
    eig = np.linalg.eigvalsh(np.asarray(cov, np.float64))
    np.testing.assert_allclose(eig, np.logspace(-3, 0, dim), rtol=1e-4)
    off_diagonal = np.abs(np.asarray(cov) - np.diag(np.diag(cov))).max()
    assert (off_diagonal > 1e-2) if rotate else (off_diagonal == 0)
    points = np.random.default_rng(4).normal(size=(6, dim)) * 0.3
    expected = stats.multivariate_normal(np.asarray(mean), np.asarray(cov, np.float64)).logpdf(
        points
    )
    np.testing.assert_allclose(logdensity(jnp.asarray(points, jnp.float32)), expected, rtol=1e-4)


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
    points = np.array([[0.3, -1.2], [2.0, 0.1], [-1.5, 1.7], [1.0, 2.5], [-3.0, -0.4]])
    np.testing.assert_allclose(
        logdensity(jnp.asarray(points, jnp.float32)),
        numpy_rezende(name, points),
        rtol=1e-5,
        atol=1e-5,
    )
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
    np.testing.assert_allclose(single, batched[1, 2], rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(jax.vmap(logdensity))(points), batched, rtol=1e-6)


def test_normalisers_hold_in_log_space():
    # The Gaussian's log-normaliser is exact: at the mean, log p = -d/2 log 2π - ½ log det Σ.
    logdensity, mean, _ = ill_conditioned_gaussian(50, 1e6)
    expected = -25 * math.log(2 * math.pi) - 0.5 * np.sum(np.log(np.logspace(-6, 0, 50)))
    np.testing.assert_allclose(logdensity(mean), expected, rtol=1e-5)

"""2-D flows built from the library's layers: normalisation, sampling, the distrax view, errors."""

from __future__ import annotations

from functools import partial

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nflows_jax import flows
from nflows_jax.bijectors.base import chain, repeat, reverse_permutation
from nflows_jax.bijectors.coupling import affine_coupling
from nflows_jax.bijectors.planar import planar, radial
from nflows_jax.testing import perturb

pytestmark = pytest.mark.usefixtures("fast_compiles")

CONTEXT = 3
GRID_POINTS = 401  # 400 intervals on [-8, 8]; every other point is the 200-interval grid
HALF_WIDTH = 8.0


def _bijector(name: str):
    if name == "realnvp":
        return repeat(chain(affine_coupling(2, (16, 16)), reverse_permutation()), 4)
    if name == "realnvp_context":  # also the alternating mask with an even event size
        coupling = affine_coupling(2, (16, 16), mask="alternating", context_size=CONTEXT)
        return repeat(chain(coupling, reverse_permutation()), 4)
    if name == "planar":
        return repeat(planar(2), 4)
    if name == "radial":
        return repeat(radial(2), 4)
    raise ValueError(name)


# Perturbation scales: far from the base distribution, yet well conditioned in float32. Larger
# noise on the coupling MLPs compounds over layers into scales of exp(±10) and most of the mass
# outside any grid; planar/radial params enter the map directly and take more.
PERTURBATION = {"realnvp": 0.15, "realnvp_context": 0.1, "planar": 1.0, "radial": 1.0}


def _flow_and_params(name: str):
    """A flow with perturbed params (a freshly initialised flow is close to its base)."""
    flow = flows.Flow(flows.standard_normal(2), _bijector(name))
    context = _context(1) if name.endswith("context") else None

    @jax.jit  # one compilation; eager init and perturb would compile op by op
    def init_and_perturb(context):
        params = flows.init(flow, jax.random.PRNGKey(0), jnp.zeros((1, 2)), context)
        return perturb(params, jax.random.PRNGKey(1), PERTURBATION[name])

    return flow, init_and_perturb(context)


def _context(rows: int) -> np.ndarray:
    """One fixed context vector, repeated on every row."""
    return np.broadcast_to(np.array([0.5, -1.0, 2.0], np.float32), (rows, CONTEXT))


def _trapezoid_2d(values: np.ndarray, spacing: float) -> float:
    weights = np.ones(values.shape[0])
    weights[[0, -1]] = 0.5
    return float(spacing**2 * weights @ values @ weights)


@pytest.mark.parametrize("name", ["realnvp", "realnvp_context", "planar", "radial"])
def test_density_integrates_to_one_and_samples_match_log_prob(name):
    flow, params = _flow_and_params(name)
    num = GRID_POINTS**2
    context = _context(num) if name.endswith("context") else None
    axis = np.linspace(-HALF_WIDTH, HALF_WIDTH, GRID_POINTS, dtype=np.float32)
    grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(num, 2)
    log_prob = jax.jit(lambda params, x: flows.log_prob(flow, params, x, context))
    density = np.exp(np.asarray(log_prob(params, grid), np.float64))
    density = density.reshape(GRID_POINTS, GRID_POINTS)
    spacing = 2 * HALF_WIDTH / (GRID_POINTS - 1)
    integral = _trapezoid_2d(density, spacing)
    # The trapezoid error is O(h²); Richardson: error(h) ≈ |I(h) - I(2h)| / 3, bounded by |ΔI|.
    discretisation = abs(integral - _trapezoid_2d(density[::2, ::2], 2 * spacing))

    # The mass outside the box, estimated from the flow's own samples, with its standard error.
    draw = jax.jit(lambda params, key: flows.sample_and_log_prob(flow, params, key, num, context))
    samples, sample_log_prob = draw(params, jax.random.PRNGKey(2))
    outside = float(np.mean(np.any(np.abs(np.asarray(samples)) > HALF_WIDTH, axis=1)))
    standard_error = np.sqrt(max(outside, 1.0 / num) * (1.0 - outside) / num)
    assert outside < 0.01, "the test flow should keep its mass inside the integration box"
    # 4 standard errors + the discretisation bound + float32 rounding of the log-densities
    # (a relative 1e-6 per point, far below 1e-5 once summed into the integral).
    tolerance = 4.0 * standard_error + discretisation + 1e-5
    assert abs(integral - (1.0 - outside)) <= tolerance, (integral, outside, tolerance)
    # A wrong log-det would miss by far more: the perturbed flow is far from its base.
    base_density = np.exp(-0.5 * np.sum(grid.astype(np.float64) ** 2, axis=1)) / (2 * np.pi)
    base_density = base_density.reshape(density.shape)
    assert np.max(np.abs(density - base_density)) > 0.02

    # The log-density returned with each sample agrees with log_prob of that sample; float32
    # rounding through 4 layers (and planar's root solve) stays well inside 1e-4 + 1e-5·|log p|.
    np.testing.assert_allclose(sample_log_prob, log_prob(params, samples), rtol=1e-5, atol=1e-4)


def test_to_distrax_agrees_with_log_prob_and_handles_extra_batch_dims():
    flow, params = _flow_and_params("realnvp")
    x = jnp.asarray(2.0 * np.random.default_rng(3).standard_normal((64, 2)), jnp.float32)

    @jax.jit  # one compilation for all the distrax calls
    def through_distrax(params):
        distribution = flows.to_distrax(flow, params)
        samples = distribution.sample(seed=jax.random.PRNGKey(4), sample_shape=(3, 5))
        more_samples, more_log_probs = distribution.sample_and_log_prob(
            seed=jax.random.PRNGKey(5), sample_shape=(7,)
        )
        return (
            distribution.log_prob(x),
            samples,
            distribution.log_prob(samples),
            (
                more_samples,
                more_log_probs,
            ),
        )

    log_probs_x, samples, log_probs, (more_samples, more_log_probs) = through_distrax(params)
    chex.assert_shape((log_probs_x, samples, log_probs), ((64,), (3, 5, 2), (3, 5)))
    chex.assert_shape((more_samples, more_log_probs), ((7, 2), (7,)))
    ours = jax.jit(lambda params, x: flows.log_prob(flow, params, x))
    np.testing.assert_allclose(log_probs_x, ours(params, x), rtol=1e-5, atol=1e-5)
    expected = ours(params, samples.reshape(15, 2)).reshape(3, 5)
    np.testing.assert_allclose(log_probs, expected, rtol=1e-5, atol=1e-5)
    # Sampled log-probs come from the forward pass, ours from the inverse: float32 round trip.
    np.testing.assert_allclose(more_log_probs, ours(params, more_samples), rtol=1e-5, atol=1e-4)


def test_shape_errors_are_clear():
    """Shape errors are raised while tracing (static shapes), so eval_shape finds them for free."""
    flow = flows.Flow(flows.standard_normal(2), _bijector("realnvp"))
    conditional = flows.Flow(flows.standard_normal(2), _bijector("realnvp_context"))
    key, x = jax.random.PRNGKey(0), np.zeros((4, 2), np.float32)
    params = jax.eval_shape(partial(flows.init, flow), key, x)
    conditional_params = jax.eval_shape(partial(flows.init, conditional), key, x, _context(4))

    def log_prob(flow, *args):
        return jax.eval_shape(partial(flows.log_prob, flow), *args)

    with pytest.raises(ValueError, match="batch"):
        log_prob(flow, params, np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="event shape"):
        log_prob(flow, params, np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="event shape"):
        jax.eval_shape(partial(flows.init, flow), key, np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="context must have shape"):
        log_prob(conditional, conditional_params, x)
    with pytest.raises(ValueError, match="context must have shape"):
        log_prob(conditional, conditional_params, x, _context(4)[:, :2])
    with pytest.raises(ValueError, match="num_samples"):
        flows.sample(conditional, conditional_params, key, 4, _context(5))
    with pytest.raises(ValueError, match="context_size=0"):
        log_prob(flow, params, x, _context(4))

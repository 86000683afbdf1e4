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
from nflows_jax.testing import (
    jacobian_amplification,
    perturb,
    rounding_steps,
    rounding_tolerance,
)

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


def _log_prob_tolerance(flow, params, x, context, steps_factor: int = 1) -> np.ndarray:
    """Rounding allowance of float32 log p at each row of ``x`` (nflows_jax.testing's policy).

    Steps of ``log_prob`` (times ``steps_factor`` when two evaluations are compared), amplified by
    A = max(κ, ‖J‖, ‖J⁻¹‖) of the inverse's Jacobian at the row, on the size of the terms of
    log p: the base's ½‖z‖² and the log-det.
    """
    small = None if context is None else context[:8]
    steps = rounding_steps(lambda p, v: flows.log_prob(flow, p, v, small), params, x[:8])
    amplification = jacobian_amplification(flow.bijector.inverse, params, x, context)
    z, log_det = jax.jit(lambda p, v: flow.bijector.inverse(p, v, context))(params, x)
    size = 0.5 * np.sum(np.asarray(z, np.float64) ** 2, axis=1) + np.abs(np.asarray(log_det))
    return rounding_tolerance(steps_factor * steps, jnp.float32, amplification, size)


def _assert_within(actual, expected, tolerance) -> None:
    error = np.abs(np.asarray(actual, np.float64) - np.asarray(expected, np.float64))
    assert np.all(error <= tolerance), f"worst |error| / tolerance = {np.max(error / tolerance)}"


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
    # 4 standard errors (a two-sided false-fail rate of 6e-5 under the normal approximation) +
    # the discretisation bound + float32 rounding: log p's allowance at a point is the relative
    # error of its density, so the integral's is the density-weighted sum of the allowances.
    relative = _log_prob_tolerance(flow, params, grid, context).reshape(density.shape)
    rounding = _trapezoid_2d(density * relative, spacing)
    tolerance = 4.0 * standard_error + discretisation + rounding
    assert abs(integral - (1.0 - outside)) <= tolerance, (integral, outside, tolerance)
    # A wrong log-det would miss by far more: the perturbed flow is far from its base.
    base_density = np.exp(-0.5 * np.sum(grid.astype(np.float64) ** 2, axis=1)) / (2 * np.pi)
    base_density = base_density.reshape(density.shape)
    assert np.max(np.abs(density - base_density)) > 0.02

    # The log-density returned with each sample (forward pass) agrees with log_prob of that
    # sample (inverse pass) within the rounding of both passes. Checked on the first 4096.
    few = slice(0, 4096)
    few_context = None if context is None else context[few]
    tolerance = _log_prob_tolerance(flow, params, samples[few], few_context, steps_factor=2)
    _assert_within(sample_log_prob[few], log_prob(params, samples)[few], tolerance)


@pytest.mark.parametrize("name", ["realnvp", "realnvp_context"])
def test_to_distrax_agrees_with_log_prob_and_handles_extra_batch_dims(name):
    flow, params = _flow_and_params(name)
    conditional = name.endswith("context")
    one_context = _context(1)[0] if conditional else None
    rows = lambda n: _context(n) if conditional else None  # that context on every row
    x = jnp.asarray(2.0 * np.random.default_rng(3).standard_normal((64, 2)), jnp.float32)

    @jax.jit  # one compilation for all the distrax calls
    def through_distrax(params):
        distribution = flows.to_distrax(flow, params, one_context)
        samples = distribution.sample(seed=jax.random.PRNGKey(4), sample_shape=(3, 5))
        more = distribution.sample_and_log_prob(seed=jax.random.PRNGKey(5), sample_shape=(7,))
        return distribution.log_prob(x), samples, distribution.log_prob(samples), more

    log_probs_x, samples, log_probs, (more_samples, more_log_probs) = through_distrax(params)
    chex.assert_shape((log_probs_x, samples, log_probs), ((64,), (3, 5, 2), (3, 5)))
    chex.assert_shape((more_samples, more_log_probs), ((7, 2), (7,)))
    # Two programs doing the same float32 arithmetic, or the forward pass against the inverse
    # (sampled log-probs): twice the rounding allowance of one log_prob, per point.
    points = jnp.concatenate([x, samples.reshape(15, 2), more_samples])
    ours = jax.jit(lambda params, x, context: flows.log_prob(flow, params, x, context))
    tolerance = _log_prob_tolerance(flow, params, points, rows(86), steps_factor=2)
    _assert_within(
        jnp.concatenate([log_probs_x, log_probs.reshape(15), more_log_probs]),
        ours(params, points, rows(86)),
        tolerance,
    )


def test_sample_takes_a_sample_shape():
    flow, params = _flow_and_params("realnvp_context")
    key = jax.random.PRNGKey(6)
    x, log_p = flows.sample_and_log_prob(flow, params, key, (3, 4), _context(12).reshape(3, 4, 3))
    chex.assert_shape((x, log_p), ((3, 4, 2), (3, 4)))
    flat_x, flat_log_p = flows.sample_and_log_prob(flow, params, key, 12, _context(12))
    np.testing.assert_array_equal(x.reshape(12, 2), flat_x)  # the same draws, reshaped
    np.testing.assert_array_equal(log_p.reshape(12), flat_log_p)
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        flows.sample(flow, params, key, (3, 0), _context(1)[:0])
    with pytest.raises(ValueError, match=r"expected \(\*sample_shape, C\)"):
        flows.sample(flow, params, key, (3, 4), _context(12))


def test_integer_data_are_cast_to_float():
    """uint8 data (what the image loaders return) goes through log_prob of a scanned flow."""
    flow, params = _flow_and_params("realnvp")
    pixels = jnp.asarray(np.random.default_rng(7).integers(0, 4, (16, 2)), jnp.uint8)
    log_p = jax.jit(lambda p, x: flows.log_prob(flow, p, x))(params, pixels)
    as_float = jax.jit(lambda p, x: flows.log_prob(flow, p, x))(params, pixels.astype(jnp.float32))
    assert log_p.dtype == jnp.float32
    np.testing.assert_array_equal(log_p, as_float)


def test_to_distrax_refuses_a_batch_of_contexts():
    flow, params = _flow_and_params("realnvp_context")
    with pytest.raises(ValueError, match=r"one context vector of shape \(C,\)"):
        flows.to_distrax(flow, params, _context(4))


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


def test_float64_data_under_x64_stay_float64_throughout():
    """Params, densities and samples follow float64 data; nothing drops to float32 silently."""
    with jax.enable_x64(True):
        flow = flows.Flow(flows.standard_normal(2), _bijector("realnvp"))
        x = jnp.asarray(np.random.default_rng(8).standard_normal((16, 2)))
        params = flows.init(flow, jax.random.PRNGKey(0), x)
        dtypes = {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)}
        log_p = flows.log_prob(flow, params, x)
        samples, sample_log_p = flows.sample_and_log_prob(flow, params, jax.random.PRNGKey(1), 4)
    assert dtypes == {jnp.dtype(jnp.float64)}
    assert log_p.dtype == samples.dtype == sample_log_p.dtype == jnp.float64


def test_temperature_scales_the_base_draw_and_its_log_density():
    """T·z with z ~ N(0, I) is a draw of N(0, T² I): its log-density there is the unit one at z
    minus D log T. Checked through the identity-at-init flow, where x = T·z exactly."""
    flow = flows.Flow(flows.standard_normal(2), _bijector("radial"))
    params = flows.init(flow, jax.random.PRNGKey(0), jnp.zeros((1, 2)))
    key = jax.random.PRNGKey(3)
    unit, unit_log_p = flows.sample_and_log_prob(flow, params, key, 64)
    cold, cold_log_p = flows.sample_and_log_prob(flow, params, key, 64, temperature=0.5)
    np.testing.assert_array_equal(cold, 0.5 * unit)  # radial at init is exactly the identity
    # The radial log-det at init is 0 up to a few roundings of terms no larger than |log p|, once
    # at z and once at T·z, plus the rounding of the subtraction: 8 ulps of the largest |log p|.
    eps = float(jnp.finfo(jnp.float32).eps)
    expected = np.asarray(unit_log_p, np.float64) - 2 * np.log(0.5)
    np.testing.assert_allclose(cold_log_p, expected, rtol=0, atol=8 * eps * np.abs(expected).max())
    with pytest.raises(ValueError, match="temperature must be > 0"):
        flows.sample(flow, params, key, 4, temperature=0.0)

"""MAF / IAF bijectors and the MADE distributions.

Bijector checks go through ``check_bijector`` (float64, tolerances from the rounding policy).
The normalisation checks enumerate all 2^d binary vectors, so they are exact up to float64
rounding of a sum of 2^d terms (allowance 2^d · d · eps). Sampling checks compare empirical
frequencies with the exact probabilities at a Monte-Carlo standard error with a stated
false-fail rate.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nflows_jax import flows
from nflows_jax.bijectors import chain, random_permutation, repeat, reverse_permutation
from nflows_jax.bijectors.autoregressive import inverse_autoregressive, masked_autoregressive
from nflows_jax.bijectors.spline import rational_quadratic_spline
from nflows_jax.models.made import bernoulli_made, ensemble_log_prob, gaussian_autoregressive
from nflows_jax.nets.made import connectivity, made_degrees
from nflows_jax.testing import assert_moments_match, batch_jacobian, check_bijector, perturb
from tests.power import num_standard_errors

LAYERS = {"maf": masked_autoregressive, "iaf": inverse_autoregressive}


def _x(shape, seed=0):
    return jax.random.normal(jax.random.PRNGKey(seed), shape)


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("order", ["natural", "random"])
def test_layer_satisfies_the_bijector_contract(kind, order):
    layer = LAYERS[kind](4, hidden=(16, 16), order=order, hidden_degrees="random", seed=3)
    check_bijector(layer, _x((3, 4)), key=jax.random.PRNGKey(1))


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_spline_layer_satisfies_the_bijector_contract(kind):
    # x reaches past the spline's bound of 1.5, so both tails and the interior are checked.
    layer = LAYERS[kind](3, rational_quadratic_spline(num_bins=4, bound=1.5), hidden=(12,))
    x = 2.0 * _x((3, 3), seed=8)
    assert float(jnp.max(jnp.abs(x))) > 1.5
    check_bijector(layer, x, key=jax.random.PRNGKey(9), perturbation=0.5)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_conditional_layer_satisfies_the_contract_and_uses_its_context(kind):
    layer = LAYERS[kind](3, hidden=(12,), context_size=2)
    check_bijector(layer, _x((3, 3)), key=jax.random.PRNGKey(2), context=_x((3, 2), seed=5))


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_residual_layer_satisfies_the_contract(kind):
    layer = LAYERS[kind](3, hidden=(10, 10), residual=True)
    check_bijector(layer, _x((2, 3)), key=jax.random.PRNGKey(4))


def test_maf_stacked_with_permutations_satisfies_the_contract():
    flow = repeat(chain(masked_autoregressive(3, hidden=(8,)), reverse_permutation()), 3)
    check_bijector(flow, _x((2, 3)), key=jax.random.PRNGKey(6))
    mixed = chain(
        masked_autoregressive(3, hidden=(8,), order="random", seed=1),
        random_permutation(7, 3),
        inverse_autoregressive(3, hidden=(8,), order="reversed"),
    )
    check_bijector(mixed, _x((2, 3)), key=jax.random.PRNGKey(7))


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("order", ["natural", "reversed", [2, 0, 3, 1]])
def test_parallel_direction_jacobian_is_triangular_in_the_order(kind, order):
    """MAF's inverse and IAF's forward: d out_i / d in_j = 0 unless m(j) <= m(i)."""
    layer = LAYERS[kind](4, hidden=(16,), order=order, seed=2)
    x = _x((5, 4))
    params = perturb(layer.init(jax.random.PRNGKey(0), x), jax.random.PRNGKey(1), 0.5)
    parallel = layer.inverse if kind == "maf" else layer.forward
    jacobian = batch_jacobian(parallel, params, x)  # (B, E, B, E)
    blocks = np.stack([jacobian[b, :, b, :] for b in range(5)])
    support = np.abs(blocks).max(axis=0) > 0
    allowed = np.asarray(connectivity(made_degrees(4, (16,), order))) | np.eye(4, dtype=bool)
    assert not (support & ~allowed).any()
    assert support.diagonal().all()


def _all_binary(d):
    return jnp.asarray(list(itertools.product([0.0, 1.0], repeat=d)))


@pytest.mark.parametrize("order", ["natural", "random"])
def test_bernoulli_made_probabilities_sum_to_one(order):
    with jax.enable_x64(True):
        d = 5
        model = bernoulli_made(d, hidden=(16, 16), order=order, hidden_degrees="random", seed=1)
        everything = _all_binary(d).astype(jnp.float64)
        params = perturb(model.init(jax.random.PRNGKey(0), everything), jax.random.PRNGKey(1), 1.0)
        allowance = (2**d) * d * np.finfo(np.float64).eps * 10  # 2^d terms of d-term sums
        total = jnp.sum(jnp.exp(model.log_prob(params, everything)))
        assert abs(float(total) - 1.0) < allowance
        # A mask ensemble is a mixture of normalised distributions, so it is normalised too,
        # and it differs from any one member (else the ensemble would be vacuous).
        keys = jax.random.split(jax.random.PRNGKey(2), 4)
        ensemble = ensemble_log_prob(model, params, everything, keys)
        assert abs(float(jnp.sum(jnp.exp(ensemble))) - 1.0) < 4 * allowance
        single = model.log_prob(params, everything, degrees=model.random_degrees(keys[0]))
        assert float(jnp.max(jnp.abs(ensemble - single))) > 1e-3


def test_bernoulli_made_samples_follow_its_probabilities():
    d, n = 3, 40_000
    model = bernoulli_made(d, hidden=(8,), order="reversed")
    everything = _all_binary(d)
    params = perturb(model.init(jax.random.PRNGKey(0), everything), jax.random.PRNGKey(1), 1.5)
    probs = np.exp(np.asarray(model.log_prob(params, everything), np.float64))
    draws = np.asarray(model.sample(params, jax.random.PRNGKey(3), n))
    codes = (draws * 2 ** np.arange(d - 1, -1, -1)).sum(axis=1).astype(int)
    freq = np.bincount(codes, minlength=2**d) / n
    standard_error = np.sqrt(probs * (1 - probs) / n)
    k = num_standard_errors(1e-4, 2**d)  # false-fail rate 1e-4 over the 2^d cells
    np.testing.assert_array_less(np.abs(freq - probs), k * standard_error)


def test_gaussian_autoregressive_matches_its_gaussian_and_samples_it():
    """With zero-initialised MADE weights but a bias, x_i = mu_i + exp(s_i) z_i exactly.

    Float32 log_prob against the float64 formula: a few dozen operations on values of size
    <= 10, so 64 · eps32 · (1 + |expected|) bounds the rounding.
    """
    model = gaussian_autoregressive(2, hidden=(8,))
    x = _x((4, 2))
    params = model.bijector.init(jax.random.PRNGKey(0), x)
    bias = np.array([[0.5, np.log(2.0)], [-1.0, np.log(0.5)]]).reshape(-1)  # (mu, raw s) per dim
    params["output"]["bias"] = jnp.asarray(bias, params["output"]["bias"].dtype)
    means, log_scales = np.array([0.5, -1.0]), np.array([np.log(2.0), np.log(0.5)])
    log_scales = 5.0 * np.tanh(log_scales / 5.0)  # the affine transformer's bounded log-scale
    expected = -0.5 * (((np.asarray(x) - means) / np.exp(log_scales)) ** 2).sum(1)
    expected -= log_scales.sum() + np.log(2 * np.pi)
    actual = np.asarray(flows.log_prob(model, params, x), np.float64)
    allowance = 64 * np.finfo(np.float32).eps * (1 + np.abs(expected))
    np.testing.assert_array_less(np.abs(actual - expected), allowance)
    draws = np.asarray(flows.sample(model, params, jax.random.PRNGKey(1), 20_000), np.float64)
    assert_moments_match(draws, means, np.diag(np.exp(2 * log_scales)))


def test_bad_configs_and_shapes_raise():
    with pytest.raises(ValueError, match="event_size"):
        masked_autoregressive(0)
    with pytest.raises(ValueError, match="context_size"):
        masked_autoregressive(3, context_size=-1)
    layer = masked_autoregressive(3, hidden=(4,))
    params = layer.init(jax.random.PRNGKey(0), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"shape \(batch, 3\)"):
        layer.inverse(params, jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="context_size=0"):
        layer.forward(params, jnp.ones((2, 3)), jnp.ones((2, 1)))
    with pytest.raises(ValueError, match="x of shape"):
        bernoulli_made(4).log_prob(None, jnp.ones((2, 3)))

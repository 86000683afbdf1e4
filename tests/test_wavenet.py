"""WaveNet: causality, receptive field, normalisation, and fast generation equal to naive."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nflows_jax.models.likelihoods import categorical, discretized_logistic_mixture
from nflows_jax.models.wavenet import wavenet, wavenet_dilations
from nflows_jax.testing import perturb


def _model(levels=8, context_size=0, dilations=(1, 2, 4, 1, 2)):
    model = wavenet(
        categorical(levels), dilations, channels=6, skip_channels=8, context_size=context_size
    )
    params = perturb(model.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.5)
    return model, params


def test_outputs_depend_only_on_the_past_within_the_receptive_field():
    model, params = _model()
    length = 20
    x = jax.random.randint(jax.random.PRNGKey(2), (1, length), 0, 8)

    # Change one input level at a time and see which outputs move (inputs are integers, so
    # this is the exact question, with no gradient through a quantisation).
    outputs = jax.jit(model.outputs)
    base = np.asarray(outputs(params, x))
    reach = np.zeros((length, length), bool)  # reach[t, s]: does x_s change output t?
    for s in range(length):
        changed = x.at[0, s].set((x[0, s] + 3) % 8)
        reach[:, s] = np.any(np.asarray(outputs(params, changed)) != base, axis=-1)[0]
    t, s = np.meshgrid(np.arange(length), np.arange(length), indexing="ij")
    allowed = (s < t) & (s >= t - model.receptive_field)
    assert not (reach & ~allowed).any()
    # and the full receptive field is used: every allowed input reaches its output
    assert (reach == allowed).all()
    assert model.receptive_field == 1 + 1 + 2 + 4 + 1 + 2


def test_likelihood_is_normalised_over_every_short_sequence():
    for likelihood in (categorical(3), discretized_logistic_mixture(2, 3)):
        model = wavenet(likelihood, (1, 2), channels=4, skip_channels=4)
        params = perturb(model.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 1.0)
        sequences = jnp.asarray(list(itertools.product(range(3), repeat=4)), jnp.int32)
        total = float(jnp.sum(jnp.exp(jax.jit(model.log_prob)(params, sequences))))
        # 81 probabilities, each a product of 4 float32 conditionals
        assert abs(total - 1.0) < 81 * 16 * np.finfo(np.float32).eps


@pytest.mark.parametrize("context_size", [0, 3])
def test_fast_generation_gives_exactly_the_naive_samples(context_size):
    model, params = _model(context_size=context_size)
    context = None if context_size == 0 else jax.nn.one_hot(jnp.array([0, 2, 1, 2]), 3)
    key = jax.random.PRNGKey(5)
    naive = jax.jit(model.sample_naive, static_argnums=(2, 3))(params, key, 4, 40, context)
    fast = jax.jit(model.sample_fast, static_argnums=(2, 3))(params, key, 4, 40, context)
    np.testing.assert_array_equal(np.asarray(fast), np.asarray(naive))
    assert len(np.unique(np.asarray(naive))) > 1  # not a degenerate constant sequence


def test_dilations_and_bad_inputs():
    assert wavenet_dilations(2, 3) == (1, 2, 4, 1, 2, 4)
    with pytest.raises(ValueError, match="dilations"):
        wavenet(categorical(4), (0, 1))
    model, params = _model()
    with pytest.raises(ValueError, match="integer levels"):
        model.log_prob(params, jnp.zeros((2, 5)))
    with pytest.raises(ValueError, match="context_size=0"):
        model.log_prob(params, jnp.zeros((2, 5), jnp.int32), jnp.ones((2, 1)))

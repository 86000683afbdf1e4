"""The shared random draws of the MCMC kernels: right distributions, independent words."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from nflows_jax.sampling.base import normal_and_uniform, uniform

NUM_KEYS = 100_000
P_THRESHOLD = 1e-3  # fixed before any run


def _draw(key):
    keys = jax.random.split(key, NUM_KEYS)
    return jax.jit(jax.vmap(lambda k: normal_and_uniform(k, (3,))))(keys)


def test_normals_and_uniform_have_the_right_laws():
    normals, uniforms = _draw(jax.random.PRNGKey(0))
    for column in range(3):
        assert stats.kstest(np.asarray(normals[:, column]), "norm").pvalue > P_THRESHOLD
    assert stats.kstest(np.asarray(uniforms), "uniform").pvalue > P_THRESHOLD
    assert float(jnp.min(uniforms)) >= 0.0 and float(jnp.max(uniforms)) < 1.0


def test_words_of_one_block_are_uncorrelated():
    # Counters i and i + size/2 share a threefry block; their outputs must still be independent.
    draws = np.asarray(
        jax.vmap(lambda k: uniform(k, 4))(jax.random.split(jax.random.PRNGKey(1), NUM_KEYS))
    )
    bound = 5.0 / np.sqrt(NUM_KEYS)  # 5 standard errors of a correlation under independence
    corr = np.corrcoef(draws.T)
    assert np.max(np.abs(corr - np.eye(4))) < bound


def test_typed_and_legacy_keys_give_the_same_draws():
    legacy = normal_and_uniform(jax.random.PRNGKey(3), (5,))
    typed = normal_and_uniform(jax.random.wrap_key_data(jax.random.PRNGKey(3)), (5,))
    np.testing.assert_array_equal(legacy[0], typed[0])
    np.testing.assert_array_equal(legacy[1], typed[1])


def test_other_prng_implementations_fall_back_to_jax_random():
    key = jax.random.key(0, impl="rbg")
    normals, u = normal_and_uniform(key, (4,))
    assert normals.shape == (4,) and bool(jnp.all(jnp.isfinite(normals))) and 0.0 <= float(u) < 1

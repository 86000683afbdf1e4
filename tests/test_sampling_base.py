"""The shared random draws of the MCMC kernels: right distributions, independent words.

False-fail rate ALPHA = 1e-4 per test, fixed before any run; power ≥ 0.99 against a named wrong
answer, with the number of draws from the power calculation in ``tests/power.py``:

* laws: four DKW tests (three normal columns, one uniform) at ALPHA / 4 each; the wrong answer is
  a 2 % scale error of any one of them, D* = sup|F(x) - F(x / 1.02)|, n ≥ ((c_α + c_β) / D*)²;
* independence: six pairwise correlations at ALPHA / 6 each (|r| < k/√n); the wrong answer is a
  correlation of 0.01 between any two words.

Each test also runs its procedure on the wrong answer built from the same draws and asserts the
rejection (the power at one fixed seed; it fails with probability ≤ 0.01 by construction).
"""

import jax
import jax.numpy as jnp
import numpy as np
import power
import scipy.special

from nflows_jax.sampling.base import normal_and_uniform, uniform

ALPHA = 1e-4  # false-fail rate per test, fixed before any run
BETA = 0.01  # 1 - power against the named wrong answer
SCALE_ERROR = 0.02
NUM_LAW_CHECKS = 4
NORMAL_DISTANCE = power.scale_error_distance(
    scipy.special.ndtr, SCALE_ERROR, np.linspace(-9.0, 9.0, 180_001)
)
NUM_KEYS = power.ks_sample_size(NORMAL_DISTANCE, ALPHA / NUM_LAW_CHECKS, BETA)  # 698,139
# The uniform's 2 % scale error (U(0, 1.02)) is a larger distance, 1 - 1/1.02: NUM_KEYS suffices.
assert power.ks_sample_size(1 - 1 / (1 + SCALE_ERROR), ALPHA / NUM_LAW_CHECKS, BETA) <= NUM_KEYS

NUM_WORD_PAIRS = 6
NUM_CORRELATION_KEYS = power.correlation_sample_size(0.01, ALPHA, BETA, NUM_WORD_PAIRS)


def _draw(key):
    keys = jax.random.split(key, NUM_KEYS)
    return jax.jit(jax.vmap(lambda k: normal_and_uniform(k, (3,))))(keys)


def _uniform_cdf(x):
    return np.clip(x, 0.0, 1.0)


def test_normals_and_uniform_have_the_right_laws():
    normals, uniforms = _draw(jax.random.PRNGKey(0))
    normals = np.asarray(normals, np.float64)
    uniforms = np.asarray(uniforms, np.float64)
    alpha = ALPHA / NUM_LAW_CHECKS
    for column in range(3):
        assert not power.ks_rejects(normals[:, column], scipy.special.ndtr, alpha), column
        wrong = normals[:, column] * (1 + SCALE_ERROR)
        assert power.ks_rejects(wrong, scipy.special.ndtr, alpha), "2 % scale error missed"
    assert not power.ks_rejects(uniforms, _uniform_cdf, alpha)
    assert power.ks_rejects(uniforms * (1 + SCALE_ERROR), _uniform_cdf, alpha)
    assert float(np.min(uniforms)) >= 0.0 and float(np.max(uniforms)) < 1.0


def test_words_of_one_block_are_uncorrelated():
    # Counters i and i + size/2 share a threefry block; their outputs must still be independent.
    keys = jax.random.split(jax.random.PRNGKey(1), NUM_CORRELATION_KEYS)
    draws = np.asarray(jax.jit(jax.vmap(lambda k: uniform(k, 4)))(keys), np.float64)
    # Under independence √n r ≈ N(0, 1) per pair; Bonferroni over the six pairs.
    bound = power.num_standard_errors(ALPHA, NUM_WORD_PAIRS) / np.sqrt(NUM_CORRELATION_KEYS)
    corr = np.corrcoef(draws.T)
    assert np.max(np.abs(corr - np.eye(4))) < bound
    # The named wrong answer from the same draws: word 3 leaning on word 2 with ρ ≈ 0.01
    # (the mixture weight 0.01 on a variable of equal variance gives ρ = 0.01 / √(1 + 1e-4)).
    leaning = draws.copy()
    leaning[:, 3] += 0.01 * (draws[:, 2] - 0.5)
    assert np.max(np.abs(np.corrcoef(leaning.T) - np.eye(4))) > bound


def test_typed_and_legacy_keys_give_the_same_draws():
    legacy = normal_and_uniform(jax.random.PRNGKey(3), (5,))
    typed = normal_and_uniform(jax.random.wrap_key_data(jax.random.PRNGKey(3)), (5,))
    np.testing.assert_array_equal(legacy[0], typed[0])
    np.testing.assert_array_equal(legacy[1], typed[1])


def test_other_prng_implementations_fall_back_to_jax_random():
    key = jax.random.key(0, impl="rbg")
    normals, u = normal_and_uniform(key, (4,))
    assert normals.shape == (4,) and bool(jnp.all(jnp.isfinite(normals))) and 0.0 <= float(u) < 1

"""Coupling layers keep the dtype of their input: float64 all through under x64, float32 otherwise.

Before issue 6 the conditioner's params were always float32 (flax's default ``param_dtype``), so a
float64 run under ``jax_enable_x64`` silently computed every shift and scale from float32 weights.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nflows_jax.bijectors.coupling import additive_coupling, affine_coupling
from nflows_jax.nets.mlp import MLP, fan_in_uniform

DIM, BATCH, CONTEXT, HIDDEN = 3, 4, 2, (8,)
COUPLINGS = {"additive": additive_coupling, "affine": affine_coupling}
pytestmark = pytest.mark.usefixtures("fast_compiles")


def _perturb(params, key):
    """Move the zero-initialised output layer off zero so outputs depend on every param."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    noisy = [
        leaf + 0.3 * jax.random.normal(k, leaf.shape, leaf.dtype)
        for leaf, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, noisy)


def _run(make, dtype, mask, context_size):
    bijector = make(DIM, HIDDEN, mask=mask, context_size=context_size)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(BATCH, DIM)), dtype)
    context = jnp.asarray(rng.normal(size=(BATCH, CONTEXT)), dtype) if context_size else None

    @jax.jit  # one compile per case instead of one per eager op
    def init_and_round_trip(x, context):
        params = bijector.init(jax.random.PRNGKey(0), x, context)
        params = _perturb(params, jax.random.PRNGKey(1))
        y, forward_log_det = bijector.forward(params, x, context)
        x_back, inverse_log_det = bijector.inverse(params, y, context)
        return params, (y, forward_log_det, x_back, inverse_log_det)

    return *init_and_round_trip(x, context), x


@pytest.mark.parametrize("kind", sorted(COUPLINGS))
@pytest.mark.parametrize("mask,context_size", [("half", 0), ("alternating", CONTEXT)])
def test_float64_input_under_x64_gives_float64_params_and_outputs(kind, mask, context_size):
    with jax.enable_x64(True):
        params, outputs, x = _run(COUPLINGS[kind], jnp.float64, mask, context_size)
        param_dtypes = {str(leaf.dtype) for leaf in jax.tree_util.tree_leaves(params)}
        assert param_dtypes == {"float64"}, f"{kind}: param dtypes {sorted(param_dtypes)}"
        for name, out in zip(
            ("y", "forward log-det", "x", "inverse log-det"), outputs, strict=True
        ):
            assert out.dtype == jnp.float64, f"{kind}: {name} is {out.dtype}"
        # Round-trip error is a few float64 eps times (|x| + |shift| exp(-s)), with |x|, |shift|
        # and exp(|s|) all O(1) on these perturbed params; 1e3 eps (2e-13) bounds it with a wide
        # margin and is six orders below float32's eps (1.2e-7), so a float32 path fails here.
        np.testing.assert_allclose(outputs[2], x, rtol=0, atol=1e3 * np.finfo(np.float64).eps)
        np.testing.assert_allclose(
            outputs[3], -outputs[1], rtol=0, atol=1e3 * np.finfo(np.float64).eps
        )


@pytest.mark.parametrize("kind", sorted(COUPLINGS))
@pytest.mark.parametrize("x64", [False, True])
def test_float32_input_stays_float32(kind, x64):
    with jax.enable_x64(x64):
        params, outputs, _ = _run(COUPLINGS[kind], jnp.float32, "half", 0)
        param_dtypes = {str(leaf.dtype) for leaf in jax.tree_util.tree_leaves(params)}
        assert param_dtypes == {"float32"}, f"{kind}: param dtypes {sorted(param_dtypes)}"
        for out in outputs:
            assert out.dtype == jnp.float32


def test_mlp_hidden_layers_are_fan_in_uniform_and_output_is_zero():
    fan_in, width = 4, 256
    params = jax.jit(MLP((width,), 3).init)(jax.random.PRNGKey(0), jnp.zeros((1, fan_in)))
    params = params["params"]
    bound = 1.0 / np.sqrt(fan_in)
    for name in ("kernel", "bias"):
        leaf = np.asarray(params["Dense_0"][name])
        assert np.all(np.abs(leaf) <= bound), name
        # Each draw lands in the outer half of U(-b, b) with probability 1/2; with >= 256 draws
        # all missing it has probability <= 2^-256, so this only fails for (near) zero inits.
        assert np.max(np.abs(leaf)) > bound / 2, name
    np.testing.assert_array_equal(params["Dense_1"]["kernel"], 0.0)
    np.testing.assert_array_equal(params["Dense_1"]["bias"], 0.0)
    flax_init = jax.jit(MLP((width,), 3, hidden_init="flax").init)(
        jax.random.PRNGKey(0), jnp.zeros((1, fan_in))
    )["params"]
    np.testing.assert_array_equal(flax_init["Dense_0"]["bias"], 0.0)


def test_fan_in_uniform_and_mlp_reject_bad_arguments():
    with pytest.raises(ValueError, match="fan_in must be a positive int; got 0"):
        fan_in_uniform(0)
    with pytest.raises(ValueError, match="hidden_init must be one of"):
        MLP((4,), 1, hidden_init="he").init(jax.random.PRNGKey(0), jnp.zeros((1, 2)))

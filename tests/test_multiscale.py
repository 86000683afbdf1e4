"""Multi-scale structure: ``on_channels`` transforms some channels and passes the rest through."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nflows_jax.bijectors import chain, elementwise_affine, tanh
from nflows_jax.bijectors.multiscale import on_channels
from nflows_jax.testing import check_bijector

NHWC = (3, 2, 2, 3)


def _images(seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal(NHWC), jnp.float32)


def test_on_channels_passes_the_bijector_contract():
    check_bijector(on_channels(chain(elementwise_affine(), tanh()), 2), _images(),
                   key=jax.random.PRNGKey(0))  # fmt: skip


def test_the_other_channels_pass_through_bitwise_and_add_no_log_det():
    inner = chain(elementwise_affine(), tanh())
    layer, x = on_channels(inner, 1), _images(1)
    params = jax.tree_util.tree_map(lambda p: p + 0.5, layer.init(jax.random.PRNGKey(0), x))
    y, log_det = jax.jit(layer.forward)(params, x)
    np.testing.assert_array_equal(y[..., 1:], x[..., 1:])
    inner_y, inner_log_det = jax.jit(inner.forward)(params, x[..., :1])
    np.testing.assert_array_equal(y[..., :1], inner_y)  # the same program on the same inputs
    np.testing.assert_array_equal(log_det, inner_log_det)


@pytest.mark.parametrize("num_channels", [0, 3, 1.5])
def test_bad_channel_counts_are_refused(num_channels):
    with pytest.raises(ValueError, match="num_channels"):
        layer = on_channels(elementwise_affine(), num_channels)
        layer.init(jax.random.PRNGKey(0), _images())

"""Image coupling layers (RealNVP channel / checkerboard masks) and their ConvResNet conditioner.

Most checks here are exact (bitwise equality, exact zeros): a kept entry is copied by
``jnp.where``, a zero-initialised conditioner outputs exact zeros, and ``exp(0) = 1``, ``x·1 + 0
= x`` hold exactly in IEEE arithmetic. The rest go through ``check_bijector`` in float64, whose
tolerances are rounding-level by construction (see ``nflows_jax.testing``).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nflows_jax.bijectors.base import chain
from nflows_jax.bijectors.image_coupling import (
    channel_mask,
    checkerboard_mask,
    image_additive_coupling,
    image_affine_coupling,
)
from nflows_jax.nets.resnet import ConvResNet
from nflows_jax.testing import check_bijector, perturb

pytestmark = pytest.mark.usefixtures("fast_compiles")

COUPLINGS = {"affine": image_affine_coupling, "additive": image_additive_coupling}
CASES = list(itertools.product(COUPLINGS, ("channel", "checkerboard"), (0, 1)))
SHAPE = (3, 4, 4, 2)  # NHWC


def _layer(kind: str, mask: str, parity: int, channels: int = 2):
    return COUPLINGS[kind](channels, hidden=8, num_blocks=1, mask=mask, parity=parity)


def _x(shape=SHAPE, seed: int = 1) -> jax.Array:
    return jax.random.normal(jax.random.PRNGKey(seed), shape)


def _kept(mask: str, parity: int, shape=SHAPE) -> np.ndarray:
    """The kept entries, written out from the definition (not from the module's helpers)."""
    _, height, width, channels = shape
    kept = np.zeros(shape[1:], bool)
    for h, w, c in itertools.product(range(height), range(width), range(channels)):
        if mask == "channel":
            kept[h, w, c] = (c < channels // 2) if parity == 0 else (c >= channels // 2)
        else:
            kept[h, w, c] = (h + w) % 2 == parity
    return np.broadcast_to(kept, shape)


def _perturbed(layer, x, seed: int = 0):
    init_key, noise_key = jax.random.split(jax.random.PRNGKey(seed))
    return perturb(layer.init(init_key, x), noise_key, 0.3)


# ------------------------------------------------------------------------------------------------
# The bijector contract
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, mask, parity", CASES)
def test_check_bijector(kind, mask, parity):
    # float64, rounding-level tolerances; params perturbed away from the identity by default.
    check_bijector(_layer(kind, mask, parity), _x(), key=jax.random.PRNGKey(0))


@pytest.mark.parametrize("kind", COUPLINGS)
def test_check_bijector_odd_channels_and_single_channel(kind):
    # Channel mask with odd C = 3 (parity 0 keeps 1 channel, changes 2; parity 1 the reverse),
    # and the checkerboard on a single channel.
    shape = (2, 4, 4, 3)
    for parity in (0, 1):
        layer = _layer(kind, "channel", parity, channels=3)
        check_bijector(layer, _x(shape), key=jax.random.PRNGKey(parity))
    check_bijector(
        _layer(kind, "checkerboard", 1, channels=1), _x((2, 4, 4, 1)), key=jax.random.PRNGKey(2)
    )


# ------------------------------------------------------------------------------------------------
# Identity at initialisation, masks, Jacobian structure
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, mask, parity", CASES)
def test_identity_at_init_bitwise(kind, mask, parity):
    layer, x = _layer(kind, mask, parity), _x()
    params = layer.init(jax.random.PRNGKey(0), x)
    y, forward_log_det = jax.jit(layer.forward)(params, x)
    x_back, inverse_log_det = jax.jit(layer.inverse)(params, x)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(x_back), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(forward_log_det), np.zeros(SHAPE[0]))
    np.testing.assert_array_equal(np.asarray(inverse_log_det), np.zeros(SHAPE[0]))


@pytest.mark.parametrize("kind, mask, parity", CASES)
def test_kept_entries_bitwise_and_changed_entries_move(kind, mask, parity):
    layer, x = _layer(kind, mask, parity), _x()
    params = _perturbed(layer, x)
    kept = _kept(mask, parity)
    for transform in (layer.forward, layer.inverse):
        out = np.asarray(jax.jit(transform)(params, x)[0])
        np.testing.assert_array_equal(out[kept], np.asarray(x)[kept])
        # Every changed entry moves: this pins the mask down (a swapped parity or a mask that
        # keeps too much fails here). An exact float coincidence at a fixed seed would be a
        # measure-zero event.
        assert np.all(out[~kept] != np.asarray(x)[~kept])


@pytest.mark.parametrize("mask", ("channel", "checkerboard"))
def test_mask_helpers_match_definition(mask):
    for parity, (height, width, channels) in itertools.product((0, 1), ((4, 4, 2), (3, 5, 3))):
        shape = (1, height, width, channels)
        if mask == "channel":
            helper = channel_mask(channels, parity)
        else:
            helper = checkerboard_mask(height, width, parity)
        np.testing.assert_array_equal(np.broadcast_to(helper, shape), _kept(mask, parity, shape))


@pytest.mark.parametrize("mask", ("channel", "checkerboard"))
def test_both_parities_together_change_every_entry(mask):
    layer = chain(_layer("affine", mask, 0), _layer("affine", mask, 1))
    x = _x()
    params = _perturbed(layer, x)
    y = np.asarray(jax.jit(layer.forward)(params, x)[0])
    assert np.all(y != np.asarray(x))


@pytest.mark.parametrize("mask", ("channel", "checkerboard"))
def test_additive_log_det_exactly_zero(mask):
    layer, x = _layer("additive", mask, 0), _x()
    params = _perturbed(layer, x)
    for transform in (layer.forward, layer.inverse):
        log_det = np.asarray(jax.jit(transform)(params, x)[1])
        np.testing.assert_array_equal(log_det, np.zeros(SHAPE[0]))


@pytest.mark.parametrize("kind, mask, parity", CASES)
def test_jacobian_is_triangular_exactly(kind, mask, parity):
    """∂y_kept/∂x = [I | 0] and ∂y_changed/∂x_changed is diagonal, with exact zeros."""
    shape = (1, *SHAPE[1:])
    layer, x = _layer(kind, mask, parity), _x(shape)
    params = _perturbed(layer, x)
    kept = _kept(mask, parity, shape).reshape(-1)
    for transform in (layer.forward, layer.inverse):
        flat = lambda v, transform=transform: transform(params, v.reshape(shape))[0].reshape(-1)
        jacobian = np.asarray(jax.jit(jax.jacfwd(flat))(x.reshape(-1)))
        np.testing.assert_array_equal(jacobian[np.ix_(kept, ~kept)], 0.0)
        np.testing.assert_array_equal(jacobian[np.ix_(kept, kept)], np.eye(kept.sum()))
        changed_block = jacobian[np.ix_(~kept, ~kept)]
        np.testing.assert_array_equal(changed_block - np.diag(np.diag(changed_block)), 0.0)
        # ... while the changed entries do depend on the kept ones (the coupling is not trivial).
        assert np.any(jacobian[np.ix_(~kept, kept)] != 0.0)


def test_affine_log_scale_is_bounded():
    """With scaled-up params every changed entry's log-scale saturates at ±max_log_scale."""
    max_log_scale = 0.5
    layer = image_affine_coupling(
        2, hidden=8, num_blocks=1, mask="checkerboard", max_log_scale=max_log_scale
    )
    shape = (1, *SHAPE[1:])
    changed = ~_kept("checkerboard", 0, shape).reshape(-1)
    with jax.enable_x64(True):
        x = _x(shape).astype(jnp.float64)
        params = jax.tree_util.tree_map(lambda p: 1e3 * p, _perturbed(layer, x))
        flat = lambda v: layer.forward(params, v.reshape(shape))[0].reshape(-1)
        jacobian = np.asarray(jax.jit(jax.jacfwd(flat))(x.reshape(-1)))
        # ∂y/∂x at a changed entry is exp(s); s = log of it to within the rounding of tanh, the
        # product, exp and log (4 operations, each at most one ulp relative to |s| <= 0.5 or to
        # exp(s) <= e^0.5, whose log moves by the same relative amount): 4·eps·(1 + |s|).
        log_scale = np.log(np.diag(jacobian)[changed])
        eps = np.finfo(np.float64).eps
        assert np.all(np.abs(log_scale) <= max_log_scale + 4 * eps * (1 + max_log_scale))
        # Saturated, not merely small: a missing or wrong bound (|s| >> 0.5) or a layer stuck at
        # the identity (s = 0) fails one of the two asserts.
        assert np.all(np.abs(log_scale) > 0.9 * max_log_scale)


# ------------------------------------------------------------------------------------------------
# Dtypes and the conditioner
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", COUPLINGS)
def test_params_follow_input_dtype(kind):
    layer = _layer(kind, "channel", 0)
    params32 = layer.init(jax.random.PRNGKey(0), _x())
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params32)} == {jnp.dtype("float32")}
    with jax.enable_x64(True):
        x = _x().astype(jnp.float64)
        params = layer.init(jax.random.PRNGKey(0), x)
        assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {jnp.dtype("float64")}
        y, log_det = jax.jit(layer.forward)(params, x)
        assert y.dtype == jnp.float64 and log_det.dtype == jnp.float64


def test_conv_resnet_shapes_and_zero_output_layer():
    num_blocks = 2
    net = ConvResNet(hidden=8, out_channels=5, num_blocks=num_blocks)
    x = _x((2, 4, 3, 3))
    params = net.init(jax.random.PRNGKey(0), x)["params"]
    # input conv + 2 convs per block + output conv, named in call order
    assert sorted(params) == [f"Conv_{i}" for i in range(2 * num_blocks + 2)]
    output = params[f"Conv_{2 * num_blocks + 1}"]
    assert output["kernel"].shape == (3, 3, 8, 5)
    np.testing.assert_array_equal(np.asarray(output["kernel"]), 0.0)
    np.testing.assert_array_equal(np.asarray(output["bias"]), 0.0)
    out = net.apply({"params": params}, x)
    assert out.shape == (2, 4, 3, 5)
    np.testing.assert_array_equal(np.asarray(out), 0.0)
    # The hidden layers are random (not zero), so training can move the output layer.
    assert np.any(np.asarray(params["Conv_0"]["bias"]) != 0.0)
    perturbed = perturb(params, jax.random.PRNGKey(1), 0.3)
    assert np.any(np.asarray(net.apply({"params": perturbed}, x)) != 0.0)


def test_conv_resnet_images_do_not_mix():
    # Conv outputs for image 0 must not depend on image 1 (no batch statistics).
    net = ConvResNet(hidden=8, out_channels=2, num_blocks=1)
    x = _x((2, 4, 4, 2))
    params = perturb(net.init(jax.random.PRNGKey(0), x)["params"], jax.random.PRNGKey(1), 0.3)
    full = np.asarray(net.apply({"params": params}, x))
    alone = np.asarray(net.apply({"params": params}, x[:1]))
    # Same program on a smaller batch: equal up to float32 rounding of the 3 layers' sums
    # (9·C_in + 1 <= 73 terms each, 4 sums on the path), relative to the output scale.
    tolerance = 4 * 73 * np.finfo(np.float32).eps * (1 + np.abs(full[:1]).max())
    np.testing.assert_allclose(alone, full[:1], rtol=0, atol=tolerance)


# ------------------------------------------------------------------------------------------------
# Clear errors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(channels=1, mask="channel"), r"channels must be an int >= 2 for mask='channel'"),
        (dict(channels=0, mask="checkerboard"), r"channels must be an int >= 1"),
        (dict(channels=2, mask="stripes"), r"mask must be one of \('channel', 'checkerboard'\)"),
        (dict(channels=2, parity=2), r"parity must be 0 or 1; got 2"),
        (dict(channels=2, parity=True), r"parity must be 0 or 1; got True"),
        (dict(channels=2, hidden=0), r"hidden must be an int >= 1; got 0"),
        (dict(channels=2, num_blocks=-1), r"num_blocks must be an int >= 0; got -1"),
        (dict(channels=2.0), r"channels must be an int >= 2 .*got 2.0"),
    ],
)
@pytest.mark.parametrize("kind", COUPLINGS)
def test_bad_config_raises(kind, kwargs, match):
    with pytest.raises(ValueError, match=match):
        COUPLINGS[kind](**kwargs)


@pytest.mark.parametrize("max_log_scale", (0.0, -1.0))
def test_bad_max_log_scale_raises(max_log_scale):
    with pytest.raises(ValueError, match=r"max_log_scale must be a number > 0"):
        image_affine_coupling(2, max_log_scale=max_log_scale)


@pytest.mark.parametrize("kind", COUPLINGS)
def test_bad_inputs_raise(kind):
    layer = _layer(kind, "channel", 0)
    x = _x()
    params = layer.init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match=r"needs NHWC x of shape \(batch, height, width, 2\); "):
        layer.init(jax.random.PRNGKey(0), _x((3, 4, 4, 3)))
    with pytest.raises(ValueError, match=r"got shape \(3, 4, 4\)"):
        layer.forward(params, x[..., 0])
    with pytest.raises(ValueError, match=r"needs NHWC y of shape"):
        layer.inverse(params, _x((3, 4, 4, 1)))
    with pytest.raises(ValueError, match=r"does not take a context yet; .*shape \(3, 1\)"):
        layer.forward(params, x, jnp.ones((3, 1)))
    with pytest.raises(ValueError, match=r"does not take a context yet"):
        layer.init(jax.random.PRNGKey(0), x, jnp.ones((3, 1)))
    checker = _layer(kind, "checkerboard", 0)
    with pytest.raises(ValueError, match=r"checkerboard mask needs at least 2 pixels"):
        checker.init(jax.random.PRNGKey(0), _x((3, 1, 1, 2)))


def test_conv_resnet_bad_config_raises():
    x = _x((2, 4, 4, 2))
    with pytest.raises(ValueError, match=r"NHWC input .*got shape \(2, 4, 4\)"):
        ConvResNet(hidden=8, out_channels=2).init(jax.random.PRNGKey(0), x[..., 0])
    with pytest.raises(ValueError, match=r"hidden must be an int >= 1; got 0"):
        ConvResNet(hidden=0, out_channels=2).init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match=r"num_blocks must be an int >= 0; got -1"):
        ConvResNet(hidden=8, out_channels=2, num_blocks=-1).init(jax.random.PRNGKey(0), x)

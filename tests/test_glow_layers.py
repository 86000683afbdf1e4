"""Glow's layers (actnorm, invertible 1×1 convolutions, squeeze) on tiny NHWC images.

Tolerances follow ``nflows_jax.testing``'s rounding policy: ``steps · eps · (1 + A) · (1 + M)``
with ``steps`` counted from the traced program, ``A`` how much the map can amplify an error and
``M`` the size of the values compared; each test says what it takes for ``A`` and ``M``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nflows_jax.bijectors.base import chain, invert, repeat
from nflows_jax.bijectors.glow import (
    ActNormParams,
    Conv1x1LUParams,
    Conv1x1Params,
    _lu_constants,
    actnorm,
    invertible_conv1x1,
    invertible_conv1x1_lu,
    random_rotation,
    squeeze,
)
from nflows_jax.testing import (
    assert_within_rounding,
    check_bijector,
    rounding_steps,
)

pytestmark = pytest.mark.usefixtures("fast_compiles")

KEY = jax.random.PRNGKey(0)


def _image(seed: int, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """NumPy-drawn test data (eager jax.random would compile a kernel per shape), with a
    different mean and scale per channel so that actnorm has something to undo."""
    rng = np.random.default_rng(seed)
    channels = shape[-1]
    mean = np.linspace(-2.0, 3.0, channels)
    scale = np.linspace(0.5, 2.0, channels)
    return jnp.asarray(mean + scale * rng.standard_normal(shape), dtype)


SHAPES = [(4, 4, 4, 2), (3, 4, 4, 3)]


# ------------------------------------------------------------------------------------------------
# The contract
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("make", ["actnorm", "conv1x1", "conv1x1_lu"])
def test_check_bijector(make, shape):
    """Round trips, log-dets against slogdet(jacfwd), batch independence, jit, vmap: float64
    with rounding-level tolerances, on params perturbed off their initial values (default 0.3)."""
    channels = shape[-1]
    layer = {
        "actnorm": lambda: actnorm(),
        "conv1x1": lambda: invertible_conv1x1(channels, seed=1),
        "conv1x1_lu": lambda: invertible_conv1x1_lu(channels, seed=1),
    }[make]()
    check_bijector(layer, _image(0, shape), key=KEY)


@pytest.mark.parametrize(("shape", "factor"), [((3, 4, 4, 2), 2), ((2, 6, 3, 1), 3)])
def test_check_bijector_squeeze(shape, factor):
    """check_bijector accepts a change of event shape that keeps the entries per row: squeeze
    alone, and squeeze followed by a 1×1 conv on its f²C channels."""
    x = _image(1, shape)
    check_bijector(squeeze(factor), x, key=KEY)
    channels = factor * factor * shape[-1]
    check_bijector(chain(squeeze(factor), invertible_conv1x1_lu(channels, seed=2)), x, key=KEY)


def test_check_bijector_squeeze_inside_a_shape_preserving_chain():
    """squeeze changes the event shape, which check_bijector's shape check refuses; sandwiched
    as squeeze -> 1×1 conv on the f²C channels -> depth-to-space, the whole map keeps the shape,
    so all the contract's checks (Jacobian log-det included) cover squeeze's forward and inverse."""
    x = _image(1, (3, 4, 4, 2))
    layer = chain(squeeze(2), invertible_conv1x1_lu(8, seed=2), invert(squeeze(2)))
    check_bijector(layer, x, key=KEY)


# ------------------------------------------------------------------------------------------------
# Actnorm
# ------------------------------------------------------------------------------------------------


def _init_stats(layer, x):
    """Per-channel mean and population variance of forward(init(x), x): ((C,), (C,))."""
    params = layer.init(KEY, x)
    y, _ = layer.forward(params, x)
    axes = tuple(range(y.ndim - 1))
    mean = jnp.mean(y, axis=axes)
    return mean, jnp.mean(jnp.square(y - mean), axis=axes)


@pytest.mark.parametrize("x64", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_actnorm_init_standardises_the_init_batch(shape, x64):
    """After a data-dependent init the init batch has mean 0 and variance 1 in every channel.

    Tolerance: the whole computation (init's reductions, the affine map, the statistics) takes
    ``steps`` roundings (counted from its jaxpr; each sum of N terms counts N). Every value
    involved is at most ``M = max|x - mean| / std + |mean| / std`` in output units, so the mean
    is off by at most ``steps·eps·(1 + M)`` and the variance, a mean of squares, by
    ``steps·eps·(1 + M)²``. A wrong convention fails by far more: ddof=1 instead of 0 moves the
    variance by 1/N = 1/64 here (>> 1e-4, the float32 bound), a bias of -mean instead of
    -mean/std moves the mean by |mean|·(1 - 1/std) ~ 1.
    """
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        x = _image(2, shape, dtype)
        layer = actnorm()
        mean, var = jax.jit(lambda x: _init_stats(layer, x))(x)
        assert mean.dtype == var.dtype == dtype
        steps = rounding_steps(lambda x: _init_stats(layer, x), x)
        x_np = np.asarray(x, np.float64).reshape(-1, shape[-1])
        std = x_np.std(axis=0)
        magnitude = np.max(np.abs(x_np - x_np.mean(axis=0)) / std + np.abs(x_np.mean(0)) / std)
        assert_within_rounding(
            "actnorm init: per-channel mean", mean, np.zeros(shape[-1]), steps, dtype, magnitude
        )
        assert_within_rounding(
            "actnorm init: per-channel variance",
            var,
            np.ones(shape[-1]),
            steps,
            dtype,
            amplification=(1 + magnitude) ** 2 - 1,
        )


def test_actnorm_convention_and_log_det_formula():
    """y = x·exp(log_scale) + bias exactly as documented; log-det = H·W·sum(log_scale)."""
    with jax.enable_x64(True):
        x = _image(3, (2, 4, 2, 3), jnp.float64)
        params = ActNormParams(jnp.asarray([0.1, -0.2, 0.3]), jnp.asarray([1.0, 2.0, -3.0]))
        y, log_det = actnorm().forward(params, x)
        # Same operations in NumPy: a handful of roundings per entry, eps64-level differences.
        expected = np.asarray(x) * np.exp([0.1, -0.2, 0.3]) + np.asarray([1.0, 2.0, -3.0])
        assert_within_rounding("actnorm forward", y, expected, 4, jnp.float64)
        expected_log_det = np.full(2, 4 * 2 * (0.1 - 0.2 + 0.3))
        assert_within_rounding("actnorm log-det", log_det, expected_log_det, 4, jnp.float64, 8)


def test_actnorm_floors_the_std_of_a_constant_channel():
    """A constant channel gets std = min_std (log_scale = -log(min_std)), not inf or NaN, and is
    centred: the output is 0 there, up to the rounding of c·k - c·k at k = 1/min_std."""
    with jax.enable_x64(True):
        x = np.array(_image(4, (2, 2, 2, 2), jnp.float64))
        x[..., 1] = 5.0
        layer = actnorm(min_std=1e-3)
        params = layer.init(KEY, jnp.asarray(x))
        y, log_det = layer.forward(params, jnp.asarray(x))
        assert_within_rounding(
            "log_scale of a constant channel", params.log_scale[1], -np.log(1e-3), 8, jnp.float64
        )
        # |y| <= steps·eps·|x|·k: the entries 5·1e3 cancel to rounding.
        assert_within_rounding(
            "centred constant channel", y[..., 1], np.zeros((2, 2, 2)), 8, jnp.float64, 5e3
        )
        assert np.all(np.isfinite(np.asarray(log_det)))


def _correlated_image(seed: int, shape: tuple[int, ...], dtype) -> jax.Array:
    """Channels strongly correlated with channel 0, so a rotation of the standardised image is
    far from unit variance per channel: a later actnorm has real work to do."""
    base = np.asarray(_image(seed, shape, jnp.float64))
    mixed = base + 1.5 * (base[..., :1] - base[..., :1].mean())
    return jnp.asarray(mixed, dtype)


def _repeat_actnorm_stats(layer_params, x, num_layers):
    """Run repeat's layers unrolled with per-layer params sliced from the stacked ones; return
    each layer's actnorm input and output, ((K, B, H, W, C), (K, B, H, W, C))."""
    inputs, outputs = [], []
    for k in range(num_layers):
        actnorm_params, conv_params = jax.tree_util.tree_map(lambda a: a[k], layer_params)
        inputs.append(x)
        x, _ = actnorm().forward(actnorm_params, x)
        outputs.append(x)
        x, _ = invertible_conv1x1_lu(x.shape[-1], seed=3).forward(conv_params, x)
    return jnp.stack(inputs), jnp.stack(outputs)


def test_actnorm_inside_repeat_standardises_every_layer():
    """``repeat.init`` carries the init batch through the layers, so in
    ``repeat(chain(actnorm(), conv1x1_lu), 3)`` EVERY layer's actnorm output has zero mean and
    unit variance per channel on the init batch, not only the first one's.

    Power: the channels are strongly correlated, so after layer 1's rotation the per-channel
    variance is far from 1 (asserted below, > 0.1 off); an init that standardised the raw batch
    at every layer (the old vmap over keys) fails layers 2 and 3 by that much.

    Tolerance (float64): ``steps`` roundings over init plus the unrolled layers, each error
    amplified by at most ``A = prod_k max(exp(log_scale_k)) · growth_k`` on the way to layer k's
    actnorm output (growth_k <= max(|L||U'|) of the LU factors, 1 + a few for a rotation), and
    statistics of values of size ``M = max|output|``, as in the single-layer test.
    """
    num_layers, shape = 3, (3, 4, 4, 3)
    with jax.enable_x64(True):
        x = _correlated_image(10, shape, jnp.float64)
        layer = repeat(chain(actnorm(), invertible_conv1x1_lu(shape[-1], seed=3)), num_layers)

        def stats(x):
            params = layer.init(KEY, x)
            inputs, outputs = _repeat_actnorm_stats(params, x, num_layers)
            axes = (1, 2, 3)
            mean = jnp.mean(outputs, axis=axes)
            var = jnp.mean(jnp.square(outputs - mean[:, None, None, None]), axis=axes)
            in_var = jnp.var(inputs, axis=axes)
            return params, outputs, mean, var, in_var

        params, outputs, mean, var, in_var = jax.jit(stats)(x)
        assert mean.shape == var.shape == (num_layers, shape[-1])
        assert np.max(np.abs(np.asarray(in_var[1:]) - 1.0)) > 0.1  # later layers had work to do

        steps = rounding_steps(stats, x)
        constants = _lu_constants(shape[-1], seed=3)
        unit_lower = constants.lower + np.eye(shape[-1])
        upper = constants.upper + np.diag(constants.sign * np.exp(constants.log_abs_s))
        growth = np.max(np.abs(unit_lower) @ np.abs(upper)) * shape[-1]
        scale = np.exp(np.max(np.asarray(params[0].log_scale), axis=1))  # (K,)
        amplification = np.cumprod(scale * growth)[:, None]  # (K, 1), per layer
        magnitude = float(np.max(np.abs(np.asarray(outputs))))
        zeros, ones = np.zeros(mean.shape), np.ones(var.shape)
        assert_within_rounding(
            "actnorm mean at every layer", mean, zeros, steps, jnp.float64, amplification, magnitude
        )
        assert_within_rounding(
            "actnorm variance at every layer",
            var,
            ones,
            steps,
            jnp.float64,
            (1 + amplification) * (1 + magnitude) ** 2 - 1,
        )


# ------------------------------------------------------------------------------------------------
# Invertible 1x1 convolutions
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2, 3, 5])
def test_random_rotation_is_a_rotation(channels):
    """QᵀQ = I and det Q = +1, in float64: C-term dot products, each within C·eps."""
    rotation = random_rotation(channels, seed=3)
    eps = np.finfo(np.float64).eps
    np.testing.assert_allclose(
        rotation.T @ rotation, np.eye(channels), rtol=0, atol=4 * channels * eps
    )
    # det of an orthogonal matrix by LU: relative error ~ C·eps·κ with κ = 1.
    assert abs(np.linalg.det(rotation) - 1.0) <= 4 * channels * eps
    assert not np.allclose(random_rotation(channels, seed=4), rotation) or channels == 1


def _basis_image(channels: int, dtype) -> jax.Array:
    """(1, 1, C, C): position (0, 0, j) holds e_j, so a 1×1 conv returns W's columns there."""
    return jnp.eye(channels, dtype=dtype)[None, None]


def _weight(layer, params, channels: int, dtype) -> np.ndarray:
    """The (C, C) matrix a 1×1 conv applies, read off its forward pass: W[:, j] = f(e_j)."""
    return np.asarray(layer.forward(params, _basis_image(channels, dtype))[0][0, 0].T)


@pytest.mark.parametrize("x64", [False, True])
@pytest.mark.parametrize("channels", [2, 3, 6])
def test_plain_and_lu_conv1x1_agree_at_init(channels, x64):
    """Same seed, same start: the LU factors reconstruct the plain layer's rotation W, and the two
    layers give the same outputs and log-dets (0, since |det W| = 1) within rounding.

    Tolerance: P·L·U' differs from W by the LU's backward error, at most ``C·eps·(|L||U'|)``
    entrywise, plus the roundings of casting the factors and of the products; ``steps`` counts
    the latter from both traced forwards plus C for the LU itself, and ``A = max(|L||U'|)`` is
    the growth of the factorisation (1 for no growth). Outputs scale with ``M = max|x|``; the
    log-det (H·W copies of log|det W|, each within C·eps·A of 0) with ``M = H·W·C``.
    """
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        x = _image(5, (2, 4, 4, channels), dtype)
        plain, lu = invertible_conv1x1(channels, seed=7), invertible_conv1x1_lu(channels, seed=7)
        plain_params, lu_params = plain.init(KEY, x), lu.init(KEY, x)
        assert isinstance(plain_params, Conv1x1Params) and isinstance(lu_params, Conv1x1LUParams)
        constants = _lu_constants(channels, seed=7)
        unit_lower = constants.lower + np.eye(channels)
        upper = constants.upper + np.diag(constants.sign * np.exp(constants.log_abs_s))
        growth = np.max(np.abs(unit_lower) @ np.abs(upper))
        steps = (
            channels
            + rounding_steps(lu.forward, lu_params, x)
            + rounding_steps(plain.forward, plain_params, x)
        )

        rotation = random_rotation(channels, seed=7)
        assert_within_rounding(
            "plain init weight = rotation", plain_params.weight, rotation, 1, dtype
        )
        assert_within_rounding(
            "LU weight reconstructs W",
            _weight(lu, lu_params, channels, dtype),
            rotation,
            steps,
            dtype,
            amplification=growth,
            magnitude=1.0,
        )
        y_plain, log_det_plain = plain.forward(plain_params, x)
        y_lu, log_det_lu = lu.forward(lu_params, x)
        magnitude = float(np.max(np.abs(np.asarray(x))))
        assert_within_rounding(
            "plain vs LU outputs at init", y_lu, y_plain, steps, dtype, growth, magnitude
        )
        log_det_size = 16 * channels
        for name, log_det in (("plain", log_det_plain), ("LU", log_det_lu)):
            assert log_det.shape == (2,) and log_det.dtype == dtype
            assert_within_rounding(
                f"{name} log-det at init = 0",
                log_det,
                np.zeros(2),
                steps,
                dtype,
                growth,
                log_det_size,
            )


def test_lu_factors_are_valid_and_constants_are_not_params():
    """P is a permutation matrix and sign a ±1 vector (fixed constants); the params are float
    leaves only, and the entries of ``lower``/``upper`` outside their strict triangles (which
    optax may move) do not change the map."""
    channels = 4
    constants = _lu_constants(channels, seed=0)
    permutation = constants.permutation
    assert set(np.unique(permutation)) <= {0.0, 1.0}
    np.testing.assert_array_equal(permutation.sum(0), np.ones(channels))
    np.testing.assert_array_equal(permutation.sum(1), np.ones(channels))
    np.testing.assert_array_equal(np.abs(constants.sign), np.ones(channels))

    layer = invertible_conv1x1_lu(channels)
    x = _image(6, (2, 2, 2, channels))
    params = layer.init(KEY, x)
    leaves = jax.tree_util.tree_leaves(params)
    assert len(leaves) == 3 and all(leaf.dtype == jnp.float32 for leaf in leaves)
    junk = 3.0 * jnp.ones((channels, channels))
    moved = Conv1x1LUParams(
        lower=params.lower + jnp.triu(junk),  # diagonal and upper part of ``lower``
        upper=params.upper + jnp.tril(junk),  # diagonal and lower part of ``upper``
        log_abs_s=params.log_abs_s,
    )
    y, log_det = layer.forward(params, x)
    y_moved, log_det_moved = layer.forward(moved, x)
    # Masked entries enter as exact zeros: the same operations on the same values, bit for bit.
    np.testing.assert_array_equal(np.asarray(y_moved), np.asarray(y))
    np.testing.assert_array_equal(np.asarray(log_det_moved), np.asarray(log_det))


def test_lu_log_det_is_pixels_times_sum_log_abs_s():
    """log-det = H·W·sum(log_abs_s) (here H·W = 12), per row, exactly the documented formula."""
    with jax.enable_x64(True):
        layer = invertible_conv1x1_lu(3)
        x = _image(7, (2, 3, 4, 3), jnp.float64)
        params = layer.init(KEY, x)._replace(log_abs_s=jnp.asarray([0.5, -0.25, 1.0]))
        _, log_det = layer.forward(params, x)
        _, inverse_log_det = layer.inverse(params, x)
        # Sum of 3 terms times 12: a few roundings on values of size ~15.
        assert_within_rounding("LU log-det", log_det, np.full(2, 12 * 1.25), 4, jnp.float64)
        assert_within_rounding(
            "LU inverse log-det", inverse_log_det, np.full(2, -12 * 1.25), 4, jnp.float64
        )


# ------------------------------------------------------------------------------------------------
# Squeeze
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "factor"), [((2, 4, 6, 3), 2), ((1, 6, 3, 2), 3)])
def test_squeeze_is_a_permutation_with_exact_round_trip(shape, factor):
    """On x = arange the output holds every entry once, at the documented position
    y[b, i, j, (p·f + q)·C + c] = x[b, i·f + p, j·f + q, c]; log-det is exactly 0 and the inverse
    restores x bit for bit (no arithmetic, only data movement)."""
    batch, height, width, channels = shape
    x = jnp.arange(np.prod(shape), dtype=jnp.float32).reshape(shape)
    layer = squeeze(factor)
    y, log_det = layer.forward((), x)
    assert y.shape == (batch, height // factor, width // factor, factor * factor * channels)
    np.testing.assert_array_equal(np.sort(np.asarray(y).ravel()), np.asarray(x).ravel())
    x_np, y_np = np.asarray(x), np.asarray(y)
    for i, j, p, q, c in np.ndindex(height // factor, width // factor, factor, factor, channels):
        np.testing.assert_array_equal(
            y_np[:, i, j, (p * factor + q) * channels + c],
            x_np[:, i * factor + p, j * factor + q, c],
        )
    np.testing.assert_array_equal(np.asarray(log_det), np.zeros(batch))
    x_back, inverse_log_det = layer.inverse((), y)
    np.testing.assert_array_equal(np.asarray(x_back), x_np)
    np.testing.assert_array_equal(np.asarray(inverse_log_det), np.zeros(batch))
    assert layer.init(KEY, x) == ()


# ------------------------------------------------------------------------------------------------
# Errors and dtypes
# ------------------------------------------------------------------------------------------------


def test_squeeze_errors():
    layer = squeeze(2)
    with pytest.raises(ValueError, match=r"divisible by 2.*height 3, width 4"):
        layer.forward((), jnp.zeros((1, 3, 4, 1)))
    with pytest.raises(ValueError, match=r"divisible by 2.*height 4, width 5"):
        layer.forward((), jnp.zeros((1, 4, 5, 1)))
    with pytest.raises(ValueError, match=r"\(batch, height, width, channels\).*\(2, 4, 4\)"):
        layer.forward((), jnp.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match=r"channel count divisible by 4.*6 channels"):
        layer.inverse((), jnp.zeros((1, 2, 2, 6)))
    with pytest.raises(ValueError, match=r"integer factor >= 1, got 0"):
        squeeze(0)
    with pytest.raises(ValueError, match=r"integer factor >= 1, got 2.5"):
        squeeze(2.5)
    with pytest.raises(ValueError, match=r"divisible by 2"):  # also at trace time, under jit
        jax.jit(layer.forward)((), jnp.zeros((1, 3, 4, 1)))


@pytest.mark.parametrize("make", [invertible_conv1x1, invertible_conv1x1_lu], ids=["plain", "lu"])
def test_conv1x1_errors(make):
    layer = make(3)
    with pytest.raises(ValueError, match=r"has 3 channels but x has shape \(2, 4, 4, 2\)"):
        layer.init(KEY, jnp.zeros((2, 4, 4, 2)))
    params = layer.init(KEY, jnp.zeros((2, 4, 4, 3)))
    with pytest.raises(ValueError, match=r"has 3 channels but x has shape \(2, 4, 4, 4\)"):
        jax.jit(layer.forward)(params, jnp.zeros((2, 4, 4, 4)))
    with pytest.raises(ValueError, match=r"has 3 channels but y has shape \(2, 4, 4, 4\)"):
        layer.inverse(params, jnp.zeros((2, 4, 4, 4)))
    with pytest.raises(ValueError, match=r"batch, \*event"):
        layer.forward(params, jnp.zeros((3,)))
    with pytest.raises(ValueError, match=r"integer channels >= 1, got 0"):
        make(0)
    with pytest.raises(ValueError, match=r"integer channels >= 1, got 2.0"):
        make(np.float32(2.0))


def test_actnorm_errors():
    with pytest.raises(ValueError, match=r"min_std > 0, got 0.0"):
        actnorm(min_std=0.0)
    layer = actnorm()
    params = layer.init(KEY, jnp.ones((2, 4, 4, 3)) * jnp.arange(3.0))
    with pytest.raises(ValueError, match=r"has 3 channels but y has shape \(2, 4, 4, 2\)"):
        layer.inverse(params, jnp.zeros((2, 4, 4, 2)))
    with pytest.raises(ValueError, match=r"batch, \*event"):
        layer.init(KEY, jnp.zeros((3,)))


@pytest.mark.parametrize(
    "make",
    [actnorm, lambda: invertible_conv1x1(3), lambda: invertible_conv1x1_lu(3)],
    ids=["actnorm", "conv1x1", "conv1x1_lu"],
)
def test_params_follow_the_input_dtype(make):
    """float64 data under x64 gives float64 params and outputs; float32 stays float32; integer
    images (uint8) give JAX's default float."""
    layer = make()
    with jax.enable_x64(True):
        x = _image(8, (2, 2, 2, 3), jnp.float64)
        params = layer.init(KEY, x)
        assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {jnp.dtype("float64")}
        y, log_det = layer.forward(params, x)
        x_back, inverse_log_det = layer.inverse(params, y)
        assert {a.dtype for a in (y, log_det, x_back, inverse_log_det)} == {jnp.dtype("float64")}
    x = _image(8, (2, 2, 2, 3), jnp.float32)
    params = layer.init(KEY, x)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {jnp.dtype("float32")}
    pixels = jnp.asarray(np.random.default_rng(9).integers(0, 256, (2, 2, 2, 3)), jnp.uint8)
    params = layer.init(KEY, pixels)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {jnp.dtype("float32")}

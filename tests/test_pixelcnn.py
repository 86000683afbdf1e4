"""Masked convolutions, PixelCNN and Gated PixelCNN: masks, causality, blind spot, normalisation.

Causality and receptive fields are found by gradients (``receptive_field``); the normalisation
checks enumerate every image of a tiny model, so they are exact up to float32 rounding of a sum
of at most 256 probabilities of products of 4 conditionals (allowance 256 · 16 · eps32).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nflows_jax.models.likelihoods import bernoulli, categorical, discretized_logistic_mixture
from nflows_jax.models.pixelcnn import (
    GatedPixelCNNNet,
    PixelCNNNet,
    image_autoregressive,
    receptive_field,
    receptive_fields,
    scale_levels,
)
from nflows_jax.nets.masked_conv import conv_mask
from nflows_jax.testing import perturb
from tests.power import num_standard_errors


def test_mask_a_and_b_are_as_specified():
    a = conv_mask((3, 3), 1, 1, "A")[..., 0, 0]
    b = conv_mask((3, 3), 1, 1, "B")[..., 0, 0]
    np.testing.assert_array_equal(a, [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(b, [[1, 1, 1], [1, 1, 0], [0, 0, 0]])


def test_colour_group_masks_at_the_centre():
    # RGB input (one channel per group) to 6 features (two per group): R -> G -> B.
    centre_a = conv_mask((5, 5), 3, 6, "A", groups=3)[2, 2]
    centre_b = conv_mask((5, 5), 3, 6, "B", groups=3)[2, 2]
    # rows: input R, G, B; columns: output features R, R, G, G, B, B
    np.testing.assert_array_equal(
        centre_a, [[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]]
    )
    np.testing.assert_array_equal(
        centre_b, [[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1]]
    )
    # Away from the centre every channel pair is connected above and to the left only.
    full = conv_mask((5, 5), 3, 6, "A", groups=3)
    assert full[:2].all() and full[2, :2].all() and not full[2, 3:].any() and not full[3:].any()


@pytest.mark.parametrize(
    "args, message",
    [
        (((2, 3), 1, 1, "A"), "odd kernel"),
        (((3, 3), 1, 1, "C"), "mask_type"),
        (((3, 3), 3, 4, "B", 3), "channel groups"),
    ],
)
def test_bad_mask_configs_raise(args, message):
    with pytest.raises(ValueError, match=message):
        conv_mask(*args)


def _earlier(shape, position):
    """Pixels strictly before ``position`` in raster order: (H, W) bool."""
    height, width = shape
    index = np.arange(height * width).reshape(height, width)
    return index < position[0] * width + position[1]


NETWORKS = {
    # A 3×3 first layer keeps the blind spot inside an 8×8 image (a 7×7 one hides it there).
    "pixelcnn": lambda: PixelCNNNet(features=8, num_layers=4, first_kernel=3),
    "gated": lambda: GatedPixelCNNNet(features=8, num_layers=4, kernel=3),
}


def _fields(name, shape, seed=0):
    """(H, W, H, W) bool: which pixels reach the outputs at each pixel."""
    net = NETWORKS[name]()
    x = jax.random.normal(jax.random.PRNGKey(seed), (2, *shape, 1))
    params = net.init(jax.random.PRNGKey(seed + 1), x)["params"]
    return receptive_fields(lambda v: net.apply({"params": params}, v), x)[..., 0]


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_outputs_depend_only_on_earlier_pixels(name):
    shape = (6, 6)
    fields = _fields(name, shape)
    for position in itertools.product(range(6), range(6)):
        assert not (fields[position] & ~_earlier(shape, position)).any(), (name, position)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_one_pixel_receptive_field_equals_the_full_map(name):
    # receptive_field uses one reverse pass per probe, receptive_fields one per pixel: same sets.
    net = NETWORKS[name]()
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 6, 6, 1))
    params = net.init(jax.random.PRNGKey(4), x)["params"]

    def network_fn(v):
        return net.apply({"params": params}, v)

    every = receptive_fields(network_fn, x)
    for position in [(0, 0), (3, 2), (5, 5)]:
        np.testing.assert_array_equal(receptive_field(network_fn, x, position), every[position])


def test_pixelcnn_has_a_blind_spot_and_gated_pixelcnn_does_not():
    shape, position = (8, 8), (5, 3)
    earlier = _earlier(shape, position)
    pixelcnn = _fields("pixelcnn", shape)[position]
    gated = _fields("gated", shape)[position]
    # A pixel above and to the right, well inside the stacks' reach, that PixelCNN never sees.
    assert not pixelcnn[4, 6] and earlier[4, 6]
    assert gated[4, 6]
    # Gated PixelCNN sees every earlier pixel: 4 layers of a 3-wide kernel reach 5 rows up
    # (4 through the vertical stack, 1 through its shift into the horizontal one) and 4 columns
    # to either side, which covers every earlier pixel of this 8×8 image from (5, 3).
    np.testing.assert_array_equal(gated, earlier)
    # PixelCNN's blind spot is the wedge up and to the right: here (4, 5..7), (3, 6..7), (2, 7).
    blind = earlier & ~pixelcnn
    assert blind[4, 5:].all() and blind[3, 6:].all() and blind[2, 7]
    assert not blind[:, :5].any()


def test_colour_pixelcnn_is_causal_across_channel_groups():
    net = PixelCNNNet(features=6, num_layers=2, groups=3, outputs_per_entry=2)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 3))
    params = net.init(jax.random.PRNGKey(1), x)["params"]
    for group in range(3):

        def output_of_group(v, group=group):
            return net.apply({"params": params}, v)[:, :, :, group]

        field = receptive_field(output_of_group, x, (2, 1))  # (4, 4, 3)
        allowed = np.zeros((4, 4, 3), bool)
        allowed[_earlier((4, 4), (2, 1))] = True
        allowed[2, 1] = np.arange(3) < group  # at the pixel itself, only the earlier colours
        assert not (field & ~allowed).any()
        np.testing.assert_array_equal(field[2, 1], np.arange(3) < group)


def _all_images(shape, levels):
    values = list(itertools.product(range(levels), repeat=int(np.prod(shape))))
    return jnp.asarray(values, jnp.int32).reshape(-1, *shape)


@pytest.mark.parametrize(
    "name, likelihood, levels",
    [
        ("pixelcnn", bernoulli(), 2),
        ("gated", bernoulli(), 2),
        ("pixelcnn", categorical(4), 4),
        ("gated", discretized_logistic_mixture(2, 4), 4),
    ],
)
def test_likelihoods_are_normalised_over_every_2x2_image(name, likelihood, levels):
    net = NETWORKS[name]().clone(outputs_per_entry=likelihood.params_per_entry)
    model = image_autoregressive(net, likelihood, (2, 2, 1))
    images = _all_images((2, 2, 1), levels)
    params = model.init(jax.random.PRNGKey(0), images)
    params = jax.tree_util.tree_map(lambda p: p * 3.0, params)  # far from uniform
    total = float(jnp.sum(jnp.exp(model.log_prob(params, images))))
    assert abs(total - 1.0) < images.shape[0] * 16 * np.finfo(np.float32).eps


def test_naive_samples_follow_the_model_probabilities():
    net = PixelCNNNet(features=8, num_layers=1, first_kernel=3)
    model = image_autoregressive(net, bernoulli(), (2, 2, 1))
    images = _all_images((2, 2, 1), 2)
    params = jax.tree_util.tree_map(lambda p: p * 3.0, model.init(jax.random.PRNGKey(0), images))
    probs = np.exp(np.asarray(model.log_prob(params, images), np.float64))
    n = 20_000
    draws = np.asarray(model.sample(params, jax.random.PRNGKey(1), n)).reshape(n, 4)
    codes = (draws * 2 ** np.arange(3, -1, -1)).sum(axis=1)
    freq = np.bincount(codes, minlength=16) / n
    k = num_standard_errors(1e-4, 16)
    np.testing.assert_array_less(np.abs(freq - probs), k * np.sqrt(probs * (1 - probs) / n) + 1e-12)


def test_class_conditional_bias_changes_the_likelihood():
    net = GatedPixelCNNNet(features=8, num_layers=2, kernel=3, num_classes=3)
    model = image_autoregressive(net, bernoulli(), (4, 4, 1))
    x = jnp.zeros((2, 4, 4, 1), jnp.int32)
    labels = jax.nn.one_hot(jnp.array([0, 2]), 3)
    params = model.init(jax.random.PRNGKey(0), x, labels)
    a = model.log_prob(params, x, labels)
    b = model.log_prob(params, x, labels[::-1])
    assert float(jnp.max(jnp.abs(a - b[::-1]))) == 0.0  # each row follows its own label
    assert float(jnp.abs(a[0] - a[1])) > 0
    with pytest.raises(ValueError, match="num_classes=3"):
        model.log_prob(params, x)


def test_bad_inputs_raise():
    model = image_autoregressive(PixelCNNNet(features=4, num_layers=1), bernoulli(), (4, 4, 1))
    with pytest.raises(ValueError, match="integer levels"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 1)))
    with pytest.raises(ValueError, match=r"shape \(B, 4, 4, 1\)"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 5, 1), jnp.int32))
    with pytest.raises(ValueError, match="needs 256"):
        image_autoregressive(PixelCNNNet(outputs_per_entry=3), categorical(256), (4, 4, 1))


WINDOW_CASES = {
    "pixelcnn": (1, bernoulli(), 0),
    "pixelcnn_colour": (3, categorical(4), 0),
    "gated": (1, bernoulli(), 0),
    "gated_conditional": (1, discretized_logistic_mixture(2, 4), 3),
}


@pytest.mark.parametrize("case", sorted(WINDOW_CASES))
def test_window_outputs_equal_the_full_pass_and_fast_sampling_equals_naive(case):
    """In float64, so that the ~1e-6 float32 reordering of the smaller convolutions cannot flip
    a draw that sits at a tie: then equal keys must give bitwise equal samples."""
    groups, likelihood, num_classes = WINDOW_CASES[case]
    k = likelihood.params_per_entry
    with jax.enable_x64(True):
        if case.startswith("pixelcnn"):
            net = PixelCNNNet(
                features=6,
                num_layers=2,
                first_kernel=5,
                groups=groups,
                outputs_per_entry=k,
                param_dtype=jnp.float64,
            )
        else:
            net = GatedPixelCNNNet(
                features=6,
                num_layers=3,
                kernel=3,
                outputs_per_entry=k,
                num_classes=num_classes,
                param_dtype=jnp.float64,
            )
        model = image_autoregressive(net, likelihood, (6, 5, groups))
        x = jax.random.randint(jax.random.PRNGKey(0), (3, 6, 5, groups), 0, likelihood.num_levels)
        labels = None if not num_classes else jax.nn.one_hot(jnp.array([0, 2, 1]), num_classes)
        params = perturb(model.init(jax.random.PRNGKey(1), x, labels), jax.random.PRNGKey(2), 0.5)
        full = np.asarray(model.outputs(params, x, labels))
        inputs = scale_levels(x, likelihood.num_levels).astype(jnp.float64)
        at_pixel = jax.jit(
            lambda v, i, j: net.apply({"params": params}, v, i, j, labels, method="at_pixel")
        )
        for i, j in itertools.product(range(6), range(5)):
            window = np.asarray(at_pixel(inputs, i, j))
            # a few hundred float64 operations on O(10) values
            allowance = 1e3 * np.finfo(np.float64).eps * (1 + np.abs(full[:, i, j]))
            np.testing.assert_array_less(np.abs(window - full[:, i, j]), allowance)
        key = jax.random.PRNGKey(3)
        naive = jax.jit(model.sample, static_argnums=2)(params, key, 3, labels)
        fast = jax.jit(model.sample_fast, static_argnums=2)(params, key, 3, labels)
        np.testing.assert_array_equal(np.asarray(fast), np.asarray(naive))
        assert len(np.unique(np.asarray(naive))) > 1

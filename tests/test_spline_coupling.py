"""Coupling layers with the rational-quadratic spline transformer: the bijector contract
(``check_bijector`` in float64 on perturbed params, rounding-level tolerances) and the identity
at initialisation (bitwise: a zero output layer gives theta = 0, where the spline is exactly the
identity)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from nflows_jax.bijectors import (
    affine_transformer,
    coupling_layer,
    image_spline_coupling,
    rational_quadratic_spline,
    spline_coupling,
)
from nflows_jax.testing import check_bijector

pytestmark = pytest.mark.usefixtures("fast_compiles")

HIDDEN, CONTEXT = (8,), 2


def _normal(seed, shape, scale=1.5):
    # scale 1.5 with bound 3: some entries fall in the identity tails.
    return scale * np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize(
    "dim, mask, context_size",
    [(3, "half", 0), (3, "alternating", CONTEXT), (4, "half", CONTEXT), (4, "alternating", 0)],
)
def test_spline_coupling_contract(dim, mask, context_size):
    layer = spline_coupling(dim, HIDDEN, mask, context_size, num_bins=4)
    context = _normal(1, (3, context_size)) if context_size else None
    check_bijector(layer, _normal(0, (3, dim)), context=context, key=jax.random.PRNGKey(dim))


def test_image_spline_coupling_contract():
    for mask, parity in (("channel", 0), ("checkerboard", 1)):
        layer = image_spline_coupling(
            2, hidden=4, num_blocks=1, mask=mask, parity=parity, num_bins=3
        )
        check_bijector(layer, _normal(2, (2, 4, 4, 2)), key=jax.random.PRNGKey(parity))


def test_spline_coupling_is_identity_at_init():
    x, context = np.float32(_normal(3, (5, 4))), np.float32(_normal(4, (5, CONTEXT)))
    for layer, ctx in ((spline_coupling(4, HIDDEN), None),
                       (spline_coupling(4, HIDDEN, "alternating", CONTEXT), context)):  # fmt: skip
        params = layer.init(jax.random.PRNGKey(0), x, ctx)
        for transform in (layer.forward, layer.inverse):
            out, log_det = jax.jit(transform)(params, x, ctx)
            np.testing.assert_array_equal(np.asarray(out), x)
            np.testing.assert_array_equal(np.asarray(log_det), 0.0)
    image = np.float32(_normal(5, (2, 4, 4, 2)))
    layer = image_spline_coupling(2, hidden=4, num_blocks=1)
    params = layer.init(jax.random.PRNGKey(0), image)
    for transform in (layer.forward, layer.inverse):
        out, log_det = jax.jit(transform)(params, image)
        np.testing.assert_array_equal(np.asarray(out), image)
        np.testing.assert_array_equal(np.asarray(log_det), 0.0)


def test_coupling_sizes_the_conditioner_by_params_per_entry():
    x = np.float32(_normal(6, (2, 5)))  # half mask: 2 kept, 3 changed
    for transformer in (affine_transformer(), rational_quadratic_spline(4)):
        params = coupling_layer(5, transformer, HIDDEN).init(jax.random.PRNGKey(0), x)
        output_kernel = params[max(params)]["kernel"]
        assert output_kernel.shape == (HIDDEN[-1], 3 * transformer.params_per_entry)


def test_coupling_rejects_a_non_transformer():
    with pytest.raises(TypeError, match="coupling needs a Transformer"):
        coupling_layer(3, "affine")

"""MADE: the autoregressive property for every order and degree option, degrees and errors."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nflows_jax.nets.made import MADE, connectivity, made_degrees

ORDER_OPTIONS = ["natural", "reversed", "random", [3, 1, 0, 4, 2]]
DEGREE_OPTIONS = ["equal", "random"]
# (residual, direct): plain, direct connections, residual layers (with direct too).
ARCHITECTURES = [(False, False), (False, True), (True, True)]


def _output_jacobian_support(made, params, degrees, x, context=None):
    """Which inputs each output block depends on: max |d out[i, k] / d x[j]| > 0, shape (D, D).

    Evaluated at several rows so that a ReLU dead at one point does not hide a dependence.
    """

    def one_row(row, ctx):
        ctx = None if ctx is None else ctx[None]
        return made.apply({"params": params}, row[None], degrees, ctx)[0]

    contexts = [None] * len(x) if context is None else list(context)
    support = np.zeros((x.shape[1], x.shape[1]), bool)
    for row, ctx in zip(x, contexts, strict=True):
        jac = jax.jacfwd(one_row)(row, ctx)  # (D, K, D)
        support |= np.asarray(jnp.max(jnp.abs(jac), axis=1) > 0)
    return support


@pytest.mark.parametrize(
    "order, hidden_degrees, architecture",
    list(itertools.product(ORDER_OPTIONS, DEGREE_OPTIONS, ARCHITECTURES)),
)
def test_output_blocks_depend_only_on_earlier_inputs(order, hidden_degrees, architecture):
    residual, direct = architecture
    size, hidden = 5, (12, 12)
    degrees = made_degrees(size, hidden, order, hidden_degrees, key=jax.random.PRNGKey(3))
    made = MADE(size, hidden, 3, residual=residual, direct=direct, zero_init_output=False)
    x = jax.random.normal(jax.random.PRNGKey(0), (8, size))
    params = made.init(jax.random.PRNGKey(1), x[:1], degrees)["params"]
    support = _output_jacobian_support(made, params, degrees, x)
    allowed = np.asarray(connectivity(degrees))
    # Strictly triangular in the chosen order: no dependence where m(j) >= m(i).
    assert not (support & ~allowed).any(), np.argwhere(support & ~allowed)
    # And the mask is not vacuous: direct connections realise every allowed dependence.
    if direct:
        assert (support == allowed).all()


def test_connectivity_is_strictly_triangular_in_the_order():
    degrees = made_degrees(4, (8,), [2, 0, 3, 1])
    # order x2, x0, x3, x1: x0 may see x2; x3 sees x2, x0; x1 sees the other three.
    expected = np.array(
        [
            [0, 0, 1, 0],
            [1, 0, 1, 1],
            [0, 0, 0, 0],
            [1, 0, 1, 0],
        ],
        bool,
    )
    np.testing.assert_array_equal(np.asarray(connectivity(degrees)), expected)


def test_context_reaches_every_output_block_including_the_first():
    size, hidden = 3, (10,)
    degrees = made_degrees(size, hidden)
    made = MADE(size, hidden, 2, context_size=2, zero_init_output=False)
    x = jax.random.normal(jax.random.PRNGKey(0), (4, size))
    context = jax.random.normal(jax.random.PRNGKey(1), (4, 2))
    params = made.init(jax.random.PRNGKey(2), x, degrees, context)["params"]
    jac = jax.jacfwd(lambda c: made.apply({"params": params}, x, degrees, c))(context)
    # d out[b, i, k] / d context[b, c]: nonzero for every output block i.
    per_block = jnp.max(jnp.abs(jac[jnp.arange(4), :, :, jnp.arange(4)]), axis=(0, 2, 3))
    assert (per_block > 0).all()
    support = _output_jacobian_support(made, params, degrees, x, context)
    assert not (support & ~np.asarray(connectivity(degrees))).any()


def test_equal_hidden_degrees_cover_every_degree_evenly():
    degrees = made_degrees(5, (10, 7))
    for layer, width in zip(degrees.hidden, (10, 7), strict=True):
        counts = np.bincount(np.asarray(layer), minlength=5)[1:]
        assert counts.sum() == width and counts.max() - counts.min() <= 1


def test_random_degrees_are_valid_and_reproducible_inside_jit():
    draw = jax.jit(lambda key: made_degrees(6, (9, 9), "random", "random", key=key))
    first, again = draw(jax.random.PRNGKey(4)), draw(jax.random.PRNGKey(4))
    other = draw(jax.random.PRNGKey(5))
    assert sorted(np.asarray(first.inputs).tolist()) == list(range(1, 7))
    np.testing.assert_array_equal(first.inputs, again.inputs)
    assert not np.array_equal(first.inputs, other.inputs)
    lowest = 1
    for layer in first.hidden:
        layer = np.asarray(layer)
        assert layer.min() >= lowest and layer.max() <= 5
        lowest = layer.min()


def test_zero_initialised_output_is_exactly_zero():
    degrees = made_degrees(4, (8,))
    made = MADE(4, (8,), 3, direct=True, context_size=1)
    x, context = jnp.ones((2, 4)), jnp.ones((2, 1))
    params = made.init(jax.random.PRNGKey(0), x, degrees, context)["params"]
    assert made.apply({"params": params}, x, degrees, context).shape == (2, 4, 3)
    assert not jnp.any(made.apply({"params": params}, x, degrees, context))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(input_size=0, hidden=(4,)), "input_size"),
        (dict(input_size=3, hidden=(0,)), "hidden widths"),
        (dict(input_size=3, hidden=(4,), order="sideways"), "order must be"),
        (dict(input_size=3, hidden=(4,), order=[0, 0, 1]), "permutation"),
        (dict(input_size=3, hidden=(4,), hidden_degrees="odd"), "hidden_degrees"),
        (dict(input_size=3, hidden=(4,), order="random"), "need a key"),
    ],
)
def test_bad_degree_configs_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        made_degrees(**kwargs)


def test_bad_shapes_raise():
    degrees = made_degrees(3, (4,))
    made = MADE(3, (4,), 1)
    with pytest.raises(ValueError, match=r"shape \(batch, 3\)"):
        made.init(jax.random.PRNGKey(0), jnp.ones((2, 4)), degrees)
    with pytest.raises(ValueError, match="degrees are for"):
        made.init(jax.random.PRNGKey(0), jnp.ones((2, 3)), made_degrees(3, (5,)))
    with pytest.raises(ValueError, match="context_size=0"):
        made.init(jax.random.PRNGKey(0), jnp.ones((2, 3)), degrees, jnp.ones((2, 1)))
    with pytest.raises(ValueError, match="equal hidden widths"):
        MADE(3, (4, 5), 1, residual=True).init(
            jax.random.PRNGKey(0), jnp.ones((2, 3)), made_degrees(3, (4, 5))
        )

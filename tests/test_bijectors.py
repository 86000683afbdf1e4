"""Bijector layers: the contract (check_bijector) on perturbed params, plus layer-specific facts."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nflows_jax.bijectors.base import (
    Bijector,
    chain,
    invert,
    permutation,
    random_permutation,
    repeat,
    reverse_permutation,
)
from nflows_jax.bijectors.coupling import additive_coupling, affine_coupling
from nflows_jax.bijectors.elementwise import elementwise_affine, logit, sigmoid, tanh
from nflows_jax.bijectors.planar import PlanarParams, RadialParams, planar, planar_terms, radial
from nflows_jax.testing import check_bijector, perturb

pytestmark = pytest.mark.usefixtures("fast_compiles")

BATCH, DIM, CONTEXT = 8, 3, 2
HIDDEN = (8, 8)  # small conditioners: the checks are about the algebra, not the capacity


# Test data comes from NumPy's generator: eager jax.random would compile a kernel per shape.
def _normal(seed: int, shape: tuple[int, ...], scale: float = 1.0) -> jax.Array:
    return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _x(seed: int = 0, shape: tuple[int, ...] = (BATCH, DIM)) -> jax.Array:
    return _normal(seed, shape, scale=1.5)


def _context(seed: int = 1) -> jax.Array:
    return _normal(seed, (BATCH, CONTEXT))


def _perturbed_params(bijector: Bijector, x, context=None, scale: float = 0.3):
    """Params moved off the identity (where most bugs hide) by N(0, scale²) noise on each leaf.

    init and perturb run as one compiled program (eager flax init compiles op by op)."""

    @jax.jit
    def init_and_perturb(x, context):
        params = bijector.init(jax.random.PRNGKey(10), x, context)
        return perturb(params, jax.random.PRNGKey(11), scale)

    return init_and_perturb(x, context)


def _jitted(bijector: Bijector) -> Bijector:
    return Bijector(*(jax.jit(fn) for fn in bijector))


# (name, bijector factory, input batch factory, uses context). Layers are grouped into chains
# where that loses nothing: each case costs ~9 XLA compilations, which dominate the test time.
CASES = [
    # Elementwise layers on a 2-axis event; the inverse pass runs sigmoid⁻¹ = logit and tanh⁻¹.
    ("elementwise", lambda: chain(elementwise_affine(), tanh(), elementwise_affine(), sigmoid()),
     lambda: _x(shape=(BATCH, 2, DIM)), False),
    ("planar_radial", lambda: chain(planar(DIM), radial(DIM)), _x, False),
    # Odd D: the alternating mask keeps one more coordinate than it changes.
    ("alternating_couplings_ctx",
     lambda: chain(additive_coupling(DIM, HIDDEN, "alternating", CONTEXT),
                   affine_coupling(DIM, HIDDEN, "alternating", CONTEXT)), _x, True),
    # Permutations and invert; invert(planar) puts planar's root-solving inverse under the
    # Jacobian check.
    ("chain_invert_permutations",
     lambda: chain(permutation([2, 0, 1]), invert(planar(DIM)), random_permutation(3, DIM),
                   reverse_permutation()), _x, False),
    # The half mask (here D = 3: one kept, two changed) under repeat, with a context.
    ("repeat_realnvp_ctx", lambda: repeat(chain(affine_coupling(DIM, HIDDEN, context_size=CONTEXT),
                                                reverse_permutation()), 3), _x, True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "make_x", "uses_context"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_contract_with_perturbed_params(make, make_x, uses_context):
    # Jitted transforms: check_bijector's calls then cost one compilation each instead of one per
    # primitive in eager mode. Eager use is exercised by other tests of this module.
    bijector = _jitted(make())
    x, context = make_x(), (_context() if uses_context else None)
    params = _perturbed_params(bijector, x, context)
    check_bijector(bijector, x, params=params, context=context)


def test_logit_is_the_inverse_of_sigmoid():
    y = jnp.asarray(np.random.default_rng(0).uniform(0.01, 0.99, (BATCH, DIM)), jnp.float32)
    x, log_det = logit().forward((), y)
    np.testing.assert_allclose(x, jnp.log(y) - jnp.log1p(-y), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jax.nn.sigmoid(x), y, rtol=1e-6)
    np.testing.assert_allclose(log_det, -jnp.sum(jnp.log(y * (1 - y)), axis=1), rtol=1e-5)


def test_couplings_are_exactly_the_identity_at_init():
    x, context = _x(), _context()
    for make in (additive_coupling, affine_coupling):
        for mask in ("half", "alternating"):
            bijector = make(DIM, HIDDEN, mask, CONTEXT)

            @jax.jit
            def both_ways(x, context, bijector=bijector):
                params = bijector.init(jax.random.PRNGKey(0), x, context)
                return bijector.forward(params, x, context), bijector.inverse(params, x, context)

            for y, log_det in both_ways(x, context):
                np.testing.assert_array_equal(y, x, err_msg=f"{make.__name__} {mask}")
                np.testing.assert_array_equal(log_det, jnp.zeros(BATCH))


def test_additive_coupling_log_det_is_exactly_zero():
    bijector, x = additive_coupling(DIM, HIDDEN), _x()
    params = _perturbed_params(bijector, x, scale=1.0)

    @jax.jit
    def both_ways(params, x):
        y, forward_log_det = bijector.forward(params, x)
        return y, forward_log_det, bijector.inverse(params, y)[1]

    y, forward_log_det, inverse_log_det = both_ways(params, x)
    assert float(jnp.max(jnp.abs(y - x))) > 0.1  # the perturbation really changed the map
    np.testing.assert_array_equal(forward_log_det, jnp.zeros(BATCH))
    np.testing.assert_array_equal(inverse_log_det, jnp.zeros(BATCH))


def test_affine_coupling_log_scale_is_bounded():
    bijector, x = affine_coupling(DIM, HIDDEN, max_log_scale=2.0), _x()
    params = _perturbed_params(bijector, 100.0 * x, scale=5.0)  # drive the raw log-scale far out
    _, log_det = jax.jit(bijector.forward)(params, 100.0 * x)
    changed = DIM - DIM // 2
    assert float(jnp.max(jnp.abs(log_det))) <= 2.0 * changed + 1e-5


def test_radial_is_exactly_the_identity_and_planar_near_it_at_init():
    x = _x()

    def at_init(layer):
        return jax.jit(lambda x: layer.forward(layer.init(jax.random.PRNGKey(0), x), x))(x)

    y, log_det = at_init(radial(DIM))
    np.testing.assert_array_equal(y, x)
    np.testing.assert_allclose(log_det, 0.0, atol=1e-6)  # a difference of logs: float rounding
    y, log_det = at_init(planar(DIM))
    # |y - x| ≤ |û| = O(0.01·sqrt(D)); small w, u with wᵀu ≈ 0 would give |û| ≈ 0.31/‖w‖ instead.
    assert float(jnp.max(jnp.abs(y - x))) < 0.1
    assert float(jnp.max(jnp.abs(log_det))) < 0.1


def _unstack(params, num_layers: int):
    return tuple(jax.tree_util.tree_map(lambda p: p[i], params) for i in range(num_layers))


def test_repeat_equals_the_same_layers_unrolled():
    num_layers, context = 4, _context()
    layer = chain(affine_coupling(DIM, HIDDEN, context_size=CONTEXT), reverse_permutation())
    repeated, x = repeat(layer, num_layers), _x()
    params = _perturbed_params(repeated, x, context)
    chex.assert_tree_shape_prefix(params, (num_layers,))
    unrolled = chain(*[layer] * num_layers)

    @jax.jit
    def both(params):
        unrolled_params = _unstack(params, num_layers)
        return {
            name: (
                getattr(repeated, name)(params, x, context),
                getattr(unrolled, name)(unrolled_params, x, context),
            )
            for name in ("forward", "inverse")
        }

    for name, (actual, expected) in both(params).items():
        np.testing.assert_allclose(actual[0], expected[0], rtol=1e-5, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(actual[1], expected[1], rtol=1e-5, atol=1e-5, err_msg=name)


def test_repeat_traces_its_layer_once_whatever_the_depth():
    chex.clear_trace_counter()
    coupling = affine_coupling(2, HIDDEN)
    counted = Bijector(
        coupling.init, chex.assert_max_traces(coupling.forward, n=1), coupling.inverse
    )
    layer = chain(counted, reverse_permutation())
    x = _x(shape=(BATCH, 2))
    deep = repeat(layer, 6)
    # init (vmapped, so it traces forward once too) from the uncounted twin: count forward only.
    twin = repeat(chain(coupling, reverse_permutation()), 6)
    params = jax.jit(twin.init)(jax.random.PRNGKey(0), x)
    forward = jax.jit(deep.forward)
    for seed in range(3):  # new values, same shapes: no retrace either
        chex.assert_shape(forward(params, _x(seed, (BATCH, 2)))[0], (BATCH, 2))
    # The same 6 layers unrolled would trace the layer 6 times; the counter notices.
    chex.clear_trace_counter()
    unrolled = chain(*[layer] * 6)
    with pytest.raises(AssertionError, match="traced > 1 times"):
        jax.jit(unrolled.forward)(_unstack(params, 6), x)
    chex.clear_trace_counter()


def test_repeat_trains_under_jit_and_grad():
    flow_layer = repeat(chain(affine_coupling(2, HIDDEN), reverse_permutation()), 3)
    x = _x(shape=(BATCH, 2))
    params = _perturbed_params(flow_layer, x, scale=0.2)

    def loss(params):
        z, log_det = flow_layer.inverse(params, x)
        return jnp.mean(0.5 * jnp.sum(z**2, axis=1) - log_det)

    @jax.jit
    def one_step(params):
        value, grads = jax.value_and_grad(loss)(params)
        stepped = jax.tree_util.tree_map(lambda p, g: p - 1e-3 * g, params, grads)
        return value, grads, loss(stepped)

    value, grads, stepped_value = one_step(params)
    assert np.isfinite(float(value))
    chex.assert_trees_all_equal_shapes(grads, params)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree_util.tree_leaves(grads))
    # A small step against the gradient lowers the loss: the gradient is a descent direction.
    assert float(stepped_value) < float(value)


def _planar_params_with(w_dot_u_hat: float, seed: int) -> PlanarParams:
    """Raw planar params with ‖w‖ = 3, b = 0.7 and the constrained wᵀû equal to ``w_dot_u_hat``."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(DIM)
    w = 3.0 * w / np.linalg.norm(w)
    u_perp = rng.standard_normal(DIM)
    u_perp = u_perp - (u_perp @ w) / (w @ w) * w
    raw_w_dot_u = np.log(np.expm1(w_dot_u_hat + 1.0))  # softplus⁻¹(1 + wᵀû)
    u = u_perp + raw_w_dot_u * w / (w @ w)
    return PlanarParams(*(jnp.asarray(v, jnp.float32) for v in (w, u, 0.7)))


# Module-level layers and jitted transforms: one compilation shared by the parametrized cases.
PLANAR, RADIAL = planar(DIM), radial(DIM)
PLANAR_FORWARD, PLANAR_INVERSE = jax.jit(PLANAR.forward), jax.jit(PLANAR.inverse)
PLANAR_TERMS = jax.jit(planar_terms)
RADIAL_FORWARD, RADIAL_INVERSE = jax.jit(RADIAL.forward), jax.jit(RADIAL.inverse)


@pytest.mark.parametrize("w_dot_u_hat", [-0.9, -0.5, 2.0, 30.0])
def test_planar_inverse_is_accurate_for_strongly_nonlinear_params(w_dot_u_hat):
    params = _planar_params_with(w_dot_u_hat, seed=3)
    terms = PLANAR_TERMS(params)
    np.testing.assert_allclose(terms.w_dot_u_hat, w_dot_u_hat, rtol=1e-4)
    x = _x(seed=4, shape=(512, DIM))
    y, log_det = PLANAR_FORWARD(params, x)
    x_back, inverse_log_det = PLANAR_INVERSE(params, y)
    y_again, _ = PLANAR_FORWARD(params, x_back)
    x, y, x_back, y_again = (np.asarray(a, np.float64) for a in (x, y, x_back, y_again))
    assert np.max(np.abs(y - x)) > 0.5  # far from the identity
    np.testing.assert_allclose(x_back, x, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(inverse_log_det, -log_det, atol=2e-5, rtol=1e-5)
    # The solver's own residual, forward(inverse(y)) = y. The root a = wᵀx is only resolved to a
    # few ulps of |wᵀy| + |wᵀû| (the size of the terms in its equation), and forward multiplies
    # that error by |û| h' ≤ ‖û‖: the tolerance per row is 4 such ulps, carried through.
    ulp = np.finfo(np.float32).eps * (np.abs(y @ np.asarray(params.w)) + abs(w_dot_u_hat))
    atol = 4.0 * np.linalg.norm(terms.u_hat) * ulp[:, None]
    assert np.all(np.abs(y_again - y) <= atol + 1e-6 * np.abs(y))


@pytest.mark.parametrize(("raw_alpha", "raw_beta"), [(-2.0, -4.5), (-2.0, 3.0), (1.0, -1.5)])
def test_radial_inverse_is_accurate_for_strongly_nonlinear_params(raw_alpha, raw_beta):
    # (-2, -4.5): α ≈ 0.13, β ≈ -0.91 α (a strong contraction towards z0); (-2, 3): β ≈ 22 α;
    # (1, -1.5): α ≈ 1.3, β ≈ -0.85 α over a wide radius. Contractions much closer to β = -α
    # amplify float32 rounding of y by (α + r)/(γ + r) near z0, an ill-conditioning of the map.
    center = np.array([0.3, -0.2, 0.1], np.float32)
    params = RadialParams(*(jnp.asarray(v, jnp.float32) for v in (center, raw_alpha, raw_beta)))
    rng = np.random.default_rng(5)  # 509 spread-out points and 3 within 1e-3 of the centre
    x = np.concatenate(
        [1.5 * rng.standard_normal((509, DIM)), center + 1e-3 * rng.random((3, DIM))]
    )
    x = jnp.asarray(x, jnp.float32)
    y, log_det = RADIAL_FORWARD(params, x)
    assert float(np.max(np.abs(np.asarray(y) - np.asarray(x)))) > 0.1
    x_back, inverse_log_det = RADIAL_INVERSE(params, y)
    np.testing.assert_allclose(x_back, x, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(inverse_log_det, -log_det, atol=1e-5, rtol=1e-5)


def test_inverse_gradients_are_exact():
    """d/dθ f(θ, f⁻¹(θ, y)) = 0 and d/dy f(θ, f⁻¹(θ, y)) = I hold only if f⁻¹'s derivatives are
    right; planar's come from one implicit-function step after a stop-gradient solve. Checked on
    chain(planar, radial): a wrong derivative in either inverse breaks the identities."""
    layer, x = chain(planar(DIM), radial(DIM)), _x(seed=7)
    params = _perturbed_params(layer, x, scale=0.5)

    def round_trip(params, y):
        return layer.forward(params, layer.inverse(params, y)[0])[0]

    @jax.jit
    def derivatives(params, x):
        y, _ = layer.forward(params, x)
        d_params = jax.jacrev(round_trip)(params, y)
        d_y = jax.vmap(jax.jacfwd(lambda row: round_trip(params, row[None])[0]))(y)
        return d_params, d_y

    d_params, d_y = derivatives(params, x)
    for leaf in jax.tree_util.tree_leaves(d_params):
        np.testing.assert_allclose(leaf, 0.0, atol=2e-4)
    np.testing.assert_allclose(d_y, np.broadcast_to(np.eye(DIM), d_y.shape), atol=2e-4)


def test_planar_constraint_holds_for_any_raw_params():
    rng = np.random.default_rng(8)
    w = np.exp(rng.uniform(-6.0, 4.0, (2000, 1))) * rng.standard_normal((2000, DIM))
    u = rng.standard_normal((2000, DIM)) * np.exp(np.linspace(-3.0, 4.0, 2000))[:, None]
    u[::2] = -7.0 * w[::2]  # half of them with wᵀu ≪ 0, where the correction matters
    w, u = jnp.asarray(w, jnp.float32), jnp.asarray(u, jnp.float32)

    @jax.jit
    def terms_and_log_dets(w, u):
        params = PlanarParams(w, u, jnp.zeros(w.shape[:1]))
        terms = jax.vmap(planar_terms)(params)
        # The log-det at the steepest input (wᵀx + b = 0), where 1 + h'·wᵀû is smallest.
        x = jnp.zeros((1, DIM))
        log_dets = jax.vmap(lambda p: PLANAR.forward(p, x)[1])(params)
        return terms, log_dets

    terms, log_dets = jax.tree_util.tree_map(np.asarray, terms_and_log_dets(w, u))
    assert np.all(terms.w_dot_u_hat >= -1.0)
    assert np.all(terms.one_plus_w_dot_u_hat >= 0.0)
    assert np.all(np.isfinite(log_dets))
    # wᵀû recomputed from û itself. û = u + ((m - wᵀu)/‖w‖²) w cancels when u ∥ w, so û carries
    # float32 rounding of order eps·(‖u‖ + ‖û‖) and wᵀû that times ‖w‖ (eps = 1.2e-7; 1e-6 ≈ 8 eps).
    w, u, u_hat = np.asarray(w, np.float64), np.asarray(u, np.float64), terms.u_hat
    direct = np.sum(w * u_hat, axis=1)
    norm = lambda v: np.linalg.norm(v, axis=1)
    rounding = 1e-6 * (1.0 + norm(w) * (norm(u) + norm(u_hat)))
    assert np.all(direct >= -1.0 - rounding)


@pytest.mark.parametrize(
    ("transform", "bad", "domain"),
    [
        (sigmoid().inverse, 1.0, r"\(0, 1\)"),
        (sigmoid().inverse, 0.0, r"\(0, 1\)"),
        (logit().forward, -0.1, r"\(0, 1\)"),
        (logit().forward, np.nan, r"\(0, 1\)"),
        (tanh().inverse, -1.0, r"\(-1, 1\)"),
        (tanh().inverse, 1.5, r"\(-1, 1\)"),
    ],
)
def test_out_of_domain_inputs_raise_when_concrete(transform, bad, domain):
    y = jnp.array([[0.5, bad]])
    with pytest.raises(ValueError, match=domain):
        transform((), y)


@pytest.mark.parametrize("make", [sigmoid, tanh])
def test_out_of_domain_inputs_are_clamped_under_jit(make):
    bijector = make()
    edges = jnp.array([[0.0, 1.0, -1.0]]) if make is tanh else jnp.array([[0.0, 1.0, 0.5]])
    x, log_det = jax.jit(bijector.inverse)((), edges)
    assert bool(jnp.all(jnp.isfinite(x))) and bool(jnp.all(jnp.isfinite(log_det)))
    grad = jax.jit(jax.grad(lambda y: jnp.sum(bijector.inverse((), y)[0])))(edges)
    assert bool(jnp.all(jnp.isfinite(grad)))


def test_stable_log_dets_for_large_inputs():
    x = np.array([[-80.0, -20.0, 0.0, 20.0, 80.0]])
    for bijector, log_derivative in [
        # Float64 NumPy references written with |x|: stable for either sign, independent of the
        # layers' own forms.
        (sigmoid(), lambda v: -np.abs(v) - 2.0 * np.log1p(np.exp(-np.abs(v)))),
        (tanh(), lambda v: np.log(4.0) - 2.0 * np.abs(v) - 2.0 * np.log1p(np.exp(-2 * np.abs(v)))),
    ]:
        _, log_det = bijector.forward((), jnp.asarray(x, jnp.float32))
        assert np.isfinite(float(log_det[0]))
        np.testing.assert_allclose(log_det, np.sum(log_derivative(x)), rtol=1e-6)


def test_bad_configurations_and_shapes_raise_clear_errors():
    """Configuration errors raise at construction, shape errors while tracing (eval_shape)."""
    with pytest.raises(ValueError, match="event_size >= 2"):
        affine_coupling(1)
    with pytest.raises(ValueError, match="mask"):
        additive_coupling(DIM, mask="checkerboard")
    with pytest.raises(ValueError, match="max_log_scale"):
        affine_coupling(DIM, max_log_scale=0.0)
    with pytest.raises(ValueError, match="event_size"):
        radial(0)
    key, x, context = jax.random.PRNGKey(0), _x(), _context()
    coupling = affine_coupling(DIM, HIDDEN)
    params = jax.eval_shape(coupling.init, key, x)
    with pytest.raises(ValueError, match=r"shape \(batch, 3\)"):
        jax.eval_shape(coupling.forward, params, _x(shape=(BATCH, 4)))
    with pytest.raises(ValueError, match="batch"):
        jax.eval_shape(coupling.forward, params, _x(shape=(DIM,)))
    with pytest.raises(ValueError, match="context_size=0"):
        jax.eval_shape(coupling.forward, params, x, context)
    conditional = affine_coupling(DIM, HIDDEN, context_size=CONTEXT)
    params = jax.eval_shape(conditional.init, key, x, context)
    with pytest.raises(ValueError, match="context must have shape"):
        jax.eval_shape(conditional.inverse, params, x)
    with pytest.raises(ValueError, match="context must have shape"):
        jax.eval_shape(conditional.inverse, params, x, _normal(2, (BATCH, 1)))
    with pytest.raises(ValueError, match="planar"):
        jax.eval_shape(planar(DIM).init, key, _x(shape=(BATCH, 4)))
    affine = elementwise_affine()
    params = jax.eval_shape(affine.init, key, x)
    with pytest.raises(ValueError, match="event shape"):
        jax.eval_shape(affine.forward, params, _x(shape=(BATCH, 4)))

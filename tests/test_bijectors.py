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
from nflows_jax.testing import (
    assert_within_rounding,
    check_bijector,
    jacobian_amplification,
    perturb,
    rounding_steps,
    rounding_tolerance,
)

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
    # Float64 references; rounding allowance (nflows_jax.testing policy) on the size of the terms
    # log y and log(1 - y), which cancel near y = 1/2 where x itself is near 0.
    y64 = np.asarray(y, np.float64)
    terms = np.abs(np.log(y64)) + np.abs(np.log1p(-y64))
    steps = rounding_steps(logit().forward, (), y)
    assert_within_rounding(
        "logit", x, np.log(y64) - np.log1p(-y64), steps, jnp.float32, magnitude=terms
    )
    assert_within_rounding(
        "log-det",
        log_det,
        -np.sum(np.log(y64 * (1 - y64)), axis=1),
        steps,
        jnp.float32,
        magnitude=np.sum(terms, axis=1),
    )
    # sigmoid's slope σ(1 - σ) times logit's 1/(y(1 - y)) is 1: the round trip amplifies nothing.
    steps += rounding_steps(sigmoid().forward, (), x)
    assert_within_rounding(
        "sigmoid(logit(y))", jax.nn.sigmoid(x), y64, steps, jnp.float32, magnitude=terms
    )


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
    # float32 tanh rounds to at most 1, times 2 exactly; the sum of `changed` terms rounds once
    # per term: at most changed · eps of the bound on top.
    bound = 2.0 * changed * (1.0 + changed * float(jnp.finfo(jnp.float32).eps))
    assert float(jnp.max(jnp.abs(log_det))) <= bound


def test_radial_is_exactly_the_identity_and_planar_near_it_at_init():
    x = _x()

    def at_init(layer):
        return jax.jit(lambda x: layer.forward(layer.init(jax.random.PRNGKey(0), x), x))(x)

    layer = radial(DIM)
    y, log_det = at_init(layer)
    np.testing.assert_array_equal(y, x)
    # log(r² + 2αr + αγ) - 2 log(α + r) with γ = α is 0 up to the rounding of terms of size
    # 2|log(α + r)| (α = softplus(0), r = ‖x - z0‖).
    params = layer.init(jax.random.PRNGKey(0), x)
    r = np.linalg.norm(np.asarray(x, np.float64) - np.asarray(params.center), axis=1)
    terms = 2.0 * np.abs(np.log(np.log(2.0) + r))
    assert_within_rounding(
        "radial log-det at init",
        log_det,
        np.zeros(BATCH),
        rounding_steps(layer.forward, params, x),
        jnp.float32,
        magnitude=terms,
    )
    y, log_det = at_init(planar(DIM))
    # |y - x| ≤ |û| = O(0.01·sqrt(D)); small w, u with wᵀu ≈ 0 would give |û| ≈ 0.31/‖w‖ instead.
    assert float(jnp.max(jnp.abs(y - x))) < 0.1
    assert float(jnp.max(jnp.abs(log_det))) < 0.1


def _unstack(params, num_layers: int):
    return tuple(jax.tree_util.tree_map(lambda p: p[i], params) for i in range(num_layers))


def _assert_same_map(name, actual, expected, x, steps, amplification) -> None:
    """Two programs doing the same float32 arithmetic in another order or fusion: each is within
    one evaluation's rounding allowance of the exact map (amplified by its Jacobian), so they
    differ by at most twice it. ``actual``/``expected`` are (values (B, D), log-dets (B,))."""
    assert_within_rounding(
        name,
        actual[0],
        expected[0],
        2 * steps,
        jnp.float32,
        amplification[:, None],
        np.abs(np.asarray(x)) + np.abs(expected[0]),
    )
    assert_within_rounding(
        f"{name} log-det",
        actual[1],
        expected[1],
        2 * steps,
        jnp.float32,
        amplification,
        DIM + np.abs(expected[1]),
    )


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

    steps = rounding_steps(repeated.forward, params, x, context)
    amplification = jacobian_amplification(repeated.forward, params, x, context)
    for name, (actual, expected) in both(params).items():
        _assert_same_map(name, actual, expected, x, steps, amplification)


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


def _assert_round_trips_within_rounding(
    layer, params, x, y, log_det, x_back, inverse_log_det, y_again
):
    """float32 round trips within the rounding allowance of nflows_jax.testing: the rounding
    steps of forward plus inverse, amplified by A = max(κ, ‖J‖, ‖J⁻¹‖) of each row's Jacobian,
    on the size of the row's values."""
    assert float(np.max(np.abs(np.asarray(y) - np.asarray(x)))) > 0.1  # far from the identity
    steps = rounding_steps(layer.forward, params, x) + rounding_steps(layer.inverse, params, y)
    amplification = jacobian_amplification(layer.forward, params, x)
    size = np.max(np.abs(np.asarray(x)) + np.abs(np.asarray(y)), axis=1)
    per_row = (amplification[:, None], size[:, None])
    assert_within_rounding("inverse(forward(x))", x_back, x, steps, jnp.float32, *per_row)
    assert_within_rounding("forward(inverse(y))", y_again, y, steps, jnp.float32, *per_row)
    assert_within_rounding(
        "inverse log-det",
        inverse_log_det,
        -np.asarray(log_det),
        steps,
        jnp.float32,
        amplification,
        DIM + np.abs(np.asarray(log_det)),
    )


# Module-level layers and jitted transforms: one compilation shared by the parametrized cases.
PLANAR, RADIAL = planar(DIM), radial(DIM)
PLANAR_FORWARD, PLANAR_INVERSE = jax.jit(PLANAR.forward), jax.jit(PLANAR.inverse)
PLANAR_TERMS = jax.jit(planar_terms)
RADIAL_FORWARD, RADIAL_INVERSE = jax.jit(RADIAL.forward), jax.jit(RADIAL.inverse)


@pytest.mark.parametrize("w_dot_u_hat", [-0.9, -0.5, 2.0, 30.0])
def test_planar_inverse_is_accurate_for_strongly_nonlinear_params(w_dot_u_hat):
    params = _planar_params_with(w_dot_u_hat, seed=3)
    terms = PLANAR_TERMS(params)
    # wᵀû = softplus(wᵀu) - 1 from float32 w, u: rounding on the size ‖w‖‖u‖ of the dot product.
    w, u = np.asarray(params.w, np.float64), np.asarray(params.u, np.float64)
    assert_within_rounding(
        "wᵀû",
        terms.w_dot_u_hat,
        w_dot_u_hat,
        rounding_steps(planar_terms, params),
        jnp.float32,
        magnitude=np.linalg.norm(w) * np.linalg.norm(u),
    )
    x = _x(seed=4, shape=(512, DIM))
    y, log_det = PLANAR_FORWARD(params, x)
    x_back, inverse_log_det = PLANAR_INVERSE(params, y)
    y_again, _ = PLANAR_FORWARD(params, x_back)
    _assert_round_trips_within_rounding(
        PLANAR, params, x, y, log_det, x_back, inverse_log_det, y_again
    )


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
    x_back, inverse_log_det = RADIAL_INVERSE(params, y)
    y_again, _ = RADIAL_FORWARD(params, x_back)
    _assert_round_trips_within_rounding(
        RADIAL, params, x, y, log_det, x_back, inverse_log_det, y_again
    )


def test_inverse_gradients_are_exact():
    """d/dθ f(θ, f⁻¹(θ, y)) = 0 and d/dy f(θ, f⁻¹(θ, y)) = I hold only if f⁻¹'s derivatives are
    right; planar's come from one implicit-function step after a stop-gradient solve. Checked on
    chain(planar, radial): a wrong derivative in either inverse breaks the identities. Planar's
    inverse is differentiated implicitly (a custom JVP), never through its solver's loop."""
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

    # In float64, where the rounding allowance is ~1e-12 and a missing or wrong implicit step
    # shows as an O(1) error. The derivative program chains J, J⁻¹ and their parameter
    # derivatives: its rounding is amplified by up to A² and sized by the largest partial
    # derivative of forward w.r.t. the params.
    with jax.enable_x64(True):
        params64 = jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.float64), params)
        x64 = jnp.asarray(x, jnp.float64)
        d_params, d_y = derivatives(params64, x64)
        steps = rounding_steps(derivatives, params64, x64)
        amplification = float(np.max(jacobian_amplification(layer.forward, params64, x64)))
        partials = jax.jacrev(lambda p: layer.forward(p, x64)[0])(params64)
        size = max(float(np.max(np.abs(leaf))) for leaf in jax.tree_util.tree_leaves(partials))
    for leaf in jax.tree_util.tree_leaves(d_params):
        assert_within_rounding(
            "d round trip / d params",
            leaf,
            np.zeros(leaf.shape),
            steps,
            jnp.float64,
            amplification**2,
            size,
        )
    identity = np.broadcast_to(np.eye(DIM), d_y.shape)
    assert_within_rounding(
        "d round trip / dy", d_y, identity, steps, jnp.float64, amplification**2, 1.0
    )


def test_planar_inverse_second_derivatives_are_exact():
    """d²/dy² f(f⁻¹(y)) = 0 holds only if f⁻¹'s second derivatives are right too: a first-order
    implicit step (exact gradients, wrong Hessians) leaves an O(1) residual (0.2 on this case
    before planar's inverse got a custom JVP). Hessians of the round trip per output coordinate,
    in float64."""
    layer, x = planar(DIM), _x(seed=11)[:4]
    params = _perturbed_params(layer, x, scale=0.7)

    def round_trip_row(params, row):
        return layer.forward(params, layer.inverse(params, row[None])[0])[0][0]

    @jax.jit
    def hessians(params, y):
        return jax.vmap(jax.hessian(lambda row: round_trip_row(params, row)))(y)

    # The Hessian program chains f's first and second derivatives with f⁻¹'s: its rounding is
    # amplified by up to A³ (two Jacobian factors and one more through the second-order term)
    # and sized by the largest second derivative of forward or inverse.
    with jax.enable_x64(True):
        params64 = jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.float64), params)
        x64 = jnp.asarray(x, jnp.float64)
        y64 = layer.forward(params64, x64)[0]
        residual = hessians(params64, y64)  # (B, D, D, D): zero for an exact inverse
        steps = rounding_steps(hessians, params64, y64)
        amplification = float(np.max(jacobian_amplification(layer.forward, params64, x64)))

        def second_derivatives(transform, rows):
            return jax.vmap(jax.hessian(lambda r: transform(params64, r[None])[0][0]))(rows)

        size = max(
            float(np.max(np.abs(second_derivatives(layer.forward, x64)))),
            float(np.max(np.abs(second_derivatives(layer.inverse, y64)))),
        )
    assert size > 0.05  # the case is curved enough for a wrong Hessian to show
    assert_within_rounding(
        "d² round trip / dy²",
        residual,
        np.zeros(residual.shape),
        steps,
        jnp.float64,
        amplification**3,
        size,
    )


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
    # float32 rounding on the size ‖u‖ + ‖û‖ of its terms, and wᵀû that times ‖w‖: the rounding
    # allowance of planar_terms' steps on that size.
    steps = rounding_steps(planar_terms, PlanarParams(w[0], u[0], jnp.zeros(())))
    w, u, u_hat = np.asarray(w, np.float64), np.asarray(u, np.float64), terms.u_hat
    direct = np.sum(w * u_hat, axis=1)
    norm = lambda v: np.linalg.norm(v, axis=1)
    size = norm(w) * (norm(u) + norm(u_hat))
    assert np.all(direct >= -1.0 - rounding_tolerance(steps, jnp.float32, 1.0, size))


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
        x32 = jnp.asarray(x, jnp.float32)
        _, log_det = bijector.forward((), x32)
        assert np.isfinite(float(log_det[0]))
        # Rounding allowance on the summed size of the per-coordinate terms (up to 160 each).
        assert_within_rounding(
            "log-det",
            log_det,
            np.sum(log_derivative(x), axis=1),
            rounding_steps(bijector.forward, (), x32),
            jnp.float32,
            magnitude=np.sum(np.abs(log_derivative(x)), axis=1),
        )


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


@pytest.mark.parametrize("num_layers", [True, 2.0, "3"])
def test_repeat_refuses_a_non_integer_depth(num_layers):
    with pytest.raises(TypeError, match="integer num_layers"):
        repeat(reverse_permutation(), num_layers)


def test_repeat_takes_integer_data_as_floats():
    """uint8 images into a scanned flow: the carry starts in the params' float dtype."""
    flow_layer = repeat(chain(affine_coupling(DIM, HIDDEN), reverse_permutation()), 2)
    pixels = jnp.asarray(np.random.default_rng(9).integers(0, 256, (BATCH, DIM)), jnp.uint8)
    params = _perturbed_params(flow_layer, pixels.astype(jnp.float32))
    y, log_det = jax.jit(flow_layer.forward)(params, pixels)
    expected_y, expected_log_det = jax.jit(flow_layer.forward)(params, pixels.astype(jnp.float32))
    assert y.dtype == jnp.float32
    np.testing.assert_array_equal(y, expected_y)  # the same program after the cast
    np.testing.assert_array_equal(log_det, expected_log_det)


def test_repeat_init_sees_the_batch_as_the_earlier_layers_made_it():
    """Data-dependent init through ``repeat``: a layer that initialises its shift so that the
    init batch leaves it with mean 1 gets shift 1 - mean(x) at layer 0 and exactly 0 after it,
    because layer k is initialised on the output of layers 0..k-1 (not on the raw batch)."""

    def init(key, x, context=None):
        return 1.0 - jnp.mean(x, axis=0)

    def shift_by(params, x, context=None):
        return x + params, jnp.zeros(x.shape[:1], x.dtype)

    def unshift(params, y, context=None):
        return y - params, jnp.zeros(y.shape[:1], y.dtype)

    x = _x()
    stacked = jax.jit(repeat(Bijector(init, shift_by, unshift), 3).init)(jax.random.PRNGKey(0), x)
    # float32 rounding of a mean: each of the BATCH terms and the sum round once, on values of
    # size at most max|y| <= 2 max|x| + 1 (y = x + 1 - mean(x)); in exact arithmetic layer 0's
    # shift is 1 - mean(x) and every later shift is 0.
    eps = float(jnp.finfo(jnp.float32).eps)
    atol = (BATCH + 1) * eps * (2.0 * float(np.max(np.abs(x))) + 1.0)
    first = 1.0 - np.mean(np.asarray(x, np.float64), axis=0)
    np.testing.assert_allclose(stacked[0], first, rtol=0, atol=atol)
    np.testing.assert_allclose(stacked[1:], 0.0, rtol=0, atol=atol)


def test_repeat_unrolled_computes_what_the_scan_computes():
    """``unroll=True`` only removes the loop: same params, same values to rounding."""
    layer = chain(affine_coupling(DIM, HIDDEN, context_size=CONTEXT), reverse_permutation())
    scanned, unrolled = repeat(layer, 3), repeat(layer, 3, unroll=True)
    x, context = _x(), _context()
    params = _perturbed_params(scanned, x, context)
    steps = rounding_steps(scanned.forward, params, x, context)
    amplification = jacobian_amplification(scanned.forward, params, x, context)
    for name in ("forward", "inverse"):
        expected = jax.jit(getattr(scanned, name))(params, x, context)
        actual = jax.jit(getattr(unrolled, name))(params, x, context)
        _assert_same_map(name, actual, expected, x, steps, amplification)

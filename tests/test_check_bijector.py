"""``check_bijector`` rejects every broken contract it names, and passes correct bijectors.

Each broken bijector below breaks exactly one property of a correct elementwise affine map
``y = x·exp(s) + t`` by a small amount (1e-6 of the values), far below float32 noise after a few
layers but ~1e7 times the float64 rounding allowance of the default checks. The error message
must name the broken property, so a user knows what to fix.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nflows_jax.bijectors import Bijector, chain, repeat, reverse_permutation
from nflows_jax.bijectors.coupling import affine_coupling
from nflows_jax.bijectors.elementwise import AffineParams
from nflows_jax.testing import check_bijector, rounding_steps

BATCH, DIM, CONTEXT = 6, 3, 2
SMALL = 1e-6  # size of each deliberate error


def _x(seed: int = 0) -> jax.Array:
    return jnp.asarray(1.5 * np.random.default_rng(seed).standard_normal((BATCH, DIM)))


def _context(seed: int = 1) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal((BATCH, CONTEXT)))


def _init(key, x, context=None):
    del context
    shift, log_scale = jax.random.normal(key, (2, *x.shape[1:]), x.dtype)
    return AffineParams(shift, 0.5 * log_scale)


def _affine_forward(params, x, context=None):
    y = x * jnp.exp(params.log_scale) + params.shift
    return y, jnp.broadcast_to(jnp.sum(params.log_scale), x.shape[:1])


def _affine_inverse(params, y, context=None):
    x = (y - params.shift) * jnp.exp(-params.log_scale)
    return x, jnp.broadcast_to(-jnp.sum(params.log_scale), y.shape[:1])


CORRECT = Bijector(_init, _affine_forward, _affine_inverse)


def _with(forward=_affine_forward, inverse=_affine_inverse, init=_init) -> Bijector:
    return Bijector(init, forward, inverse)


# --- one broken bijector per property ---------------------------------------------------------


def _mixing_forward(params, x, context=None):
    y, log_det = _affine_forward(params, x)
    return y + SMALL * jnp.roll(x, 1, axis=0), log_det  # row i sees row i - 1


def _hidden_mixing_forward(params, x, context=None):
    # Invisible to autodiff: the batch mean enters through stop_gradient, the Jacobian stays
    # block diagonal. Only evaluating rows on their own reveals it.
    y, log_det = _affine_forward(params, x)
    return y + SMALL * jax.lax.stop_gradient(jnp.mean(x, axis=0)), log_det


def _log_det_off_forward(params, x, context=None):
    y, log_det = _affine_forward(params, x)
    return y, log_det + SMALL * jnp.tanh(x[:, 0])  # wrong by an x-dependent amount


def _partly_wrong_inverse(params, y, context=None):
    x, log_det = _affine_inverse(params, y)
    # Wrong only where y_0 > 1 (part of the domain), and smoothly so: the log-det is unchanged.
    return x.at[:, 0].add(SMALL * jax.nn.relu(y[:, 0] - 1.0) ** 2), log_det


def _traced(x) -> bool:
    return isinstance(x, jax.core.Tracer)


# A trace-time branch: under jit the map is scaled by (1 + SMALL), a self-consistent bijector of
# its own (inverse and log-dets agree with it), so only comparing with eager execution shows it.
def _jit_differs_forward(params, x, context=None):
    y, log_det = _affine_forward(params, x)
    if _traced(x):
        return y * (1.0 + SMALL), log_det + x.shape[1] * jnp.log1p(SMALL)
    return y, log_det


def _jit_differs_inverse(params, y, context=None):
    if _traced(y):
        x, log_det = _affine_inverse(params, y / (1.0 + SMALL))
        return x, log_det - y.shape[1] * jnp.log1p(SMALL)
    return _affine_inverse(params, y)


def _unsummed_log_det_forward(params, x, context=None):
    y, _ = _affine_forward(params, x)
    return y, jnp.broadcast_to(params.log_scale, x.shape)  # (B, D): the sum forgotten


def _float32_forward(params, x, context=None):
    y, log_det = _affine_forward(params, x)
    return y.astype(jnp.float32), log_det


def _singular_forward(params, x, context=None):
    y = x.at[:, 1].set(x[:, 0])  # the second coordinate is lost
    return y, jnp.zeros(x.shape[:1], x.dtype)


def _context_ignored(params, x, context=None):
    return _affine_forward(params, x)


BROKEN = [
    ("rows_that_mix", _with(forward=_mixing_forward), "batch independence"),
    ("rows_that_mix_through_stop_gradient", _with(forward=_hidden_mixing_forward),
     "batch independence"),
    ("log_det_off_by_small_x_dependent_amount", _with(forward=_log_det_off_forward),
     r"^forward log-det"),
    ("inverse_wrong_on_part_of_the_domain", _with(inverse=_partly_wrong_inverse), "round trip"),
    ("jit_differs_from_eager", _with(forward=_jit_differs_forward, inverse=_jit_differs_inverse),
     "jit vs eager"),
    ("log_det_shape_not_summed", _with(forward=_unsummed_log_det_forward), "log-det shape"),
    ("output_dtype_changed", _with(forward=_float32_forward), "dtype"),
    ("singular_jacobian", _with(forward=_singular_forward), "invertibility"),
]  # fmt: skip


@pytest.mark.parametrize(("bijector", "property_name"), [b[1:] for b in BROKEN],
                         ids=[b[0] for b in BROKEN])  # fmt: skip
def test_each_broken_contract_is_rejected_by_name(bijector, property_name):
    with pytest.raises(AssertionError, match=property_name):
        check_bijector(bijector, _x(), key=jax.random.PRNGKey(0))


def test_a_layer_that_ignores_its_context_is_rejected():
    ignoring = Bijector(_init, _context_ignored, lambda p, y, context=None: _affine_inverse(p, y))
    with pytest.raises(AssertionError, match="ignores its context"):
        check_bijector(ignoring, _x(), key=jax.random.PRNGKey(0), context=_context())


def test_a_correct_bijector_passes_in_both_precisions():
    for precision in ("float64", "float32"):
        params = check_bijector(CORRECT, _x(), key=jax.random.PRNGKey(0), precision=precision)
        assert params.shift.dtype == jnp.dtype(precision)


def test_a_conditional_coupling_flow_passes():
    layer = chain(affine_coupling(DIM, (8,), context_size=CONTEXT), reverse_permutation())
    check_bijector(repeat(layer, 3), _x(), key=jax.random.PRNGKey(0), context=_context())


def test_wrong_log_det_hidden_at_the_identity_is_caught_by_the_default_perturbation():
    """At init (log_scale = 0) a log-det of 0.5·sum(log_scale) is right by accident."""

    def init(key, x, context=None):
        return AffineParams(*jnp.zeros((2, *x.shape[1:]), x.dtype))

    def half_log_det(params, x, context=None):
        y, log_det = _affine_forward(params, x)
        return y, 0.5 * log_det

    broken = _with(forward=half_log_det, init=init)
    check_bijector(broken, _x(), key=jax.random.PRNGKey(0), perturbation=0.0)  # hides at identity
    with pytest.raises(AssertionError, match=r"^forward log-det"):
        check_bijector(broken, _x(), key=jax.random.PRNGKey(0))


def test_rounding_steps_counts_reductions_and_scan_trips():
    x = jnp.ones((4, 5))
    one_sum = rounding_steps(lambda v: jnp.sum(v, axis=1), x)
    assert one_sum == 5  # one reduction over 5 terms
    body = lambda carry, _: (jnp.sin(carry), None)
    scanned = rounding_steps(lambda v: jax.lax.scan(body, v, None, length=7)[0], x)
    assert scanned == 7  # the sin primitive, 7 times


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="params or a key"):
        check_bijector(CORRECT, _x())
    with pytest.raises(ValueError, match="batch >= 2"):
        check_bijector(CORRECT, _x()[:1], key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="precision"):
        check_bijector(CORRECT, _x(), key=jax.random.PRNGKey(0), precision="float16")


def test_a_shape_changing_bijector_is_checked_and_a_size_changing_one_rejected():
    """A reshape of the event (as Glow's squeeze) is a bijection; dropping an entry is not."""

    def to_pairs(params, x, context=None):
        y, log_det = _affine_forward(params, x)
        return y.reshape(x.shape[0], 1, -1), log_det

    def from_pairs(params, y, context=None):
        return _affine_inverse(params, y.reshape(y.shape[0], -1))

    check_bijector(_with(forward=to_pairs, inverse=from_pairs), _x(), key=jax.random.PRNGKey(0))

    def drop_last(params, x, context=None):
        y, log_det = _affine_forward(params, x)
        return y[:, :-1], log_det

    with pytest.raises(AssertionError, match="number of entries per row"):
        check_bijector(_with(forward=drop_last), _x(), key=jax.random.PRNGKey(0))

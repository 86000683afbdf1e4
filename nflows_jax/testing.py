"""Checks that any bijector, ours or a user's, should pass. Call them from your own tests::

    from nflows_jax.testing import check_bijector
    check_bijector(my_bijector, x, key=jax.random.PRNGKey(0))

Each failed check raises ``AssertionError`` whose message starts with the name of the broken
property (``"batch independence"``, ``"round trip"``, ``"forward log-det"``, ...) and gives the
worst deviation, where it happened and the tolerance it exceeded.

Tolerance policy
----------------
Every comparison allows for floating-point rounding and nothing else. The allowance for a value
computed at batch row ``i`` is::

    tolerance_i = steps · eps · (1 + A_i) · (1 + magnitude_i)

* ``eps`` is the machine epsilon of the precision the checks run in.
* ``steps`` counts the rounding operations on the path from input to output: one per primitive in
  the traced program, the size of the summed axis for each reduction or matrix product, and
  scan bodies times their trip count (:func:`rounding_steps`). It is the standard worst-case
  model: each operation adds at most one ulp of relative error, and errors add up linearly.
* ``A_i = max(κ(J_i), ‖J_i‖, ‖J_i⁻¹‖)`` for the forward Jacobian ``J_i`` at row ``i`` (2-norms,
  κ the condition number): the most that the map or its inverse can amplify a rounding error in
  its input, relative (κ) or absolute (the norms). A round trip ``f⁻¹(f(x))`` carries the
  forward pass's rounding through ``J⁻¹``, ``f(f⁻¹(y))`` through ``J J⁻¹``; a log-det's error is
  ``tr(J⁻¹ dJ)``, at most ``E·κ`` times the relative error of ``J``.
* ``magnitude_i`` is the largest absolute input or output of the row (for log-dets, the event
  size ``E`` plus ``|log|det||``), so absolute and relative errors are both covered.

By default the checks run in **float64** (JAX's x64 mode, with params, inputs and context cast),
where ``steps · eps`` is about 1e-13 and the checks are exact for any practical purpose, whatever
the CPU's vector width, the XLA version or the thread count. ``precision="float32"`` runs the
same checks in float32 with the same formula, so they stay valid but are far less sharp: a
log-det wrong by 1e-4 may then pass where float64 catches it. A Jacobian whose condition number
is beyond ``1 / eps`` is reported as numerically singular rather than given an infinite
tolerance.
"""

from __future__ import annotations

import contextlib
import math
import statistics
from collections.abc import Callable, Iterator
from typing import Literal, NamedTuple

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from nflows_jax.bijectors.base import Array, Bijector, Params, PRNGKey

Precision = Literal["float64", "float32"]
Transform = Callable[..., tuple[Array, Array]]


# ------------------------------------------------------------------------------------------------
# Rounding model
# ------------------------------------------------------------------------------------------------


def _sub_jaxprs(params: dict) -> Iterator:
    for value in params.values():
        candidates = value if isinstance(value, tuple | list) else (value,)
        for candidate in candidates:
            if isinstance(candidate, jax.extend.core.ClosedJaxpr):
                yield candidate.jaxpr
            elif isinstance(candidate, jax.extend.core.Jaxpr):
                yield candidate


def _jaxpr_steps(jaxpr) -> int:
    steps = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        subs = list(_sub_jaxprs(eqn.params))
        if name == "scan":
            steps += int(eqn.params["length"]) * sum(_jaxpr_steps(s) for s in subs)
        elif name == "cond":
            steps += max((_jaxpr_steps(s) for s in subs), default=1)
        elif subs:  # pjit, custom_jvp/vjp, while (body counted once: its trip count is dynamic)
            steps += sum(_jaxpr_steps(s) for s in subs)
        elif name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            shape = eqn.invars[0].aval.shape
            steps += math.prod(shape[axis] for axis in lhs_contract) or 1
        elif name.startswith("reduce_") or name in ("cumsum", "cumlogsumexp"):
            in_size = math.prod(eqn.invars[0].aval.shape)
            out_size = max(math.prod(eqn.outvars[0].aval.shape), 1)
            steps += max(in_size // out_size, 1)
        else:
            steps += 1
    return steps


def rounding_steps(fn: Callable, *args) -> int:
    """Rounding operations on the longest path through ``fn(*args)``, counted from its jaxpr.

    One per primitive, the contracted size for each ``dot_general`` and the reduced size for each
    reduction (a sum of n terms carries up to n roundings), scan bodies times their length. Loops
    with a dynamic trip count (``while``) count their body once: iterative solvers converge to
    rounding level rather than accumulate it. An upper bound in the worst-case linear model.
    """
    return max(_jaxpr_steps(jax.make_jaxpr(fn)(*args).jaxpr), 1)


def rounding_tolerance(steps: int, dtype, amplification=1.0, magnitude=0.0):
    """The rounding allowance ``steps · eps · (1 + amplification) · (1 + magnitude)``.

    The policy of :func:`check_bijector` (see the module docstring), for tests of your own:
    ``steps`` from :func:`rounding_steps`, ``dtype`` the precision the values were computed in,
    ``amplification`` how much the computation can magnify an input error (a condition number
    or Jacobian norm), ``magnitude`` the size of the values compared. Broadcasts over arrays.
    """
    eps = float(jnp.finfo(dtype).eps)
    return steps * eps * (1.0 + np.asarray(amplification)) * (1.0 + np.asarray(magnitude))


class _Tolerance(NamedTuple):
    """The rounding allowance of one bijector's checks, per batch row."""

    dtype: np.dtype
    steps: int
    amplification: np.ndarray  # (B,) A_i = max(κ(J_i), ‖J_i‖, ‖J_i⁻¹‖), see the module docstring

    def per_row(self, magnitude: np.ndarray) -> np.ndarray:
        return rounding_tolerance(self.steps, self.dtype, self.amplification, magnitude)


def _row_max_abs(*arrays: np.ndarray) -> np.ndarray:
    """max |value| per batch row over several (B, ...) arrays: (B,)."""
    rows = [np.abs(a.reshape(a.shape[0], -1)).max(axis=1) for a in arrays]
    return np.max(np.stack(rows), axis=0)


def _fmt(value: float) -> str:
    return f"{float(value):.3g}"


def _assert_rows_close(name: str, actual, expected, tolerance: np.ndarray, hint: str = "") -> None:
    """Assert |actual - expected| <= tolerance[row] everywhere, naming ``name`` if not."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {actual.shape} != expected {expected.shape}")
    if not np.all(np.isfinite(actual)):
        bad = np.argwhere(~np.isfinite(actual))[0]
        raise AssertionError(f"{name}: non-finite value {actual[tuple(bad)]} at {tuple(bad)}")
    error = np.abs(actual - expected).reshape(actual.shape[0], -1)
    excess = error / tolerance[:, None]
    if np.any(excess > 1.0):
        row, column = np.unravel_index(np.argmax(excess), excess.shape)
        raise AssertionError(
            f"{name}: |difference| {_fmt(error[row, column])} at batch row {int(row)} exceeds "
            f"the rounding tolerance {_fmt(tolerance[row])} ({_fmt(excess[row, column])}× over)"
            + (f"; {hint}" if hint else "")
        )


# ------------------------------------------------------------------------------------------------
# Jacobians
# ------------------------------------------------------------------------------------------------


def batch_jacobian(transform: Transform, params: Params, x: Array, context=None) -> np.ndarray:
    """The Jacobian of ``transform``'s output w.r.t. the whole batch, shape (B, E, B, E).

    ``E`` is the flattened event size. For a bijector that treats rows independently the
    off-diagonal blocks ``[i, :, j, :]`` (i ≠ j) are zero and block ``[i, :, i, :]`` is the
    event Jacobian of row ``i``. Costs ``B·E`` forward-mode passes.
    """
    batch, size = x.shape[0], math.prod(x.shape[1:])
    flat = lambda v: transform(params, v.reshape(x.shape), context)[0].reshape(batch * size)
    jacobian = jax.jit(jax.jacfwd(flat))(x.reshape(batch * size))
    return np.asarray(jacobian, np.float64).reshape(batch, size, batch, size)


def _diagonal_blocks(jacobian: np.ndarray) -> np.ndarray:
    rows = np.arange(jacobian.shape[0])
    return jacobian[rows, :, rows, :]  # (B, E, E)


def _amplification(blocks: np.ndarray) -> np.ndarray:
    """A = max(κ, ‖J‖, ‖J⁻¹‖) per Jacobian block (B, E, E), inf where J is singular."""
    singular_values = np.linalg.svd(blocks, compute_uv=False)
    largest, smallest = singular_values[:, 0], singular_values[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.maximum.reduce([largest / smallest, largest, 1.0 / smallest])


def jacobian_amplification(
    transform: Transform, params: Params, x: Array, context: Array | None = None
) -> np.ndarray:
    """``A_i = max(κ(J_i), ‖J_i‖, ‖J_i⁻¹‖)`` of ``transform``'s event Jacobian at each row: (B,).

    The factor by which the map (or its inverse) can amplify rounding errors, as used by
    :func:`check_bijector`'s tolerance policy. Row Jacobians by ``vmap(jacfwd)``, so it scales to
    large batches of small events.
    """
    event_shape, size = x.shape[1:], math.prod(x.shape[1:])

    def row_jacobian(row, ctx):
        ctx = None if ctx is None else ctx[None]
        flat = lambda v: transform(params, v.reshape((1, *event_shape)), ctx)[0].reshape(size)
        return jax.jacfwd(flat)(row.reshape(size))

    in_axes = (0, None if context is None else 0)
    blocks = jax.jit(jax.vmap(row_jacobian, in_axes=in_axes))(x, context)
    return _amplification(np.asarray(blocks, np.float64))


def assert_within_rounding(
    name: str, actual, expected, steps: int, dtype, amplification=1.0, magnitude=None
) -> None:
    """Assert ``|actual - expected| <= rounding_tolerance(...)`` elementwise, naming ``name``.

    ``magnitude`` defaults to ``|expected|``; ``amplification`` and ``magnitude`` broadcast
    against the values (pass per-row arrays with a trailing axis, e.g. ``A[:, None]``).
    """
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {actual.shape} != expected {expected.shape}")
    magnitude = np.abs(expected) if magnitude is None else magnitude
    tolerance = np.broadcast_to(
        rounding_tolerance(steps, dtype, amplification, magnitude), actual.shape
    )
    error = np.abs(actual - expected)
    if not np.all(error <= tolerance):  # NaN fails too
        index = np.unravel_index(np.nanargmax(error / tolerance), error.shape)
        raise AssertionError(
            f"{name}: |difference| {_fmt(error[index])} at {tuple(int(i) for i in index)} "
            f"exceeds the rounding tolerance {_fmt(tolerance[index])} ({steps} steps in "
            f"{jnp.dtype(dtype).name})"
        )


# ------------------------------------------------------------------------------------------------
# Precision handling
# ------------------------------------------------------------------------------------------------


def _cast_floats(tree, dtype):
    def cast(leaf):
        if isinstance(leaf, jax.Array | np.ndarray | float) and jnp.issubdtype(
            jnp.result_type(leaf), jnp.floating
        ):
            return jnp.asarray(leaf, dtype)
        return leaf

    return jax.tree_util.tree_map(cast, tree)


def _precision_context(precision: Precision):
    if precision == "float64":
        return jax.enable_x64(True)
    if precision == "float32":
        return contextlib.nullcontext()
    raise ValueError(f"precision must be 'float64' or 'float32', got {precision!r}")


# ------------------------------------------------------------------------------------------------
# The checks, one function per named property
# ------------------------------------------------------------------------------------------------


class _Case(NamedTuple):
    bijector: Bijector
    params: Params
    x: Array
    context: Array | None
    y: np.ndarray  # forward(x)
    forward_log_det: np.ndarray
    x_back: np.ndarray  # inverse(y)
    inverse_log_det: np.ndarray


def _check_shapes(name: str, transform: Transform, params: Params, value: Array, context) -> None:
    """Trace-time check (``eval_shape``): output shape and dtype of ``value``'s, log-det (B,)."""
    out, log_det = jax.eval_shape(transform, params, value, context)
    # A bijection keeps the batch and the event size; the event shape may change (squeeze).
    same_size = math.prod(out.shape[1:]) == math.prod(value.shape[1:])
    if out.shape[:1] != value.shape[:1] or not same_size:
        raise AssertionError(
            f"shape: {name} output {out.shape} from input {value.shape}: a bijector keeps the "
            f"batch axis and the number of entries per row"
        )
    if log_det.shape != value.shape[:1]:
        raise AssertionError(
            f"log-det shape: {name} log-det has shape {log_det.shape}, expected "
            f"({value.shape[0]},) (summed over every event axis)"
        )
    if out.dtype != value.dtype or log_det.dtype != value.dtype:
        raise AssertionError(
            f"dtype: {name} returned ({out.dtype}, {log_det.dtype}) for input {value.dtype}"
        )


def _check_singular(condition: np.ndarray, eps: float) -> None:
    """Refuse a Jacobian whose condition number is beyond 1/eps: no tolerance is meaningful."""
    singular = ~np.isfinite(condition) | (condition * eps > 1.0)
    if np.any(singular):
        row = int(np.argmax(singular))
        raise AssertionError(
            f"invertibility: the forward Jacobian is numerically singular at batch row {row} "
            f"(condition number {_fmt(condition[row])} > 1/eps = {_fmt(1 / eps)})"
        )


def _check_block_structure(name: str, jacobian: np.ndarray, eps: float, steps: int) -> None:
    """Off-diagonal blocks of the batch Jacobian must vanish: row i cannot depend on row j."""
    batch = jacobian.shape[0]
    off = np.abs(jacobian).max(axis=(1, 3))  # (B, B) largest entry of each block
    scale = np.max(np.abs(_diagonal_blocks(jacobian)))
    off[np.arange(batch), np.arange(batch)] = 0.0
    if np.any(off > steps * eps * (1.0 + scale)):
        i, j = np.unravel_index(np.argmax(off), off.shape)
        raise AssertionError(
            f"batch independence: {name} output row {int(i)} depends on input row {int(j)} "
            f"(|∂y_{int(i)}/∂x_{int(j)}| = {_fmt(off[i, j])}); rows of a batch must not mix"
        )


def _check_rows_alone(case: _Case, tolerance: _Tolerance) -> None:
    """Each row pushed through on its own gives the row of the full-batch result."""
    forward = jax.jit(case.bijector.forward)
    pieces = [
        forward(
            case.params,
            case.x[i : i + 1],
            None if case.context is None else case.context[i : i + 1],
        )
        for i in range(case.x.shape[0])
    ]
    y_alone = np.concatenate([np.asarray(p[0]) for p in pieces])
    log_det_alone = np.concatenate([np.asarray(p[1]) for p in pieces])
    hint = "a row's output changes with the other rows of its batch"
    _assert_rows_close(
        "batch independence (each row alone vs the full batch)",
        y_alone,
        case.y,
        tolerance.per_row(_row_max_abs(np.asarray(case.x), case.y)),
        hint,
    )
    _assert_rows_close(
        "batch independence of the log-det (each row alone vs the full batch)",
        log_det_alone,
        case.forward_log_det,
        _log_det_tolerance(tolerance, case),
        hint,
    )


def _log_det_tolerance(tolerance: _Tolerance, case: _Case) -> np.ndarray:
    event_size = math.prod(case.x.shape[1:])
    return tolerance.per_row(event_size + np.abs(case.forward_log_det))


def _check_round_trips(case: _Case, tolerance: _Tolerance) -> None:
    x = np.asarray(case.x)
    value_tolerance = tolerance.per_row(_row_max_abs(x, case.y))
    _assert_rows_close(
        "round trip inverse(forward(x))",
        case.x_back,
        x,
        value_tolerance,
        "the inverse does not undo the forward map here",
    )
    y_again, _ = jax.jit(case.bijector.forward)(case.params, jnp.asarray(case.x_back), case.context)
    _assert_rows_close("round trip forward(inverse(y))", y_again, case.y, value_tolerance)


def _check_log_dets(
    case: _Case, tolerance: _Tolerance, forward_jacobian: np.ndarray | None
) -> None:
    log_det_tolerance = _log_det_tolerance(tolerance, case)
    if forward_jacobian is not None:
        expected = np.linalg.slogdet(_diagonal_blocks(forward_jacobian))[1]
        _assert_rows_close(
            "forward log-det vs slogdet(jacfwd(forward))",
            case.forward_log_det,
            expected,
            log_det_tolerance,
        )
        inverse_jacobian = batch_jacobian(
            case.bijector.inverse, case.params, jnp.asarray(case.y), case.context
        )
        expected = np.linalg.slogdet(_diagonal_blocks(inverse_jacobian))[1]
        _assert_rows_close(
            "inverse log-det vs slogdet(jacfwd(inverse))",
            case.inverse_log_det,
            expected,
            log_det_tolerance,
        )
    _assert_rows_close(
        "log-det consistency: inverse log-det = -forward log-det",
        case.inverse_log_det,
        -case.forward_log_det,
        log_det_tolerance,
        "one of the two log-dets is wrong",
    )


def _check_jit_matches_eager(case: _Case, tolerance: _Tolerance) -> None:
    value_tolerance = tolerance.per_row(_row_max_abs(np.asarray(case.x), case.y))
    log_det_tolerance = _log_det_tolerance(tolerance, case)
    y_in = jnp.asarray(case.y)
    for name, transform, value in (
        ("forward", case.bijector.forward, case.x),
        ("inverse", case.bijector.inverse, y_in),
    ):
        with jax.disable_jit():
            eager_out, eager_log_det = transform(case.params, value, case.context)
        jit_out, jit_log_det = jax.jit(transform)(case.params, value, case.context)
        _assert_rows_close(f"jit vs eager: {name}", jit_out, eager_out, value_tolerance)
        _assert_rows_close(
            f"jit vs eager: {name} log-det", jit_log_det, eager_log_det, log_det_tolerance
        )


def _check_vmap(case: _Case, tolerance: _Tolerance) -> None:
    """vmap over two different batches equals two separate calls."""
    other_x = jnp.roll(case.x, 1, axis=0)
    other_context = None if case.context is None else jnp.roll(case.context, 1, axis=0)
    stacked_x = jnp.stack([case.x, other_x])
    stacked_context = None if case.context is None else jnp.stack([case.context, other_context])
    in_axes = (None, 0, None if case.context is None else 0)
    vmap_y, vmap_log_det = jax.jit(jax.vmap(case.bijector.forward, in_axes=in_axes))(
        case.params, stacked_x, stacked_context
    )
    other_y, other_log_det = jax.jit(case.bijector.forward)(case.params, other_x, other_context)
    value_tolerance = tolerance.per_row(_row_max_abs(np.asarray(case.x), case.y))
    log_det_tolerance = _log_det_tolerance(tolerance, case)
    rolled = lambda a: np.roll(a, 1, axis=0)
    for index, (y, log_det, rows) in enumerate(
        ((case.y, case.forward_log_det, lambda a: a), (other_y, other_log_det, rolled))
    ):
        _assert_rows_close(
            f"vmap: forward of batch {index} under vmap", vmap_y[index], y, rows(value_tolerance)
        )
        _assert_rows_close(
            f"vmap: forward log-det of batch {index} under vmap",
            vmap_log_det[index],
            log_det,
            rows(log_det_tolerance),
        )


def _other_context(context: Array) -> Array:
    rolled = jnp.roll(context, 1, axis=0)
    if bool(jnp.all(rolled == context)):  # identical rows: rolling changes nothing
        return context + 1
    return rolled


def _check_uses_context(case: _Case, tolerance: _Tolerance) -> None:
    y, log_det = jax.jit(case.bijector.forward)(case.params, case.x, _other_context(case.context))
    value_change = _row_max_abs(np.asarray(y) - case.y)
    log_det_change = np.abs(np.asarray(log_det) - case.forward_log_det)
    value_tolerance = tolerance.per_row(_row_max_abs(np.asarray(case.x), case.y))
    if np.all(value_change <= value_tolerance) and np.all(
        log_det_change <= _log_det_tolerance(tolerance, case)
    ):
        raise AssertionError(
            "context: the output does not change when the context does, so the layer ignores "
            "its context (check it with context=None if it is not meant to condition, and with "
            "perturbed or trained params: a zero-initialised conditioner ignores everything)"
        )


# ------------------------------------------------------------------------------------------------
# Public entry points
# ------------------------------------------------------------------------------------------------


def check_bijector(
    bijector: Bijector,
    x: Array,
    *,
    key: PRNGKey | None = None,
    params: Params | None = None,
    context: Array | None = None,
    precision: Precision = "float64",
    perturbation: float = 0.3,
    check_jacobian: bool = True,
) -> Params:
    """Assert the bijector contract on an example batch ``x`` of shape ``(B, *event)``, B >= 2.

    Properties checked, in this order (the first broken one is named in the error):

    1. **shape / dtype / log-det shape**: outputs keep ``x``'s batch axis, number of entries per
       row and dtype (the event shape may change, as in a squeeze); log-dets are (B,).
    2. **batch independence**: the full-batch Jacobian (B, E, B, E) is block diagonal, and every
       row pushed through alone gives its row of the full-batch result (this also catches mixing
       that autodiff cannot see, e.g. through ``stop_gradient``).
    3. **round trip**: ``inverse(forward(x)) = x`` and ``forward(inverse(y)) = y``.
    4. **forward log-det** and **inverse log-det**, each against ``slogdet`` of its own
       ``jacfwd`` Jacobian, so a wrong forward log-det is blamed on the forward pass; then
       **log-det consistency** (inverse = -forward), the only log-det check when
       ``check_jacobian=False``.
    5. **jit vs eager**: ``jax.jit(f)`` against ``f`` under ``jax.disable_jit()`` (so already
       jitted functions are really compared with op-by-op execution).
    6. **vmap**: ``vmap(forward)`` over two different batches equals two separate calls.
    7. **context** (when one is given): changing the context changes the output.

    Args:
      bijector: the bijector under test.
      x: a batch in the forward domain, ``(B, *event)`` with B >= 2.
      key: initialises params (``bijector.init``) when ``params`` is not given.
      params: check these params as they are (trained or hand-made) instead of initialising.
      context: (B, C) or None.
      precision: ``"float64"`` (default: x64 mode, everything cast) or ``"float32"``. See the
        module docstring for the tolerance policy of both.
      perturbation: when params come from ``init``, add N(0, perturbation²) noise to every float
        leaf before checking (a freshly initialised layer is usually the identity, where a wrong
        log-det hides). 0 checks the initialised params as they are. Ignored with ``params``.
      check_jacobian: compute full-batch Jacobians (B·E forward-mode passes each) for the
        block-structure and log-det checks and the condition numbers of the tolerance. Turn off
        for large events; tolerances then take A = 1.

    Returns:
      The params that were checked, in the precision of the checks.
    """
    if params is None and key is None:
        raise ValueError("check_bijector needs either params or a key to initialise them")
    if jnp.ndim(x) < 2 or jnp.shape(x)[0] < 2:
        raise ValueError(
            f"check_bijector needs x of shape (batch, *event) with batch >= 2 (rows must be "
            f"compared with each other); got shape {jnp.shape(x)}"
        )
    with _precision_context(precision):
        dtype = jnp.dtype(precision)
        x = jnp.asarray(x, dtype)
        context = None if context is None else _cast_floats(jnp.asarray(context), dtype)
        if params is None:
            init_key, noise_key = jax.random.split(key)
            params = _cast_floats(bijector.init(init_key, x, context), dtype)
            if perturbation:
                params = perturb(params, noise_key, perturbation)
        else:
            params = _cast_floats(params, dtype)
        _check_all(bijector, params, x, context, check_jacobian)
    return params


def _check_all(bijector, params, x, context, check_jacobian: bool) -> None:
    eps = float(jnp.finfo(x.dtype).eps)
    _check_shapes("forward", bijector.forward, params, x, context)
    y, forward_log_det = jax.jit(bijector.forward)(params, x, context)
    _check_shapes("inverse", bijector.inverse, params, y, context)
    x_back, inverse_log_det = jax.jit(bijector.inverse)(params, y, context)
    case = _Case(
        bijector,
        params,
        x,
        context,
        np.asarray(y),
        np.asarray(forward_log_det),
        np.asarray(x_back),
        np.asarray(inverse_log_det),
    )
    for name, value in (("forward", case.y), ("forward log-det", case.forward_log_det)):
        if not np.all(np.isfinite(value)):
            raise AssertionError(f"finite: {name} has non-finite values on a finite input")
    steps = max(
        rounding_steps(bijector.forward, params, x, context),
        rounding_steps(bijector.inverse, params, y, context),
    )
    forward_jacobian = None
    amplification = np.ones(x.shape[0])
    if check_jacobian:
        forward_jacobian = batch_jacobian(bijector.forward, params, x, context)
        blocks = _diagonal_blocks(forward_jacobian)
        _check_singular(np.linalg.cond(blocks), eps)
        _check_block_structure("forward", forward_jacobian, eps, steps)
        amplification = _amplification(blocks)
    tolerance = _Tolerance(x.dtype, steps, amplification)
    _check_rows_alone(case, tolerance)
    _check_round_trips(case, tolerance)
    _check_log_dets(case, tolerance, forward_jacobian)
    _check_jit_matches_eager(case, tolerance)
    _check_vmap(case, tolerance)
    if context is not None:
        _check_uses_context(case, tolerance)


def perturb(params: Params, key: PRNGKey, scale: float = 0.3) -> Params:
    """Add N(0, scale²) noise to every float leaf, moving a layer away from the identity."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, max(len(leaves), 1))
    noisy = [
        leaf + scale * jax.random.normal(k, jnp.shape(leaf), jnp.result_type(leaf))
        if jnp.issubdtype(jnp.result_type(leaf), jnp.floating)
        else leaf
        for k, leaf in zip(keys, leaves, strict=False)
    ]
    return jax.tree_util.tree_unflatten(treedef, noisy)


def assert_moments_match(
    samples, mean, covariance, num_standard_errors: float | None = None, *, false_fail_rate=1e-4
) -> None:
    """Assert the mean and covariance of independent samples (N, D) match the exact ones.

    Each entry may differ from the truth by ``k`` of its own Monte-Carlo standard error (the
    sample standard deviation of the per-sample terms over sqrt(N)); use independent draws,
    e.g. the final states of many chains, so that this error is valid. By default ``k`` is the
    two-sided normal quantile that keeps the chance of a false failure over all
    ``m = D + D(D+1)/2`` distinct checks below ``false_fail_rate`` (Bonferroni):
    ``k = Φ⁻¹(1 - false_fail_rate / (2m))``, e.g. 4.3 for D = 2 at 1e-4. Pass
    ``num_standard_errors`` to set ``k`` yourself.
    """
    samples = np.asarray(samples, np.float64)
    num, dim = samples.shape
    if num_standard_errors is None:
        num_checks = dim + dim * (dim + 1) // 2
        num_standard_errors = statistics.NormalDist().inv_cdf(
            1.0 - false_fail_rate / (2 * num_checks)
        )
    sample_mean = samples.mean(axis=0)
    mean_se = samples.std(axis=0, ddof=1) / np.sqrt(num)
    np.testing.assert_array_less(np.abs(sample_mean - mean), num_standard_errors * mean_se)
    centred = samples - sample_mean
    products = centred[:, :, None] * centred[:, None, :]  # per-sample contributions (N, D, D)
    covariance_se = products.std(axis=0, ddof=1) / np.sqrt(num)
    error = np.abs(products.mean(axis=0) - covariance)
    np.testing.assert_array_less(error, num_standard_errors * covariance_se)

"""Checks that any bijector, ours or a user's, should pass. Call them from your own tests::

    from nflows_jax.testing import check_bijector
    check_bijector(my_bijector, x, key=jax.random.PRNGKey(0))

Each failed check raises ``AssertionError`` naming the check and the worst deviation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nflows_jax.bijectors.base import Array, Bijector, Params, PRNGKey


def _close(name: str, actual, expected, atol: float, rtol: float) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {actual.shape} != expected {expected.shape}")
    if not np.all(np.isfinite(actual)):
        raise AssertionError(f"{name}: non-finite values {actual}")
    err = np.abs(actual - expected)
    bound = atol + rtol * np.abs(expected)
    if np.any(err > bound):
        worst = np.unravel_index(np.argmax(err - bound), err.shape)
        raise AssertionError(
            f"{name}: max |difference| {err.max():.3g} (at {worst}: {actual[worst]!r} vs "
            f"{expected[worst]!r}) exceeds atol={atol}, rtol={rtol}"
        )


def jacobian_log_det(transform, params: Params, x: Array, context: Array | None = None) -> Array:
    """log|det J| of ``transform`` at each row of ``x`` by ``jax.jacfwd`` + ``slogdet``: (B,).

    Each row is pushed through with a batch of one, so the Jacobian is over the event only.
    """
    event_shape = x.shape[1:]
    size = int(np.prod(event_shape))

    def single(row, ctx):
        ctx = None if ctx is None else ctx[None]
        flat_fn = lambda v: transform(params, v.reshape((1, *event_shape)), ctx)[0].reshape(size)
        return jnp.linalg.slogdet(jax.jacfwd(flat_fn)(row.reshape(size)))[1]

    if context is None:
        return jax.vmap(lambda row: single(row, None))(x)
    return jax.vmap(single)(x, context)


def check_bijector(
    bijector: Bijector,
    x: Array,
    *,
    key: PRNGKey | None = None,
    params: Params | None = None,
    context: Array | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    check_jacobian: bool = True,
) -> Params:
    """Assert the bijector contract on an example batch ``x`` of shape (B, *event).

    Checks, in order: output shapes; ``inverse(forward(x)) ≈ x`` and ``forward(inverse(x)) ≈ x``;
    the two log-dets are negatives of each other; the forward log-det equals
    ``slogdet(jacfwd(forward))`` row by row (skip with ``check_jacobian=False`` for large events);
    the same results under ``jax.jit`` and under ``jax.vmap`` over an extra leading axis; each row's
    output depends only on that row (no mixing across the batch).

    Pass ``params`` to check a trained or perturbed layer; otherwise they come from
    ``bijector.init(key, x, context)``. Freshly initialised layers are often the identity, where
    most bugs hide, so the library's own tests perturb params first. Returns the params used.
    """
    if params is None:
        if key is None:
            raise ValueError("check_bijector needs either params or a key to initialise them")
        params = bijector.init(key, x, context)
    batch = x.shape[0]

    y, fwd_log_det = bijector.forward(params, x, context)
    if y.shape != x.shape:
        raise AssertionError(f"forward: output shape {y.shape} != input shape {x.shape}")
    if fwd_log_det.shape != (batch,):
        raise AssertionError(f"forward: log-det shape {fwd_log_det.shape} != ({batch},)")

    x_back, inv_log_det = bijector.inverse(params, y, context)
    _close("round trip inverse(forward(x))", x_back, x, atol, rtol)
    _close("inverse log-det = -forward log-det", inv_log_det, -fwd_log_det, atol, rtol)

    y_again, _ = bijector.forward(params, x_back, context)
    _close("round trip forward(inverse(y))", y_again, y, atol, rtol)

    if check_jacobian:
        expected = jacobian_log_det(bijector.forward, params, x, context)
        _close("forward log-det vs slogdet(jacfwd)", fwd_log_det, expected, atol, rtol)

    jit_y, jit_log_det = jax.jit(bijector.forward)(params, x, context)
    _close("jit forward", jit_y, y, atol, rtol)
    _close("jit forward log-det", jit_log_det, fwd_log_det, atol, rtol)
    jit_x, _ = jax.jit(bijector.inverse)(params, y, context)
    _close("jit inverse", jit_x, x_back, atol, rtol)

    ctx_axes = None if context is None else 0
    stacked_ctx = None if context is None else context[None]
    vmap_y, vmap_log_det = jax.vmap(bijector.forward, in_axes=(None, 0, ctx_axes))(
        params, x[None], stacked_ctx
    )
    _close("vmap forward", vmap_y[0], y, atol, rtol)
    _close("vmap forward log-det", vmap_log_det[0], fwd_log_det, atol, rtol)

    first_ctx = None if context is None else context[:1]
    row_y, row_log_det = bijector.forward(params, x[:1], first_ctx)
    _close("batch independence (row 0 alone)", row_y, y[:1], atol, rtol)
    _close("batch independence log-det", row_log_det, fwd_log_det[:1], atol, rtol)
    return params


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


def assert_moments_match(samples, mean, covariance, num_standard_errors: float = 5.0) -> None:
    """Assert the mean and covariance of independent samples (N, D) match the exact ones.

    Each entry may differ from the truth by ``num_standard_errors`` of its own Monte-Carlo
    standard error (the sample standard deviation of the per-sample terms over sqrt(N)); use
    independent draws, e.g. the final states of many chains, so that this error is valid.
    """
    samples = np.asarray(samples, np.float64)
    num = samples.shape[0]
    sample_mean = samples.mean(axis=0)
    mean_se = samples.std(axis=0, ddof=1) / np.sqrt(num)
    np.testing.assert_array_less(np.abs(sample_mean - mean), num_standard_errors * mean_se)
    centred = samples - sample_mean
    products = centred[:, :, None] * centred[:, None, :]  # per-sample contributions (N, D, D)
    covariance_se = products.std(axis=0, ddof=1) / np.sqrt(num)
    error = np.abs(products.mean(axis=0) - covariance)
    np.testing.assert_array_less(error, num_standard_errors * covariance_se)

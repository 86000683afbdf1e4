"""Planar and radial flows (Rezende & Mohamed, 2015) with exact inverses.

Both act on vectors, ``x`` of shape (B, D), with log-dets (B,). Both take ``context`` and ignore
it. The maps below are the ``forward`` passes (base -> data); ``inverse`` (data -> base) is the
solve described after each.

Planar: ``y = x + û tanh(wᵀx + b)``. The raw ``u`` is mapped to ``û`` so that ``wᵀû ≥ -1``, which
makes the map invertible: ``û = u + (m(wᵀu) - wᵀu) w / ‖w‖²`` with ``m(a) = -1 + softplus(a)``,
so ``wᵀû = m(wᵀu) > -1``. The inverse reduces to one scalar equation per row: with ``a = wᵀx``,
``wᵀy = a + wᵀû tanh(a + b)``, whose right side is non-decreasing in ``a``; it is solved by a
bracketed (safeguarded) Newton iteration with a fixed number of steps, so it jits and vmaps.

Radial: ``y = x + β h(α, r) (x - z0)`` with ``r = ‖x - z0‖``, ``h = 1 / (α + r)``,
``α = softplus(raw_alpha) > 0`` and ``β = -α + softplus(raw_beta) ≥ -α`` (invertible). The inverse
solves a quadratic in ``r`` in closed form.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from nflows_jax.bijectors.base import Array, Bijector, PRNGKey, check_batched
from nflows_jax.formatting import show

# softplus(_LOG_E_MINUS_1) = 1, so wᵀu = _LOG_E_MINUS_1 gives m(wᵀu) = 0 and û ⊥ w.
_LOG_E_MINUS_1 = math.log(math.e - 1.0)
# Floor on ‖w‖² in û's denominator: only a degenerate w (‖w‖ < 1e-6) ever reaches it, and then
# wᵀû is a convex combination of wᵀu ≈ 0 and m(wᵀu) ≥ -1, so the constraint still holds.
_MIN_W_SQUARED = 1e-12


def _check_vector_input(x: Array, event_size: int, name: str, layer: str) -> None:
    check_batched(x, name)
    if x.shape[1:] != (event_size,):
        raise ValueError(
            f"{layer}(event_size={event_size}) needs {name} of shape (batch, {event_size}); "
            f"got {x.shape}"
        )


def _check_event_size(event_size: int, layer: str) -> None:
    if not isinstance(event_size, int) or event_size < 1:
        raise ValueError(f"{layer} needs an integer event_size >= 1, got {show(event_size)}")


class PlanarParams(NamedTuple):
    """Raw planar params: ``w`` (D,), ``u`` (D,) before the constraint, ``b`` ()."""

    w: Array
    u: Array
    b: Array


class PlanarTerms(NamedTuple):
    """Quantities derived from ``PlanarParams`` that every call needs."""

    u_hat: Array  # (D,) constrained u
    w_dot_u_hat: Array  # () wᵀû ≥ -1
    one_plus_w_dot_u_hat: Array  # () 1 + wᵀû ≥ 0, computed without cancellation


def planar_terms(params: PlanarParams) -> PlanarTerms:
    """Apply the invertibility constraint: ``û`` with ``wᵀû = m(wᵀu) = softplus(wᵀu) - 1``."""
    w, u, _ = params
    w_dot_u = w @ u
    w_squared = w @ w
    safe_w_squared = jnp.maximum(w_squared, _MIN_W_SQUARED)
    m = jax.nn.softplus(w_dot_u) - 1.0
    u_hat = u + ((m - w_dot_u) / safe_w_squared) * w
    # wᵀû = wᵀu + (m - wᵀu)·ratio with ratio = 1 except for degenerate w. Writing
    # 1 + wᵀû = (1 - ratio)(1 + wᵀu) + ratio·softplus(wᵀu) keeps 1 + wᵀû accurate when wᵀû ≈ -1
    # (where 1 + m would cancel); the log-det and the Newton slope both need it.
    ratio = w_squared / safe_w_squared
    one_plus_c = (1.0 - ratio) * (1.0 + w_dot_u) + ratio * jax.nn.softplus(w_dot_u)
    c = w_dot_u + (m - w_dot_u) * ratio
    return PlanarTerms(u_hat, c, one_plus_c)


def _planar_slope(tanh_z: Array, one_plus_c: Array) -> Array:
    """``1 + h'(z) wᵀû`` as ``t² + (1 - t²)(1 + wᵀû)``: non-negative terms, no cancellation.

    It is both |det ∂y/∂x| (matrix determinant lemma) and the slope of the scalar map
    ``a -> a + wᵀû tanh(a + b)``.
    """
    tanh_squared = tanh_z * tanh_z
    return tanh_squared + (1.0 - tanh_squared) * one_plus_c


def _solve_planar_scalar(
    target: Array, c: Array, b: Array, one_plus_c: Array, num_iterations: int
) -> Array:
    """Solve ``a + c tanh(a + b) = target`` for ``a`` elementwise, shape (B,).

    The left side is non-decreasing (slope ``_planar_slope ≥ 0`` because c ≥ -1) and the root
    lies in ``[target - |c|, target + |c|]`` since |tanh| ≤ 1. Each step shrinks that bracket
    with the sign of the residual and takes the Newton step when it lands strictly inside the
    bracket, the bisection midpoint otherwise: quadratic convergence where the slope is healthy,
    bisection's guarantee where it is not (c ≈ -1 near a + b = 0).
    """
    low, high = target - jnp.abs(c), target + jnp.abs(c)
    a = target - c * jnp.tanh(target + b)  # a fixed-point step: inside the bracket, often close
    state = (a, low, high, target, c, b, one_plus_c)
    return jax.lax.fori_loop(0, num_iterations, _bracketed_newton_step, state)[0]


def _bracketed_newton_step(_, state):
    """One step of ``_solve_planar_scalar``. A module-level function (constants ride in the
    state) so that eager calls reuse one compiled loop instead of recompiling a fresh closure."""
    a, low, high, target, c, b, one_plus_c = state
    tanh_z = jnp.tanh(a + b)
    residual = a + c * tanh_z - target
    low = jnp.where(residual < 0, a, low)
    high = jnp.where(residual > 0, a, high)
    slope = jnp.maximum(_planar_slope(tanh_z, one_plus_c), jnp.finfo(a.dtype).tiny)
    newton = a - residual / slope
    inside = (newton > low) & (newton < high)
    a = jnp.where(inside, newton, 0.5 * (low + high))
    return a, low, high, target, c, b, one_plus_c


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _planar_root(
    num_iterations: int, target: Array, c: Array, b: Array, one_plus_c: Array
) -> Array:
    """The root ``a`` of ``g(a) = a + c tanh(a + b) - target = 0``, shape (B,).

    Differentiated implicitly (``_planar_root_jvp``), not through the solver's iterations.
    ``one_plus_c`` is ``1 + c`` computed without cancellation; it only sets the slope's value.
    """
    return _solve_planar_scalar(target, c, b, one_plus_c, num_iterations)


@_planar_root.defjvp
def _planar_root_jvp(num_iterations, primals, tangents):
    # da = -(∂g/∂target dtarget + ∂g/∂c dc + ∂g/∂b db) / ∂g/∂a. The rule is written in terms of
    # the primal root ``a`` with differentiable ops, so differentiating it again (Hessians)
    # reuses this rule: exact derivatives of every order. ``one_plus_c`` carries the same
    # tangent as ``c`` by construction, so its own tangent is not used.
    target, c, b, one_plus_c = primals
    d_target, d_c, d_b, _ = tangents
    a = _planar_root(num_iterations, target, c, b, one_plus_c)
    tanh_z = jnp.tanh(a + b)
    floor = jnp.finfo(a.dtype).eps  # only matters where the slope vanishes (degenerate)
    slope = jnp.maximum(_planar_slope(tanh_z, one_plus_c), floor)
    d_a = (d_target - tanh_z * d_c - c * (1.0 - tanh_z * tanh_z) * d_b) / slope
    return a, d_a


def planar(event_size: int, num_iterations: int = 40) -> Bijector:
    """Planar flow ``y = x + û tanh(wᵀx + b)`` on (B, event_size), with an exact inverse.

    Args:
      event_size: D, the size of the single event axis.
      num_iterations: fixed number of safeguarded Newton steps in ``inverse``. 40 reaches float32
        resolution even when every step falls back to bisection with ``|wᵀû| ~ 100``.

    Params: ``PlanarParams(w, u, b)``. Init: ``w`` a random unit vector, ``u = log(e - 1) w + ε``
    with ε ~ N(0, 0.01²), ``b = 0``. That makes ``wᵀu ≈ log(e-1)``, so ``m(wᵀu) ≈ 0`` and
    ``û = O(0.01)``: the layer starts near the identity. (Small ``w`` and ``u`` would not: with
    ``wᵀu ≈ 0`` the constraint gives ``û ≈ -0.31 w/‖w‖²``, a large rank-one term.)

    ``forward`` log-det: ``log|1 + h'(wᵀx + b) ûᵀw|`` by the matrix determinant lemma, clamped at
    the smallest normal number before the log (it reaches 0 only in the limit wᵀû -> -1).
    ``inverse`` solves for ``a = wᵀx`` (see ``_solve_planar_scalar``); its derivatives come from
    the implicit-function theorem (``_planar_root``), never from the loop, and are exact to every
    order (``jax.hessian`` through ``inverse`` included).
    """
    _check_event_size(event_size, "planar")
    if num_iterations < 1:
        raise ValueError(f"planar needs num_iterations >= 1, got {num_iterations}")

    def init(key: PRNGKey, x: Array, context: Array | None = None) -> PlanarParams:
        del context
        _check_vector_input(x, event_size, "x", "planar")
        w_key, u_key = jax.random.split(key)
        w = jax.random.normal(w_key, (event_size,), x.dtype)
        w = w / jnp.linalg.norm(w)
        u = _LOG_E_MINUS_1 * w + 0.01 * jax.random.normal(u_key, (event_size,), x.dtype)
        return PlanarParams(w=w, u=u, b=jnp.zeros((), x.dtype))

    def forward(params: PlanarParams, x: Array, context: Array | None = None):
        del context
        _check_vector_input(x, event_size, "x", "planar")
        terms = planar_terms(params)
        tanh_z = jnp.tanh(x @ params.w + params.b)
        y = x + tanh_z[:, None] * terms.u_hat
        slope = _planar_slope(tanh_z, terms.one_plus_w_dot_u_hat)
        return y, jnp.log(jnp.maximum(slope, jnp.finfo(x.dtype).tiny))

    def inverse(params: PlanarParams, y: Array, context: Array | None = None):
        del context
        _check_vector_input(y, event_size, "y", "planar")
        terms = planar_terms(params)
        c, one_plus_c, b = terms.w_dot_u_hat, terms.one_plus_w_dot_u_hat, params.b
        target = y @ params.w
        a = _planar_root(num_iterations, target, c, b, one_plus_c)
        tanh_z = jnp.tanh(a + b)
        x = y - tanh_z[:, None] * terms.u_hat
        slope = _planar_slope(tanh_z, one_plus_c)
        return x, -jnp.log(jnp.maximum(slope, jnp.finfo(y.dtype).tiny))

    return Bijector(init, forward, inverse)


class RadialParams(NamedTuple):
    """Raw radial params: ``center`` z0 (D,), ``raw_alpha`` (), ``raw_beta`` ()."""

    center: Array
    raw_alpha: Array
    raw_beta: Array


def _safe_norm(v: Array) -> Array:
    """Row norms (B, D) -> (B,), with the squared norm clamped so sqrt's gradient stays finite."""
    return jnp.sqrt(jnp.maximum(jnp.sum(v * v, axis=1), jnp.finfo(v.dtype).tiny))


def radial(event_size: int) -> Bijector:
    """Radial flow ``y = x + β/(α + r) (x - z0)``, ``r = ‖x - z0‖``, on (B, event_size).

    Params: ``RadialParams(center, raw_alpha, raw_beta)`` with ``α = softplus(raw_alpha)`` and
    ``β = -α + softplus(raw_beta)``; write ``γ = α + β = softplus(raw_beta) > 0``. Init:
    ``center ~ N(0, I)`` (each layer of a ``repeat`` gets its own), ``raw_alpha = raw_beta = 0``,
    so ``β = 0``: exactly the identity.

    In terms of γ every factor is a ratio of positive sums (no cancellation):
    ``1 + βh = (γ + r)/(α + r)`` and ``1 + βh + βh'r = (r² + 2αr + αγ)/(α + r)²``, so
    ``forward`` (base x -> data y) returns
    ``log|det dy/dx| = (D-1) log((γ+r)/(α+r)) + log(r² + 2αr + αγ) - 2 log(α + r)``.
    ``inverse`` (data -> base, the negated log-det): ``s = ‖y - z0‖ = r (γ + r)/(α + r)``, i.e.
    ``r² + (γ - s) r - αs = 0``, whose positive root is taken in the form that avoids
    cancellation for either sign of ``γ - s``.
    """
    _check_event_size(event_size, "radial")

    def init(key: PRNGKey, x: Array, context: Array | None = None) -> RadialParams:
        del context
        _check_vector_input(x, event_size, "x", "radial")
        zero = jnp.zeros((), x.dtype)
        center = jax.random.normal(key, (event_size,), x.dtype)
        return RadialParams(center=center, raw_alpha=zero, raw_beta=zero)

    def constants(params: RadialParams) -> tuple[Array, Array]:
        return jax.nn.softplus(params.raw_alpha), jax.nn.softplus(params.raw_beta)

    def log_det_at(r: Array, alpha: Array, gamma: Array) -> Array:
        tiny = jnp.finfo(r.dtype).tiny
        log_alpha_r = jnp.log(alpha + r)
        radial_part = (event_size - 1) * (jnp.log(gamma + r) - log_alpha_r)
        along_part = jnp.log(jnp.maximum(r * r + 2.0 * alpha * r + alpha * gamma, tiny))
        return radial_part + along_part - 2.0 * log_alpha_r

    def forward(params: RadialParams, x: Array, context: Array | None = None):
        del context
        _check_vector_input(x, event_size, "x", "radial")
        alpha, gamma = constants(params)
        offset = x - params.center
        r = _safe_norm(offset)
        # x + βh (x - z0) rather than z0 + (x - z0)(γ + r)/(α + r): exactly x when β = 0.
        y = x + ((gamma - alpha) / (alpha + r))[:, None] * offset
        return y, log_det_at(r, alpha, gamma)

    def inverse(params: RadialParams, y: Array, context: Array | None = None):
        del context
        _check_vector_input(y, event_size, "y", "radial")
        alpha, gamma = constants(params)
        offset = y - params.center
        s = _safe_norm(offset)
        q = gamma - s
        tiny = jnp.finfo(y.dtype).tiny
        # sqrt(q² + 4αs) + |q| > 0; the root is (that)/2 if q ≤ 0, else 2αs/(that).
        root_plus_abs_q = jnp.sqrt(jnp.maximum(q * q + 4.0 * alpha * s, tiny)) + jnp.abs(q)
        r = jnp.where(
            q > 0, 2.0 * alpha * s / jnp.maximum(root_plus_abs_q, tiny), 0.5 * root_plus_abs_q
        )
        # x - z0 = (y - z0)(α + r)/(γ + r), written as a correction to y (exact when β = 0).
        x = y - ((gamma - alpha) / (gamma + r))[:, None] * offset
        return x, -log_det_at(r, alpha, gamma)

    return Bijector(init, forward, inverse)


__all__ = ["PlanarParams", "PlanarTerms", "RadialParams", "planar", "planar_terms", "radial"]

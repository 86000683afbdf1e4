"""MCMC warm-up that tunes itself, for many chains at once, ending in a fixed, valid kernel.

::

    warmup = window_adaptation(logdensity_fn, num_leapfrog_steps=10)     # Stan-style HMC warm-up
    result = warmup.run(key, positions, num_steps=1000)                  # positions (C, D)
    result.kernel        # a plain hmc(...) Kernel with the tuned, concrete parameters
    result.parameters    # {"step_size": (), "inverse_mass_matrix": (D,), "num_leapfrog_steps": L}
    samples = sample_chains(other_key, result.kernel, result.states.position, 1000)

    warmup = chees_adaptation(logdensity_fn)                             # ChEES-HMC
    result = warmup.run(key, positions, num_steps=500)                   # a jittered_hmc Kernel

Three pieces, all pure functions, jit- and vmap-compatible:

* :func:`dual_averaging` — the step size from a target acceptance rate (Nesterov's dual
  averaging as Hoffman & Gelman 2014 and Stan use it), iterating on log ε and returning the
  weighted average of the iterates. A non-finite acceptance statistic counts as 0 (a NaN from a
  diverging trajectory would otherwise poison every later iterate).
* Welford accumulators (:func:`welford_init`, :func:`welford_update`,
  :func:`welford_covariance`) of a diagonal or dense covariance, updated with a whole batch of
  chains at once (Chan et al.'s pairwise merge of a batch's mean and centred sums), with Stan's
  regularisation towards a small multiple of the identity.
* One warm-up driver, :func:`run_adaptation` (and its array-only core :func:`adapt`): a single
  ``lax.scan`` over warm-up steps whose body ``vmap``s the current kernel over chains and then
  updates ONE adaptation state from statistics of all chains (means over the chain axis), the
  chain keys being ``run.chain_keys(key, t, C)`` as in ``sample_chains``. With several devices the
  chain axis is sharded as in ``sample_chains`` and the cross-chain means become all-reduces.
  An :class:`Adaptation` is the driver's contract: ``init``, ``step``, ``parameters`` and
  ``build_kernel``; :func:`window_adaptation` and :func:`chees_adaptation` are two of them.

Adaptation is a warm-up only. What it returns is a plain kernel (``hmc`` or ``jittered_hmc``)
built from concrete parameter arrays, so the sampling phase is an ordinary, time-homogeneous (or,
with Halton jitter, deterministically cycling) MCMC kernel that leaves the target invariant: nothing
adapts after warm-up, and ``hmc(logdensity_fn, **result.parameters)`` is the same kernel.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from nflows_jax.formatting import show
from nflows_jax.sampling.base import Array, Kernel, LogDensityFn, PRNGKey
from nflows_jax.sampling.checks import check_positive_finite, check_step_size, ravel_position
from nflows_jax.sampling.hmc import (
    JITTERS,
    _jittered_parts,
    check_inverse_mass_matrix,
    hmc,
    jittered_hmc,
)
from nflows_jax.sampling.mh import rwmh
from nflows_jax.sampling.run import (
    _as_key,
    _chain_sharding,
    _maybe_report,
    _num_chains,
    _resolve_mesh,
    _validate_key,
    chain_keys,
)

__all__ = [
    "Adaptation",
    "AdaptationResult",
    "DualAveraging",
    "DualAveragingState",
    "WelfordState",
    "adapt",
    "chees_adaptation",
    "dual_averaging",
    "run_adaptation",
    "rwmh_adaptation",
    "welford_covariance",
    "welford_init",
    "welford_update",
    "window_adaptation",
    "window_schedule",
]


def _check_int(value: Any, name: str, low: int, who: str) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low:
        raise ValueError(f"{who}: {name} must be an int >= {low}, got {show(value)}")
    return int(value)


def _check_fraction(value: Any, name: str, who: str, *, closed: bool = False) -> float:
    value = float(value)
    if not (0.0 < value < 1.0 or (closed and value == 1.0)):
        raise ValueError(f"{who}: {name} must lie in (0, 1{']' if closed else ')'}, got {value}")
    return value


# ------------------------------------------------------------------------------------------------
# Dual averaging


class DualAveragingState(NamedTuple):
    """Dual averaging on ``x = log ε`` (all scalars).

    Attributes:
      log_step_size: the current iterate x_t (the step size to use next is ``exp`` of it).
      log_step_size_avg: the weighted average x̄_t, whose ``exp`` is the final step size.
      error_avg: H̄_t, the running average of ``target - acceptance``.
      count: t, the number of updates since (re)initialisation.
      mu: the shrinkage point, ``log(10 ε₀)``: early iterates are pulled towards a step size
        larger than the initial one, so that a too-small ε₀ is left quickly.
    """

    log_step_size: Array
    log_step_size_avg: Array
    error_avg: Array
    count: Array
    mu: Array


class DualAveraging(NamedTuple):
    """``init(step_size) -> state``, ``update(state, acceptance) -> state``,
    ``final(state) -> step_size``; pure and jittable."""

    init: Callable[[Array], DualAveragingState]
    update: Callable[[DualAveragingState, Array], DualAveragingState]
    final: Callable[[DualAveragingState], Array]


def dual_averaging(
    target_accept: float = 0.8, t0: float = 10.0, gamma: float = 0.05, kappa: float = 0.75
) -> DualAveraging:
    """Step-size adaptation by dual averaging (Hoffman & Gelman 2014, Algorithm 5; Stan's).

    With ``a_t`` the acceptance statistic observed with step size ``exp(x_{t-1})``::

        H̄_t = (1 - 1/(t + t0)) H̄_{t-1} + (target - a_t) / (t + t0)
        x_t = mu - √t / gamma · H̄_t
        x̄_t = t^{-kappa} x_t + (1 - t^{-kappa}) x̄_{t-1}

    ``H̄_t → 0`` drives the running mean acceptance to ``target``; the final step size is
    ``exp(x̄_t)``, the average of the iterates, which fluctuate with a spread that does not shrink.
    Stan's defaults: t0 = 10, gamma = 0.05, kappa = 0.75.

    Args:
      target_accept: δ in (0, 1).
      t0: > 0, damps the first iterations.
      gamma: > 0, how strongly x is shrunk towards mu.
      kappa: in (0.5, 1], the decay of the averaging weights.

    Returns:
      :class:`DualAveraging` ``(init, update, final)``. ``update`` takes a scalar acceptance
      statistic (e.g. the mean over chains); a NaN or ±inf statistic is read as 0 (reject) and
      values are clipped to [0, 1].
    """
    who = "dual_averaging"
    target_accept = _check_fraction(target_accept, "target_accept", who)
    check_positive_finite(t0, "t0", who)
    check_positive_finite(gamma, "gamma", who)
    if not 0.5 < float(kappa) <= 1.0:
        raise ValueError(f"{who}: kappa must lie in (0.5, 1], got {float(kappa)}")
    t0, gamma, kappa = float(t0), float(gamma), float(kappa)

    def init(step_size: Array) -> DualAveragingState:
        # The state keeps the step size's float dtype (float64 positions tune in float64).
        step_size = jnp.asarray(step_size)
        if not jnp.issubdtype(step_size.dtype, jnp.floating):
            step_size = step_size.astype(jnp.result_type(float))
        log_step_size = jnp.log(step_size)
        zero = jnp.zeros((), log_step_size.dtype)
        return DualAveragingState(log_step_size, zero, zero, zero, jnp.log(10.0) + log_step_size)

    def update(state: DualAveragingState, acceptance: Array) -> DualAveragingState:
        acceptance = jnp.asarray(acceptance, state.log_step_size.dtype)
        acceptance = jnp.clip(jnp.where(jnp.isfinite(acceptance), acceptance, 0.0), 0.0, 1.0)
        count = state.count + 1.0
        eta = 1.0 / (count + t0)
        error_avg = (1.0 - eta) * state.error_avg + eta * (target_accept - acceptance)
        log_step_size = state.mu - jnp.sqrt(count) / gamma * error_avg
        weight = count**-kappa
        log_step_size_avg = weight * log_step_size + (1.0 - weight) * state.log_step_size_avg
        return DualAveragingState(log_step_size, log_step_size_avg, error_avg, count, state.mu)

    def final(state: DualAveragingState) -> Array:
        # Before any update the average is empty: the current step size is the answer.
        return jnp.exp(jnp.where(state.count > 0, state.log_step_size_avg, state.log_step_size))

    return DualAveraging(init, update, final)


# ------------------------------------------------------------------------------------------------
# Welford covariance


class WelfordState(NamedTuple):
    """Running mean and centred sums of squares.

    Attributes:
      count: () number of draws seen (float, so that C · steps never overflows an int32).
      mean: (D,) their mean.
      m2: (D,) sums of squared deviations (diagonal) or (D, D) sums of outer products (dense).
    """

    count: Array
    mean: Array
    m2: Array


def welford_init(dim: int, dense: bool = False, dtype=jnp.float32) -> WelfordState:
    """An empty accumulator for (D,) draws; ``dense`` keeps the full (D, D) second moment."""
    dim = _check_int(dim, "dim", 1, "welford_init")
    m2 = jnp.zeros((dim, dim) if dense else (dim,), dtype)
    return WelfordState(jnp.zeros((), jnp.float32), jnp.zeros((dim,), dtype), m2)


def welford_update(state: WelfordState, x: Array) -> WelfordState:
    """Add draws ``x``: one (D,) or a batch (C, D) (all chains of a step: cross-chain statistics).

    A batch is merged in one go (Chan, Golub & LeVeque's pairwise update): with the batch's mean
    ``m_b`` and centred sums ``S_b``, ``δ = m_b - mean``, ``n' = n + C``::

        mean' = mean + δ C / n',   M2' = M2 + S_b + δ δᵀ n C / n'

    which is exactly the one-at-a-time Welford recursion's result, with C-fold fewer sequential
    steps and the centring done within the batch (no cancellation from raw second moments).
    """
    x = jnp.asarray(x)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] != state.mean.shape[0]:
        raise ValueError(
            f"welford_update: x must be (D,) or (C, D) with D = {state.mean.shape[0]}, "
            f"got shape {x.shape}"
        )
    x = x.astype(state.mean.dtype)
    batch = jnp.asarray(x.shape[0], jnp.float32)
    batch_mean = jnp.mean(x, axis=0)
    centred = x - batch_mean
    count = state.count + batch
    delta = batch_mean - state.mean
    mean = state.mean + delta * (batch / count)
    cross = (state.count * batch / count).astype(x.dtype)
    if state.m2.ndim == 2:
        m2 = state.m2 + centred.T @ centred + cross * jnp.outer(delta, delta)
    else:
        m2 = state.m2 + jnp.sum(centred**2, axis=0) + cross * delta**2
    return WelfordState(count, mean, m2)


def welford_covariance(state: WelfordState, regularize: bool = True) -> Array:
    """The sample covariance (unbiased, ``M2 / (n - 1)``): (D,) diagonal or (D, D).

    With ``regularize`` (Stan's): ``n / (n + 5) · cov + 1e-3 · 5 / (n + 5) · I``, which keeps the
    estimate positive definite from few draws and is negligible for many. Fewer than two draws
    give the regularised identity scale (no information about the covariance).
    """
    n = state.count
    covariance = state.m2 / jnp.maximum(n - 1.0, 1.0).astype(state.m2.dtype)
    if not regularize:
        return covariance
    shrink = (n / (n + 5.0)).astype(covariance.dtype)
    jitter = (1e-3 * 5.0 / (n + 5.0)).astype(covariance.dtype)
    if covariance.ndim == 2:
        return shrink * covariance + jitter * jnp.eye(covariance.shape[0], dtype=covariance.dtype)
    return shrink * covariance + jitter


# ------------------------------------------------------------------------------------------------
# The shared warm-up driver


class AdaptationResult(NamedTuple):
    """What a warm-up returns (C chains, N warm-up steps).

    Attributes:
      states: the chain states after warm-up, leaves (C, ...): the state type of ``kernel``, ready
        to continue with ``kernel`` (``sample_chains(key, kernel, states.position, ...)``, or
        stepping ``states`` directly, which also keeps a jittered kernel's step counter).
      kernel: the fixed :class:`~nflows_jax.sampling.base.Kernel` to sample with, built from
        ``parameters`` (concrete arrays): nothing in it adapts.
      parameters: dict of the tuned parameters, keyword arguments of the kernel's constructor
        (``hmc(logdensity_fn, **parameters)`` for window adaptation, ``jittered_hmc`` for ChEES).
      trace: dict of per-warm-up-step arrays (N,): ``step_size`` (the one used at that step),
        ``acceptance_rate`` (mean over chains), ``num_divergent``, ``num_gradient_evaluations``
        (summed over chains), and ``trajectory_length`` for ChEES; for figures and accounting.
      num_gradient_evaluations: total log-density gradient evaluations of the warm-up over all
        chains (including each chain's initial one), a Python int, for ESS-per-gradient budgets.
    """

    states: Any
    kernel: Kernel
    parameters: dict[str, Any]
    trace: dict[str, Array]
    num_gradient_evaluations: int


class Adaptation(NamedTuple):
    """A warm-up algorithm in the form the driver runs (all functions pure, for ALL chains).

    Attributes:
      init: ``init(positions) -> (chain_states, adaptation_state)`` for positions with leading
        chain axis (C, ...); ``num_steps`` is passed as a second, static argument.
      step: ``step(keys, t, chain_states, adaptation_state, num_steps) -> (chain_states,
        adaptation_state, trace_row)``: one warm-up step of every chain (keys (C,), t the traced
        step index, num_steps static), the adaptation state updated from all chains;
        ``trace_row`` is a dict of scalars, stacked into ``AdaptationResult.trace``.
      parameters: ``parameters(adaptation_state) -> dict`` of the final, frozen parameters that
        are arrays (computed inside the compiled warm-up).
      build_kernel: ``build_kernel(**parameters) -> Kernel``, called outside ``jit`` with the
        concrete array parameters and the ``fixed_parameters``.
      fixed_parameters: ``((name, value), ...)``, the kernel's static arguments (Python ints,
        strings) that the warm-up does not tune; a tuple so that the Adaptation stays hashable.
    """

    init: Callable[..., tuple[Any, Any]]
    step: Callable[..., tuple[Any, Any, dict[str, Array]]]
    parameters: Callable[[Any], dict[str, Any]]
    build_kernel: Callable[..., Kernel]
    fixed_parameters: tuple[tuple[str, Any], ...] = ()

    def run(
        self,
        key: PRNGKey,
        positions: Any,
        num_steps: int,
        *,
        progress: bool = False,
        shard: bool | None = None,
        num_chains: int | None = None,
    ) -> AdaptationResult:
        """``run_adaptation(key, self, positions, num_steps, ...)``; see there."""
        return run_adaptation(
            key,
            self,
            positions,
            num_steps,
            progress=progress,
            shard=shard,
            num_chains=num_chains,
        )


@functools.partial(jax.jit, static_argnames=("adaptation", "num_steps", "progress", "mesh"))
def _adapt(
    key: PRNGKey,
    positions: Any,
    *,
    adaptation: Adaptation,
    num_steps: int,
    progress: bool,
    mesh: Mesh | None,
) -> tuple[Any, dict[str, Any], dict[str, Array]]:
    num_chains = jax.tree_util.tree_leaves(positions)[0].shape[0]
    positions = _chain_sharding(mesh, positions)
    chain_states, adaptation_state = adaptation.init(positions, num_steps)
    chain_states = _chain_sharding(mesh, chain_states)

    def body(carry, t):
        chain_states, adaptation_state = carry
        keys = chain_keys(key, t, num_chains)
        chain_states, adaptation_state, row = adaptation.step(
            keys, t, chain_states, adaptation_state, num_steps
        )
        if progress:
            _maybe_report(t, num_steps)
        return (_chain_sharding(mesh, chain_states), adaptation_state), row

    (chain_states, adaptation_state), trace = jax.lax.scan(
        body, (chain_states, adaptation_state), jnp.arange(num_steps)
    )
    return chain_states, adaptation.parameters(adaptation_state), trace


def _resolve_adaptation_mesh(shard: bool | None, num_chains: int) -> Mesh | None:
    """``run._resolve_mesh``, except that C must split evenly over the devices: padding chains
    (as ``sample_chains`` does) would enter the cross-chain statistics."""
    mesh = _resolve_mesh(shard)
    if mesh is None or num_chains % mesh.size == 0:
        return mesh
    if shard:
        raise ValueError(
            f"shard=True needs a number of chains divisible by the {mesh.size} devices (padding "
            f"chains would bias the cross-chain statistics); got {num_chains} chains"
        )
    return None  # auto mode: run unsharded rather than bias the adaptation


def _check_run_arguments(key, adaptation, positions, num_steps, num_chains) -> tuple[Any, int]:
    if not isinstance(adaptation, Adaptation):
        raise ValueError(f"adaptation must be an Adaptation, got {type(adaptation).__name__}")
    _check_int(num_steps, "num_steps", 1, "run_adaptation")
    key = _as_key(key)
    _validate_key(key)
    if num_chains is not None:
        num_chains = _check_int(num_chains, "num_chains", 1, "run_adaptation")
    return key, _num_chains(positions, num_chains)


def adapt(
    key: PRNGKey,
    adaptation: Adaptation,
    positions: Any,
    num_steps: int,
    *,
    progress: bool = False,
    shard: bool | None = False,
    num_chains: int | None = None,
) -> tuple[Any, dict[str, Any], dict[str, Array]]:
    """The warm-up as arrays only: ``(states, parameters, trace)``; works under ``vmap``/``jit``.

    The same computation as :func:`run_adaptation` without building the kernel (a kernel is a
    function, which cannot leave a ``vmap``): vmap it over keys for independent replicate
    warm-ups, then build ``adaptation.build_kernel(**parameters,
    **dict(adaptation.fixed_parameters))`` per replicate. ``parameters`` holds the array
    parameters only. ``shard`` defaults to False here (an outer vmap places its own arrays).
    """
    key, num_chains = _check_run_arguments(key, adaptation, positions, num_steps, num_chains)
    mesh = _resolve_adaptation_mesh(shard, num_chains)
    return _adapt(
        key,
        positions,
        adaptation=adaptation,
        num_steps=int(num_steps),
        progress=bool(progress),
        mesh=mesh,
    )


def run_adaptation(
    key: PRNGKey,
    adaptation: Adaptation,
    positions: Any,
    num_steps: int,
    *,
    progress: bool = False,
    shard: bool | None = None,
    num_chains: int | None = None,
) -> AdaptationResult:
    """Run ``num_steps`` warm-up steps of C chains and freeze the result into a kernel.

    One jitted ``lax.scan`` over steps; each step vmaps the current kernel over the chains
    (chain i at step t uses ``run.chain_keys(key, t, C)[i]``, as ``sample_chains`` does) and
    updates the shared adaptation state from all chains. Use another key for the sampling phase
    (e.g. ``jax.random.split``): ``sample_chains`` with the same key would replay the warm-up's
    random numbers.

    Args:
      key: one PRNG key or an int seed (as for ``sample_chains``).
      adaptation: e.g. ``window_adaptation(...)`` or ``chees_adaptation(...)``. Compilation is
        cached on it: reuse the same object across calls.
      positions: initial positions (C, D) or a pytree with leading chain axis C; over-dispersed
        starts are fine (the early warm-up moves them), identical ones make cross-chain estimates
        degenerate at first.
      num_steps: warm-up steps N ≥ 1 (static: it sets the window schedule).
      progress: tqdm bar from inside the scan.
      shard: as for ``sample_chains`` (None: shard the chains over all devices of a single
        process), except that C must be a multiple of the device count to shard (auto mode
        otherwise runs unsharded; True raises).
      num_chains: optional C (makes 1-D positions mean C scalar chains, as in ``sample_chains``).

    Returns:
      :class:`AdaptationResult`.
    """
    key, num_chains = _check_run_arguments(key, adaptation, positions, num_steps, num_chains)
    mesh = _resolve_adaptation_mesh(shard, num_chains)
    states, parameters, trace = _adapt(
        key,
        positions,
        adaptation=adaptation,
        num_steps=int(num_steps),
        progress=bool(progress),
        mesh=mesh,
    )
    parameters = {**parameters, **dict(adaptation.fixed_parameters)}
    kernel = adaptation.build_kernel(**parameters)
    # Summed on the host in int64: C · N · L overflows int32 for long ChEES warm-ups.
    per_step = np.asarray(trace["num_gradient_evaluations"], np.int64)
    num_gradients = int(per_step.sum()) + num_chains  # + each chain's initial gradient
    return AdaptationResult(states, kernel, parameters, trace, num_gradients)


# ------------------------------------------------------------------------------------------------
# Shared pieces of the two HMC warm-ups


def _flat_positions(positions: Any) -> Array:
    """(C, D) raveled positions of a batch of chains (``ravel_position`` order)."""
    return jax.vmap(lambda p: ravel_position(p, "adaptation")[0])(positions)


def _flat_size(positions: Any) -> tuple[int, Any]:
    first = jax.tree_util.tree_map(lambda leaf: leaf[0], positions)
    flat, _ = ravel_position(first, "adaptation")
    return flat.shape[0], flat.dtype


def _safe_acceptance(acceptance_prob: Array) -> Array:
    """Acceptance probabilities with NaN/inf read as 0, so one broken chain cannot poison the
    cross-chain statistics."""
    return jnp.where(jnp.isfinite(acceptance_prob), jnp.clip(acceptance_prob, 0.0, 1.0), 0.0)


def _select(flag: Array, new: Any, old: Any) -> Any:
    return jax.tree_util.tree_map(lambda a, b: jnp.where(flag, a, b), new, old)


def _initial_inverse_mass(inverse_mass_matrix, dim, dense, dtype, who) -> Array:
    """The starting M⁻¹ for ``dim`` coordinates (its values were checked at construction)."""
    if inverse_mass_matrix is None:
        return jnp.eye(dim, dtype=dtype) if dense else jnp.ones((dim,), dtype)
    inverse_mass = jnp.asarray(inverse_mass_matrix)
    expected = (dim, dim) if dense else (dim,)
    if inverse_mass.shape != expected:
        raise ValueError(
            f"{who}: initial inverse_mass_matrix must have shape {expected} for "
            f"{'dense' if dense else 'diagonal'} adaptation of {dim} coordinates, got "
            f"{inverse_mass.shape}"
        )
    return inverse_mass.astype(dtype)


# ------------------------------------------------------------------------------------------------
# Stan-style windowed adaptation


def window_schedule(
    num_steps: int, init_buffer: int = 75, base_window: int = 25, term_buffer: int = 50
) -> list[tuple[int, int]]:
    """Stan's slow (mass-matrix) windows ``[(start, end), ...]`` of a warm-up of ``num_steps``.

    Warm-up = an initial fast window (``init_buffer`` steps: step size only, while the chains
    find the typical set), slow windows of doubling length starting at ``base_window`` (the
    mass matrix is estimated from each window's draws and set at its end), and a final fast
    window (``term_buffer``: the step size for the final mass matrix). The last slow window is
    stretched to end where the final fast window begins whenever the next doubling would not fit.
    If the three defaults do not fit in ``num_steps``, Stan's proportions are used instead: 15%
    initial, 10% final, the rest one slow window. Fewer than 20 steps: no slow window.
    """
    num_steps = _check_int(num_steps, "num_steps", 1, "window_schedule")
    if num_steps < 20:
        return []
    if init_buffer + base_window + term_buffer > num_steps:
        init_buffer = int(0.15 * num_steps)
        term_buffer = int(0.1 * num_steps)
        base_window = num_steps - init_buffer - term_buffer
    end_slow = num_steps - term_buffer
    windows, start, size = [], init_buffer, base_window
    while start < end_slow:
        end = start + size
        if end + 2 * size > end_slow:  # the next window would not fit: this one takes the rest
            end = end_slow
        windows.append((start, end))
        start, size = end, 2 * size
    return windows


def _schedule_flags(num_steps: int, windows: list[tuple[int, int]]) -> tuple[Array, Array]:
    """(N,) bools: does step t's draw enter the Welford estimate; does a slow window end at t."""
    collect = np.zeros(num_steps, bool)
    window_end = np.zeros(num_steps, bool)
    for start, end in windows:
        collect[start:end] = True
        window_end[end - 1] = True
    return jnp.asarray(collect), jnp.asarray(window_end)


class WindowAdaptationState(NamedTuple):
    """The state shared by all chains in :func:`window_adaptation`.

    Attributes:
      step_size: () the step size the next warm-up step uses.
      inverse_mass_matrix: (D,) or (D, D) the mass matrix the next step uses.
      dual_averaging: :class:`DualAveragingState` of the current stage (restarted at each
        mass-matrix update).
      welford: :class:`WelfordState` of the current slow window.
    """

    step_size: Array
    inverse_mass_matrix: Array
    dual_averaging: DualAveragingState
    welford: WelfordState


def window_adaptation(
    logdensity_fn: LogDensityFn,
    num_leapfrog_steps: int,
    *,
    target_accept: float = 0.8,
    dense_mass: bool = False,
    adapt_mass_matrix: bool = True,
    initial_step_size: float = 1.0,
    inverse_mass_matrix: Array | None = None,
    init_buffer: int = 75,
    base_window: int = 25,
    term_buffer: int = 50,
    t0: float = 10.0,
    gamma: float = 0.05,
    kappa: float = 0.75,
    divergence_threshold: float = 1000.0,
) -> Adaptation:
    """Stan's windowed warm-up of HMC with ``num_leapfrog_steps`` steps, across many chains.

    Every warm-up step runs ``hmc`` on all chains with the current step size and mass matrix,
    then

    * dual averaging updates the step size from the MEAN acceptance probability over chains (the
      cross-chain analogue of Stan's per-chain statistic: one noisy statistic per step, C times
      less noisy);
    * inside a slow window (:func:`window_schedule`), the chains' new positions, all C of them,
      enter a Welford estimate of the covariance; at a window's end that estimate (Stan's
      regularisation) becomes the inverse mass matrix, the accumulator is reset and dual
      averaging restarts from the current step size (``mu = log(10 ε)``, as Stan restarts it;
      Stan's step-size doubling heuristic is not run, the restarted dual averaging finds the
      scale within a few dozen steps and the fast windows exist for that).

    The final step size is the dual-averaging average of the last stage (the final fast window,
    run with the final mass matrix). With ``adapt_mass_matrix=False`` the whole warm-up is one
    dual-averaging run with the fixed ``inverse_mass_matrix``: plain step-size adaptation.

    Args:
      logdensity_fn: log-density of one position -> scalar, differentiable.
      num_leapfrog_steps: L of the HMC kernel (static, not adapted).
      target_accept: the acceptance rate dual averaging aims for (Stan's 0.8).
      dense_mass: estimate a dense (D, D) inverse mass matrix instead of its diagonal.
      adapt_mass_matrix: estimate the mass matrix at all (else step size only).
      initial_step_size: ε₀ > 0.
      inverse_mass_matrix: the starting M⁻¹ ((D,) or (D, D) to match ``dense_mass``), default the
        identity.
      init_buffer, base_window, term_buffer: Stan's schedule (see :func:`window_schedule`).
      t0, gamma, kappa: dual-averaging constants (see :func:`dual_averaging`).
      divergence_threshold: as in ``hmc``.

    Returns:
      An :class:`Adaptation`; ``.run(key, positions (C, D), num_steps)`` returns an
      :class:`AdaptationResult` whose kernel is ``hmc(logdensity_fn, **parameters)`` with
      parameters ``step_size``, ``num_leapfrog_steps``, ``inverse_mass_matrix`` (and
      ``divergence_threshold``).
    """
    who = "window_adaptation"
    num_leapfrog_steps = _check_int(num_leapfrog_steps, "num_leapfrog_steps", 1, who)
    check_step_size(initial_step_size, "initial_step_size", who)
    check_positive_finite(divergence_threshold, "divergence_threshold", who)
    if inverse_mass_matrix is not None:
        inverse_mass_matrix = check_inverse_mass_matrix(inverse_mass_matrix, who)
    divergence_threshold = float(divergence_threshold)

    def kernel_at(step_size, inverse_mass) -> Kernel:
        return hmc(
            logdensity_fn,
            step_size,
            num_leapfrog_steps,
            inverse_mass,
            divergence_threshold=divergence_threshold,
        )

    def build_kernel(**params) -> Kernel:
        return hmc(logdensity_fn, **params)

    fixed = (
        ("num_leapfrog_steps", num_leapfrog_steps),
        ("divergence_threshold", divergence_threshold),
    )
    return _windowed_adaptation(
        kernel_at,
        lambda infos: jnp.sum(infos.num_leapfrog_steps),
        lambda step_size, inverse_mass: {
            "step_size": step_size,
            "inverse_mass_matrix": inverse_mass,
        },
        build_kernel,
        fixed,
        dual_averaging(target_accept, t0, gamma, kappa),
        window_schedule_args=(init_buffer, base_window, term_buffer),
        dense_mass=bool(dense_mass),
        adapt_mass_matrix=adapt_mass_matrix,
        initial_step_size=initial_step_size,
        inverse_mass_matrix=inverse_mass_matrix,
        who=who,
    )


def _windowed_adaptation(
    kernel_at: Callable[[Array, Array], Kernel],
    evaluations: Callable[[Any], Array],
    final_parameters: Callable[[Array, Array], dict[str, Any]],
    build_kernel: Callable[..., Kernel],
    fixed: tuple[tuple[str, Any], ...],
    averaging: DualAveraging,
    *,
    window_schedule_args: tuple[int, int, int],
    dense_mass: bool,
    adapt_mass_matrix: bool,
    initial_step_size: float,
    inverse_mass_matrix: Array | None,
    who: str,
) -> Adaptation:
    """Stan's windowed warm-up of any kernel with a step size and a metric (the shared core of
    :func:`window_adaptation` and :func:`rwmh_adaptation`).

    ``kernel_at(step_size, inverse_mass)`` is the kernel of one warm-up step, ``evaluations(infos)``
    the target evaluations that step cost over all chains, ``final_parameters(step_size,
    inverse_mass)`` the tuned keyword arguments of ``build_kernel``.
    """
    names = ("init_buffer", "base_window", "term_buffer")
    for name, value in zip(names, window_schedule_args, strict=True):
        _check_int(value, name, 1 if name == "base_window" else 0, who)

    def schedule(num_steps: int) -> tuple[Array, Array]:
        windows = window_schedule(num_steps, *window_schedule_args)
        return _schedule_flags(num_steps, windows if adapt_mass_matrix else [])

    def init(positions, num_steps):
        dim, dtype = _flat_size(positions)
        inverse_mass = _initial_inverse_mass(inverse_mass_matrix, dim, dense_mass, dtype, who)
        step_size = jnp.asarray(initial_step_size, dtype)
        chain_states = jax.vmap(kernel_at(step_size, inverse_mass).init)(positions)
        state = WindowAdaptationState(
            step_size, inverse_mass, averaging.init(step_size), welford_init(dim, dense_mass, dtype)
        )
        return chain_states, state

    def step(keys, t, chain_states, state: WindowAdaptationState, num_steps):
        collect, window_end = schedule(num_steps)
        kernel = kernel_at(state.step_size, state.inverse_mass_matrix)
        chain_states, infos = jax.vmap(kernel.step)(keys, chain_states)
        acceptance = _safe_acceptance(infos.acceptance_prob)
        da_state = averaging.update(state.dual_averaging, jnp.mean(acceptance))
        step_size = jnp.exp(da_state.log_step_size)
        welford = _select(
            collect[t],
            welford_update(state.welford, _flat_positions(chain_states.position)),
            state.welford,
        )
        # A slow window ends: its estimate becomes the metric, the accumulator restarts, and so
        # does dual averaging (the old step size was tuned to the old metric).
        ends = window_end[t]
        inverse_mass = jnp.where(ends, welford_covariance(welford), state.inverse_mass_matrix)
        dim = inverse_mass.shape[0]
        welford = _select(ends, welford_init(dim, dense_mass, inverse_mass.dtype), welford)
        da_state = _select(ends, averaging.init(step_size), da_state)
        divergent = getattr(infos, "is_divergent", jnp.zeros_like(acceptance, bool))
        row = {
            "step_size": state.step_size,
            "acceptance_rate": jnp.mean(acceptance),
            "num_divergent": jnp.sum(divergent.astype(jnp.int32)),
            "num_gradient_evaluations": evaluations(infos),
        }
        return chain_states, WindowAdaptationState(step_size, inverse_mass, da_state, welford), row

    def parameters(state: WindowAdaptationState) -> dict[str, Any]:
        return final_parameters(averaging.final(state.dual_averaging), state.inverse_mass_matrix)

    return Adaptation(init, step, parameters, build_kernel, fixed)


def rwmh_adaptation(
    logdensity_fn: LogDensityFn,
    *,
    target_accept: float = 0.234,
    initial_step_size: float = 0.5,
    init_buffer: int = 75,
    base_window: int = 25,
    term_buffer: int = 50,
    t0: float = 10.0,
    gamma: float = 0.05,
    kappa: float = 0.75,
) -> Adaptation:
    """Stan's windowed warm-up applied to random-walk Metropolis, across many chains.

    The proposal is ``x + ε · sqrt(diag Σ) · z``: the diagonal covariance Σ is estimated in slow
    windows from all chains (as :func:`window_adaptation` estimates M⁻¹) and ε by dual averaging
    on the mean acceptance over chains, aiming at 0.234 (Roberts, Gelman & Gilks 1997, the
    optimum in high dimension). The result's kernel is ``rwmh(logdensity_fn, scale)`` with
    ``parameters = {"scale": (D,)}``; ``num_gradient_evaluations`` counts log-density
    evaluations (one per chain per step), the cost unit RWMH has.
    """
    who = "rwmh_adaptation"
    check_step_size(initial_step_size, "initial_step_size", who)

    def kernel_at(step_size, inverse_mass) -> Kernel:
        return rwmh(logdensity_fn, step_size * jnp.sqrt(inverse_mass))

    def build_kernel(scale) -> Kernel:
        return rwmh(logdensity_fn, scale)

    return _windowed_adaptation(
        kernel_at,
        lambda infos: jnp.asarray(infos.acceptance_prob.shape[0], jnp.int32),
        lambda step_size, inverse_mass: {"scale": step_size * jnp.sqrt(inverse_mass)},
        build_kernel,
        (),
        dual_averaging(target_accept, t0, gamma, kappa),
        window_schedule_args=(init_buffer, base_window, term_buffer),
        dense_mass=False,
        adapt_mass_matrix=True,
        initial_step_size=initial_step_size,
        inverse_mass_matrix=None,
        who=who,
    )


# ------------------------------------------------------------------------------------------------
# ChEES-HMC


class CheesAdaptationState(NamedTuple):
    """The state shared by all chains in :func:`chees_adaptation`.

    Attributes:
      step_size: () ε for the next step (the dual-averaging iterate).
      log_trajectory_length: () log T for the next step (the Adam iterate).
      log_trajectory_length_avg: () the weighted average of log T (weights t^{-kappa}, as dual
        averaging averages log ε), whose ``exp`` is the final T.
      dual_averaging: :class:`DualAveragingState` of the step size.
      adam_m: () Adam's first moment estimate of the ChEES gradient.
      adam_v: () Adam's second moment estimate of the ChEES gradient.
      count: () number of updates.
      inverse_mass_matrix: (D,) the diagonal M⁻¹ the next step uses.
      welford: :class:`WelfordState` over all chains in the mass-matrix window.
    """

    step_size: Array
    log_trajectory_length: Array
    log_trajectory_length_avg: Array
    dual_averaging: DualAveragingState
    adam_m: Array
    adam_v: Array
    count: Array
    inverse_mass_matrix: Array
    welford: WelfordState


# One Adam update may change log T by at most this (about log(2)/2, TFP's clip): a single
# wild gradient estimate early in the warm-up cannot multiply T by more than 1.4.
LOG_UPDATE_CLIP = 0.35

ACCEPTANCE_MEANS = ("harmonic", "arithmetic")


def _acceptance_statistic(acceptance: Array, is_divergent: Array, kind: str) -> Array:
    """The cross-chain acceptance statistic dual averaging targets.

    ``"arithmetic"``: the mean. ``"harmonic"`` (Hoffman et al. 2021): the harmonic mean over the
    chains whose acceptance is positive and not divergent, times the fraction of such chains, so
    that the chains with the lowest acceptance dominate (no chain is left stuck), while a single
    divergent chain counts as one zero in C rather than making the statistic 0.
    """
    if kind == "arithmetic":
        return jnp.mean(acceptance)
    ok = (~is_divergent) & (acceptance > 0)
    num_ok = jnp.sum(ok.astype(acceptance.dtype))
    inverse_sum = jnp.sum(jnp.where(ok, 1.0 / jnp.where(ok, acceptance, 1.0), 0.0))
    harmonic = num_ok / jnp.where(num_ok > 0, inverse_sum, 1.0)
    return jnp.where(num_ok > 0, harmonic * num_ok / acceptance.shape[0], 0.0)


def chees_gradient(
    initial: Array,
    proposal: Array,
    momentum: Array,
    integration_time: Array,
    acceptance: Array,
    is_divergent: Array,
    inverse_mass: Array,
) -> Array:
    """The ChEES criterion's gradient in log T, estimated from all chains: a scalar.

    ChEES = ¼ E[(‖x' - E x'‖² - ‖x - E x‖²)²] (Hoffman, Radul & Sountsov 2021), the change in
    the estimate of E‖x‖² a step makes. With ``t`` the chain's integration time (d t / d log T =
    t) and ``dx'/dt = M⁻¹ p'`` at the trajectory's end, chain i's estimate is

        g_i = t_i (‖x'_i - x̄'‖² - ‖x_i - x̄‖²) ⟨x'_i - x̄', p'_i⟩

    with the norms in the metric's whitened coordinates (divided by M⁻¹'s diagonal, so that
    large-variance coordinates do not drown the rest; the pairing ⟨Δx', M⁻¹p'⟩ whitened is
    ⟨Δx', p'⟩, metric free). The chains are averaged with their acceptance probabilities as
    weights (a rejected proposal does not move the chain), divergent or non-finite ones dropped;
    x̄' is the same weighted mean of the proposals.

    Args:
      initial: (C, D) positions at the start of the step.
      proposal: (C, D) the proposals before the accept/reject test.
      momentum: (C, D) the proposals' momenta.
      integration_time: (C,) L_i ε.
      acceptance: (C,) acceptance probabilities (NaN already replaced by 0).
      is_divergent: (C,) bool.
      inverse_mass: (D,) diagonal M⁻¹.
    """
    finite = jnp.all(jnp.isfinite(proposal) & jnp.isfinite(momentum), axis=1)
    weight = jnp.where(finite & ~is_divergent, acceptance, 0.0)
    total = jnp.sum(weight)
    safe_total = jnp.where(total > 0, total, 1.0)
    proposal = jnp.where(finite[:, None], proposal, 0.0)
    momentum = jnp.where(finite[:, None], momentum, 0.0)
    proposal_mean = jnp.sum(weight[:, None] * proposal, axis=0) / safe_total
    initial_mean = jnp.mean(initial, axis=0)
    scale = jax.lax.rsqrt(inverse_mass)
    moved = proposal - proposal_mean
    change = jnp.sum((moved * scale) ** 2, axis=1) - jnp.sum(
        ((initial - initial_mean) * scale) ** 2, axis=1
    )
    per_chain = integration_time * change * jnp.sum(moved * momentum, axis=1)
    per_chain = jnp.where(weight > 0, per_chain, 0.0)
    return jnp.where(total > 0, jnp.sum(weight * per_chain) / safe_total, 0.0)


def chees_adaptation(
    logdensity_fn: LogDensityFn,
    *,
    target_accept: float = 0.651,
    initial_step_size: float = 0.1,
    initial_trajectory_length: float | None = None,
    learning_rate: float = 0.025,
    adam_b1: float = 0.0,
    adam_b2: float = 0.95,
    max_leapfrog_steps: int = 1000,
    adapt_mass_matrix: bool = True,
    mass_window_fraction: float = 0.5,
    inverse_mass_matrix: Array | None = None,
    acceptance_mean: str = "harmonic",
    jitter: str = "halton",
    t0: float = 10.0,
    gamma: float = 0.05,
    kappa: float = 0.75,
    divergence_threshold: float = 1000.0,
) -> Adaptation:
    """ChEES-HMC warm-up (Hoffman, Radul & Sountsov 2021): ε and T tuned jointly over many chains.

    Every warm-up step runs ``jittered_hmc`` on all chains (``L = ceil(u T / ε)``, ``u`` the
    Halton value of the step, shared by the chains, so a vmapped step wastes no leapfrog steps),
    then, from all chains:

    * ε by dual averaging on the cross-chain acceptance statistic (``acceptance_mean``, default
      the harmonic mean, as in the paper; target 0.651, the optimum for HMC in high dimension of
      Beskos et al. 2013);
    * log T by Adam ascent (``learning_rate``, ``adam_b1``, ``adam_b2``; each update clipped to
      ±0.35) on the ChEES gradient (``chees_gradient`` in this module, not exported), T kept in
      [ε, max_leapfrog_steps ε];
    * the diagonal M⁻¹ (``adapt_mass_matrix``): the first step uses ``inverse_mass_matrix``, every
      later one the cross-chain variance of the chains' current positions (C draws, Stan's
      regularisation), so the metric follows the ensemble as it converges (start the chains
      dispersed: identical starts give a near-zero variance that the first steps must undo);
      over the last ``mass_window_fraction`` of the warm-up all chains' positions also enter a
      Welford estimate, which becomes the final M⁻¹ (C times that many draws: far less noisy
      than one step's ensemble).

    The final ε and T are the t^{-kappa}-weighted averages of the log iterates (dual averaging's
    x̄ for ε, the same average for T), as the paper's implementation averages them.

    Args:
      logdensity_fn: log-density of one position -> scalar, differentiable.
      target_accept: the acceptance statistic's target.
      initial_step_size: ε₀ > 0.
      initial_trajectory_length: T₀ > 0; default ε₀ (one leapfrog step: ChEES lengthens it).
      learning_rate, adam_b1, adam_b2: Adam on log T. β1 = 0 by default: the gradient is already
        an average over all chains, and momentum would overshoot while ε moves.
      max_leapfrog_steps: cap on L during and after warm-up.
      adapt_mass_matrix: estimate the diagonal M⁻¹ (else keep ``inverse_mass_matrix``).
      mass_window_fraction: in (0, 1], the final fraction of warm-up steps whose draws make the
        final M⁻¹.
      inverse_mass_matrix: the starting (D,) diagonal, default ones (dense is not supported: the
        criterion's whitening and the per-step ensemble estimate are diagonal).
      acceptance_mean: ``"harmonic"`` or ``"arithmetic"`` (see ``_acceptance_statistic``).
      jitter: ``"halton"`` (shared by chains) or ``"uniform"`` (per chain), see ``jittered_hmc``.
      t0, gamma, kappa: dual-averaging constants.
      divergence_threshold: as in ``hmc``.

    Returns:
      An :class:`Adaptation` needing at least 2 chains; its result's kernel is
      ``jittered_hmc(logdensity_fn, **parameters)`` with ``step_size``, ``trajectory_length``,
      ``inverse_mass_matrix``, ``jitter``, ``max_leapfrog_steps`` and ``divergence_threshold``.
      The result's states continue the jitter's step counter where the warm-up stopped.
    """
    who = "chees_adaptation"
    check_step_size(initial_step_size, "initial_step_size", who)
    if initial_trajectory_length is None:
        initial_trajectory_length = initial_step_size
    check_step_size(initial_trajectory_length, "initial_trajectory_length", who)
    check_positive_finite(learning_rate, "learning_rate", who)
    if not 0.0 <= float(adam_b1) < 1.0 or not 0.0 <= float(adam_b2) < 1.0:
        raise ValueError(f"{who}: adam_b1 and adam_b2 must lie in [0, 1)")
    max_leapfrog_steps = _check_int(max_leapfrog_steps, "max_leapfrog_steps", 1, who)
    mass_window_fraction = _check_fraction(
        mass_window_fraction, "mass_window_fraction", who, closed=True
    )
    if acceptance_mean not in ACCEPTANCE_MEANS:
        raise ValueError(
            f"{who}: acceptance_mean must be one of {ACCEPTANCE_MEANS}, got {acceptance_mean!r}"
        )
    if jitter not in JITTERS:
        raise ValueError(f"{who}: jitter must be one of {JITTERS}, got {jitter!r}")
    check_positive_finite(divergence_threshold, "divergence_threshold", who)
    if inverse_mass_matrix is not None:
        inverse_mass_matrix = check_inverse_mass_matrix(inverse_mass_matrix, who)
    averaging = dual_averaging(target_accept, t0, gamma, kappa)
    learning_rate, adam_b1, adam_b2 = float(learning_rate), float(adam_b1), float(adam_b2)
    kappa = float(kappa)
    divergence_threshold = float(divergence_threshold)

    def parts(step_size, trajectory_length, inverse_mass):
        return _jittered_parts(
            logdensity_fn,
            step_size,
            trajectory_length,
            inverse_mass,
            jitter,
            max_leapfrog_steps,
            divergence_threshold,
            who,
        )

    def init(positions, num_steps):
        num_chains = jax.tree_util.tree_leaves(positions)[0].shape[0]
        if num_chains < 2:
            raise ValueError(f"{who} estimates from the ensemble: it needs >= 2 chains, got 1")
        dim, dtype = _flat_size(positions)
        inverse_mass = _initial_inverse_mass(inverse_mass_matrix, dim, False, dtype, who)
        step_size = jnp.asarray(initial_step_size, dtype)
        log_length = jnp.log(jnp.asarray(initial_trajectory_length, dtype))
        chain_init, _ = parts(step_size, jnp.exp(log_length), inverse_mass)
        chain_states = jax.vmap(chain_init)(positions)
        zero = jnp.zeros((), dtype)
        state = CheesAdaptationState(
            step_size,
            log_length,
            log_length,
            averaging.init(step_size),
            zero,
            zero,
            zero,
            inverse_mass,
            welford_init(dim, False, dtype),
        )
        return chain_states, state

    def step(keys, t, chain_states, state: CheesAdaptationState, num_steps):
        length = jnp.exp(state.log_trajectory_length)
        _, move = parts(state.step_size, length, state.inverse_mass_matrix)
        initial = _flat_positions(chain_states.position)
        chain_states, moves = jax.vmap(move)(keys, chain_states)
        info = moves.info
        acceptance = _safe_acceptance(info.acceptance_prob)

        # Step size.
        statistic = _acceptance_statistic(acceptance, info.is_divergent, acceptance_mean)
        da_state = averaging.update(state.dual_averaging, statistic)
        step_size = jnp.exp(da_state.log_step_size)

        # Trajectory length: Adam ascent on log T.
        gradient = chees_gradient(
            initial,
            moves.proposal_position,
            moves.proposal_momentum,
            info.num_leapfrog_steps.astype(initial.dtype) * state.step_size,
            acceptance,
            info.is_divergent,
            state.inverse_mass_matrix,
        )
        gradient = jnp.where(jnp.isfinite(gradient), gradient, 0.0)
        count = state.count + 1.0
        adam_m = adam_b1 * state.adam_m + (1.0 - adam_b1) * gradient
        adam_v = adam_b2 * state.adam_v + (1.0 - adam_b2) * gradient**2
        m_hat = adam_m / (1.0 - adam_b1**count)
        v_hat = adam_v / (1.0 - adam_b2**count)
        update = jnp.clip(
            learning_rate * m_hat / (jnp.sqrt(v_hat) + 1e-8), -LOG_UPDATE_CLIP, LOG_UPDATE_CLIP
        )
        update = jnp.where(jnp.isfinite(update), update, 0.0)
        log_step = jnp.log(step_size)
        log_length = jnp.clip(
            state.log_trajectory_length + update,
            log_step,
            log_step + math.log(max_leapfrog_steps),
        )
        weight = count**-kappa
        log_length_avg = weight * log_length + (1.0 - weight) * state.log_trajectory_length_avg

        # Mass matrix: the current ensemble's variance; Welford over the final window.
        positions = _flat_positions(chain_states.position)
        welford = state.welford
        inverse_mass = state.inverse_mass_matrix
        if adapt_mass_matrix:
            window_start = num_steps - max(1, round(mass_window_fraction * num_steps))
            in_window = t >= window_start
            welford = _select(in_window, welford_update(welford, positions), welford)
            dim = positions.shape[1]
            ensemble = welford_covariance(
                welford_update(welford_init(dim, False, positions.dtype), positions)
            )
            is_last = t == num_steps - 1
            inverse_mass = jnp.where(is_last, welford_covariance(welford), ensemble)
        row = {
            "step_size": state.step_size,
            "trajectory_length": length,
            "acceptance_rate": jnp.mean(acceptance),
            "num_divergent": jnp.sum(info.is_divergent.astype(jnp.int32)),
            "num_gradient_evaluations": jnp.sum(info.num_leapfrog_steps),
        }
        new_state = CheesAdaptationState(
            step_size,
            log_length,
            log_length_avg,
            da_state,
            adam_m,
            adam_v,
            count,
            inverse_mass,
            welford,
        )
        return chain_states, new_state, row

    def parameters(state: CheesAdaptationState) -> dict[str, Any]:
        step_size = averaging.final(state.dual_averaging)
        # The averaged T, kept within what the kernel can integrate at the final ε.
        length = jnp.clip(
            jnp.exp(state.log_trajectory_length_avg), step_size, max_leapfrog_steps * step_size
        )
        return {
            "step_size": step_size,
            "trajectory_length": length,
            "inverse_mass_matrix": state.inverse_mass_matrix,
        }

    def build_kernel(**params) -> Kernel:
        return jittered_hmc(logdensity_fn, **params)

    fixed = (
        ("jitter", jitter),
        ("max_leapfrog_steps", max_leapfrog_steps),
        ("divergence_threshold", divergence_threshold),
    )
    return Adaptation(init, step, parameters, build_kernel, fixed)

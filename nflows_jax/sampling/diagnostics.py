"""MCMC convergence diagnostics: autocorrelation, effective sample size, split and nested R-hat.

Every function takes **chain-major** draws, as :func:`nflows_jax.sampling.run.sample_chains`
returns them: ``samples`` of shape (C, T) for a scalar or ``(C, T, *event)`` for arrays, C chains
of T draws. Results have the event shape (a scalar for (C, T)). The numerical work of each
function is one jitted program (``variant`` and ``num_superchains`` are static), so a call
compiles once per shape; shapes are checked at trace time. The functions work inside ``jit``
and ``vmap``; called eagerly they also warn about stuck chains (below).

Variants, and what they match:

* ``effective_sample_size(variant="bulk")`` — Vehtari et al. (2021) bulk-ESS as Stan, ArviZ and
  posterior compute it: split chains, rank-normalise the pooled draws (Blom offsets, average
  ranks for ties), multi-chain autocorrelation from FFT autocovariances (Stan's form of their
  eq. 10: the N/(N-1) factor on the lag-0 variance only), Geyer's initial positive and monotone
  sequences, plus Stan's "improved estimate" (rho at the first dropped even lag, when positive).
  tau is floored at ``1 / log10(S)`` (ESS at most ``S log10 S`` for S draws) so strongly
  antithetic chains cannot give a negative ESS. Agrees with ``arviz.ess(method="bulk")`` to
  float round-off (tested).
* ``variant="mean"`` — the same estimator on the raw split draws (posterior's ``ess_mean``,
  ArviZ's ``method="mean"``): the ESS that sets the Monte-Carlo standard error of a mean.
* ``variant="tfp"`` — exactly ``tfp.mcmc.effective_sample_size(states,
  filter_beyond_positive_pairs=True, cross_chain_dims=1)`` on time-major states: no split, no
  ranks, autocovariances divided by (N - k) and tapered by (N - k)/N, truncation at the first
  negative pair sum, no monotone step, no floor.
* ``split_rhat(variant="rank")`` — Vehtari et al. (2021) rank-normalised split R-hat, the
  maximum of the bulk (rank-normalised) and tail (rank-normalised folded ``|x - median|``, the
  median of all C T draws) values. ``variant="classic"`` — split R-hat of Gelman et al. (BDA3):
  ``sqrt(var+ / W)``. ``variant="tfp"`` — ``tfp.mcmc.potential_scale_reduction(states,
  split_chains=True)``, the Brooks & Gelman (1998) corrected ratio
  ``(M+1)/M var+/W - (N-1)/(M N)`` (no square root).
* ``nested_rhat`` — Margossian et al. (2024), many short chains grouped into superchains.

Splitting: for odd T the Vehtari variants drop the middle draw (as ArviZ/posterior); the TFP
variant drops the last one (as TFP).

Rank normalisation is exact at any size: ranks are integer counts (one sort of the pooled draws per
parameter, ties found by a scan over the sorted values and given their average rank), and the
normal score ``Phi^{-1}((r - 3/8) / (S + 1/4))`` is computed from the smaller of the two tail
counts, ``Phi^{-1}(p) = -Phi^{-1}(1 - p)``, so even the extreme ranks of more than 2^24 draws keep
their float32 precision. On CPU the sort runs in NumPy on the host (``jax.pure_callback``; XLA's
CPU sort of 10^7 floats takes seconds, NumPy's well under one); on other backends it is XLA's sort.
Up to 2^30 draws per parameter in float32 mode (int32 ranks); enable ``jax_enable_x64`` beyond.

Stuck chains. A chain whose draws of a parameter are all equal (:func:`stuck_chains`) means the
sampler never moved there; the usual formulas would then divide round-off by round-off. Instead:

* some chains stuck (not all at one common value): R-hat is ``inf`` (every variant) and ESS is
  ``0`` (every variant): the chains provably disagree, and no Monte-Carlo standard error computed
  from them can be trusted (``sd / sqrt(0) = inf``);
* a constant parameter (every draw of every chain equal): R-hat and ESS are NaN, undefined;
* a NaN draw: the result for that parameter is NaN.

``nested_rhat`` is meant for many short chains, where a chain that rejects every proposal for a
few steps is normal, so it does not flag stuck chains; only a constant parameter gives NaN.
Called eagerly (not under ``jit``/``vmap``), ``effective_sample_size`` and ``split_rhat`` emit a
:class:`StuckChainWarning` naming the stuck chains' indices and the affected parameters; under a
transformation there is no warning, and ``stuck_chains(samples)`` gives the same information as
an array.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nflows_jax.sampling.base import Array

EssVariant = Literal["bulk", "mean", "tfp"]
RhatVariant = Literal["rank", "classic", "tfp"]

# int32 ranks hold rank sums up to 2 (S - 1) < 2**31.
_MAX_DRAWS_INT32 = 2**30


class StuckChainWarning(RuntimeWarning):
    """Some chain never moved for some parameter (or a parameter is constant); see the module."""


# ------------------------------------------------------------------------------------------------
# Shapes
# ------------------------------------------------------------------------------------------------


def _as_draws(samples: Array, name: str, min_draws: int) -> tuple[Array, tuple[int, ...]]:
    """Validate chain-major ``samples`` and flatten the event: returns (C, T, E) and the event."""
    samples = jnp.asarray(samples)
    if samples.ndim < 2:
        raise ValueError(
            f"{name} expects chain-major samples of shape (C, T) or (C, T, *event), got shape "
            f"{samples.shape}; for a single chain use samples[None]"
        )
    num_chains, num_draws = samples.shape[:2]
    if num_chains < 1:
        raise ValueError(f"{name}: samples has no chains (shape {samples.shape})")
    if num_draws < min_draws:
        raise ValueError(
            f"{name} needs at least {min_draws} draws per chain, got {num_draws} "
            f"(shape {samples.shape})"
        )
    if not jnp.issubdtype(samples.dtype, jnp.floating):
        samples = samples.astype(jnp.float32)
    event_shape = samples.shape[2:]
    return samples.reshape(num_chains, num_draws, math.prod(event_shape)), event_shape


def _split_chains(x: Array, drop: Literal["middle", "last"]) -> Array:
    """(C, N, E) -> (2C, N // 2, E): each chain's first and second halves become two chains."""
    half = x.shape[1] // 2
    start = x.shape[1] - half if drop == "middle" else half
    return jnp.concatenate([x[:, :half], x[:, start : start + half]], axis=0)


# ------------------------------------------------------------------------------------------------
# Stuck chains
# ------------------------------------------------------------------------------------------------


class _Status(NamedTuple):
    """Per-parameter facts that override a diagnostic: (C, E), (E,), (E,)."""

    stuck: Array  # chain c never moves for element e
    constant: Array  # every draw of every chain is the same value
    has_nan: Array  # some draw is NaN


def _status(x: Array) -> _Status:
    """Stuck chains, constant parameters and NaNs of (C, N, E) draws (exact comparisons)."""
    high, low = jnp.max(x, axis=1), jnp.min(x, axis=1)  # (C, E)
    stuck = high == low
    constant = jnp.max(high, axis=0) == jnp.min(low, axis=0)
    return _Status(stuck, constant, jnp.any(jnp.isnan(x), axis=(0, 1)))


def _flag(value: Array, status: _Status, stuck_value: float) -> Array:
    """``value`` (E,) with ``stuck_value`` where a chain is stuck, NaN where undefined."""
    value = jnp.where(jnp.any(status.stuck, axis=0), stuck_value, value)
    return jnp.where(status.constant | status.has_nan, jnp.nan, value)


@jax.jit
def stuck_chains(samples: Array) -> Array:
    """Which chains never move: (C, T) or ``(C, T, *event)`` -> bool (C,) or ``(C, *event)``.

    ``out[c, *i]`` is True when every draw of chain c for parameter ``i`` is the same value.
    :func:`split_rhat` is ``inf`` and :func:`effective_sample_size` is ``0`` for a parameter
    with a stuck chain (NaN when every chain sits at one common value: a constant parameter).
    Use it under ``jit``/``vmap``, where the eager :class:`StuckChainWarning` is not raised, or
    to drop the chains stuck anywhere: with ``stuck = stuck_chains(samples)``,
    ``samples[~stuck.reshape(stuck.shape[0], -1).any(axis=1)]``.
    """
    x, event_shape = _as_draws(samples, "stuck_chains", min_draws=2)
    return _status(x).stuck.reshape(x.shape[:1] + event_shape)


def _warn_if_stuck(name: str, status: _Status, event_shape: tuple[int, ...], result: str) -> None:
    """Eager calls only: warn naming stuck chains and constant parameters (plain integers)."""
    if isinstance(status.stuck, jax.core.Tracer):
        return
    stuck = np.asarray(status.stuck)
    constant = np.asarray(status.constant)
    flagged = np.flatnonzero(stuck.any(axis=0) & ~constant)
    messages = []
    for flat in flagged[:5]:
        chains = np.flatnonzero(stuck[:, flat])
        shown = ", ".join(str(int(c)) for c in chains[:10]) + (" ..." if chains.size > 10 else "")
        messages.append(f"parameter {_index(flat, event_shape)}: chains {shown}")
    if flagged.size:
        more = f" (and {int(flagged.size) - 5} more parameters)" if flagged.size > 5 else ""
        warnings.warn(
            f"{name}: {int(flagged.size)} parameter(s) have chains that never move, so {result}; "
            f"{'; '.join(messages)}{more}. stuck_chains(samples) gives the full mask.",
            StuckChainWarning,
            stacklevel=3,
        )
    if constant.any():
        shown = ", ".join(_index(flat, event_shape) for flat in np.flatnonzero(constant)[:5])
        warnings.warn(
            f"{name}: {int(constant.sum())} parameter(s) are constant (every draw of every chain "
            f"equal), so the result is NaN there: {shown}",
            StuckChainWarning,
            stacklevel=3,
        )


def _index(flat: int, event_shape: tuple[int, ...]) -> str:
    """Flat event index -> '(i, j)' with plain ints ('()' for a scalar parameter)."""
    return str(tuple(int(i) for i in np.unravel_index(int(flat), event_shape)))


# ------------------------------------------------------------------------------------------------
# Autocovariance
# ------------------------------------------------------------------------------------------------


def _autocovariance(x: Array) -> Array:
    """Biased autocovariance per chain along axis 1 by FFT: (C, N, E) -> (C, N, E).

    ``acov[c, k] = (1/N) sum_{n < N-k} (x[c, n] - m_c)(x[c, n+k] - m_c)``. Zero-padding to a
    power of two >= 2N - 1 keeps the circular correlation from wrapping around.
    """
    num_draws = x.shape[1]
    centred = x - jnp.mean(x, axis=1, keepdims=True)
    fft_size = 1 << (2 * num_draws - 1).bit_length()
    spectrum = jnp.fft.rfft(centred, n=fft_size, axis=1)
    power = spectrum.real**2 + spectrum.imag**2
    lagged_sums = jnp.fft.irfft(power, n=fft_size, axis=1)[:, :num_draws]
    return (lagged_sums / num_draws).astype(x.dtype)


@jax.jit
def autocorrelation(samples: Array) -> Array:
    """Autocorrelation of each chain at lags 0..T-1: ``(C, T, *event)`` -> ``(C, T, *event)``.

    The standard biased estimator (autocovariance divided by N at every lag, then by the lag-0
    value), which Geyer (1992) recommends because it keeps the sequence positive definite. Lag 0
    is exactly 1; a constant chain gives NaN.
    """
    x, event_shape = _as_draws(samples, "autocorrelation", min_draws=1)
    acov = _autocovariance(x)
    return (acov / acov[:, :1]).reshape(x.shape[:2] + event_shape)


# ------------------------------------------------------------------------------------------------
# Rank normalisation
# ------------------------------------------------------------------------------------------------
#
# A "rank sum" is first + last, the 0-based positions in sorted order of the first and the last
# draw equal to a given draw: the average 1-based rank of a tie group is rank_sum / 2 + 1. It is an
# integer, so it is exact where a float32 rank (or a float32 (r - 3/8) / (S + 1/4)) is not.


def _index_dtype() -> np.dtype:
    """int32, or int64 when ``jax_enable_x64`` is on."""
    return np.dtype(jax.dtypes.canonicalize_dtype(np.int64))


def _rank_dtype(size: int) -> np.dtype:
    """The dtype of rank sums of ``size`` draws: int32 whenever it holds them (2 (S - 1) < 2^31).

    Not the x64-dependent index dtype: ``jax.enable_x64`` is a thread-local context, and a
    ``pure_callback`` may run on a thread where it is off, whose result int64 would then be
    read back as int32 and refused. int64 only where int32 cannot hold the sums (x64 mode).
    """
    return np.dtype(np.int32) if size <= _MAX_DRAWS_INT32 else _index_dtype()


def _xla_rank_sums(pooled: Array) -> Array:
    """Rank sums of each row of ``pooled`` (E, S) with XLA: one keyed sort and two scans per row."""

    def one_row(row: Array) -> Array:
        size = row.shape[0]
        position = jnp.arange(size, dtype=_rank_dtype(size))
        values, order = jax.lax.sort((row, position), num_keys=1)
        boundary = values[1:] != values[:-1]  # -0.0 == 0.0 tie, as in the host version
        true = jnp.ones((1,), bool)
        first = jax.lax.cummax(jnp.where(jnp.concatenate([true, boundary]), position, 0))
        last = jax.lax.cummin(
            jnp.where(jnp.concatenate([boundary, true]), position, size - 1), reverse=True
        )
        return jnp.zeros_like(position).at[order].set(first + last, unique_indices=True)

    return jax.vmap(one_row)(pooled)


def _sortable_bits(row: np.ndarray) -> np.ndarray:
    """float32 -> uint32 whose unsigned order is the float order (sign bit flipped for x >= 0,
    all bits flipped for x < 0)."""
    flip = (row.view(np.int32) >> 31).view(np.uint32) | np.uint32(0x80000000)
    return row.view(np.uint32) ^ flip


def _host_rank_sums_row(row: np.ndarray, out: np.ndarray) -> None:
    """NumPy rank sums of one row, written into ``out``.

    float32 rows: the sortable bits in the high and the position in the low 32 bits of one
    uint64, so that NumPy's (vectorised) plain sort does the work of an argsort.
    """
    size = row.shape[0]
    row = row + row.dtype.type(0.0)  # -0.0 + 0.0 = +0.0: both zeros tie
    if row.dtype == np.float32 and size < 2**32:
        packed = _sortable_bits(row).astype(np.uint64) << np.uint64(32)
        packed |= np.arange(size, dtype=np.uint64)
        packed.sort()
        order = (packed & np.uint64(0xFFFFFFFF)).astype(np.intp)
        keys = packed >> np.uint64(32)
    else:
        order = np.argsort(row, kind="stable")
        keys = row[order]
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    if starts.size == size:  # no ties
        sums = np.arange(0, 2 * size, 2, dtype=out.dtype)
    else:
        counts = np.diff(np.append(starts, size))
        sums = np.repeat((2 * starts + counts - 1).astype(out.dtype), counts)
    out[order] = sums


def _host_rank_sums(pooled: np.ndarray, out_dtype: np.dtype) -> np.ndarray:
    """Rank sums of each row of (..., S) in NumPy (the ``pure_callback`` body)."""
    pooled = np.asarray(pooled)
    rows = pooled.reshape(-1, pooled.shape[-1])
    out = np.empty(rows.shape, out_dtype)
    for row, dest in zip(rows, out, strict=True):
        _host_rank_sums_row(row, dest)
    return out.reshape(pooled.shape)


def _rank_sums(pooled: Array) -> Array:
    """Rank sums of each row of (E, S): NumPy on CPU, XLA's sort elsewhere."""
    dtype = _rank_dtype(pooled.shape[-1])

    def on_host(rows: Array) -> Array:
        return jax.pure_callback(
            functools.partial(_host_rank_sums, out_dtype=dtype),
            jax.ShapeDtypeStruct(rows.shape, dtype),
            rows,
            vmap_method="expand_dims",
        )

    return jax.lax.platform_dependent(pooled, cpu=on_host, default=_xla_rank_sums)


def _blom_scores(rank_sums: Array, total: int, dtype: jnp.dtype) -> Array:
    """Normal scores ``Phi^{-1}((r - 3/8) / (S + 1/4))`` from rank sums (r = rank_sum / 2 + 1).

    Computed from the smaller tail: the lower tail's numerator is r - 3/8 = rank_sum / 2 + 5/8,
    the upper tail's S + 1/4 - (r - 3/8) is the same with the mirrored rank sum 2 (S - 1) -
    rank_sum. Both are integer counts, the probability below 1/2 has full relative precision,
    and ``Phi^{-1}(1 - q) = -Phi^{-1}(q)`` restores the sign.
    """
    mirrored = 2 * (total - 1) - rank_sums
    smaller = jnp.minimum(rank_sums, mirrored).astype(dtype)
    z = jax.scipy.special.ndtri((0.5 * smaller + 0.625) / (total + 0.25))
    return jnp.where(rank_sums > mirrored, -z, z)


def _rank_normalize(x: Array) -> Array:
    """Pool all chains' draws, rank them and map ranks to normal quantiles (Blom offsets).

    ``z = Phi^{-1}((r - 3/8) / (S + 1/4))`` for S pooled draws, per event element: (C, N, E).
    """
    num_chains, num_draws, size = x.shape
    total = num_chains * num_draws
    if total > _MAX_DRAWS_INT32 and _index_dtype() == np.int32:
        raise ValueError(
            f"rank normalisation of {total} draws per parameter needs 64-bit ranks (more than "
            f"{_MAX_DRAWS_INT32}); enable jax_enable_x64 or thin the draws"
        )
    sums = _rank_sums(x.reshape(total, size).T)  # (E, S): each parameter's draws contiguous
    z = _blom_scores(sums, total, x.dtype).T.reshape(x.shape)
    # Materialise the scores once: otherwise XLA may fuse (recompute) ndtri into every reduction.
    return jax.lax.optimization_barrier(z)


def _pooled_median(x: Array) -> Array:
    """Median of all draws per event element: (C, N, E) -> (E,); NumPy's selection on CPU."""
    pooled = x.reshape(-1, x.shape[2]).T

    def on_host(rows: Array) -> Array:
        return jax.pure_callback(
            lambda r: np.median(np.asarray(r), axis=-1).astype(r.dtype),
            jax.ShapeDtypeStruct(rows.shape[:-1], rows.dtype),
            rows,
            vmap_method="expand_dims",
        )

    return jax.lax.platform_dependent(
        pooled, cpu=on_host, default=lambda rows: jnp.median(rows, axis=-1)
    )


# ------------------------------------------------------------------------------------------------
# Effective sample size
# ------------------------------------------------------------------------------------------------


def _chain_mean_variance(x: Array) -> Array:
    """Variance of the chain means with ddof=1 (B / N in Gelman's notation); 0 for one chain."""
    if x.shape[0] < 2:
        return jnp.zeros(x.shape[2:], x.dtype)
    return jnp.var(jnp.mean(x, axis=1), axis=0, ddof=1)


def _pair_sums(rho: Array) -> Array:
    """(N, E) -> (N // 2, E): rho[2k] + rho[2k + 1] (a trailing odd lag is dropped)."""
    num_pairs = rho.shape[0] // 2
    return rho[: 2 * num_pairs].reshape(num_pairs, 2, rho.shape[1]).sum(axis=1)


def _ess_multichain(x: Array) -> Array:
    """Stan's multi-chain ESS (as ArviZ and posterior compute it): (M, N, E) -> (E,).

    rho_t = 1 - (W - mean_m acov_m(t)) / var+ for t >= 1 with the biased autocovariances (Stan
    puts the N/(N-1) factor on the lag-0 variance W only, where Vehtari et al.'s eq. 10 writes it
    at every lag: a difference of about 1/N relative per lag), Geyer's initial positive and
    monotone sequences over the pairs rho_2k + rho_2k+1, and Stan's "improved estimate": the
    even autocorrelation of the first dropped pair is added to tau when positive.
    """
    num_chains, num_draws = x.shape[:2]
    acov = _autocovariance(x)
    unbiased = num_draws / (num_draws - 1)
    within = unbiased * jnp.mean(acov[:, 0], axis=0)  # W = mean of s_m^2
    var_plus = within / unbiased + _chain_mean_variance(x)
    rho = 1.0 - (within - jnp.mean(acov, axis=0)) / var_plus
    rho = rho.at[0].set(1.0)
    pairs = _pair_sums(rho)
    # Initial positive sequence: keep pairs up to the first non-positive one ...
    positive = jnp.cumprod(pairs > 0, axis=0).astype(x.dtype)
    # ... and initial monotone sequence: each kept pair is at most every earlier one.
    monotone = jax.lax.cummin(pairs, axis=0)
    num_kept = jnp.sum(positive, axis=0).astype(jnp.int32)  # K pairs kept
    # Stan's improved estimate: rho_2K, the first dropped pair's even lag, when it is positive.
    first_dropped = 2 * jnp.minimum(num_kept, pairs.shape[0] - 1)
    dropped_even = jnp.take_along_axis(rho, first_dropped[None], axis=0)[0]
    extra = jnp.where((num_kept < pairs.shape[0]) & (dropped_even > 0), dropped_even, 0.0)
    tau = -1.0 + 2.0 * jnp.sum(positive * monotone, axis=0) + extra
    total = num_chains * num_draws
    # Floor as Stan/posterior: anticorrelated chains give ESS <= S log10(S), never negative.
    tau = jnp.maximum(tau, 1.0 / math.log10(max(total, 2)))
    return total / tau


def _ess_tfp(x: Array) -> Array:
    """TFP's cross-chain ESS with ``filter_beyond_positive_pairs=True``: (C, N, E)."""
    num_chains, num_draws = x.shape[:2]
    lags = jnp.arange(num_draws, dtype=x.dtype)[:, None]
    # TFP divides the lag-k sum by N - k; our _autocovariance divides by N.
    acov = _autocovariance(x) * (num_draws / (num_draws - lags))
    within = jnp.mean(acov[:, 0], axis=0)  # biased within-chain variance
    approx_variance = within + _chain_mean_variance(x)
    rho = 1.0 - (within - jnp.mean(acov, axis=0)) / approx_variance
    tapered = (num_draws - lags) / num_draws * rho
    keep = jnp.cumprod(_pair_sums(rho) >= 0, axis=0).astype(x.dtype)
    tau = -1.0 + 2.0 * jnp.sum(keep * _pair_sums(tapered), axis=0)
    return num_chains * num_draws / tau


@functools.partial(jax.jit, static_argnames=("variant",))
def _effective_sample_size(samples: Array, variant: EssVariant) -> tuple[Array, _Status]:
    min_draws = 2 if variant == "tfp" else 4
    x, event_shape = _as_draws(samples, "effective_sample_size", min_draws)
    if variant == "tfp":
        ess = _ess_tfp(x)
    else:
        halves = _split_chains(x, drop="middle")
        if variant == "bulk":
            halves = _rank_normalize(halves)
        ess = _ess_multichain(halves)
    status = _status(x)
    return _flag(ess, status, 0.0).reshape(event_shape), status


def effective_sample_size(samples: Array, *, variant: EssVariant = "bulk") -> Array:
    """Multi-chain effective sample size of chain-major draws.

    Args:
      samples: (C, T) or ``(C, T, *event)``, C chains of T draws. ``"bulk"`` and ``"mean"`` need
        T >= 4 (they split chains), ``"tfp"`` T >= 2.
      variant: ``"bulk"`` (default, Vehtari et al. 2021 bulk-ESS), ``"mean"`` (split chains, raw
        values) or ``"tfp"`` (TFP's estimator); see the module docstring for the exact formulas.

    Returns:
      ESS with the event shape (a scalar for (C, T)), counted in draws over all chains; for iid
      draws it is close to C * T. ``0`` for a parameter where some chain never moves (a
      :class:`StuckChainWarning` names the chains when called eagerly), NaN for a constant
      parameter or NaN draws.
    """
    if variant not in ("bulk", "mean", "tfp"):
        raise ValueError(f"variant must be 'bulk', 'mean' or 'tfp', got {variant!r}")
    ess, status = _effective_sample_size(samples, variant)
    _warn_if_stuck("effective_sample_size", status, ess.shape, "ESS is 0 there")
    return ess


# ------------------------------------------------------------------------------------------------
# R-hat
# ------------------------------------------------------------------------------------------------


def _within_and_var_plus(x: Array) -> tuple[Array, Array]:
    """W (mean within-chain variance, ddof=1) and var+ = (N-1)/N W + B/N for (M, N, E)."""
    num_draws = x.shape[1]
    within = jnp.mean(jnp.var(x, axis=1, ddof=1), axis=0)
    var_plus = (num_draws - 1) / num_draws * within + _chain_mean_variance(x)
    return within, var_plus


def _rhat_classic(x: Array) -> Array:
    within, var_plus = _within_and_var_plus(x)
    # var+ >= (N-1)/N W, so the ratio is positive whenever W > 0: no clamp needed for sqrt.
    return jnp.sqrt(var_plus / within)


@functools.partial(jax.jit, static_argnames=("variant",))
def _split_rhat(samples: Array, variant: RhatVariant) -> tuple[Array, _Status]:
    x, event_shape = _as_draws(samples, "split_rhat", min_draws=4)
    if variant == "tfp":
        halves = _split_chains(x, drop="last")
        num_chains, num_draws = halves.shape[:2]
        within, var_plus = _within_and_var_plus(halves)
        rhat = (num_chains + 1) / num_chains * var_plus / within - (num_draws - 1) / (
            num_chains * num_draws
        )
    elif variant == "classic":
        rhat = _rhat_classic(_split_chains(x, drop="middle"))
    else:
        bulk = _rhat_classic(_rank_normalize(_split_chains(x, drop="middle")))
        folded = jnp.abs(x - _pooled_median(x))
        tail = _rhat_classic(_rank_normalize(_split_chains(folded, drop="middle")))
        rhat = jnp.maximum(bulk, tail)
    status = _status(x)
    return _flag(rhat, status, jnp.inf).reshape(event_shape), status


def split_rhat(samples: Array, *, variant: RhatVariant = "rank") -> Array:
    """Split R-hat of chain-major draws; values near 1 mean the chains agree.

    Args:
      samples: (C, T) or ``(C, T, *event)`` with T >= 4 (each chain is split in two halves).
      variant: ``"rank"`` (default): Vehtari et al. (2021), max of rank-normalised bulk and
        folded (tail) split R-hat; ``"classic"``: ``sqrt(var+ / W)`` on split chains (BDA3);
        ``"tfp"``: TFP's ``potential_scale_reduction(split_chains=True)``.

    Returns:
      R-hat with the event shape. ``inf`` for a parameter where some chain never moves (a
      :class:`StuckChainWarning` names the chains when called eagerly; :func:`stuck_chains`
      gives them under ``jit``), NaN for a constant parameter or NaN draws.
    """
    if variant not in ("rank", "classic", "tfp"):
        raise ValueError(f"variant must be 'rank', 'classic' or 'tfp', got {variant!r}")
    rhat, status = _split_rhat(samples, variant)
    _warn_if_stuck("split_rhat", status, rhat.shape, "R-hat is inf there")
    return rhat


@functools.partial(jax.jit, static_argnames=("num_superchains",))
def nested_rhat(samples: Array, num_superchains: int) -> Array:
    """Nested R-hat (Margossian et al. 2024) for many short chains grouped into superchains.

    Chains ``[k*M, (k+1)*M)`` form superchain k (M = C / K chains each); the chains of one
    superchain should start from the same point. With superchain means f_k, chain means f_mk and
    within-chain variances s_mk^2 (ddof=1)::

        B = var_k(f_k)                      (ddof=1, between superchains)
        W = mean_k( var_m(f_mk) + mean_m(s_mk^2) )   (ddof=1; a term is 0 if M = 1 or T = 1)
        nested R-hat = sqrt(1 + B / W)

    so it is at least 1, and it is close to 1 only when every superchain has forgotten its start.
    A stuck chain is not flagged (short chains may reject every proposal); a constant parameter
    or a NaN draw gives NaN.

    Args:
      samples: (C, T) or ``(C, T, *event)``; T may be as small as 1 if M >= 2.
      num_superchains: K >= 2, a divisor of C.

    Returns:
      Nested R-hat with the event shape.
    """
    x, event_shape = _as_draws(samples, "nested_rhat", min_draws=1)
    num_chains, num_draws, size = x.shape
    if not isinstance(num_superchains, int) or num_superchains < 2:
        raise ValueError(f"num_superchains must be an int >= 2, got {num_superchains!r}")
    if num_chains % num_superchains:
        raise ValueError(
            f"the number of chains ({num_chains}) must be a multiple of num_superchains "
            f"({num_superchains})"
        )
    per_superchain = num_chains // num_superchains
    if per_superchain == 1 and num_draws == 1:
        raise ValueError(
            "nested_rhat needs several chains per superchain or several draws per chain to "
            "estimate the within-superchain variance; got one chain of one draw per superchain"
        )
    grouped = x.reshape(num_superchains, per_superchain, num_draws, size)
    chain_means = jnp.mean(grouped, axis=2)  # (K, M, E)
    superchain_means = jnp.mean(chain_means, axis=1)  # (K, E)
    between_superchains = jnp.var(superchain_means, axis=0, ddof=1)
    if per_superchain > 1:
        between_chains = jnp.var(chain_means, axis=1, ddof=1)
    else:
        between_chains = jnp.zeros_like(superchain_means)
    if num_draws > 1:
        within_chains = jnp.mean(jnp.var(grouped, axis=2, ddof=1), axis=1)
    else:
        within_chains = jnp.zeros_like(superchain_means)
    within_superchains = jnp.mean(between_chains + within_chains, axis=0)
    rhat = jnp.sqrt(1.0 + between_superchains / within_superchains)
    status = _status(x)
    return jnp.where(status.constant | status.has_nan, jnp.nan, rhat).reshape(event_shape)

"""MCMC convergence diagnostics: autocorrelation, effective sample size, split and nested R-hat.

Every function takes **chain-major** draws, as :func:`nflows_jax.sampling.run.sample_chains`
returns them: ``samples`` of shape (C, T) for a scalar or (C, T, *event) for arrays, C chains of T
draws. Results have the event shape (a scalar for (C, T)). All functions are pure ``jnp`` and
already jitted (``variant`` and ``num_superchains`` are static), so one call compiles once per
shape instead of dispatching dozens of small ops; shapes are checked at trace time.

Variants, and what they match:

* ``effective_sample_size(variant="bulk")`` — Vehtari et al. (2021) bulk-ESS: split chains,
  rank-normalise the pooled draws (Blom offsets, average ranks for ties), multi-chain
  autocorrelation (their eq. 10) from FFT autocovariances, Geyer's initial positive and monotone
  sequences. Like Stan/posterior, tau is floored at ``1 / log10(S)`` (ESS at most
  ``S log10 S`` for S draws) so strongly antithetic chains cannot give a negative ESS. It omits
  Stan's extra "improved estimate" term (adding rho at the first truncated even lag).
* ``variant="mean"`` — the same estimator on the raw split draws (posterior's ``ess_mean``,
  ArviZ's ``method="mean"``): the ESS that sets the Monte-Carlo standard error of a mean.
* ``variant="tfp"`` — exactly ``tfp.mcmc.effective_sample_size(states,
  filter_beyond_positive_pairs=True, cross_chain_dims=1)`` on time-major states: no split, no
  ranks, autocovariances divided by (N - k) and tapered by (N - k)/N, truncation at the first
  negative pair sum, no monotone step, no floor.
* ``split_rhat(variant="rank")`` — Vehtari et al. (2021) rank-normalised split R-hat, the
  maximum of the bulk (rank-normalised) and tail (rank-normalised folded ``|x - median|``)
  values. ``variant="classic"`` — split R-hat of Gelman et al. (BDA3): ``sqrt(var+ / W)``.
  ``variant="tfp"`` — ``tfp.mcmc.potential_scale_reduction(states, split_chains=True)``, the
  Brooks & Gelman (1998) corrected ratio ``(M+1)/M var+/W - (N-1)/(M N)`` (no square root).
* ``nested_rhat`` — Margossian et al. (2024), many short chains grouped into superchains.

Splitting: for odd T the Vehtari variants drop the middle draw (as ArviZ/posterior); the TFP
variant drops the last one (as TFP).

If any chain never moves (all its draws equal) for an event element, that element's ESS and
R-hat are NaN (as posterior/ArviZ return NA): the diagnostics are undefined there, and round-off
would otherwise turn 0/0 into an arbitrary plausible-looking number.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp

from nflows_jax.sampling.base import Array

EssVariant = Literal["bulk", "mean", "tfp"]
RhatVariant = Literal["rank", "classic", "tfp"]


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


def _nan_where_a_chain_is_constant(x: Array, value: Array) -> Array:
    """``value`` (E,), with NaN for event elements where some chain of ``x`` (C, N, E) never moves.

    Such a chain has no within-chain variance, so ESS and R-hat are undefined (posterior and
    ArviZ return NaN/NA too); round-off would otherwise turn 0/0 into an arbitrary number.
    """
    constant = jnp.any(jnp.max(x, axis=1) == jnp.min(x, axis=1), axis=0)
    return jnp.where(constant, jnp.nan, value)


def _split_chains(x: Array, drop: Literal["middle", "last"]) -> Array:
    """(C, N, E) -> (2C, N // 2, E): each chain's first and second halves become two chains."""
    half = x.shape[1] // 2
    start = x.shape[1] - half if drop == "middle" else half
    return jnp.concatenate([x[:, :half], x[:, start : start + half]], axis=0)


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
    """Autocorrelation of each chain at lags 0..T-1: (C, T, *event) -> (C, T, *event).

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


def _average_ranks(column: Array) -> Array:
    """1-based ranks of a 1-D array, ties sharing the average of their ranks."""
    ordered = jnp.sort(column)
    below = jnp.searchsorted(ordered, column, side="left")  # strictly smaller values
    at_or_below = jnp.searchsorted(ordered, column, side="right")
    # Tied values occupy ranks below+1 .. at_or_below; their mean is (below + 1 + at_or_below)/2.
    return (below + 1 + at_or_below).astype(column.dtype) / 2


def _rank_normalize(x: Array) -> Array:
    """Pool all chains' draws, rank them and map ranks to normal quantiles (Blom offsets).

    ``z = Phi^{-1}((r - 3/8) / (S + 1/4))`` for S pooled draws, per event element: (C, N, E).
    """
    num_chains, num_draws, size = x.shape
    pooled = x.reshape(num_chains * num_draws, size)
    ranks = jax.vmap(_average_ranks, in_axes=1, out_axes=1)(pooled)
    total = num_chains * num_draws
    z = jax.scipy.special.ndtri((ranks - 0.375) / (total + 0.25))
    return z.reshape(x.shape)


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
    """Vehtari et al. (2021) multi-chain ESS with Geyer's initial monotone sequence: (M, N, E)."""
    num_chains, num_draws = x.shape[:2]
    acov = _autocovariance(x)
    unbiased = num_draws / (num_draws - 1)
    within = unbiased * jnp.mean(acov[:, 0], axis=0)  # W = mean of s_m^2
    var_plus = within / unbiased + _chain_mean_variance(x)
    # rho_t = 1 - (W - mean_m s_m^2 rho_{t,m}) / var+, with s_m^2 rho_{t,m} = N/(N-1) acov_m(t).
    rho = 1.0 - (within - unbiased * jnp.mean(acov, axis=0)) / var_plus
    pairs = _pair_sums(rho)
    # Initial positive sequence: keep pairs up to the first non-positive one ...
    positive = jnp.cumprod(pairs > 0, axis=0).astype(x.dtype)
    # ... and initial monotone sequence: each kept pair is at most every earlier one.
    monotone = jax.lax.cummin(pairs, axis=0)
    tau = -1.0 + 2.0 * jnp.sum(positive * monotone, axis=0)
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
def effective_sample_size(samples: Array, *, variant: EssVariant = "bulk") -> Array:
    """Multi-chain effective sample size of chain-major draws.

    Args:
      samples: (C, T) or (C, T, *event), C chains of T draws. ``"bulk"`` and ``"mean"`` need
        T >= 4 (they split chains), ``"tfp"`` T >= 2.
      variant: ``"bulk"`` (default, Vehtari et al. 2021 bulk-ESS), ``"mean"`` (split chains, raw
        values) or ``"tfp"`` (TFP's estimator); see the module docstring for the exact formulas.

    Returns:
      ESS with the event shape (a scalar for (C, T)), counted in draws over all chains: for iid
      draws it is close to C * T.
    """
    if variant not in ("bulk", "mean", "tfp"):
        raise ValueError(f"variant must be 'bulk', 'mean' or 'tfp', got {variant!r}")
    min_draws = 2 if variant == "tfp" else 4
    x, event_shape = _as_draws(samples, "effective_sample_size", min_draws)
    if variant == "tfp":
        ess = _ess_tfp(x)
    else:
        halves = _split_chains(x, drop="middle")
        if variant == "bulk":
            halves = _rank_normalize(halves)
        ess = _ess_multichain(halves)
    return _nan_where_a_chain_is_constant(x, ess).reshape(event_shape)


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
def split_rhat(samples: Array, *, variant: RhatVariant = "rank") -> Array:
    """Split R-hat of chain-major draws; values near 1 mean the chains agree.

    Args:
      samples: (C, T) or (C, T, *event) with T >= 4 (each chain is split in two halves).
      variant: ``"rank"`` (default): Vehtari et al. (2021), max of rank-normalised bulk and
        folded (tail) split R-hat; ``"classic"``: ``sqrt(var+ / W)`` on split chains (BDA3);
        ``"tfp"``: TFP's ``potential_scale_reduction(split_chains=True)``.

    Returns:
      R-hat with the event shape.
    """
    if variant not in ("rank", "classic", "tfp"):
        raise ValueError(f"variant must be 'rank', 'classic' or 'tfp', got {variant!r}")
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
        median = jnp.median(x, axis=(0, 1))
        folded = jnp.abs(x - median)
        tail = _rhat_classic(_rank_normalize(_split_chains(folded, drop="middle")))
        rhat = jnp.maximum(bulk, tail)
    return _nan_where_a_chain_is_constant(x, rhat).reshape(event_shape)


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

    Args:
      samples: (C, T) or (C, T, *event); T may be as small as 1 if M >= 2.
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
    if num_draws > 1:
        rhat = _nan_where_a_chain_is_constant(x, rhat)
    return rhat.reshape(event_shape)

"""Importance sampling: draws from a proposal q, log-weights log p̃(x) - log q(x), and estimators.

::

    draws = importance_sample(key, proposal, log_target, 10_000)
    log_z = log_evidence(draws.log_weights)                     # log of mean weight
    mean = self_normalised_expectation(draws.log_weights, draws.samples)
    ess = effective_sample_size(draws.log_weights)              # (Σw)² / Σw², in [1, n]

Log-weights are (n,), one per draw; :func:`log_evidence`, :func:`log_evidence_standard_error`
and :func:`effective_sample_size` reduce them to scalars, (n,) -> ().
``log_target`` may be unnormalised: p̃ = Z p. All estimators work on log-weights with
``logsumexp``, so weights of any magnitude (log-weights of ±1000 are routine in high dimension)
neither overflow nor underflow.

A proposal is any of:

* an object with ``sample_and_log_prob(seed=, sample_shape=)`` (a distrax or TFP distribution);
* a pair ``(sample_fn, log_prob_fn)`` with ``sample_fn(key, n) -> (n, *event)`` and
  ``log_prob_fn(x) -> (n,)``;
* a pair ``(flow, params)`` with ``flow`` an ``nflows_jax.flows.Flow``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from nflows_jax import flows

Array = jax.Array
PRNGKey = jax.Array
Proposal = Any


class ImportanceSamples(NamedTuple):
    """Draws from the proposal and their importance log-weights.

    Attributes:
      samples: ``(n, *event)`` draws from the proposal (or a pytree of such arrays).
      log_weights: (n,) ``log_target(x) - log q(x)``.
    """

    samples: Any
    log_weights: Array


def _draw(key: PRNGKey, proposal: Proposal, num_samples: int) -> tuple[Any, Array]:
    """(samples, log q(samples)) for any of the accepted proposal forms."""
    if hasattr(proposal, "sample_and_log_prob"):
        return proposal.sample_and_log_prob(seed=key, sample_shape=(num_samples,))
    if isinstance(proposal, flows.Flow):
        raise ValueError("a Flow proposal needs its params: pass (flow, params)")
    if isinstance(proposal, tuple) and len(proposal) == 2:
        first, second = proposal
        if isinstance(first, flows.Flow):
            return flows.sample_and_log_prob(first, second, key, num_samples)
        if callable(first) and callable(second):
            samples = first(key, num_samples)
            return samples, second(samples)
    raise ValueError(
        "proposal must be a distribution with sample_and_log_prob(seed=, sample_shape=), a pair "
        f"(sample_fn, log_prob_fn), or a pair (Flow, params); got {type(proposal).__name__}"
    )


def _check_log_density(name: str, value: Array, num_samples: int) -> None:
    if jnp.shape(value) != (num_samples,):
        raise ValueError(
            f"{name} returned shape {jnp.shape(value)}; expected ({num_samples},), one value per "
            "sample. It must be vectorised over the leading axis: wrap a per-sample function "
            "in jax.vmap."
        )


def importance_sample(
    key: PRNGKey,
    proposal: Proposal,
    log_target: Callable[[Any], Array],
    num_samples: int,
) -> ImportanceSamples:
    """Draw ``num_samples`` from ``proposal`` and weight them by ``log_target - log q``.

    Args:
      key: PRNG key.
      proposal: see the module docstring for the accepted forms.
      log_target: batched, possibly unnormalised log-density: ``(n, *event)`` -> (n,).
      num_samples: a static int n >= 1.

    Returns:
      ``ImportanceSamples(samples (n, *event), log_weights (n,))``.
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a Python int >= 1; got {num_samples!r}")
    samples, log_q = _draw(key, proposal, num_samples)
    _check_log_density("the proposal's log_prob", log_q, num_samples)
    log_p = log_target(samples)
    _check_log_density("log_target", log_p, num_samples)
    return ImportanceSamples(samples, log_p - log_q)


def _check_log_weights(log_weights: Array) -> Array:
    log_weights = jnp.asarray(log_weights)
    if log_weights.ndim != 1 or log_weights.shape[0] == 0:
        raise ValueError(f"log_weights must have shape (n,) with n >= 1; got {log_weights.shape}")
    return log_weights


def normalised_weights(log_weights: Array) -> Array:
    """w_i / Σ_j w_j, computed as a softmax of the log-weights: (n,) -> (n,)."""
    return jax.nn.softmax(_check_log_weights(log_weights))


def self_normalised_expectation(log_weights: Array, values: Array) -> Array:
    """Σ w̄_i f(x_i) with w̄ the normalised weights; consistent for E_p[f] with unnormalised p.

    Args:
      log_weights: (n,).
      values: ``(n, *shape)`` values f(x_i).

    Returns:
      ``(*shape)`` estimate. Biased for finite n (O(1/n)), unlike ``log_evidence``'s weight mean.
    """
    log_weights = _check_log_weights(log_weights)
    values = jnp.asarray(values)
    if values.shape[:1] != log_weights.shape:
        raise ValueError(
            f"values must have a leading axis of size {log_weights.shape[0]} (one per weight); "
            f"got shape {values.shape}"
        )
    weights = jax.nn.softmax(log_weights)
    return jnp.tensordot(weights, values, axes=1)


def log_evidence(log_weights: Array) -> Array:
    """log Ẑ = log((1/n) Σ w_i), the log of the unbiased estimate of Z = ∫ p̃ (log-mean-exp).

    log Ẑ itself is biased low by Jensen (about -Var(Ẑ) / (2 Z²)).
    """
    log_weights = _check_log_weights(log_weights)
    return logsumexp(log_weights) - math.log(log_weights.shape[0])


def effective_sample_size(log_weights: Array) -> Array:
    """Kish's ESS (Σw)² / Σw², computed as exp(2 logsumexp(lw) - logsumexp(2 lw)); in [1, n].

    Invariant to adding a constant to the log-weights, so unnormalised targets are fine.
    """
    log_weights = _check_log_weights(log_weights)
    return jnp.exp(2.0 * logsumexp(log_weights) - logsumexp(2.0 * log_weights))


def log_evidence_standard_error(log_weights: Array) -> Array:
    """Delta-method Monte-Carlo standard error of ``log_evidence``: sd(w) / (√n · mean(w)).

    With the unbiased sample variance this is exactly ``sqrt((n / ESS - 1) / (n - 1))``, which is
    how it is computed (stable for any weight scale). Needs n >= 2. It is itself an estimate:
    with heavy-tailed weights (a proposal narrower than the target) it can badly understate the
    error.
    """
    log_weights = _check_log_weights(log_weights)
    num = log_weights.shape[0]
    if num < 2:
        raise ValueError("the standard error needs at least 2 weights")
    ratio = num / effective_sample_size(log_weights)
    # n / ESS >= 1 in exact arithmetic; clamp the rounding error before the sqrt.
    return jnp.sqrt(jnp.maximum(ratio - 1.0, 0.0) / (num - 1))


__all__ = [
    "ImportanceSamples",
    "effective_sample_size",
    "importance_sample",
    "log_evidence",
    "log_evidence_standard_error",
    "normalised_weights",
    "self_normalised_expectation",
]

"""Flows as samplers of unnormalised densities: reverse-KL training, flow proposals, NeuTra.

A ``Flow`` q fitted to a target p̃ (known up to its normaliser Z) is useful three ways::

    result = fit_reverse_kl(flow, params, logdensity, optax.adam(1e-3), 5000,
                            key=key, anneal_steps=2500)            # q ≈ p by min KL(q ‖ p)
    est = flow_importance_sampling(key, flow, result.params, logdensity, 10_000)
    est.log_z, est.log_z_se, est.ess                               # evidence, error, Kish ESS
    imh = flow_independence_mh(logdensity, flow, result.params)    # exact MCMC with q proposals
    kernel = cycle(imh, rwmh(logdensity, 0.2))                     # global + local moves
    transport = neutra(logdensity, flow, result.params)            # HMC where q made p ≈ N(0, I)
    chains = sample_chains(key, neutra_hmc(logdensity, flow, result.params, 0.5, 8), z0, 1000)
    chains_x = push_forward_chains(transport, chains)              # trace back in data space

Conventions:

* ``logdensity_fn`` is the target's unnormalised log-density of ONE position of the flow's event
  shape, returning a scalar: the convention of the MCMC kernels. Importance sampling and the
  reverse-KL loss ``vmap`` it over their samples; the functions in
  ``nflows_jax.targets.energies`` take single points and batches alike.
* The flow maps base to data with ``bijector.forward`` (z -> x) and back with ``inverse``; the
  bijectors work on a leading batch axis, so single positions travel as ``x[None]`` and ``[0]``.
* Unconditional flows only (no ``context``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nflows_jax import flows
from nflows_jax.bijectors.base import Array, Params, PRNGKey
from nflows_jax.formatting import show
from nflows_jax.sampling import importance
from nflows_jax.sampling.base import Kernel
from nflows_jax.sampling.checks import scalar_logdensity
from nflows_jax.sampling.hmc import hmc
from nflows_jax.sampling.mh import independence_mh
from nflows_jax.sampling.run import ChainResult
from nflows_jax.train import TrainResult, fit

LogDensityFn = Callable[[Array], Array]

__all__ = [
    "FlowImportanceResult",
    "NeuTra",
    "annealing_schedule",
    "fit_reverse_kl",
    "flow_importance_sampling",
    "flow_independence_mh",
    "neutra",
    "neutra_hmc",
    "push_forward_chains",
    "reverse_kl_loss",
]


def _check_positive_int(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an int >= {low}; got {show(value)}")
    return int(value)


def _check_unconditional(flow: flows.Flow, who: str) -> tuple[int, ...]:
    if not isinstance(flow, flows.Flow):
        raise ValueError(f"{who} needs a nflows_jax.flows.Flow; got {type(flow).__name__}")
    return tuple(flow.base.event_shape)


def _check_event(x: Array, event_shape: tuple[int, ...], who: str, what: str) -> Array:
    x = jnp.asarray(x)
    if tuple(x.shape) != event_shape:
        raise ValueError(
            f"{who}: {what} must have the flow's event shape {event_shape} (ONE position; vmap "
            f"for many), got shape {tuple(x.shape)}"
        )
    return x


# ------------------------------------------------------------------------------------------------
# Reverse-KL training


def annealing_schedule(anneal_steps: int, initial_beta: float = 0.01) -> Callable[[int], Any]:
    """``beta(step)``: the target's inverse temperature, linear from ``initial_beta`` to 1.

    β(s) = initial_beta + (1 - initial_beta) · min(s / anneal_steps, 1), so β = 1 from step
    ``anneal_steps`` on; ``anneal_steps = 0`` means β = 1 throughout. Training against p̃^β with
    small β first spreads q over the support before the modes sharpen (Rezende & Mohamed, 2015),
    which keeps reverse KL, a mode-seeking objective, from locking onto the first mode it finds.

    Returns a host function of the 0-based step giving a float32 scalar (a numpy array, so every
    step feeds ``fit`` the same dtype and the step compiles once): use it as ``fit``'s
    ``batch_fn``.
    """
    anneal_steps = _check_positive_int("anneal_steps", anneal_steps, low=0)
    if not 0.0 < initial_beta <= 1.0:
        raise ValueError(f"initial_beta must lie in (0, 1]; got {show(initial_beta)}")
    initial_beta = float(initial_beta)

    def beta(step: int) -> np.ndarray:
        progress = 1.0 if anneal_steps == 0 else min(step / anneal_steps, 1.0)
        return np.asarray(initial_beta + (1.0 - initial_beta) * progress, np.float32)

    return beta


def _finite_part(batched_logdensity: Callable[[Array], Array]) -> Callable[[Array], Array]:
    """``batched_logdensity`` whose gradient is zero at rows where its value is not finite.

    The value is unchanged (−inf and NaN included; the caller masks them). Masking the value with
    ``jnp.where`` is not enough: the backward pass of the log-density at a point outside its
    domain (``sqrt`` of a negative, ``log`` of 0) multiplies the zero cotangent by an infinite or
    NaN derivative, and that NaN would reach the flow's parameter gradient. Here the cotangent of
    such a row is replaced by zero after the log-density's own backward pass, one evaluation of
    the log-density and its pullback as without masking.
    """

    @jax.custom_vjp
    def finite_part(x):
        return batched_logdensity(x)

    def forward(x):
        log_p, pullback = jax.vjp(batched_logdensity, x)
        return log_p, (pullback, jnp.isfinite(log_p))

    def backward(residuals, cotangent):
        pullback, finite = residuals
        (x_cotangent,) = pullback(jnp.where(finite, cotangent, 0.0))
        row_finite = finite.reshape(finite.shape + (1,) * (x_cotangent.ndim - 1))
        return (jnp.where(row_finite, x_cotangent, 0.0),)

    finite_part.defvjp(forward, backward)
    return finite_part


def reverse_kl_loss(
    flow: flows.Flow,
    logdensity_fn: LogDensityFn,
    num_samples: int,
    *,
    mask_nonfinite: bool = False,
) -> Callable[[Params, Array, PRNGKey], Array]:
    """The reverse-KL loss ``loss_fn(params, beta, key)`` for ``train.fit``.

    loss(θ) = E_{x ~ q_θ}[log q_θ(x) - β log p̃(x)], estimated from ``num_samples`` draws of
    ``sample_and_log_prob``: x = f_θ(z) with z from the base, so the gradient flows through the
    samples (the reparameterised estimator, unbiased for the gradient). At β = 1 the loss is
    KL(q ‖ p) - log Z, the negative ELBO; its minimum is -log Z, reached when q = p, where the
    estimate has zero variance (log q - log p̃ is then the constant -log Z).

    Non-finite values. Where p̃ is 0 (log p̃ = −inf) on a set q gives mass, KL(q ‖ p) is infinite;
    a NaN log p̃ (a point outside the target's domain) has no meaning at all. By default both go
    into the loss, which is then +inf or NaN, and ``fit``'s guard stops training with a
    ``NonFiniteLossError`` naming the step: give the flow the target's support (e.g. a final
    ``sigmoid`` for a box) instead. ``mask_nonfinite=True`` drops those samples instead: the loss
    is the mean over the samples with finite log p̃ and they contribute no gradient (no NaN gets
    into the gradient either, see ``_finite_part``). That objective no longer penalises mass
    outside the support, so q may keep some there; the loss is NaN (and ``fit`` stops) only when
    every sample is dropped.

    Args:
      flow: an unconditional ``Flow``.
      logdensity_fn: unnormalised log p̃ of ONE position (event shape) -> scalar; vmapped here.
      num_samples: Monte-Carlo samples per loss evaluation (a static int).
      mask_nonfinite: see above.

    Returns:
      ``loss_fn(params, beta, key) -> scalar`` with ``beta`` the inverse temperature (a scalar,
      the "batch" ``fit`` feeds it: see :func:`annealing_schedule`).
    """
    _check_unconditional(flow, "reverse_kl_loss")
    num_samples = _check_positive_int("num_samples", num_samples)
    batched = jax.vmap(scalar_logdensity(logdensity_fn, "reverse_kl_loss"))
    if mask_nonfinite:
        batched = _finite_part(batched)

    def loss_fn(params: Params, beta: Array, key: PRNGKey) -> Array:
        x, log_q = flows.sample_and_log_prob(flow, params, key, num_samples)
        log_p = batched(x)
        per_sample = log_q - beta * log_p
        if not mask_nonfinite:
            return jnp.mean(per_sample)
        finite = jnp.isfinite(log_p)
        # 0 / 0 = NaN when every sample is dropped, which fit reports.
        return jnp.sum(jnp.where(finite, per_sample, 0.0)) / jnp.sum(finite)

    return loss_fn


def fit_reverse_kl(
    flow: flows.Flow,
    params: Params,
    logdensity_fn: LogDensityFn,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    *,
    key: PRNGKey,
    num_samples: int = 256,
    anneal_steps: int = 0,
    initial_beta: float = 0.01,
    mask_nonfinite: bool = False,
    **fit_kwargs: Any,
) -> TrainResult:
    """Fit ``flow`` to the unnormalised ``logdensity_fn`` by minimising reverse KL with ``fit``.

    ``reverse_kl_loss`` under ``annealing_schedule(anneal_steps, initial_beta)``: β rises
    linearly from ``initial_beta`` to 1 over the first ``anneal_steps`` steps (0: no annealing).
    Everything else is ``train.fit``: pass its keywords (``description``, ``progress``,
    ``log_every``, ``eval_fn``, ``metrics_path``, ``checkpoint_dir``, ...) through
    ``fit_kwargs``. ``history["loss"]`` holds the loss at the β of its steps, so only the values
    logged after annealing estimate KL(q ‖ p) - log Z.

    Returns:
      ``TrainResult(params, opt_state, history)``. Raises ``NonFiniteLossError`` as ``fit`` does,
      e.g. when the flow puts samples where log p̃ is −inf or NaN (see ``reverse_kl_loss``).
    """
    loss_fn = reverse_kl_loss(flow, logdensity_fn, num_samples, mask_nonfinite=mask_nonfinite)
    fit_kwargs.setdefault("description", "reverse KL")
    return fit(
        loss_fn,
        params,
        optimizer,
        annealing_schedule(anneal_steps, initial_beta),
        num_steps,
        key=key,
        **fit_kwargs,
    )


# ------------------------------------------------------------------------------------------------
# Flow proposals: importance sampling and independence Metropolis–Hastings


class FlowImportanceResult(NamedTuple):
    """Importance sampling of p̃ with a flow proposal q; ``n`` draws.

    Attributes:
      log_z: log Ẑ, the log of the (unbiased) mean weight; biased low by about log_z_se² / 2.
      log_z_se: its delta-method standard error sqrt((n / ess - 1) / (n - 1)); an estimate that
        understates the error when the weights are heavy-tailed (q narrower than p somewhere).
      ess: Kish's effective sample size (Σw)² / Σw², in [1, n].
      elbo: mean log-weight E_q[log p̃ - log q] = log Z - KL(q ‖ p) ≤ log Z (−inf when q has
        mass where p̃ is 0).
      samples: ``(n, *event)`` draws from q.
      log_weights: (n,) log p̃(x) - log q(x). −inf log p̃ is a zero weight (correct); a NaN log
        p̃ makes every estimate NaN rather than being dropped, which would bias them silently.
    """

    log_z: Array
    log_z_se: Array
    ess: Array
    elbo: Array
    samples: Array
    log_weights: Array


def flow_importance_sampling(
    key: PRNGKey,
    flow: flows.Flow,
    params: Params,
    logdensity_fn: LogDensityFn,
    num_samples: int,
) -> FlowImportanceResult:
    """Estimate log Z = log ∫ p̃ with ``num_samples`` (>= 2) draws from the flow.

    One forward pass of the flow gives samples and log q together; ``logdensity_fn`` (ONE
    position -> scalar) is vmapped over them. See ``nflows_jax.sampling.importance`` for the
    estimators and self-normalised expectations of other functions of the samples.
    """
    _check_unconditional(flow, "flow_importance_sampling")
    num_samples = _check_positive_int("num_samples", num_samples, low=2)
    log_target = jax.vmap(scalar_logdensity(logdensity_fn, "flow_importance_sampling"))
    draws = importance.importance_sample(key, (flow, params), log_target, num_samples)
    log_weights = draws.log_weights
    return FlowImportanceResult(
        log_z=importance.log_evidence(log_weights),
        log_z_se=importance.log_evidence_standard_error(log_weights),
        ess=importance.effective_sample_size(log_weights),
        elbo=jnp.mean(log_weights),
        samples=draws.samples,
        log_weights=log_weights,
    )


def flow_independence_mh(logdensity_fn: LogDensityFn, flow: flows.Flow, params: Params) -> Kernel:
    """Independence Metropolis–Hastings with the flow as its proposal.

    ``independence_mh`` with x′ ~ q and acceptance min(1, w(x′) / w(x)), w = p̃ / q. A step costs
    one forward pass of the flow for ONE sample (sample and log q together) and one log p̃;
    ``init`` costs one inverse pass (log q of the starting point) and one log p̃. Positions have
    the flow's event shape. The acceptance rate and, on a small grid of candidates,
    ``transition`` (exact, with the flow density at the candidates as proposal masses: use it
    where they sum to at most 1) come from ``independence_mh``.
    """
    event_shape = _check_unconditional(flow, "flow_independence_mh")

    def sample_and_logdensity(key: PRNGKey) -> tuple[Array, Array]:
        x, log_q = flows.sample_and_log_prob(flow, params, key, 1)
        return x[0], log_q[0]

    def proposal_logdensity(x: Array) -> Array:
        x = _check_event(x, event_shape, "flow_independence_mh", "the position")
        return flows.log_prob(flow, params, x[None])[0]

    return independence_mh(
        logdensity_fn,
        proposal_sample=lambda key: sample_and_logdensity(key)[0],
        proposal_logdensity=proposal_logdensity,
        proposal_sample_and_logdensity=sample_and_logdensity,
    )


# ------------------------------------------------------------------------------------------------
# NeuTra: MCMC on the pull-back of the target through the flow


class NeuTra(NamedTuple):
    """The target seen through a flow f: base -> data (Hoffman et al., 2019, "NeuTra-lizing bad
    geometry in HMC with neural transport"). All functions take ONE position.

    Attributes:
      logdensity: z -> log p̃(f(z)) + log|det ∂f/∂z|, the unnormalised density of z = f⁻¹(x)
        for x ~ p (same Z). Where q ≈ p it is ≈ the base's density, nearly N(0, I) for a
        standard-normal base: easy geometry for HMC and its step-size/mass adaptation.
      push_forward: z -> x = f(z) (the flow's ``forward``).
      pull_back: x -> z = f⁻¹(x) (the flow's ``inverse``), e.g. for initial positions.
    """

    logdensity: Callable[[Array], Array]
    push_forward: Callable[[Array], Array]
    pull_back: Callable[[Array], Array]


def neutra(logdensity_fn: LogDensityFn, flow: flows.Flow, params: Params) -> NeuTra:
    """The pull-back of ``logdensity_fn`` (ONE position -> scalar) through ``flow``'s bijector.

    The base distribution plays no part: only the bijector transports. Any kernel (or warm-up,
    such as a window adaptation) built on ``neutra(...).logdensity`` samples z; map its draws with
    ``push_forward`` (or a whole run with :func:`push_forward_chains`). One log-density evaluation
    costs one forward pass of the flow for one position plus one log p̃; its gradient, a
    backward pass through both.
    """
    event_shape = _check_unconditional(flow, "neutra")
    logdensity_fn = scalar_logdensity(logdensity_fn, "neutra")
    bijector = flow.bijector

    def push_forward(z: Array) -> Array:
        z = _check_event(z, event_shape, "neutra.push_forward", "z")
        return bijector.forward(params, z[None])[0][0]

    def pull_back(x: Array) -> Array:
        x = _check_event(x, event_shape, "neutra.pull_back", "x")
        return bijector.inverse(params, x[None])[0][0]

    def logdensity(z: Array) -> Array:
        z = _check_event(z, event_shape, "neutra.logdensity", "z")
        x, log_det = bijector.forward(params, z[None])
        return logdensity_fn(x[0]) + log_det[0]

    return NeuTra(logdensity, push_forward, pull_back)


def neutra_hmc(
    logdensity_fn: LogDensityFn,
    flow: flows.Flow,
    params: Params,
    step_size: float | Array,
    num_leapfrog_steps: int,
    inverse_mass_matrix: Array | None = None,
    **hmc_kwargs: Any,
) -> Kernel:
    """HMC on z with ``neutra(logdensity_fn, flow, params).logdensity``: flow-preconditioned HMC.

    Exactly ``sampling.hmc.hmc`` on the pulled-back density (same arguments, same use of the
    key), so with an identity flow it is plain HMC. Positions, states and infos live in z:
    start from ``neutra(...).pull_back(x0)`` or base draws, and map the run back with
    :func:`push_forward_chains`. A leapfrog step costs one forward and one backward pass of the
    flow besides the target's gradient.
    """
    transport = neutra(logdensity_fn, flow, params)
    return hmc(
        transport.logdensity,
        step_size,
        num_leapfrog_steps,
        inverse_mass_matrix=inverse_mass_matrix,
        **hmc_kwargs,
    )


def push_forward_chains(transport: NeuTra, result: ChainResult) -> ChainResult:
    """A ``sample_chains`` result in z mapped to data space: trace through f, infos kept.

    Args:
      transport: the ``NeuTra`` the chains ran on.
      result: ``ChainResult`` of a run with ``keep="position"``: trace ``(C, K, *event)`` in z.

    Returns:
      ``ChainResult(final_state, trace, info_trace)`` with ``trace`` = f(z) of the same shape
      (acceptance rates, divergences, energy errors are those of the run: they are properties
      of the chain, not of the space it is seen in). ``final_state`` stays the kernel's state in
      z, so a run can be resumed from it; ``push_forward`` its ``.position`` for x.
    """
    if not isinstance(transport, NeuTra):
        raise ValueError(f"push_forward_chains needs a NeuTra; got {type(transport).__name__}")
    trace = result.trace
    if not isinstance(trace, jax.Array | np.ndarray) or jnp.ndim(trace) < 2:
        raise ValueError(
            "push_forward_chains needs the trace of positions (sample_chains with "
            f"keep='position'), an array (C, K, *event); got {type(trace).__name__}"
        )
    num_chains, num_kept = trace.shape[:2]
    flat = jnp.reshape(trace, (num_chains * num_kept, *trace.shape[2:]))
    pushed = jax.vmap(transport.push_forward)(flat)
    return ChainResult(result.final_state, pushed.reshape(trace.shape), result.info_trace)

"""Autoregressive distributions on MADE: a Bernoulli MADE and the Gaussian autoregressive model.

Both evaluate ``log_prob`` in one network pass and ``sample`` in D sequential passes:

* :func:`bernoulli_made` for binary vectors, ``p(x) = prod_i Bernoulli(x_i | sigmoid(l_i(x_<i)))``
  (Germain et al. 2015). It supports connectivity-agnostic training (``random_degrees(key)``
  gives a fresh order and hidden connectivity for every step) and mask ensembles at test time
  (:func:`ensemble_log_prob`: the log of the mean probability over several connectivities).
* :func:`gaussian_autoregressive` for real vectors, ``x_i = mu_i(x_<i) + exp(s_i(x_<i)) z_i``: a
  :class:`~nflows_jax.flows.Flow` of one MAF layer with a standard-normal base, so it has every
  flow method (``log_prob``, ``sample``, ``to_distrax``) and nothing of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from nflows_jax.bijectors.autoregressive import masked_autoregressive
from nflows_jax.bijectors.transformers import affine_transformer
from nflows_jax.flows import Flow, standard_normal
from nflows_jax.nets.made import MADE, MadeDegrees, made_degrees

Array = jax.Array


class BernoulliMADE(NamedTuple):
    """A Bernoulli MADE (build with :func:`bernoulli_made`). All functions are pure.

    Attributes:
      init: ``init(key, x, context=None) -> params``; x (B, D).
      logits: ``logits(params, x, context=None, degrees=None) -> (B, D)``; logit of x_i = 1 given
        x_<i (in the order of ``degrees``).
      log_prob: ``log_prob(params, x, context=None, degrees=None) -> (B,)`` in nats, one pass.
      sample: ``sample(params, key, num_samples, context=None, degrees=None) -> (N, D)`` in
        D passes; float 0/1 values.
      random_degrees: ``random_degrees(key) -> MadeDegrees``, a connectivity drawn with the
        model's ``order`` / ``hidden_degrees`` options (random order when ``order="random"``),
        usable inside ``jit``.
      degrees: the fixed connectivity used when ``degrees=None``.
    """

    init: Callable
    logits: Callable
    log_prob: Callable
    sample: Callable
    random_degrees: Callable[[jax.Array], MadeDegrees]
    degrees: MadeDegrees


def _binary_log_likelihood(logits: Array, x: Array) -> Array:
    """sum_i x_i log sigmoid(l_i) + (1 - x_i) log sigmoid(-l_i), stable for any logit."""
    return jnp.sum(x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits), axis=-1)


def bernoulli_made(
    input_size: int,
    hidden: Sequence[int] = (500,),
    order: str | Sequence[int] = "natural",
    hidden_degrees: str = "equal",
    seed: int = 0,
    context_size: int = 0,
    residual: bool = False,
    direct: bool = True,
    activation: Callable[[Array], Array] = jax.nn.relu,
) -> BernoulliMADE:
    """A MADE over binary vectors of length ``input_size``.

    Args:
      input_size: D, the number of input coordinates.
      hidden, residual, direct, activation: the MADE's architecture (see ``nflows_jax.nets.MADE``).
      order, hidden_degrees: the connectivity options of :func:`~nflows_jax.nets.made.made_degrees`;
        ``seed`` fixes the default connectivity when either is random.
      context_size: C of an optional (B, C) context.
    """
    hidden = tuple(hidden)
    net = MADE(
        input_size,
        hidden,
        1,
        context_size=context_size,
        residual=residual,
        direct=direct,
        activation=activation,
        zero_init_output=False,
    )

    def random_degrees(key: jax.Array) -> MadeDegrees:
        return made_degrees(input_size, hidden, order, hidden_degrees, key=key)

    fixed = jax.device_get(random_degrees(jax.random.PRNGKey(seed)))

    def as_float(x: Array) -> Array:
        if jnp.ndim(x) != 2 or jnp.shape(x)[1] != input_size:
            raise ValueError(
                f"bernoulli_made(input_size={input_size}) needs x of shape (batch, {input_size}); "
                f"got {jnp.shape(x)}"
            )
        return x.astype(jnp.result_type(float)) if not jnp.issubdtype(x.dtype, jnp.floating) else x

    def init(key, x, context=None):
        x = as_float(x)
        return net.init(key, x[:1], fixed, None if context is None else context[:1])["params"]

    def logits(params, x, context=None, degrees=None):
        degrees = fixed if degrees is None else degrees
        return net.apply({"params": params}, as_float(x), degrees, context)[..., 0]

    def log_prob(params, x, context=None, degrees=None):
        x = as_float(x)
        return _binary_log_likelihood(logits(params, x, context, degrees), x)

    def sample(params, key, num_samples, context=None, degrees=None):
        degrees = fixed if degrees is None else degrees
        position = jnp.asarray(degrees.inputs)
        uniforms = jax.random.uniform(key, (num_samples, input_size))

        def step(t, x):
            # Coordinates of degree t + 1 see only coordinates already drawn.
            drawn = (uniforms < jax.nn.sigmoid(logits(params, x, context, degrees))).astype(x.dtype)
            return jnp.where(position == t + 1, drawn, x)

        x = jnp.zeros((num_samples, input_size), jnp.result_type(float))
        return jax.lax.fori_loop(0, input_size, step, x)

    return BernoulliMADE(init, logits, log_prob, sample, random_degrees, fixed)


def ensemble_log_prob(
    model: BernoulliMADE,
    params,
    x: Array,
    keys: Array,
    context: Array | None = None,
) -> Array:
    """``log (1/M) sum_m p_m(x)`` over the M connectivities ``model.random_degrees(keys[m])``.

    Args:
      keys: (M,) PRNG keys, one connectivity each (use the same keys for every batch).
    Returns:
      (B,) log-likelihoods in nats; each p_m is normalised, so their mean is too.
    """

    def one(key):
        return model.log_prob(params, x, context, model.random_degrees(key))

    per_mask = jax.lax.map(one, keys)  # (M, B); lax.map keeps memory at one network's
    return jax.nn.logsumexp(per_mask, axis=0) - jnp.log(per_mask.shape[0])


def gaussian_autoregressive(
    input_size: int,
    hidden: Sequence[int] = (64, 64),
    order: str | Sequence[int] = "natural",
    hidden_degrees: str = "equal",
    seed: int = 0,
    context_size: int = 0,
    max_log_scale: float = 5.0,
) -> Flow:
    """The Gaussian autoregressive model as a flow: one MAF layer over N(0, I).

    ``log_prob`` is one MADE pass; ``sample`` is D passes (``nflows_jax.flows`` functions).
    """
    layer = masked_autoregressive(
        input_size,
        affine_transformer(max_log_scale),
        hidden,
        order,
        hidden_degrees,
        seed,
        context_size,
    )
    return Flow(standard_normal(input_size), layer)


__all__ = ["BernoulliMADE", "bernoulli_made", "ensemble_log_prob", "gaussian_autoregressive"]

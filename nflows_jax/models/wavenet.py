"""WaveNet (van den Oord et al. 2016) with naive and fast (queue-cached) generation.

The model factorises a sequence of integer levels x (B, T) as ``prod_t p(x_t | x_<t, c)``:

* the input is shifted right by one step and lifted to F channels by a 1×1 convolution, so the
  features at step t only know x_<t;
* each layer ℓ is a dilated causal convolution of width 2 and dilation d_ℓ (it reads its input
  at t - d_ℓ and t), plus an optional global-conditioning bias from a context vector c, a gated
  unit ``tanh(a) · sigmoid(b)``, then a 1×1 residual back into the layer's input and a 1×1 skip
  connection summed over layers;
* the head is ``relu -> 1×1 -> relu -> 1×1`` on the summed skips to K outputs per step, read by a
  :class:`~nflows_jax.models.likelihoods.Likelihood` (a μ-law 256-way softmax, a
  discretised logistic mixture).

Dilations 1, 2, ..., 2^k repeated ``num_stacks`` times give a receptive field of
``1 + num_stacks · (2^(k+1) - 1)`` steps.

Generation. The ``sample_naive`` function of a :class:`WaveNet` runs the whole network over the
sequence once per step (O(T²·layers)); its ``sample_fast`` keeps, for each layer, a queue of its
last d_ℓ inputs (Paine et al. 2016, "Fast WaveNet"), so a step costs one width-2 convolution per
layer (O(T·layers)). Both draw step t with the key ``fold_in(key, t)`` and compute each layer
with the same matmuls, so for the same key they give the same samples.

Params are a plain dict (no flax module), so the fast loop reads the same arrays as the
parallel pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from nflows_jax.formatting import check_context, show
from nflows_jax.models.likelihoods import Likelihood

Array = jax.Array
Params = dict


class WaveNet(NamedTuple):
    """A WaveNet over integer sequences (build with :func:`wavenet`).

    Attributes:
      init: ``init(key, dtype=float32) -> params``.
      outputs: ``outputs(params, x, context=None) -> (B, T, K)``; x (B, T), one pass.
      network: ``network(params, inputs, context=None) -> (B, T, K)`` on float inputs
        (B, T, 1), output t a function of inputs 0..t-1 (the causal stack without the input
        scaling; Parallel WaveNet's student layers are built from it).
      log_prob: ``log_prob(params, x, context=None) -> (B,)`` in nats.
      sample_naive: ``sample_naive(params, key, num_samples, length, context=None) -> (N, T)``.
      sample_fast: same signature and, for the same key, the same samples, in O(T · layers).
      likelihood: the per-step likelihood.
      dilations: the layers' dilations.
      receptive_field: how many past steps reach an output: ``1 + sum(dilations)``.
    """

    init: Callable
    outputs: Callable
    network: Callable
    log_prob: Callable
    sample_naive: Callable
    sample_fast: Callable
    likelihood: Likelihood
    dilations: tuple[int, ...]
    receptive_field: int


def wavenet_dilations(num_stacks: int, layers_per_stack: int) -> tuple[int, ...]:
    """``(1, 2, ..., 2^(L-1))`` repeated ``num_stacks`` times."""
    return tuple(2**i for _ in range(num_stacks) for i in range(layers_per_stack))


def _uniform(key, shape, fan_in, dtype):
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def wavenet(
    likelihood: Likelihood,
    dilations: Sequence[int] = wavenet_dilations(2, 8),
    channels: int = 32,
    skip_channels: int = 64,
    context_size: int = 0,
) -> WaveNet:
    """A WaveNet whose K outputs per step feed ``likelihood``.

    Args:
      likelihood: e.g. ``categorical(256)`` for μ-law audio, ``gaussian()`` for real values.
      dilations: per layer, ints >= 1 (see :func:`wavenet_dilations`).
      channels: F, the residual channels.
      skip_channels: S, the skip and head channels.
      context_size: C of a global conditioning vector (B, C) (speaker, class); 0 for none.
    """
    dilations = tuple(int(d) for d in dilations)
    if not dilations or min(dilations) < 1:
        raise ValueError(f"wavenet: dilations must be ints >= 1; got {dilations}")
    for name, value in (("channels", channels), ("skip_channels", skip_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"wavenet: {name} must be an int >= 1; got {show(value)}")
    levels, outputs_per_step = likelihood.num_levels, likelihood.params_per_entry
    f, s = channels, skip_channels

    def init(key: jax.Array, dtype=jnp.float32) -> Params:
        keys = iter(jax.random.split(key, 4 + 8 * len(dilations)))  # 2 per dense, 1 per matrix

        def dense(fan_in, fan_out, zero=False):
            if zero:
                return {
                    "kernel": jnp.zeros((fan_in, fan_out), dtype),
                    "bias": jnp.zeros(fan_out, dtype),
                }
            return {
                "kernel": _uniform(next(keys), (fan_in, fan_out), fan_in, dtype),
                "bias": _uniform(next(keys), (fan_out,), fan_in, dtype),
            }

        layers = []
        for _ in dilations:
            layer = {
                "past": _uniform(next(keys), (f, 2 * f), 2 * f, dtype),  # reads t - d
                "present": dense(f, 2 * f),  # reads t
                "residual": dense(f, f),
                "skip": dense(f, s),
            }
            if context_size:
                layer["context"] = _uniform(next(keys), (context_size, 2 * f), context_size, dtype)
            layers.append(layer)
        return {
            "input": dense(1, f),
            "layers": layers,
            "head_0": dense(s, s),
            "head_1": dense(s, outputs_per_step, zero=True),
        }

    def check(x: Array, context: Array | None) -> None:
        if jnp.ndim(x) != 2:
            raise ValueError(f"wavenet: x must have shape (B, T); got {jnp.shape(x)}")
        if levels is not None and jnp.issubdtype(jnp.result_type(x), jnp.floating):
            raise ValueError(f"wavenet: x must hold integer levels 0..{levels - 1}; quantise first")
        _check_context(context_size, jnp.shape(x)[0], context)

    def scaled(x: Array, dtype) -> Array:
        """The network's input (..., 1): levels mapped to [-1, 1], real values as they are."""
        if levels is None:
            return x.astype(dtype)[..., None]
        return (2.0 * x.astype(dtype) / (levels - 1) - 1.0)[..., None]

    sample_dtype = jnp.int32 if levels is not None else None

    def apply_dense(p, h):
        return h @ p["kernel"] + p["bias"]

    def layer_step(layer, past, present, context):
        """One layer at some steps: past = input at t - d, present = input at t; (..., F)."""
        pre = past @ layer["past"] + apply_dense(layer["present"], present)
        if context is not None:  # global conditioning: one bias per sequence
            bias = context @ layer["context"]
            pre = pre + (bias[:, None] if pre.ndim == 3 else bias)
        gated = jnp.tanh(pre[..., :f]) * jax.nn.sigmoid(pre[..., f:])
        return present + apply_dense(layer["residual"], gated), apply_dense(layer["skip"], gated)

    def head(params, skips):
        h = jax.nn.relu(apply_dense(params["head_0"], jax.nn.relu(skips)))
        return apply_dense(params["head_1"], h)

    def outputs(params: Params, x: Array, context: Array | None = None) -> Array:
        check(x, context)
        return network(params, scaled(x, params["input"]["kernel"].dtype), context)

    def network(params: Params, inputs: Array, context: Array | None = None) -> Array:
        """(B, T, 1) float inputs -> (B, T, K): output t sees inputs 0..t-1 only."""
        shifted = jnp.pad(inputs, ((0, 0), (1, 0), (0, 0)))[:, :-1]  # input t-1 at t
        h = apply_dense(params["input"], shifted)  # (B, T, F)
        skips = 0.0
        for layer, d in zip(params["layers"], dilations, strict=True):
            past = jnp.pad(h, ((0, 0), (d, 0), (0, 0)))[:, : h.shape[1]]  # h_{t-d}, zeros before 0
            h, skip = layer_step(layer, past, h, context)
            skips = skips + skip
        return head(params, skips)

    def log_prob(params: Params, x: Array, context: Array | None = None) -> Array:
        return jnp.sum(likelihood.log_prob(outputs(params, x, context), x), axis=1)

    def sample_naive(params, key, num_samples: int, length: int, context=None) -> Array:
        def step(t, x):
            out = outputs(params, x, context)[:, t]
            return x.at[:, t].set(likelihood.sample(jax.random.fold_in(key, t), out))

        dtype = sample_dtype or params["input"]["kernel"].dtype
        x = jnp.zeros((num_samples, length), dtype)
        return jax.lax.fori_loop(0, length, step, x)

    def sample_fast(params, key, num_samples: int, length: int, context=None) -> Array:
        _check_context(context_size, num_samples, context)
        dtype = params["input"]["kernel"].dtype
        # Queue of layer ℓ: its inputs at the last d_ℓ steps, oldest first (zeros before t = 0,
        # as the parallel pass pads).
        queues = [jnp.zeros((num_samples, d, f), dtype) for d in dilations]

        def step(carry, t):
            previous, queues = carry  # previous: x_{t-1} scaled, (N, 1)
            h = apply_dense(params["input"], previous)
            skips = 0.0
            new_queues = []
            for layer, queue in zip(params["layers"], queues, strict=True):
                new_h, skip = layer_step(layer, queue[:, 0], h, context)
                new_queues.append(jnp.concatenate([queue[:, 1:], h[:, None]], axis=1))
                h, skips = new_h, skips + skip
            value = likelihood.sample(jax.random.fold_in(key, t), head(params, skips))
            return (scaled(value, dtype), new_queues), value

        start = (jnp.zeros((num_samples, 1), dtype), queues)
        _, values = jax.lax.scan(step, start, jnp.arange(length))
        return values.T

    return WaveNet(
        init,
        outputs,
        network,
        log_prob,
        sample_naive,
        sample_fast,
        likelihood,
        dilations,
        1 + sum(dilations),
    )


def _check_context(context_size: int, batch: int, context: Array | None) -> None:
    check_context("wavenet", "context_size", context_size, batch, context)


__all__ = ["WaveNet", "wavenet", "wavenet_dilations"]

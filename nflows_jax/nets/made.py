"""MADE: a masked MLP whose output block i depends only on the inputs that precede i.

Germain et al. (2015). Every input coordinate ``j`` has a degree ``m(j)`` in 1..D (a
permutation: the autoregressive order), every hidden unit ``k`` a degree in 1..D-1, and a
weight is kept only where it cannot carry information backwards in the order::

    input j  -> hidden k      kept iff  m(k) >= m(j)
    hidden j -> hidden k      kept iff  m(k) >= m(j)
    hidden j -> output i      kept iff  m(i) >  m(j)        (output block i has degree m(i))
    input j  -> output i      kept iff  m(i) >  m(j)        (the optional direct connections)

so output block ``i`` (its ``outputs_per_dim`` numbers) is a function of ``{x_j : m(j) < m(i)}``
only; the output with degree 1 is a function of the context alone.

The degrees are an argument of the call, not part of the params: the same params evaluated with
other degrees are another autoregressive model of the same data. That is what
connectivity-agnostic (order-agnostic) training samples every step and what a mask ensemble
averages at test time. :func:`made_degrees` draws them (from numpy for fixed orders, from a JAX
key inside ``jit`` for resampled ones).

Shapes: ``x (B, D) -> (B, D, K)`` with K = ``outputs_per_dim``, an optional context (B, C).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nflows_jax.formatting import check_context, show
from nflows_jax.nets.mlp import fan_in_uniform

ORDERS = ("natural", "reversed", "random")
HIDDEN_DEGREES = ("equal", "random")


class MadeDegrees(NamedTuple):
    """The degrees of one MADE connectivity.

    Attributes:
      inputs: (D,) ints, a permutation of 1..D; ``inputs[j]`` is the position of coordinate j in
        the autoregressive order (and the degree of output block j).
      hidden: one (H_l,) int array per hidden layer, values in 1..max(D - 1, 1).
    """

    inputs: jax.Array
    hidden: tuple[jax.Array, ...]


def _validate(input_size: int, hidden: Sequence[int], order, hidden_degrees: str) -> None:
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise ValueError(f"MADE: input_size must be an int >= 1; got {show(input_size)}")
    if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
        raise ValueError(f"MADE: hidden widths must be ints >= 1; got {tuple(hidden)}")
    if hidden_degrees not in HIDDEN_DEGREES:
        raise ValueError(
            f"MADE: hidden_degrees must be one of {HIDDEN_DEGREES}; got {show(hidden_degrees)}"
        )
    if isinstance(order, str):
        if order not in ORDERS:
            raise ValueError(
                f"MADE: order must be one of {ORDERS} or a permutation of 0..D-1; got {show(order)}"
            )
    elif sorted(int(i) for i in order) != list(range(input_size)):
        raise ValueError(
            f"MADE: an explicit order must be a permutation of 0..{input_size - 1} (the "
            f"coordinates from first to last); got {list(order)}"
        )


def made_degrees(
    input_size: int,
    hidden: Sequence[int],
    order: str | Sequence[int] = "natural",
    hidden_degrees: str = "equal",
    key: jax.Array | None = None,
) -> MadeDegrees:
    """Degrees for a MADE with ``input_size`` inputs and hidden widths ``hidden``.

    Args:
      input_size: D, the number of input coordinates.
      hidden: widths of the hidden layers.
      order: ``"natural"`` (x_1 first), ``"reversed"``, ``"random"`` (a permutation drawn from
        ``key``), or an explicit sequence listing the coordinates from first to last.
      hidden_degrees: ``"equal"`` spreads each layer's degrees evenly over 1..D-1 (every degree
        gets ⌊H/(D-1)⌋ or one more units); ``"random"`` draws layer l's degrees uniformly from
        [min of layer l-1's degrees, D-1] with ``key`` (Germain et al.'s scheme, which never
        leaves a unit without inputs).
      key: needed for ``"random"`` order or degrees; may be a traced key inside ``jit`` (how
        connectivity-agnostic training resamples the masks every step).

    Returns:
      MadeDegrees; int32 numpy arrays when no key is used, JAX arrays otherwise.
    """
    _validate(input_size, hidden, order, hidden_degrees)
    needs_key = order == "random" or hidden_degrees == "random"
    if needs_key and key is None:
        raise ValueError("made_degrees: a random order or random hidden degrees need a key")
    order_key, hidden_key = jax.random.split(key) if needs_key else (None, None)
    top = max(input_size - 1, 1)  # the largest hidden degree (D = 1: one degree, unused)

    if order == "natural":
        inputs = np.arange(1, input_size + 1, dtype=np.int32)
    elif order == "reversed":
        inputs = np.arange(input_size, 0, -1, dtype=np.int32)
    elif order == "random":
        inputs = (jax.random.permutation(order_key, input_size) + 1).astype(jnp.int32)
    else:
        inputs = np.empty(input_size, np.int32)
        inputs[np.asarray(order)] = np.arange(1, input_size + 1)

    layers = []
    lowest = 1
    for width, layer_key in zip(hidden, _split(hidden_key, len(hidden)), strict=True):
        if hidden_degrees == "equal":
            layer = (1 + (np.arange(width) * top) // width).astype(np.int32)
        else:
            layer = jax.random.randint(layer_key, (width,), lowest, top + 1, dtype=jnp.int32)
            lowest = jnp.min(layer)
        layers.append(layer)
    return MadeDegrees(inputs, tuple(layers))


def _split(key: jax.Array | None, n: int) -> list:
    return [None] * n if key is None else list(jax.random.split(key, n))


def connectivity(degrees: MadeDegrees) -> jax.Array:
    """The (D, D) bool matrix ``C[i, j]``: may output block i depend on input j? (m(j) < m(i))."""
    inputs = jnp.asarray(degrees.inputs)
    return inputs[None, :] < inputs[:, None]


class MaskedDense(nn.Module):
    """``x @ (kernel * mask) + bias``; the mask (F_in, F_out) is an argument of the call."""

    features: int
    kernel_init: Callable[..., jax.Array]
    bias_init: Callable[..., jax.Array]
    use_bias: bool = True
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel", self.kernel_init, (x.shape[-1], self.features), self.param_dtype
        )
        dtype = jnp.result_type(x, kernel)
        y = x.astype(dtype) @ jnp.where(mask, kernel, 0).astype(dtype)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        return y


class MADE(nn.Module):
    """``x (B, D) -> (B, D, outputs_per_dim)`` with output block i a function of x_{<i} only.

    Attributes:
      input_size: D, the number of input coordinates.
      hidden: hidden widths, e.g. ``(512, 512)``; with ``residual=True`` all equal.
      outputs_per_dim: K numbers per coordinate (a transformer's params, or one logit).
      context_size: C of an optional context (B, C), fed unmasked into the first hidden layer
        and the output (so every output block, the first included, can depend on it).
      residual: after the first hidden layer, each further layer adds to its input
        (``h <- h + act(MaskedDense(h))``, same width and same degrees, so still autoregressive).
      direct: add the direct input-to-output masked connections.
      activation: after every hidden layer.
      zero_init_output: start the output (all its kernels and bias) at exactly zero, so a flow
        layer built on it starts as the identity; otherwise the output uses the fan-in uniform
        init of the hidden layers.
      param_dtype: dtype of the params at init.

    Call: ``made.apply({"params": p}, x, degrees, context=None)`` with ``degrees`` from
    :func:`made_degrees` for this D and these hidden widths.
    """

    input_size: int
    hidden: Sequence[int]
    outputs_per_dim: int = 1
    context_size: int = 0
    residual: bool = False
    direct: bool = False
    activation: Callable[[jax.Array], jax.Array] = nn.relu
    zero_init_output: bool = True
    param_dtype: Any = jnp.float32

    def _check(self, x: jax.Array, degrees: MadeDegrees, context: jax.Array | None) -> None:
        if jnp.ndim(x) != 2 or x.shape[1] != self.input_size:
            raise ValueError(
                f"MADE(input_size={self.input_size}) needs x of shape (batch, "
                f"{self.input_size}); got {jnp.shape(x)}"
            )
        widths = tuple(int(np.shape(h)[0]) for h in degrees.hidden)
        if np.shape(degrees.inputs) != (self.input_size,) or widths != tuple(self.hidden):
            raise ValueError(
                f"MADE: degrees are for {np.shape(degrees.inputs)[0]} inputs and hidden "
                f"{widths}; this network has {self.input_size} and {tuple(self.hidden)}. "
                f"Build them with made_degrees(input_size, hidden, ...)."
            )
        if self.residual and len(set(self.hidden)) > 1:
            raise ValueError(f"MADE: residual=True needs equal hidden widths; got {self.hidden}")
        check_context("MADE", "context_size", self.context_size, x.shape[0], context)

    @nn.compact
    def __call__(
        self, x: jax.Array, degrees: MadeDegrees, context: jax.Array | None = None
    ) -> jax.Array:
        self._check(x, degrees, context)
        inputs = jnp.asarray(degrees.inputs)
        hidden_degrees = [jnp.asarray(h) for h in degrees.hidden]
        if self.residual:  # one set of degrees for every layer keeps the residual sum masked
            hidden_degrees = [hidden_degrees[0]] * len(hidden_degrees)
        out_degrees = jnp.repeat(inputs, self.outputs_per_dim)  # output (i, k) has degree m(i)

        def dense(features, fan_in, name, zero=False):
            init = nn.initializers.zeros if zero else fan_in_uniform(max(fan_in, 1))
            return MaskedDense(features, init, init, param_dtype=self.param_dtype, name=name)

        h = x
        previous = inputs
        for layer, (width, degree) in enumerate(zip(self.hidden, hidden_degrees, strict=True)):
            mask = degree[None, :] >= previous[:, None]
            pre = dense(width, h.shape[-1], f"hidden_{layer}")(h, mask)
            if layer == 0 and context is not None:
                pre = pre + nn.Dense(
                    width,
                    kernel_init=fan_in_uniform(self.context_size),
                    use_bias=False,
                    param_dtype=self.param_dtype,
                    name="context_hidden",
                )(context)
            if self.residual and layer > 0:
                h = h + self.activation(pre)
            else:
                h = self.activation(pre)
            previous = degree

        size = self.input_size * self.outputs_per_dim
        zero = self.zero_init_output
        out = dense(size, h.shape[-1], "output", zero)(h, out_degrees[None, :] > previous[:, None])
        if self.direct:
            direct_mask = out_degrees[None, :] > inputs[:, None]
            direct = MaskedDense(
                size,
                nn.initializers.zeros if zero else fan_in_uniform(self.input_size),
                nn.initializers.zeros,
                use_bias=False,
                param_dtype=self.param_dtype,
                name="direct",
            )
            out = out + direct(x, direct_mask)
        if context is not None:
            out = out + nn.Dense(
                size,
                kernel_init=nn.initializers.zeros if zero else fan_in_uniform(self.context_size),
                use_bias=False,
                param_dtype=self.param_dtype,
                name="context_output",
            )(context)
        return out.reshape(x.shape[0], self.input_size, self.outputs_per_dim)


__all__ = ["MADE", "MadeDegrees", "MaskedDense", "connectivity", "made_degrees"]

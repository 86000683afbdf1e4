"""PixelCNN (van den Oord et al. 2016a) and Gated PixelCNN (van den Oord et al. 2016b).

Both model an integer image x (B, H, W, G) in raster order, channel groups in order within a
pixel, ``log p(x) = sum_{i, j, g} log p(x_ijg | earlier entries)``; the network computes every
conditional in one parallel pass, and a :class:`~nflows_jax.models.likelihoods.Likelihood`
(Bernoulli, 256-way softmax, discretised logistic mixture) turns its K outputs per entry into
probabilities.

* :class:`PixelCNNNet`: a 7×7 mask-A convolution, then residual 3×3 mask-B layers, then two 1×1
  mask-B layers. Stacked masked 3×3 kernels leave a *blind spot*: the pixels up and to the right
  beyond a diagonal never reach the output, however deep the stack.
* :class:`GatedPixelCNNNet`: a vertical stack (kernels over the rows above) and a horizontal
  stack (the current row, left of the pixel), the vertical one feeding the horizontal one shifted
  down by a row, gated ``tanh(a) · sigmoid(b)`` units and an optional class-conditional bias. It
  has no blind spot. One channel group only (grey or binary images).

:func:`image_autoregressive` wraps either network and a likelihood into ``init`` / ``log_prob``
/ ``sample``; :func:`receptive_field` finds by gradients which inputs reach an output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nflows_jax.formatting import check_context, show
from nflows_jax.models.likelihoods import Likelihood
from nflows_jax.nets.masked_conv import MaskedConv2D

Array = jax.Array


class PixelCNNNet(nn.Module):
    """(B, H, W, G) inputs in [-1, 1] -> (B, H, W, G, K) outputs, causal in raster order.

    Attributes:
      features: hidden channels (a multiple of ``groups``).
      num_layers: residual 3×3 mask-B layers after the first mask-A layer.
      outputs_per_entry: K, the network outputs per entry (the likelihood's ``params_per_entry``).
      groups: channel groups (image channels: 3 for RGB, 1 for grey / binary).
      first_kernel: the mask-A kernel size (odd).
      num_classes: > 0 adds a learned per-class bias to every hidden layer (context one-hot).
      param_dtype: dtype of the params at ``init``.

    ``__call__`` is the parallel pass. :meth:`at_pixel` evaluates the outputs of one pixel from
    the window of inputs that can reach it (what cached sampling uses).
    """

    features: int = 64
    num_layers: int = 6
    outputs_per_entry: int = 1
    groups: int = 1
    first_kernel: int = 7
    num_classes: int = 0
    param_dtype: Any = jnp.float32

    def setup(self):
        """Build the masked convolutions and class biases (flax calls this once, lazily)."""
        conv = _masked_conv_factory(self.groups, self.param_dtype)
        self.first = conv(self.features, self.first_kernel, "A")
        self.hidden = [conv(self.features, 3, "B") for _ in range(self.num_layers)]
        self.head_0 = conv(self.features, 1, "B")
        self.head_1 = conv(self.groups * self.outputs_per_entry, 1, "B")
        self.class_biases = [
            nn.Dense(self.features, use_bias=False, param_dtype=self.param_dtype)
            for _ in range(self.num_layers + 1 if self.num_classes else 0)
        ]

    def _class_bias(self, layer: int, context: Array | None) -> Array:
        if not self.num_classes:
            return jnp.zeros((), self.param_dtype)
        return self.class_biases[layer](context)[:, None, None, :]

    def _layers(self, x: Array, context: Array | None, window: bool, crop, keep) -> Array:
        """The network, either 'SAME' (window=False) or on shrinking windows (window=True).

        ``crop(h, rows, cols)`` trims a residual input to the shrunk window; ``keep(h)`` zeroes
        the window positions outside the image (what 'SAME' padding sees there).
        """
        h = keep(self.first(x, window) + self._class_bias(0, context))
        for layer, conv in enumerate(self.hidden):
            update = conv(nn.relu(h), window) + self._class_bias(layer + 1, context)
            h = keep(crop(h) + update)
        h = self.head_0(nn.relu(h))
        return self.head_1(nn.relu(h))

    def __call__(self, x: Array, context: Array | None = None) -> Array:
        _check_context(self.num_classes, x, context)
        out = self._layers(x, context, False, lambda h: h, lambda h: h)
        return out.reshape(*x.shape, self.outputs_per_entry)

    def reach(self) -> int:
        """How many rows up (and columns to either side) an output's inputs can lie."""
        return self.first_kernel // 2 + self.num_layers

    def at_pixel(self, x: Array, i: Array, j: Array, context: Array | None = None) -> Array:
        """The outputs at pixel (i, j), (B, G, K), from the inputs that reach it.

        Equal to ``self(x, context)[:, i, j]``; it convolves only a (reach + 1) × (2 reach + 1)
        window of the input, shrinking layer by layer to the pixel, with the window positions
        outside the image zeroed at every layer as the 'SAME' padding of the full pass sees them.
        ``i`` and ``j`` may be traced.
        """
        _check_context(self.num_classes, x, context)
        height, width = x.shape[1:3]
        reach = self.reach()
        padded = jnp.pad(x, ((0, 0), (reach, 0), (reach, reach), (0, 0)))
        window = jax.lax.dynamic_slice_in_dim(padded, i, reach + 1, axis=1)
        window = jax.lax.dynamic_slice_in_dim(window, j, 2 * reach + 1, axis=2)

        def keep(h):
            rows, cols = h.shape[1], h.shape[2]
            top, left = i - (rows - 1), j - (cols - 1) // 2  # image coordinates of h[0, 0]
            r = top + jnp.arange(rows)[:, None]
            c = left + jnp.arange(cols)[None, :]
            inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            return jnp.where(inside[None, :, :, None], h, 0)

        def crop(h):
            return h[:, 1:, 1:-1]

        out = self._layers(window, context, True, crop, keep)  # (B, 1, 1, G·K)
        return out.reshape(x.shape[0], x.shape[3], self.outputs_per_entry)


def _masked_conv_factory(groups: int, param_dtype) -> Callable[[int, int, str], MaskedConv2D]:
    def make(features: int, kernel: int, mask_type: str) -> MaskedConv2D:
        return MaskedConv2D(features, (kernel, kernel), mask_type, groups, param_dtype=param_dtype)

    return make


def _check_context(num_classes: int, x: Array, context: Array | None) -> None:
    if jnp.ndim(x) != 4:
        raise ValueError(f"image models need x of shape (B, H, W, G); got {jnp.shape(x)}")
    check_context("the image model", "num_classes", num_classes, x.shape[0], context, "one-hot ")


def _shift_down(x: Array) -> Array:
    """Row i gets row i-1 (row 0 gets zeros): what was above is now level with the pixel."""
    return jnp.pad(x, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]


def _shift_right(x: Array) -> Array:
    """Column j gets column j-1 (column 0 gets zeros)."""
    return jnp.pad(x, ((0, 0), (0, 0), (1, 0), (0, 0)))[:, :, :-1]


class GatedPixelCNNNet(nn.Module):
    """Gated PixelCNN: (B, H, W, 1) in [-1, 1] -> (B, H, W, 1, K), no blind spot.

    Layer by layer (``k = kernel``): the vertical stack is a (k//2 + 1) × k convolution over the
    rows at and above the current one; the horizontal stack a 1 × (k//2 + 1) convolution over the
    current row up to the current pixel, plus a 1×1 projection of the vertical features shifted
    down one row (so the horizontal stack only learns about the rows above from rows strictly
    above; the vertical features themselves may see the current row, they never reach the output
    directly). In the first layer the horizontal input is shifted right by one pixel, so no
    output sees its own pixel. Gates are
    ``tanh(a) · sigmoid(b)``; the horizontal stack is residual after the first layer.

    Attributes:
      features: channels of both stacks.
      num_layers: gated layers (the first included).
      outputs_per_entry: K, the network outputs per entry (the likelihood's ``params_per_entry``).
      kernel: odd kernel width k.
      num_classes: > 0 adds a class-conditional bias inside every gate.
      param_dtype: dtype of the params at ``init``.
    """

    features: int = 64
    num_layers: int = 8
    outputs_per_entry: int = 1
    kernel: int = 5
    num_classes: int = 0
    param_dtype: Any = jnp.float32

    def setup(self):
        """Build both stacks' layers (flax calls this once, lazily); checks ``kernel``."""
        if self.kernel % 2 == 0 or self.kernel < 3:
            raise ValueError(f"GatedPixelCNNNet needs an odd kernel >= 3; got {show(self.kernel)}")
        half, f, dtype = self.kernel // 2, self.features, self.param_dtype
        layers = range(self.num_layers)

        def conv(size):
            return nn.Conv(2 * f, size, padding="VALID", param_dtype=dtype)

        def dense(features, use_bias=True):
            return nn.Dense(features, use_bias=use_bias, param_dtype=dtype)

        self.vertical = [conv((half + 1, self.kernel)) for _ in layers]
        self.horizontal = [conv((1, half + 1)) for _ in layers]
        self.links = [dense(2 * f) for _ in layers]
        self.residuals = [dense(f) for _ in layers]
        conditional = layers if self.num_classes else ()
        self.vertical_class = [dense(2 * f, use_bias=False) for _ in conditional]
        self.horizontal_class = [dense(2 * f, use_bias=False) for _ in conditional]
        self.head_0 = dense(f)
        self.head_1 = dense(self.outputs_per_entry)

    def _check(self, x: Array, context: Array | None) -> None:
        _check_context(self.num_classes, x, context)
        if x.shape[-1] != 1:
            raise ValueError(
                f"GatedPixelCNNNet models one channel group (grey or binary images); got "
                f"{x.shape[-1]} channels. Use PixelCNNNet(groups=...) for colour."
            )

    def _gate(self, pre: Array, layer: int, stack: str, context: Array | None) -> Array:
        if self.num_classes:
            biases = self.vertical_class if stack == "vertical" else self.horizontal_class
            pre = pre + biases[layer](context)[:, None, None]
        f = self.features
        return jnp.tanh(pre[..., :f]) * jax.nn.sigmoid(pre[..., f:])

    def _head(self, horizontal: Array) -> Array:
        return self.head_1(nn.relu(self.head_0(nn.relu(horizontal))))

    def __call__(self, x: Array, context: Array | None = None) -> Array:
        self._check(x, context)
        half = self.kernel // 2
        links = self._vertical_links(x, context)
        horizontal = _shift_right(x)
        for layer in range(self.num_layers):
            # horizontal: output column j reads columns j - half .. j of the row
            pre = self.horizontal[layer](jnp.pad(horizontal, ((0, 0), (0, 0), (half, 0), (0, 0))))
            horizontal = self._horizontal_update(horizontal, pre + links[layer], layer, context)
        out = self._head(horizontal)
        return out.reshape(*x.shape, self.outputs_per_entry)

    def _vertical_links(self, x: Array, context: Array | None) -> list[Array]:
        """The vertical stack's contribution to each layer's horizontal stack, (B, H, W, 2F)
        per layer: at row i it depends on the rows above i only (the shift down)."""
        half = self.kernel // 2
        vertical, links = x, []
        for layer in range(self.num_layers):
            # vertical: output row i reads rows i - half .. i
            pre = self.vertical[layer](jnp.pad(vertical, ((0, 0), (half, 0), (half, half), (0, 0))))
            links.append(self.links[layer](_shift_down(pre)))
            vertical = self._gate(pre, layer, "vertical", context)
        return links

    def _horizontal_update(
        self, horizontal: Array, pre: Array, layer: int, context: Array | None
    ) -> Array:
        update = self.residuals[layer](self._gate(pre, layer, "horizontal", context))
        if layer == 0:
            return update
        # residual: the input is cropped to the output's columns ('VALID' windows shrink)
        return horizontal[:, :, horizontal.shape[2] - update.shape[2] :] + update

    def row_cache(self, x: Array, i: Array, context: Array | None = None) -> Array:
        """What every pixel of row ``i`` reuses: the vertical links at that row, (L, B, W, 2F).

        They depend on the rows above ``i`` only, so a sampler computes them once per row (one
        vertical-stack pass) and :meth:`at_pixel` then runs the small horizontal stack alone.
        """
        self._check(x, context)
        links = self._vertical_links(x, context)
        return jnp.stack([jax.lax.dynamic_index_in_dim(h, i, 1, keepdims=False) for h in links])

    def at_pixel(
        self,
        x: Array,
        i: Array,
        j: Array,
        context: Array | None = None,
        cache: Array | None = None,
    ) -> Array:
        """The outputs at pixel (i, j), (B, 1, K): equal to ``self(x, context)[:, i, j]``.

        ``cache`` is ``row_cache(x, i, context)`` (computed here when None). The horizontal
        stack then runs on row i only: with L layers and ``half = kernel // 2`` it is needed on
        columns ``j - (L-l)·half .. j`` before layer l, a window shrinking to the pixel under
        'VALID' convolutions, with positions left of the image zeroed at every layer as the
        padding of the full pass sees them. ``i`` and ``j`` may be traced.
        """
        self._check(x, context)
        if cache is None:
            cache = self.row_cache(x, i, context)
        layers, half = self.num_layers, self.kernel // 2
        reach = layers * half
        batch = x.shape[0]
        # the row, shifted right by one pixel, as columns j - reach - 1 .. j - 1 (+ zero padding)
        row = jax.lax.dynamic_index_in_dim(x, i, 1)  # (B, 1, W, 1)
        padded = jnp.pad(row, ((0, 0), (0, 0), (reach + 1, 0), (0, 0)))
        horizontal = jax.lax.dynamic_slice_in_dim(padded, j, reach + 1, axis=2)
        links = jnp.pad(cache, ((0, 0), (0, 0), (reach, 0), (0, 0)))  # column c at c + reach

        for layer in range(layers):
            remaining = (layers - layer - 1) * half  # the reach still needed after this layer
            link = jax.lax.dynamic_slice_in_dim(
                links[layer], j + reach - remaining, remaining + 1, 1
            )
            pre = self.horizontal[layer](horizontal) + link[:, None]
            horizontal = self._horizontal_update(horizontal, pre, layer, context)
            inside = j - remaining + jnp.arange(remaining + 1) >= 0
            horizontal = jnp.where(inside[None, None, :, None], horizontal, 0)
        return self._head(horizontal).reshape(batch, 1, self.outputs_per_entry)


class ImageAutoregressive(NamedTuple):
    """An autoregressive image model (build with :func:`image_autoregressive`).

    Attributes:
      init: ``init(key, x, context=None) -> params``; x (B, H, W, G) ints.
      outputs: ``outputs(params, x, context=None) -> (B, H, W, G, K)``, one parallel pass.
      log_prob: ``log_prob(params, x, context=None) -> (B,)`` in nats.
      sample: ``sample(params, key, num_samples, context=None) -> (N, H, W, G)`` int32, the naive
        loop: one full network pass per entry (H·W·G passes).
      sample_fast: the same signature and, for the same key, the same samples, computing each
        entry from only what can reach its pixel (the network's ``at_pixel``): PixelCNN from
        the window of inputs above and around it, Gated PixelCNN from its vertical stack,
        computed once per row (``row_cache``), and its horizontal stack on the row; None for
        networks without ``at_pixel``.
      likelihood: the per-entry likelihood.
      image_shape: (H, W, G).
    """

    init: Callable
    outputs: Callable
    log_prob: Callable
    sample: Callable
    sample_fast: Callable | None
    likelihood: Likelihood
    image_shape: tuple[int, int, int]


def scale_levels(x: Array, num_levels: int) -> Array:
    """Integer levels 0..L-1 -> float32 in [-1, 1], the networks' input; elementwise, any shape."""
    return 2.0 * x.astype(jnp.float32) / (num_levels - 1) - 1.0


def entry_key(key: jax.Array, index: Array) -> jax.Array:
    """The key of raster entry ``index`` (row-major over H, W, G): one key per entry, so any
    sampling loop that visits the entries draws the same values from the same key."""
    return jax.random.fold_in(key, index)


def image_autoregressive(
    network: nn.Module, likelihood: Likelihood, image_shape: tuple[int, int, int]
) -> ImageAutoregressive:
    """Combine a causal network (PixelCNNNet / GatedPixelCNNNet) and a likelihood.

    The network's ``outputs_per_entry`` must equal ``likelihood.params_per_entry``.
    """
    if network.outputs_per_entry != likelihood.params_per_entry:
        raise ValueError(
            f"the network gives {network.outputs_per_entry} outputs per entry but the "
            f"{likelihood.name} likelihood needs {likelihood.params_per_entry}"
        )
    image_shape = tuple(int(s) for s in image_shape)
    height, width, groups = image_shape
    levels = likelihood.num_levels

    def check(x: Array) -> None:
        if tuple(jnp.shape(x)[1:]) != image_shape or jnp.ndim(x) != 4:
            raise ValueError(
                f"x must have shape (B, {height}, {width}, {groups}); got {jnp.shape(x)}"
            )
        if jnp.issubdtype(jnp.result_type(x), jnp.floating):
            raise ValueError(
                f"x must hold integer levels 0..{levels - 1} (got {jnp.result_type(x)}); "
                f"quantise first"
            )

    def init(key, x, context=None):
        check(x)
        return network.init(key, scale_levels(x[:1], levels), _first(context))["params"]

    def outputs(params, x, context=None):
        check(x)
        return network.apply({"params": params}, scale_levels(x, levels), context)

    def log_prob(params, x, context=None):
        per_entry = likelihood.log_prob(outputs(params, x, context), x)
        return jnp.sum(per_entry.reshape(x.shape[0], -1), axis=1)

    def sampler(entry_outputs, row_cache=None):
        """A raster loop over the entries. ``row_cache(params, x, i, context)`` (optional) is
        computed once at the start of row i; ``entry_outputs(params, x, i, j, context, cache)``
        gives the (N, G, K) outputs of pixel (i, j) for the partly drawn integer image x."""

        def sample(params, key, num_samples, context=None):
            def row(i, x):
                cache = jnp.zeros(()) if row_cache is None else row_cache(params, x, i, context)

                def entry(index_in_row, x):
                    j, g = jnp.divmod(index_in_row, groups)
                    out = entry_outputs(params, x, i, j, context, cache)[:, g]  # (N, K)
                    index = i * width * groups + index_in_row  # the raster index: its key
                    value = likelihood.sample(entry_key(key, index), out)
                    return x.at[:, i, j, g].set(value)

                return jax.lax.fori_loop(0, width * groups, entry, x)

            x = jnp.zeros((num_samples, *image_shape), jnp.int32)
            return jax.lax.fori_loop(0, height, row, x)

        return sample

    def full_pass_at(params, x, i, j, context, cache):
        return outputs(params, x, context)[:, i, j]

    def apply(params, x, *args, method):
        return network.apply({"params": params}, scale_levels(x, levels), *args, method=method)

    def window_at(params, x, i, j, context, cache):
        if hasattr(network, "row_cache"):
            return apply(params, x, i, j, context, cache, method="at_pixel")
        return apply(params, x, i, j, context, method="at_pixel")

    def cache_at(params, x, i, context):
        return apply(params, x, i, context, method="row_cache")

    fast = None
    if hasattr(network, "at_pixel"):
        fast = sampler(window_at, cache_at if hasattr(network, "row_cache") else None)
    return ImageAutoregressive(
        init, outputs, log_prob, sampler(full_pass_at), fast, likelihood, image_shape
    )


def _first(context: Array | None) -> Array | None:
    return None if context is None else context[:1]


def receptive_fields(
    network_fn: Callable[[Array], Array], x: Array, num_probes: int = 4
) -> np.ndarray:
    """Which input entries reach the outputs at every pixel, found by gradients.

    Args:
      network_fn: ``x (B, H, W, C) float -> (B, H, W, ...)``.
      x: a float batch (B, H, W, C) to probe at; ``num_probes`` random perturbations of it are
        used too, so a unit that happens to be off at one point does not hide a path.

    Returns:
      (H, W, H, W, C) bool: ``[i, j]`` is True where d(sum of the outputs at pixel (i, j)) /
      d input is nonzero for any probe and batch row. One reverse-mode Jacobian per probe.
    """

    def per_pixel(inputs):  # outputs summed over batch and channels: (H, W)
        out = network_fn(inputs)
        return jnp.sum(out.reshape(*out.shape[:3], -1), axis=(0, 3))

    noise = jax.random.normal(jax.random.PRNGKey(0), (num_probes, *x.shape), x.dtype)
    probes = jnp.concatenate([x[None], x[None] + 0.5 * noise])  # (1 + num_probes, B, H, W, C)
    jacobians = jax.jit(jax.vmap(jax.jacrev(per_pixel)))(probes)  # (P, H, W, B, H, W, C)
    return np.asarray(jnp.any(jacobians != 0, axis=(0, 3)))


def receptive_field(
    network_fn: Callable[[Array], Array], x: Array, position: tuple[int, int], num_probes: int = 4
) -> np.ndarray:
    """The inputs that reach pixel ``position = (i, j)``: (H, W, C) bool.

    The same answer as ``receptive_fields(network_fn, x, num_probes)[position]`` from one
    reverse pass per probe instead of one per pixel (what figures of large networks use).
    """
    i, j = position

    def at_pixel(inputs):  # the outputs at (i, j), summed over batch and channels
        return jnp.sum(network_fn(inputs)[:, i, j])

    noise = jax.random.normal(jax.random.PRNGKey(0), (num_probes, *x.shape), x.dtype)
    probes = jnp.concatenate([x[None], x[None] + 0.5 * noise])
    gradients = jax.jit(jax.vmap(jax.grad(at_pixel)))(probes)  # (P, B, H, W, C)
    return np.asarray(jnp.any(gradients != 0, axis=(0, 1)))


__all__ = [
    "GatedPixelCNNNet",
    "ImageAutoregressive",
    "PixelCNNNet",
    "entry_key",
    "image_autoregressive",
    "receptive_field",
    "receptive_fields",
    "scale_levels",
]

"""Masked autoregressive flows (MAF) and inverse autoregressive flows (IAF).

Both apply an elementwise :class:`~nflows_jax.bijectors.transformers.Transformer` ``tau`` whose
params for coordinate i come from a :class:`~nflows_jax.nets.made.MADE`, so they depend only on
the coordinates before i in the order. They differ in which side the MADE sees::

    MAF:  y = tau(x; made(y))     density (inverse):  x = tau⁻¹(y; made(y))   one parallel pass
                                  sampling (forward): solve for y              D sequential passes
    IAF:  y = tau(x; made(x))     sampling (forward): one parallel pass
                                  density (inverse):  solve for x              D sequential passes

(``forward`` is base -> data, ``inverse`` data -> base, as everywhere in the library.) The
sequential solve is a ``lax.fori_loop``: at step t the MADE is evaluated on the partial solution
and the coordinates of degree t are filled in; coordinates not yet solved hold 0 (never a
not-yet-valid value, which through a masked weight 0 · inf would poison the whole batch with
NaN). The log-determinant of the sequential direction is accumulated per coordinate at the step
that fills it, so D passes give both the values and the log-det.

An IAF is a MAF of the inverted transformer, inverted: :func:`inverse_autoregressive` is built
that way, so the two share one implementation.

Stack layers with ``repeat(chain(masked_autoregressive(D, ...), reverse_permutation()), n)`` (or
``random_permutation``); each layer's order and hidden degrees are fixed constants from ``order``
and ``seed``, closed over by the functions rather than stored in the params.

Params: the MADE's flax params dict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from nflows_jax.bijectors.base import Array, Bijector, Params, PRNGKey, invert
from nflows_jax.bijectors.transformers import Transformer, affine_transformer
from nflows_jax.formatting import show
from nflows_jax.nets.made import MADE, MadeDegrees, made_degrees


def inverted_transformer(transformer: Transformer) -> Transformer:
    """The same map run backwards: forward is ``transformer.inverse`` and vice versa."""
    return Transformer(
        transformer.params_per_entry,
        transformer.inverse,
        transformer.forward,
        f"inverse {transformer.name}",
    )


def _float_dtype(x: Array) -> jnp.dtype:
    dtype = jnp.result_type(x)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)


class MadeConditioner(NamedTuple):
    """The MADE of an autoregressive layer with its fixed degrees.

    Attributes:
      init: ``init(key, x, context) -> params`` (x (B, D); the first row fixes the shapes).
      apply: ``apply(params, seen, context) -> theta`` of shape (B, D, P): the transformer params
        of coordinate i from the coordinates of ``seen`` before i in the order.
      degrees: the layer's ``MadeDegrees`` (numpy constants).
    """

    init: Callable[[PRNGKey, Array, Array | None], Params]
    apply: Callable[[Params, Array, Array | None], Array]
    degrees: MadeDegrees


def _check_size(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"masked_autoregressive: {name} must be an int >= {minimum}; got {show(value)}"
        )


def made_conditioner(
    event_size: int,
    params_per_entry: int,
    hidden: Sequence[int] = (64, 64),
    order: str | Sequence[int] = "natural",
    hidden_degrees: str = "equal",
    seed: int = 0,
    context_size: int = 0,
    residual: bool = False,
    activation: Callable[[Array], Array] = jax.nn.relu,
) -> MadeConditioner:
    """The MADE conditioner shared by MAF, IAF and the distillation's Gaussian statistics.

    Arguments as in :func:`masked_autoregressive`; ``params_per_entry`` is the transformer's P.
    The output layer starts at zero, so theta = 0 and the layer is the identity at init.
    """
    _check_size("event_size", event_size, 1)
    _check_size("context_size", context_size, 0)
    hidden = tuple(hidden)
    degrees = made_degrees(event_size, hidden, order, hidden_degrees, key=jax.random.PRNGKey(seed))
    degrees = MadeDegrees(jax.device_get(degrees.inputs), tuple(jax.device_get(degrees.hidden)))

    def made(dtype) -> MADE:
        return MADE(
            event_size,
            hidden,
            params_per_entry,
            context_size=context_size,
            residual=residual,
            activation=activation,
            param_dtype=dtype,
        )

    def init(key: PRNGKey, x: Array, context: Array | None) -> Params:
        first_context = None if context is None else context[:1]
        return made(_float_dtype(x)).init(key, x[:1], degrees, first_context)["params"]

    def apply(params: Params, seen: Array, context: Array | None) -> Array:
        return made(_float_dtype(seen)).apply({"params": params}, seen, degrees, context)

    return MadeConditioner(init, apply, degrees)


def masked_autoregressive(
    event_size: int,
    transformer: Transformer | None = None,
    hidden: Sequence[int] = (64, 64),
    order: str | Sequence[int] = "natural",
    hidden_degrees: str = "equal",
    seed: int = 0,
    context_size: int = 0,
    residual: bool = False,
    activation: Callable[[Array], Array] = jax.nn.relu,
) -> Bijector:
    """A MAF layer on (B, event_size): density in one MADE pass, sampling in D passes.

    ``y = tau(x; made(y))``: ``inverse`` (data y -> base x, ``log|det dx/dy|``) is one parallel
    MADE pass on y; ``forward`` (base x -> data y, ``log|det dy/dx|``) fills in y one degree at a
    time, D sequential passes. Log-dets have shape (B,).

    Args:
      event_size: D >= 1.
      transformer: the elementwise map (default ``affine_transformer()``, the Gaussian
        autoregressive flow of Papamakarios et al. 2017); ``rational_quadratic_spline(...)``
        gives the autoregressive neural spline flow.
      hidden: the MADE's hidden widths.
      order: ``"natural"``, ``"reversed"``, ``"random"`` (from ``seed``) or an explicit list of
        the coordinates from first to last.
      hidden_degrees: ``"equal"`` or ``"random"`` (from ``seed``).
      seed: fixes a random order / random hidden degrees; the degrees are constants of the layer.
      context_size: C for a conditional layer (context (B, C)); 0 for none.
      residual: residual hidden layers in the MADE (equal widths).
      activation: the MADE's hidden activation.
    """
    transformer = affine_transformer() if transformer is None else transformer
    conditioner = made_conditioner(
        event_size,
        transformer.params_per_entry,
        hidden,
        order,
        hidden_degrees,
        seed,
        context_size,
        residual,
        activation,
    )
    input_degrees = jnp.asarray(conditioner.degrees.inputs)

    def check(x: Array, context: Array | None, name: str) -> None:
        if jnp.ndim(x) != 2 or x.shape[1] != event_size:
            raise ValueError(
                f"masked_autoregressive(event_size={event_size}) needs {name} of shape (batch, "
                f"{event_size}); got {jnp.shape(x)}"
            )
        if context_size == 0 and context is not None:
            raise ValueError(
                f"masked_autoregressive was built with context_size=0 but got a context of "
                f"shape {jnp.shape(context)}; build it with context_size="
                f"{jnp.shape(context)[-1]} to condition on it"
            )

    def init(key: PRNGKey, x: Array, context: Array | None = None) -> Params:
        check(x, context, "x")
        return conditioner.init(key, x, context)

    def forward(params: Params, x: Array, context: Array | None = None):
        """Sampling direction: y = tau(x; made(y)), solved coordinate by coordinate."""
        check(x, context, "x")
        x = x.astype(_float_dtype(x))

        def step(t, carry):
            y, log_det = carry
            y_t, log_det_t = transformer.forward(x, conditioner.apply(params, y, context))
            filled = input_degrees == t + 1  # the coordinates of degree t + 1 are now known
            return jnp.where(filled, y_t, y), jnp.where(filled, log_det_t, log_det)

        zeros = jnp.zeros_like(x)
        y, log_det = jax.lax.fori_loop(0, event_size, step, (zeros, zeros))
        return y, jnp.sum(log_det, axis=1)

    def inverse(params: Params, y: Array, context: Array | None = None):
        """Density direction: x = tau⁻¹(y; made(y)) in one pass."""
        check(y, context, "y")
        y = y.astype(_float_dtype(y))
        x, log_det = transformer.inverse(y, conditioner.apply(params, y, context))
        return x, jnp.sum(log_det, axis=1)

    return Bijector(init, forward, inverse)


def inverse_autoregressive(
    event_size: int,
    transformer: Transformer | None = None,
    hidden: Sequence[int] = (64, 64),
    order: str | Sequence[int] = "natural",
    hidden_degrees: str = "equal",
    seed: int = 0,
    context_size: int = 0,
    residual: bool = False,
    activation: Callable[[Array], Array] = jax.nn.relu,
) -> Bijector:
    """An IAF layer: sampling ``y = tau(x; made(x))`` in one pass, density in D passes.

    ``forward`` (base x -> data y) is one parallel MADE pass on x; ``inverse`` (data -> base)
    solves for x in D sequential passes. Log-dets (B,); shapes (B, event_size) both ways.
    Same arguments as :func:`masked_autoregressive`. Built as the inverse of a MAF whose
    transformer is ``tau`` inverted, so the MADE sees the base variable x.
    """
    transformer = affine_transformer() if transformer is None else transformer
    return invert(
        masked_autoregressive(
            event_size,
            inverted_transformer(transformer),
            hidden,
            order,
            hidden_degrees,
            seed,
            context_size,
            residual,
            activation,
        )
    )


__all__ = [
    "MadeConditioner",
    "inverse_autoregressive",
    "inverted_transformer",
    "made_conditioner",
    "masked_autoregressive",
]

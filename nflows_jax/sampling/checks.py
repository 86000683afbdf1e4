"""Argument checks and position raveling shared by every MCMC kernel.

Everything here runs at construction or trace time on static information (shapes, dtypes,
concrete hyper-parameters), so it adds nothing to a compiled step:

* :func:`check_scalar_logdensity` / :func:`scalar_logdensity` — a log-density must return a
  scalar. A (D,) result (the ``.sum()`` forgotten) would otherwise broadcast through the
  acceptance test and turn Metropolis–Hastings into D coupled per-coordinate accepts, which
  samples the wrong law without any error.
* :func:`ravel_position` — the one way kernels flatten a pytree position into the (D,) vector
  their algebra works on (``jax.flatten_util.ravel_pytree`` order), and back. A (D,) array is
  returned as it is, so raveling is a no-op in the compiled program for the common case.
* step-size, scale, mass-matrix and schedule checks that reject bad values when they are
  concrete and stay silent for traced values (a step size tuned inside ``jit``).

Error messages show values with ``nflows_jax.formatting.show``: plain numbers, never numpy reprs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

Array = jax.Array

__all__ = [
    "check_flat_size",
    "check_inverse_mass",
    "check_positive_finite",
    "check_scalar_logdensity",
    "check_step_size",
    "check_tree_like_position",
    "is_tracer",
    "ravel_position",
    "scalar_logdensity",
]


def is_tracer(value: Any) -> bool:
    """True when ``value`` (or any leaf of it) is a JAX tracer, i.e. not known before tracing."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value))


# ------------------------------------------------------------------------------------------------
# Log-densities


def check_scalar_logdensity(value: Array, who: str, what: str = "log-density") -> Array:
    """Return ``value`` if it is a scalar, else raise a ValueError naming ``who`` (trace time).

    Args:
      value: the output of a log-density for ONE position.
      who: the kernel (or function) that called it, e.g. ``"rwmh"``.
      what: what the value is, for the message.
    """
    shape = jnp.shape(value)
    if shape != ():
        raise ValueError(
            f"{who}: the {what} must return a scalar for one position, but it returned shape "
            f"{tuple(shape)}; return a scalar (did you forget .sum()?)"
        )
    return value


def scalar_logdensity(
    logdensity_fn: Callable[..., Array], who: str, what: str = "log-density"
) -> Callable[..., Array]:
    """``logdensity_fn`` wrapped so that a non-scalar output raises at trace time."""

    def checked(*args):
        return check_scalar_logdensity(logdensity_fn(*args), who, what)

    return checked


# ------------------------------------------------------------------------------------------------
# Positions


def ravel_position(position: Any, who: str) -> tuple[Array, Callable[[Array], Any]]:
    """Flatten a position (an array or pytree of floating arrays) to (D,) and return the inverse.

    A (D,) array comes back unchanged with an identity ``unravel``, so kernels on flat arrays
    compile to exactly the program they had before pytrees were supported. Any other array is
    reshaped; a pytree goes through ``jax.flatten_util.ravel_pytree`` (leaves in tree order, each
    flattened in C order), the order a flat ``inverse_mass_matrix`` must follow.

    Args:
      position: one chain's position.
      who: the caller, for error messages (e.g. ``"hmc.step"``).

    Returns:
      ``(flat, unravel)`` with ``flat`` (D,) and ``unravel(flat) -> position``.
    """
    leaves = jax.tree.leaves(position)
    if not leaves:
        raise ValueError(f"{who}: the position is an empty pytree")
    for leaf in leaves:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(f"{who}: positions must be floating point, got dtype {dtype}")
    if jax.tree_util.treedef_is_leaf(jax.tree.structure(position)):
        array = jnp.asarray(position)
        if array.ndim == 1:
            return array, lambda flat: flat
        shape = array.shape
        return array.reshape(-1), lambda flat: flat.reshape(shape)
    return ravel_pytree(position)


def check_tree_like_position(value: Any, position: Any, who: str, what: str) -> None:
    """Raise unless ``value`` has the structure and leaf shapes of ``position`` (trace time)."""
    value_shapes = jax.tree.map(jnp.shape, value)
    position_shapes = jax.tree.map(jnp.shape, position)
    if jax.tree.structure(value) != jax.tree.structure(position) or jax.tree.leaves(
        value_shapes
    ) != jax.tree.leaves(position_shapes):
        raise ValueError(
            f"{who}: the {what} must have the position's structure and shapes "
            f"{position_shapes}, got {value_shapes}"
        )


# ------------------------------------------------------------------------------------------------
# Hyper-parameters


def check_positive_finite(value: Any, name: str, who: str | None = None) -> None:
    """Reject a concrete ``value`` (scalar, array or pytree) with a non-positive or non-finite
    entry; traced values (tuned inside ``jit``) are not checked."""
    prefix = f"{who}: " if who else ""
    for leaf in jax.tree.leaves(value):
        if is_tracer(leaf):
            continue
        array = np.asarray(leaf, dtype=np.float64)
        bad = ~np.isfinite(array) | (array <= 0)
        if np.any(bad):
            first = float(array[bad].flat[0])
            raise ValueError(f"{prefix}{name} must be positive and finite, got {first}")


def check_step_size(step_size: Any, name: str = "step_size", who: str | None = None) -> None:
    """Reject a concrete step size that is not a positive finite scalar."""
    if is_tracer(step_size):
        return  # passed as data (e.g. under adaptation): nothing to check statically
    shape = np.shape(step_size)
    if shape != ():
        prefix = f"{who}: " if who else ""
        raise ValueError(f"{prefix}{name} must be a scalar, got shape {shape}")
    check_positive_finite(step_size, name, who)


def check_inverse_mass(inverse_mass_matrix: Any) -> Array | None:
    """Validate a diagonal inverse mass matrix (a positive (D,) vector) and return it as an array.

    For a pytree position, D is the total number of coordinates, in ``ravel_position`` order.
    """
    if inverse_mass_matrix is None:
        return None
    inverse_mass = jnp.asarray(inverse_mass_matrix)
    if inverse_mass.ndim != 1:
        raise ValueError(
            "inverse_mass_matrix must be the diagonal of the inverse mass matrix, a vector of "
            f"shape (D,); got shape {inverse_mass.shape} (dense mass matrices are not supported)"
        )
    if not jnp.issubdtype(inverse_mass.dtype, jnp.floating):
        raise ValueError(f"inverse_mass_matrix must be floating point, got {inverse_mass.dtype}")
    if not is_tracer(inverse_mass) and not bool(jnp.all(inverse_mass > 0)):
        raise ValueError(
            f"inverse_mass_matrix must be strictly positive, got minimum "
            f"{float(jnp.min(inverse_mass))}"
        )
    return inverse_mass


def check_flat_size(flat: Array, inverse_mass: Array | None, who: str) -> None:
    """Raise unless a (D,) mass-matrix diagonal matches the raveled position (D,)."""
    if inverse_mass is not None and inverse_mass.shape != flat.shape:
        raise ValueError(
            f"{who}: inverse_mass_matrix has shape {inverse_mass.shape} but the position has "
            f"{flat.size} coordinates (shape {flat.shape} when raveled)"
        )

"""Lattice and graphical-model targets: the 2-D Ising model and the restricted Boltzmann machine.

Ising model on an (H, W) torus with spins s ∈ {−1, +1}::

    log π(s) = β (J Σ_<ij> s_i s_j + h Σ_i s_i) − log Z

where <ij> runs over nearest-neighbour bonds with periodic boundaries, each bond counted once
(site i bonds to its right and its lower neighbour). On a side of length 2 the right and left
neighbours are the same site, so that pair is joined by two bonds; every formula here (log
density, local field, Gibbs conditionals) uses the same convention, so they agree on any H, W ≥ 2.

Onsager's exact solution (J = 1, h = 0, k_B = 1, infinite lattice) gives the energy per site
u(β) and the spontaneous magnetisation ``|m|(β)``, with the transition at β_c = ½ log(1 + √2).
These are reference values for experiments; a finite lattice approaches them as it grows.

RBM with binary units v ∈ {0,1}^V, h ∈ {0,1}^H::

    log p(v, h) = vᵀ W h + bᵀ v + cᵀ h − log Z
    log p(v)    = bᵀ v + Σ_j softplus(c_j + (Wᵀ v)_j) − log Z      (h summed out)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
PRNGKey = jax.Array

__all__ = [
    "ISING_CRITICAL_BETA",
    "RBM",
    "ising_energy_per_site",
    "ising_local_field",
    "ising_logdensity",
    "ising_neighbour_sum",
    "magnetisation_per_site",
    "onsager_energy_per_site",
    "onsager_magnetisation",
    "rbm_init",
    "rbm_joint_logdensity",
    "rbm_visible_logdensity",
]

ISING_CRITICAL_BETA = 0.5 * math.log(1.0 + math.sqrt(2.0))


# --------------------------------------------------------------------------------------------
# Ising model.


def _check_lattice(spins: Array) -> None:
    if spins.ndim < 2:
        raise ValueError(f"spins must have shape (..., H, W), got {spins.shape}")
    height, width = spins.shape[-2:]
    if height < 2 or width < 2:
        raise ValueError(
            f"the lattice needs H, W >= 2 (a side of 1 would bond a spin to itself), got "
            f"{height}x{width}"
        )


def _bond_sum(spins: Array) -> Array:
    """Σ_<ij> s_i s_j over the torus, each bond once: (..., H, W) -> (...)."""
    right = jnp.roll(spins, -1, axis=-1)
    down = jnp.roll(spins, -1, axis=-2)
    return jnp.sum(spins * (right + down), axis=(-2, -1))


def ising_neighbour_sum(spins: Array) -> Array:
    """Σ_{j ~ i} s_j over the four torus neighbours of each site, in the spins' dtype.

    Shapes: (..., H, W) -> (..., H, W). For ±1 spins the values are −4, −2, 0, 2, 4.
    """
    _check_lattice(spins)
    return (
        jnp.roll(spins, 1, axis=-1)
        + jnp.roll(spins, -1, axis=-1)
        + jnp.roll(spins, 1, axis=-2)
        + jnp.roll(spins, -1, axis=-2)
    )


def ising_local_field(
    spins: Array, coupling: float | Array = 1.0, field: float | Array = 0.0
) -> Array:
    """The field on each site, J Σ_{j ~ i} s_j + h: (..., H, W) -> (..., H, W).

    log π(s_i = +1 | rest) − log π(s_i = −1 | rest) = 2 β · local_field_i, so the Gibbs
    conditional is p(s_i = +1 | rest) = sigmoid(2 β · local_field_i).
    """
    spins = jnp.asarray(spins, jnp.result_type(float))
    return coupling * ising_neighbour_sum(spins) + field


def ising_logdensity(
    spins: Array, beta: float | Array, coupling: float | Array = 1.0, field: float | Array = 0.0
) -> Array:
    """Unnormalised log π(s) = β (J Σ_<ij> s_i s_j + h Σ_i s_i), periodic boundaries.

    Args:
      spins: (..., H, W) with values in {−1, +1} (any numeric dtype); H, W >= 2.
      beta: inverse temperature β.
      coupling: J (> 0 ferromagnetic).
      field: external field h.

    Returns:
      (...) log-densities.
    """
    _check_lattice(spins)
    spins = jnp.asarray(spins, jnp.result_type(float))
    return beta * (coupling * _bond_sum(spins) + field * jnp.sum(spins, axis=(-2, -1)))


def ising_energy_per_site(
    spins: Array, coupling: float | Array = 1.0, field: float | Array = 0.0
) -> Array:
    """E(s) / N = −(J Σ_<ij> s_i s_j + h Σ_i s_i) / (H W): (..., H, W) -> (...)."""
    _check_lattice(spins)
    spins = jnp.asarray(spins, jnp.result_type(float))
    num_sites = spins.shape[-2] * spins.shape[-1]
    energy = -(coupling * _bond_sum(spins) + field * jnp.sum(spins, axis=(-2, -1)))
    return energy / num_sites


def magnetisation_per_site(spins: Array) -> Array:
    """m(s) = Σ_i s_i / N (signed; take ``|m|`` for the order parameter): (..., H, W) -> (...)."""
    _check_lattice(spins)
    return jnp.mean(jnp.asarray(spins, jnp.result_type(float)), axis=(-2, -1))


def _complete_elliptic_k(modulus: np.ndarray) -> np.ndarray:
    """K(k) = ∫_0^{π/2} dθ / sqrt(1 − k² sin² θ) = π / (2 AGM(1, sqrt(1 − k²))).

    The arithmetic–geometric mean converges quadratically, so a few iterations reach float64
    precision; this keeps scipy out of the import path. k → 1 gives K → ∞ (log divergence).
    """
    a = np.ones_like(modulus)
    b = np.sqrt(np.maximum(1.0 - modulus**2, 0.0))
    for _ in range(64):
        a, b = 0.5 * (a + b), np.sqrt(a * b)
        if np.all(np.abs(a - b) <= 1e-15 * a):
            break
    with np.errstate(divide="ignore"):
        return np.pi / (2.0 * a)


def onsager_energy_per_site(beta: float | np.ndarray) -> np.ndarray:
    """Onsager's exact energy per site u(β) of the infinite 2-D Ising model (J = 1, h = 0).

    u(β) = −coth(2β) [1 + (2/π)(2 tanh²(2β) − 1) K(k)],  k = 2 sinh(2β) / cosh²(2β),

    with K the complete elliptic integral of the first kind (computed by an AGM). At β_c, k = 1
    and K diverges while 2 tanh²(2β) − 1 vanishes; the product tends to 0 and u(β_c) = −√2.
    Limits: u → 0 as β → 0 and u → −2 as β → ∞. Float64 numpy, for reference values.
    """
    beta = np.asarray(beta, np.float64)
    if np.any(beta <= 0):
        raise ValueError("onsager_energy_per_site needs beta > 0 (coth(2β) diverges at 0)")
    two_beta = 2.0 * beta
    modulus = 2.0 * np.sinh(two_beta) / np.cosh(two_beta) ** 2
    # k ≤ 1 always; rounding can push it a hair over. At exactly k = 1 the zero factor below
    # times K = ∞ would give NaN, so keep k just under 1 where K is large but finite.
    modulus = np.minimum(modulus, 1.0 - 1e-16)
    factor = 2.0 * np.tanh(two_beta) ** 2 - 1.0
    return -(1.0 + (2.0 / np.pi) * factor * _complete_elliptic_k(modulus)) / np.tanh(two_beta)


def onsager_magnetisation(beta: float | np.ndarray) -> np.ndarray:
    """Onsager–Yang magnetisation ``|m|(β) = (1 − sinh⁻⁴(2β))^{1/8}`` for β > β_c, else 0.

    The spontaneous magnetisation (J = 1, h = 0, infinite lattice). The base is clamped at 0
    before the power, which is what makes ``|m| = 0`` at and above the critical temperature.
    Float64 numpy, ``beta``'s shape.
    """
    beta = np.asarray(beta, np.float64)
    if np.any(beta <= 0):
        raise ValueError("onsager_magnetisation needs beta > 0")
    base = 1.0 - np.sinh(2.0 * beta) ** -4.0
    return np.maximum(base, 0.0) ** 0.125


# --------------------------------------------------------------------------------------------
# Restricted Boltzmann machine.


class RBM(NamedTuple):
    """Binary RBM parameters: ``weights`` (V, H), ``visible_bias`` (V,), ``hidden_bias`` (H,)."""

    weights: Array
    visible_bias: Array
    hidden_bias: Array


def rbm_init(key: PRNGKey, num_visible: int, num_hidden: int, scale: float = 0.01) -> RBM:
    """Weights ~ N(0, scale²), biases 0 (the usual starting point for contrastive divergence).

    An :class:`RBM` with ``weights`` (V, H), biases (V,) and (H,), in JAX's default float.
    """
    if num_visible < 1 or num_hidden < 1:
        raise ValueError(f"need num_visible, num_hidden >= 1, got {num_visible}, {num_hidden}")
    weights = scale * jax.random.normal(key, (num_visible, num_hidden))
    return RBM(weights, jnp.zeros(num_visible), jnp.zeros(num_hidden))


def _check_units(rbm: RBM, name: str, units: Array, axis: int) -> None:
    expected = rbm.weights.shape[axis]
    if units.ndim < 1 or units.shape[-1] != expected:
        raise ValueError(f"{name} must have shape (..., {expected}), got {units.shape}")


def rbm_joint_logdensity(rbm: RBM, visible: Array, hidden: Array) -> Array:
    """Unnormalised log p(v, h) = vᵀWh + bᵀv + cᵀh: v (..., V), h (..., H) -> (...)."""
    _check_units(rbm, "visible", visible, 0)
    _check_units(rbm, "hidden", hidden, 1)
    visible = jnp.asarray(visible, rbm.weights.dtype)
    hidden = jnp.asarray(hidden, rbm.weights.dtype)
    interaction = jnp.einsum("...v,vh,...h->...", visible, rbm.weights, hidden)
    return interaction + visible @ rbm.visible_bias + hidden @ rbm.hidden_bias


def rbm_visible_logdensity(rbm: RBM, visible: Array) -> Array:
    """Unnormalised log p(v) = bᵀv + Σ_j softplus(c_j + (Wᵀv)_j) (h summed out): (..., V) -> (...).

    Summing e^{vᵀWh + cᵀh} over h ∈ {0,1}^H factorises over hidden units into Π_j (1 + e^{a_j})
    with a = c + Wᵀv, whose log is Σ_j softplus(a_j).
    """
    _check_units(rbm, "visible", visible, 0)
    visible = jnp.asarray(visible, rbm.weights.dtype)
    hidden_activation = rbm.hidden_bias + visible @ rbm.weights
    return visible @ rbm.visible_bias + jnp.sum(jax.nn.softplus(hidden_activation), axis=-1)

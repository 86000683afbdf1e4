"""Gibbs samplers: checkerboard Ising, RBM block Gibbs, Gaussian full conditionals, discrete
single-site Gibbs.

Each kernel follows ``nflows_jax.sampling.base.Kernel``. A Gibbs update draws from an exact
conditional, so it is a Metropolis–Hastings move whose acceptance probability is 1: every info
reports ``acceptance_prob = 1`` and ``accepted = True``. Positions are one chain's: spins
(H, W) for :func:`ising_gibbs`, visible units (V,) for :func:`rbm_gibbs`, (D,) for
:func:`gaussian_gibbs`, (N,) integer values for :func:`discrete_gibbs`.

Conditionally independent blocks are updated at once: on a torus with even sides the
checkerboard colouring splits the Ising lattice into two blocks whose sites have no neighbours
in their own block; an RBM's visible units are independent given the hidden units and vice
versa. Every step makes one random draw (no key splitting) and turns the uniforms into samples
by inverse CDF.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nflows_jax.sampling.base import Array, Kernel, PRNGKey, uniform
from nflows_jax.sampling.checks import scalar_logdensity
from nflows_jax.targets.lattice import RBM, ising_neighbour_sum

__all__ = [
    "GibbsInfo",
    "GibbsState",
    "RBMGibbsState",
    "conditional_logits_from_logdensity",
    "discrete_gibbs",
    "gaussian_gibbs",
    "ising_gibbs",
    "rbm_gibbs",
]


class GibbsState(NamedTuple):
    """``position``: the current configuration (spins, a vector, discrete values)."""

    position: Array


class RBMGibbsState(NamedTuple):
    """``position``: visible units (V,) in {0, 1}; ``hidden``: hidden units (H,) in {0, 1}.

    The hidden units are those drawn in the last step (given the previous visible units);
    ``init`` sets them to 0 and the first step overwrites them before they are used.
    """

    position: Array
    hidden: Array


class GibbsInfo(NamedTuple):
    """Always ``acceptance_prob = 1.0`` and ``accepted = True``: exact conditional draws."""

    acceptance_prob: Array
    accepted: Array


def _always_accepted() -> GibbsInfo:
    return GibbsInfo(jnp.ones((), jnp.result_type(float)), jnp.ones((), bool))


def _categorical_from_uniform(probs: Array, uniform: Array) -> Array:
    """Inverse-CDF draw from ``probs`` (K,) with a U[0, 1) scalar: an index in [0, K).

    Index k is returned iff cdf[k−1] <= u·total < cdf[k], so a zero-probability value (a flat
    step of the cdf) is never returned; the clip only guards against rounding at the top.
    """
    cdf = jnp.cumsum(probs)
    index = jnp.sum(cdf <= uniform * cdf[-1])
    return jnp.minimum(index, probs.shape[0] - 1)


# --------------------------------------------------------------------------------------------
# Ising model: checkerboard block Gibbs.


def _check_even_torus(spins: Array) -> None:
    if spins.ndim != 2:
        raise ValueError(f"ising_gibbs expects spins of shape (H, W), got {spins.shape}")
    height, width = spins.shape
    if height % 2 or width % 2 or height < 2 or width < 2:
        raise ValueError(
            f"checkerboard Gibbs needs even H and W (got {height}x{width}): on a torus with an "
            "odd side two neighbouring sites share a colour, so a block update would draw "
            "dependent sites as if independent"
        )


def ising_gibbs(
    beta: float | Array, coupling: float | Array = 1.0, field: float | Array = 0.0
) -> Kernel:
    """Checkerboard Gibbs sampler for ``targets.lattice.ising_logdensity`` on an (H, W) torus.

    One step is one sweep: all black sites ((i + j) even) are drawn at once given the white
    ones, then all white sites given the new black ones, each from
    p(s_i = +1 | neighbours) = sigmoid(2β (J Σ_{j~i} s_j + h)).

    Cost per sweep: the neighbour sums for both colours and ONE uniform per site (each colour
    reads the (H, W) uniforms only on its own sites, so the two halves share one draw). The
    neighbour sum of ±1 spins is one of −4, −2, 0, 2, 4, so p(up) is one of 5 numbers, computed
    once per sweep and picked by comparisons: a sigmoid on every site costs more than the rest of
    the sweep on CPU (XLA does not vectorise the exp inside the fused loop with the rolls).

    Positions are spins (H, W) with values exactly −1 or +1 (any numeric dtype, kept) and H and
    W even.
    """
    sums = jnp.arange(-4.0, 5.0, 2.0)

    def init(spins: Array) -> GibbsState:
        _check_even_torus(spins)
        return GibbsState(spins)

    def prob_up(neighbour_sum: Array, table: Array) -> Array:
        # Thresholds halfway between the even values a sum of four ±1 spins can take.
        prob = jnp.where(neighbour_sum < 3, table[3], table[4])
        prob = jnp.where(neighbour_sum < 1, table[2], prob)
        prob = jnp.where(neighbour_sum < -1, table[1], prob)
        return jnp.where(neighbour_sum < -3, table[0], prob)

    def step(key: PRNGKey, state: GibbsState) -> tuple[GibbsState, GibbsInfo]:
        spins = state.position
        _check_even_torus(spins)
        height, width = spins.shape
        rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
        black = (rows + cols) % 2 == 0
        table = jax.nn.sigmoid(2.0 * beta * (coupling * sums + field))  # p(up) for each sum
        uniforms = uniform(key, height * width).reshape(height, width)
        for colour in (black, ~black):
            up = uniforms < prob_up(ising_neighbour_sum(spins), table)
            spins = jnp.where(colour, jnp.where(up, 1, -1).astype(spins.dtype), spins)
        return GibbsState(spins), _always_accepted()

    return Kernel(init=init, step=step)


# --------------------------------------------------------------------------------------------
# Restricted Boltzmann machine: block Gibbs.


def rbm_gibbs(rbm: RBM) -> Kernel:
    """Block Gibbs for an RBM (``targets.lattice.RBM``): h ~ p(h | v), then v ~ p(v | h).

    p(h_j = 1 | v) = sigmoid(c_j + (Wᵀv)_j) and p(v_i = 1 | h) = sigmoid(b_i + (W h)_i); each
    block is drawn at once. The visible chain (``state.position``) has p(v) as its stationary
    distribution and the pair (v, h) the joint.

    Positions are visible units (V,) in {0, 1}; the dtype is kept.
    """
    num_visible, num_hidden = rbm.weights.shape

    def check_visible(visible: Array) -> None:
        if visible.shape != (num_visible,):
            raise ValueError(f"visible units must have shape ({num_visible},), got {visible.shape}")

    def init(visible: Array) -> RBMGibbsState:
        check_visible(visible)
        return RBMGibbsState(visible, jnp.zeros(num_hidden, visible.dtype))

    def step(key: PRNGKey, state: RBMGibbsState) -> tuple[RBMGibbsState, GibbsInfo]:
        visible = state.position
        check_visible(visible)
        uniforms = uniform(key, num_hidden + num_visible)
        visible_float = visible.astype(rbm.weights.dtype)
        prob_hidden = jax.nn.sigmoid(rbm.hidden_bias + visible_float @ rbm.weights)
        hidden_float = (uniforms[:num_hidden] < prob_hidden).astype(rbm.weights.dtype)
        prob_visible = jax.nn.sigmoid(rbm.visible_bias + rbm.weights @ hidden_float)
        new_visible = (uniforms[num_hidden:] < prob_visible).astype(visible.dtype)
        return RBMGibbsState(new_visible, hidden_float.astype(visible.dtype)), _always_accepted()

    return Kernel(init=init, step=step)


# --------------------------------------------------------------------------------------------
# Multivariate Gaussian: systematic-scan full conditionals.


def gaussian_gibbs(mean: Array, precision: Array) -> Kernel:
    """Systematic-scan Gibbs for N(mean, precision⁻¹), one coordinate at a time.

    With precision Λ the full conditional is
    x_i | x_−i ~ N(μ_i − (1/Λ_ii) Σ_{j≠i} Λ_ij (x_j − μ_j), 1/Λ_ii);
    one step updates i = 0, ..., D−1 in order (``lax.fori_loop``), each using the coordinates
    already updated in this sweep. Λ must be symmetric positive definite (Λ_ii > 0).

    Args:
      mean: (D,).
      precision: (D, D), the inverse covariance.
    """
    mean = jnp.asarray(mean)
    precision = jnp.asarray(precision)
    if mean.ndim != 1:
        raise ValueError(f"mean must have shape (D,), got {mean.shape}")
    dim = mean.shape[0]
    if precision.shape != (dim, dim):
        raise ValueError(f"precision must have shape ({dim}, {dim}), got {precision.shape}")
    diagonal = jnp.diagonal(precision)
    conditional_std = 1.0 / jnp.sqrt(diagonal)

    def init(position: Array) -> GibbsState:
        if position.shape != (dim,):
            raise ValueError(f"position must have shape ({dim},), got {position.shape}")
        return GibbsState(position)

    def step(key: PRNGKey, state: GibbsState) -> tuple[GibbsState, GibbsInfo]:
        normals = jax.random.normal(key, (dim,), state.position.dtype)

        def update(i, x):
            centred = x - mean
            # Σ_{j≠i} Λ_ij (x_j − μ_j): the full row product minus the diagonal term.
            off_diagonal = precision[i] @ centred - diagonal[i] * centred[i]
            conditional_mean = mean[i] - off_diagonal / diagonal[i]
            return x.at[i].set(conditional_mean + conditional_std[i] * normals[i])

        position = jax.lax.fori_loop(0, dim, update, state.position)
        return GibbsState(position), _always_accepted()

    return Kernel(init=init, step=step)


# --------------------------------------------------------------------------------------------
# Generic single-site Gibbs on discrete variables.


def conditional_logits_from_logdensity(
    logdensity_fn: Callable[[Array], Array], num_values: int
) -> Callable[[Array, Array], Array]:
    """Build ``conditional_logits_fn`` for ``discrete_gibbs`` from a joint log-density.

    logits_k = log π(x with x_i = k) for k = 0, ..., K−1; the normaliser of the conditional is
    the same for every k and drops out of the softmax. Costs K joint evaluations per site; write
    the conditional by hand when a cheaper local form exists.
    """

    # A (D,) log-density would give (K, D) logits and a softmax over the wrong axis.
    checked = scalar_logdensity(logdensity_fn, "conditional_logits_from_logdensity")

    def conditional_logits(position: Array, site: Array) -> Array:
        values = jnp.arange(num_values, dtype=position.dtype)
        return jax.vmap(lambda value: checked(position.at[site].set(value)))(values)

    return conditional_logits


def discrete_gibbs(
    conditional_logits_fn: Callable[[Array, Array], Array],
    num_variables: int,
    scan: Literal["systematic", "random"] = "systematic",
) -> Kernel:
    """Single-site Gibbs for N discrete variables, each taking values 0, ..., K−1.

    Args:
      conditional_logits_fn: ``(position (N,), i) -> logits (K,)``: unnormalised
        log p(x_i = k | x_−i). It must not depend on ``position[i]``.
      num_variables: N, the length of a position.
      scan: ``"systematic"``: one step sweeps i = 0, ..., N−1 in order; ``"random"``: one step
        resamples one site chosen uniformly at random.

    Returns:
      ``Kernel(init, step, transition)``. ``transition(position, candidates)`` (candidates
      (S, N)) is the exact probability of each candidate after one step:

      * random scan: (1/N) p(c_i | x_−i) if c differs from x only at site i,
        (1/N) Σ_i p(x_i | x_−i) if c = x, 0 otherwise. This kernel is reversible.
      * systematic scan: Π_i p(c_i | c_0, ..., c_{i−1}, x_{i+1}, ..., x_{N−1}), the product of
        the single-site matrices; each site is drawn once, so a sweep reaches c by one path
        only. It leaves π invariant but is not reversible (no detailed balance).
    """
    if scan not in ("systematic", "random"):
        raise ValueError(f"scan must be 'systematic' or 'random', got {scan!r}")
    if num_variables < 1:
        raise ValueError(f"num_variables must be >= 1, got {num_variables}")

    def check_position(position: Array) -> None:
        if position.shape != (num_variables,):
            raise ValueError(f"position must have shape ({num_variables},), got {position.shape}")
        if not jnp.issubdtype(position.dtype, jnp.integer):
            raise ValueError(f"position must hold integers 0..K-1, got dtype {position.dtype}")

    def site_probs(position: Array, site: Array) -> Array:
        """p(x_site = · | x_−site): (K,). The one place conditionals are normalised."""
        return jax.nn.softmax(conditional_logits_fn(position, site))

    def init(position: Array) -> GibbsState:
        check_position(position)
        return GibbsState(position)

    def resample_site(position: Array, site: Array, uniform: Array) -> Array:
        value = _categorical_from_uniform(site_probs(position, site), uniform)
        return position.at[site].set(value.astype(position.dtype))

    def step(key: PRNGKey, state: GibbsState) -> tuple[GibbsState, GibbsInfo]:
        position = state.position
        check_position(position)
        if scan == "random":
            site_uniform, value_uniform = jax.random.uniform(key, (2,))
            site = jnp.minimum((site_uniform * num_variables).astype(jnp.int32), num_variables - 1)
            return GibbsState(resample_site(position, site, value_uniform)), _always_accepted()
        uniforms = jax.random.uniform(key, (num_variables,))
        position = jax.lax.fori_loop(
            0, num_variables, lambda i, x: resample_site(x, i, uniforms[i]), position
        )
        return GibbsState(position), _always_accepted()

    def random_scan_transition(position: Array, candidates: Array) -> Array:
        sites = jnp.arange(num_variables)
        all_probs = jax.vmap(lambda i: site_probs(position, i))(sites)  # (N, K)
        stay = jnp.mean(all_probs[sites, position])

        def row_entry(candidate):
            differs = candidate != position
            site = jnp.argmax(differs)
            single_change = all_probs[site, candidate[site]] / num_variables
            num_changed = jnp.sum(differs)
            return jnp.where(num_changed == 0, stay, jnp.where(num_changed == 1, single_change, 0))

        return jax.vmap(row_entry)(candidates)

    def systematic_scan_transition(position: Array, candidates: Array) -> Array:
        sites = jnp.arange(num_variables)

        def row_entry(candidate):
            def prob_of_site(i):
                # The configuration when site i is drawn: sites < i already hold the candidate.
                partial = jnp.where(sites < i, candidate, position)
                return site_probs(partial, i)[candidate[i]]

            return jnp.prod(jax.vmap(prob_of_site)(sites))

        return jax.vmap(row_entry)(candidates)

    def transition(position: Array, candidates: Array) -> Array:
        check_position(position)
        if candidates.ndim != 2 or candidates.shape[1] != num_variables:
            raise ValueError(
                f"candidates must have shape (S, {num_variables}), got {candidates.shape}"
            )
        if scan == "random":
            return random_scan_transition(position, candidates)
        return systematic_scan_transition(position, candidates)

    return Kernel(init=init, step=step, transition=transition)

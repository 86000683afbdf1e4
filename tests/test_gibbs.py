"""Gibbs samplers and lattice targets against exact enumeration.

Chains are many independent runs (vmap over chains, scan over steps); their final states are
independent draws, so goodness of fit is a Pearson chi-square test of the final states against
the exactly enumerated distribution (cells with expected count < 5 pooled).

Every statistical test has false-fail rate ALPHA = 1e-4, fixed before running (split
Bonferroni-wise over its checks), and a named wrong answer it catches with power ≥ 0.99: the
Ising model at a β 5 % too large, an RBM with weights 10 % too large, a Gibbs kernel whose
pairwise potentials are 10 % too strong. The number of chains (or draws per state) comes from the
noncentral-χ² power calculation in ``tests/power.py``, and each test also runs the sampler on the
wrong answer at the same fixed seed and asserts the rejection (power at one seed: it fails with
probability ≤ 0.01 by construction). Moment checks use k = z_{α/(2m)} Monte-Carlo standard
errors for m checks. Float tolerances come from float32 rounding of the quantities involved.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import power
import pytest
import scipy.special
import scipy.stats

from nflows_jax.sampling import markov
from nflows_jax.sampling.gibbs import (
    conditional_logits_from_logdensity,
    discrete_gibbs,
    gaussian_gibbs,
    ising_gibbs,
    rbm_gibbs,
)
from nflows_jax.targets.lattice import (
    ISING_CRITICAL_BETA,
    RBM,
    ising_energy_per_site,
    ising_logdensity,
    magnetisation_per_site,
    onsager_energy_per_site,
    onsager_magnetisation,
    rbm_init,
    rbm_joint_logdensity,
    rbm_visible_logdensity,
)
from nflows_jax.testing import assert_moments_match

ALPHA = 1e-4  # false-fail rate per test, fixed before any run
BETA = 0.01  # 1 - power against the named wrong answer
EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)

stationary_distribution = jax.jit(markov.stationary_distribution)
detailed_balance_violation = jax.jit(markov.detailed_balance_violation)
transition_goodness_of_fit = jax.jit(markov.transition_goodness_of_fit)


def transition_matrix(kernel, states):
    return jax.jit(lambda s: markov.transition_matrix(kernel, s))(states)


def run_chains(key, kernel, initial_positions, num_steps):
    """Final states and all infos of independent chains: vmap over chains, scan over steps."""

    @jax.jit
    def run(key, positions):
        states = jax.vmap(kernel.init)(positions)
        keys = jax.random.split(key, (num_steps, positions.shape[0]))  # (steps, chains)
        return jax.lax.scan(lambda s, step_keys: jax.vmap(kernel.step)(step_keys, s), states, keys)

    return run(key, initial_positions)


def assert_always_accepted(infos):
    assert bool(jnp.all(infos.acceptance_prob == 1.0))
    assert bool(jnp.all(infos.accepted))


def chi_square_p_value(observed_counts, expected_probs, min_expected=5.0):
    """Pearson chi-square p-value of counts against probabilities, small cells pooled.

    Cells whose expected count is below ``min_expected`` are merged into one cell so the
    chi-square approximation holds. A count in a zero-probability cell gives p = 0.
    """
    observed = np.asarray(observed_counts, np.float64).ravel()
    probs = np.asarray(expected_probs, np.float64).ravel()
    if np.any(observed[probs == 0] > 0):
        return 0.0
    expected = observed.sum() * probs / probs.sum()
    small = expected < min_expected
    observed = np.append(observed[~small], observed[small].sum())
    expected = np.append(expected[~small], expected[small].sum())
    if expected[-1] == 0:
        observed, expected = observed[:-1], expected[:-1]
    statistic = np.sum((observed - expected) ** 2 / expected)
    return scipy.stats.chi2.sf(statistic, len(expected) - 1)


# --------------------------------------------------------------------------------------------
# Lattice targets.


def all_spin_configurations(height, width):
    """Every configuration of an (height, width) lattice: (2^(HW), H, W) in {−1, +1}, int8."""
    num_sites = height * width
    bits = (np.arange(2**num_sites)[:, None] >> np.arange(num_sites)) & 1
    return (2 * bits - 1).astype(np.int8).reshape(-1, height, width)


def bond_sum_by_listing_bonds(spins):
    """Σ_<ij> s_i s_j on the torus from an explicit list of (site, right/down neighbour) bonds."""
    height, width = spins.shape[-2:]
    total = np.zeros(spins.shape[:-2], np.int64)
    for i, j in itertools.product(range(height), range(width)):
        total += spins[..., i, j] * spins[..., i, (j + 1) % width]
        total += spins[..., i, j] * spins[..., (i + 1) % height, j]
    return total


def test_ising_logdensity_counts_each_bond_once():
    configs = all_spin_configurations(3, 3)
    bonds = bond_sum_by_listing_bonds(configs.astype(np.int64))
    total_spin = configs.sum(axis=(1, 2))
    beta, coupling, field = 0.7, 1.3, -0.4
    expected = beta * (coupling * bonds + field * total_spin)  # float64 reference
    # Integer sums of ±1 are exact in float32; J·Σ, h·Σ, their sum and β· round once each, and the
    # float32 constants β, J, h are off by half an ulp: ≤ 8 eps relative to the magnitudes added.
    scale = beta * (coupling * 18 + abs(field) * 9)  # the largest |J Σ ss| + |h Σ s|, times β
    np.testing.assert_allclose(
        ising_logdensity(configs, beta, coupling, field), expected, rtol=0, atol=8 * EPS32 * scale
    )
    np.testing.assert_allclose(
        ising_energy_per_site(configs, coupling, field),
        -(coupling * bonds + field * total_spin) / 9,
        rtol=0,
        atol=8 * EPS32 * scale / beta / 9,
    )
    # An exact integer divided by 9: one rounding.
    np.testing.assert_allclose(magnetisation_per_site(configs), total_spin / 9, rtol=EPS32)
    # All spins up on an H×W torus: 2HW bonds, each +1; -(48 + 0.25 · 24) / 24 is exact in binary.
    np.testing.assert_allclose(
        ising_energy_per_site(jnp.ones((4, 6)), 1.0, 0.25), -2.25, rtol=EPS32
    )


def test_ising_rejects_degenerate_lattices():
    with pytest.raises(ValueError, match="H, W >= 2"):
        ising_logdensity(jnp.ones((1, 5)), 0.3)
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W\)"):
        ising_logdensity(jnp.ones(5), 0.3)


def test_onsager_reference_values():
    # All float64. β → ∞: ground state, u = −2 per site, |m| = 1; at β = 20 every correction is
    # below e^-80, so only the last few operations' rounding is left.
    np.testing.assert_allclose(onsager_energy_per_site(20.0), -2.0, rtol=0, atol=8 * EPS64)
    np.testing.assert_allclose(onsager_magnetisation(20.0), 1.0, rtol=0, atol=8 * EPS64)
    # Critical point: u(β_c) = −√2, and no spontaneous magnetisation at or above T_c.
    np.testing.assert_allclose(ISING_CRITICAL_BETA, 0.4406867935097715, rtol=2 * EPS64)
    # At β_c the factor 2 tanh² − 1 is 0 up to ~4 eps, times (2/π) K(1 − 1e-16) ≈ 12.4, divided
    # by tanh(2β_c) = 1/√2: ≤ 70 eps; 128 eps covers the remaining operations.
    np.testing.assert_allclose(
        onsager_energy_per_site(ISING_CRITICAL_BETA), -np.sqrt(2), rtol=0, atol=128 * EPS64
    )
    np.testing.assert_array_equal(onsager_magnetisation([0.1, 0.3, ISING_CRITICAL_BETA]), 0.0)
    # T = 2 (β = 0.5): the textbook value |m| = 0.91132, rounded to 5 decimals (±5e-6).
    np.testing.assert_allclose(onsager_magnetisation(0.5), 0.91132, rtol=0, atol=5e-6)
    # The AGM elliptic integral agrees with scipy's on both sides of β_c. Both are accurate to a
    # few eps in K; u inherits that times the condition number of K in its parameter m (up to
    # ~150 next to β_c, computed here by central differences).
    betas = np.array([0.05, 0.2, 0.4, 0.43, 0.45, 0.6, 1.5])
    modulus = 2 * np.sinh(2 * betas) / np.cosh(2 * betas) ** 2
    scipy_u = -(
        1 + (2 / np.pi) * (2 * np.tanh(2 * betas) ** 2 - 1) * scipy.special.ellipk(modulus**2)
    ) / np.tanh(2 * betas)
    m, step = modulus**2, 1e-6
    k_values = scipy.special.ellipk(m)
    condition = m * np.abs(scipy.special.ellipk(m + step * m) - scipy.special.ellipk(m - step * m))
    condition = condition / (2 * step * m * k_values)
    np.testing.assert_allclose(
        onsager_energy_per_site(betas), scipy_u, rtol=16 * EPS64 * (1 + np.max(condition))
    )
    # High temperature, from the series ln Z/N = ln(2 cosh² β) + t⁴ + 2t⁶ + (9/2)t⁸ + ...,
    # t = tanh β: u = −2(t + 2t³ + 4t⁵ + 12t⁷ + ...). The first omitted term is 24 t⁷ ≈ 1.9e-8 at
    # β = 0.05 and later ones shrink by ~3t² each, so the remainder is below twice it.
    t = np.tanh(0.05)
    np.testing.assert_allclose(
        onsager_energy_per_site(0.05), -2 * (t + 2 * t**3 + 4 * t**5), rtol=0, atol=2 * 24 * t**7
    )


# --------------------------------------------------------------------------------------------
# Checkerboard Ising Gibbs against exact enumeration on a 4×4 torus (65536 states).


def ising_cell(spins):
    """Index of the (bond sum, total spin) pair of int64 spins (..., 4, 4) on the 4×4 torus.

    Both are even, in [−32, 32] and [−16, 16], so their shifted halves index a 33 × 17 table.
    """
    bonds = bond_sum_by_listing_bonds(spins)
    total_spin = spins.sum(axis=(-2, -1))
    return (bonds + 32) // 2 * 17 + (total_spin + 16) // 2


@jax.jit
def run_checkerboard_chains(key, starts, beta, coupling, field):
    """Final spins and infos of 4×4 checkerboard chains; (β, J, h) traced: one compilation."""
    kernel = ising_gibbs(beta, coupling, field)
    states = jax.vmap(kernel.init)(starts)
    keys = jax.random.split(key, (60, starts.shape[0]))
    return jax.lax.scan(lambda s, step_keys: jax.vmap(kernel.step)(step_keys, s), states, keys)


ISING_PARAMETERS = [(0.4, 1.0, 0.0), (0.3, 0.8, 0.2)]
ISING_BETA_ERROR = 0.05  # the named wrong answer: the chains sample β (1 + 0.05)
_ISING_CONFIGS = all_spin_configurations(4, 4).astype(np.int64)


def ising_4x4_probs(beta, coupling, field):
    """Exact Boltzmann probabilities of every 4×4 configuration and of each ``ising_cell``."""
    log_weights = beta * (
        coupling * bond_sum_by_listing_bonds(_ISING_CONFIGS) + field * _ISING_CONFIGS.sum((1, 2))
    )
    probs = np.exp(log_weights - scipy.special.logsumexp(log_weights))
    return probs, np.bincount(ising_cell(_ISING_CONFIGS), weights=probs, minlength=33 * 17)


# Two checks per test (χ² and |m|) at ALPHA / 2 each; one chain count for both parameter sets
# (one compilation), the larger of their sample sizes.
NUM_ISING_CHAINS = max(
    power.pooled_chi_square_sample_size(
        ising_4x4_probs(beta, coupling, field)[1],
        ising_4x4_probs(beta * (1 + ISING_BETA_ERROR), coupling, field)[1],
        ALPHA / 2,
        BETA,
    )
    for beta, coupling, field in ISING_PARAMETERS
)  # 8283


@pytest.mark.parametrize(("beta", "coupling", "field"), ISING_PARAMETERS)
def test_checkerboard_ising_matches_enumeration(beta, coupling, field):
    """χ² of the (bond sum, total spin) cells at ALPHA / 2 and |m| within k SE (ALPHA / 2);
    NUM_ISING_CHAINS gives the χ² power 0.99 against β 5 % too large, checked on such chains."""
    probs, exact_cell_probs = ising_4x4_probs(beta, coupling, field)
    signs = 2 * np.random.default_rng(11).integers(0, 2, (NUM_ISING_CHAINS, 4, 4)) - 1
    starts = jnp.asarray(signs, jnp.float32)
    states, infos = run_checkerboard_chains(jax.random.key(11), starts, beta, coupling, field)
    assert_always_accepted(infos)
    final = np.asarray(states.position, np.int64)
    observed = np.bincount(ising_cell(final), minlength=33 * 17)
    assert chi_square_p_value(observed, exact_cell_probs) > ALPHA / 2

    exact_abs_m = np.sum(probs * np.abs(_ISING_CONFIGS.sum((1, 2))) / 16)
    chain_abs_m = np.abs(final.sum(axis=(1, 2))) / 16
    se = chain_abs_m.std(ddof=1) / np.sqrt(NUM_ISING_CHAINS)
    assert abs(chain_abs_m.mean() - exact_abs_m) < power.num_standard_errors(ALPHA / 2) * se

    # The named wrong answer: the same chains run at β (1 + 0.05), tested against β.
    wrong_beta = beta * (1 + ISING_BETA_ERROR)
    wrong, _ = run_checkerboard_chains(jax.random.key(11), starts, wrong_beta, coupling, field)
    wrong_cells = np.bincount(ising_cell(np.asarray(wrong.position, np.int64)), minlength=33 * 17)
    assert chi_square_p_value(wrong_cells, exact_cell_probs) < ALPHA / 2, "β 5 % off was missed"


def test_checkerboard_keeps_the_spin_dtype():
    kernel = ising_gibbs(0.3)
    state = kernel.init(jnp.ones((4, 6), jnp.int8))
    new_state, _ = jax.eval_shape(kernel.step, jax.random.key(0), state)
    assert new_state.position.dtype == jnp.int8 and new_state.position.shape == (4, 6)


def test_checkerboard_needs_even_sides():
    kernel = ising_gibbs(0.3)
    for shape in [(3, 4), (4, 5), (3, 3)]:
        with pytest.raises(ValueError, match="even"):
            kernel.init(jnp.ones(shape))


# --------------------------------------------------------------------------------------------
# Generic single-site Gibbs: exact transition matrices.


def ising_3x3_logdensity(bits):
    """The 3×3 periodic Ising model on variables in {0, 1} (spin = 2·bit − 1)."""
    return ising_logdensity((2 * bits - 1).reshape(3, 3), 0.35, 1.0, 0.15)


ISING_3X3_STATES = jnp.asarray((np.arange(512)[:, None] >> np.arange(9)) & 1, jnp.int32)


def ising_3x3_boltzmann():
    return jax.nn.softmax(jax.jit(jax.vmap(ising_3x3_logdensity))(ISING_3X3_STATES))


def assert_unique_stationary(matrix, target, num_steps_to_connect):
    """``target`` is THE stationary distribution of ``matrix``: π T = π, and T^k > 0 entrywise.

    A positive power makes the chain irreducible and aperiodic, so an invariant distribution is
    the unique stationary one. (On these slowly mixing 512-state chains a float32 least-squares
    solve for π is accurate to only ~1e-4; the invariance equation itself holds to rounding.)

    Rounding: (π T)_j sums S products, each entry of π and T is off by a few eps relatively
    (softmaxes; the shared normaliser of π cancels), so |π T - π|_j ≤ (S + 16) eps π_j.
    """
    size = matrix.shape[0]
    np.testing.assert_allclose(target @ matrix, target, rtol=(size + 16) * EPS32, atol=0)
    connected = np.linalg.matrix_power(np.asarray(matrix, np.float64), num_steps_to_connect)
    assert np.all(connected > 0)


def detailed_balance_rounding(matrix, target) -> float:
    """Bound on the float32 detailed-balance violation of an exactly reversible chain: each flow
    π_i T_ij carries ≤ 8 eps of relative rounding (π and T from softmaxes, the product), so the
    two flows of a pair differ by ≤ 16 eps times the largest flow."""
    return 16 * EPS32 * float(jnp.max(markov.probability_flows(matrix, target)))


def test_random_scan_gibbs_on_3x3_ising_is_reversible_with_boltzmann_stationary():
    conditional = conditional_logits_from_logdensity(ising_3x3_logdensity, 2)
    kernel = discrete_gibbs(conditional, 9, scan="random")
    matrix = markov.check_transition_matrix(transition_matrix(kernel, ISING_3X3_STATES))
    boltzmann = ising_3x3_boltzmann()
    # Nine single-site moves connect any two configurations.
    assert_unique_stationary(matrix, boltzmann, num_steps_to_connect=9)
    violation = float(detailed_balance_violation(matrix, boltzmann))
    assert violation < detailed_balance_rounding(matrix, boltzmann)


def test_systematic_scan_gibbs_on_3x3_ising_has_boltzmann_stationary():
    conditional = conditional_logits_from_logdensity(ising_3x3_logdensity, 2)
    kernel = discrete_gibbs(conditional, 9, scan="systematic")
    matrix = markov.check_transition_matrix(transition_matrix(kernel, ISING_3X3_STATES))
    boltzmann = ising_3x3_boltzmann()
    # One sweep can reach every configuration.
    assert_unique_stationary(matrix, boltzmann, num_steps_to_connect=1)
    # π-invariant without being reversible: a fixed sweep order breaks detailed balance, by far
    # more than rounding could (the bound is what a reversible chain could show).
    violation = float(detailed_balance_violation(matrix, boltzmann))
    assert violation > 100 * detailed_balance_rounding(matrix, boltzmann)


# A 3-variable, 3-valued pairwise model: small enough to count every one-step landing.
MRF_RNG = np.random.default_rng(12)
MRF_UNARY = jnp.asarray(0.7 * MRF_RNG.standard_normal((3, 3)), jnp.float32)
MRF_PAIR = jnp.asarray(0.6 * MRF_RNG.standard_normal((3, 3, 3, 3)), jnp.float32)
MRF_STATES = jnp.asarray(list(itertools.product(range(3), repeat=3)), jnp.int32)


def mrf_logdensity(x):
    unary = jnp.sum(MRF_UNARY[jnp.arange(3), x])
    pair = sum(MRF_PAIR[i, j, x[i], x[j]] for i, j in [(0, 1), (1, 2), (0, 2)])
    return unary + pair


MRF_PAIR_ERROR = 0.1  # the named wrong kernel: pairwise potentials 10 % too strong


def mrf_kernel(scan: str, pair_scale: float = 1.0):
    """Single-site Gibbs on the MRF, with its pairwise potentials scaled by ``pair_scale``."""

    def logdensity(x):
        unary = jnp.sum(MRF_UNARY[jnp.arange(3), x])
        pair = sum(MRF_PAIR[i, j, x[i], x[j]] for i, j in [(0, 1), (1, 2), (0, 2)])
        return unary + pair_scale * pair

    return discrete_gibbs(conditional_logits_from_logdensity(logdensity, 3), 3, scan=scan)


def mrf_draws_per_state(scan: str) -> int:
    """Draws per state for power 0.99 at ALPHA against the wrong kernel: noncentral χ² pooled over
    the rows of the transition matrix (dof = Σ_i (#possible moves from i − 1))."""
    right = np.asarray(transition_matrix(mrf_kernel(scan), MRF_STATES), np.float64)
    wrong = np.asarray(transition_matrix(mrf_kernel(scan, 1 + MRF_PAIR_ERROR), MRF_STATES))
    possible = right > 0
    dof = int(np.sum(np.maximum(possible.sum(axis=1) - 1, 0)))
    return power.chi_square_sample_size(right[possible], wrong[possible], ALPHA, BETA, dof=dof)


@pytest.mark.parametrize("scan", ["random", "systematic"])
def test_discrete_gibbs_step_agrees_with_transition(scan):
    """χ² of one-step landings at ALPHA; draws per state from the power calculation against
    pairwise potentials 10 % too strong (random scan 4077; systematic 2372, raised to 3861 so
    that every expected count is ≥ 5), checked below."""
    kernel = mrf_kernel(scan)
    matrix = markov.check_transition_matrix(transition_matrix(kernel, MRF_STATES))
    target = jax.nn.softmax(jax.jit(jax.vmap(mrf_logdensity))(MRF_STATES))
    np.testing.assert_allclose(
        stationary_distribution(matrix), target, rtol=0, atol=power.stationary_solve_atol(matrix)
    )
    num_draws = mrf_draws_per_state(scan)
    # Pearson's χ² approximation wants expected counts of about 5 or more in every cell.
    num_draws = max(num_draws, math.ceil(5 / float(jnp.min(jnp.where(matrix > 0, matrix, 1)))))
    counts = markov.empirical_transition_counts(jax.random.key(13), kernel, MRF_STATES, num_draws)
    _, _, p_value = transition_goodness_of_fit(counts, matrix)
    assert p_value > ALPHA
    wrong_kernel = mrf_kernel(scan, 1 + MRF_PAIR_ERROR)
    wrong_counts = markov.empirical_transition_counts(
        jax.random.key(13), wrong_kernel, MRF_STATES, num_draws
    )
    _, _, wrong_p_value = transition_goodness_of_fit(wrong_counts, matrix)
    assert wrong_p_value < ALPHA, "pairwise potentials 10 % off were missed"
    one_step_infos = jax.jit(jax.vmap(lambda key, x: kernel.step(key, kernel.init(x))[1]))
    assert_always_accepted(one_step_infos(jax.random.split(jax.random.key(14), 27), MRF_STATES))


def test_discrete_gibbs_rejects_bad_configuration():
    conditional = conditional_logits_from_logdensity(mrf_logdensity, 3)
    with pytest.raises(ValueError, match="scan"):
        discrete_gibbs(conditional, 3, scan="blocked")
    kernel = discrete_gibbs(conditional, 3)
    with pytest.raises(ValueError, match="shape"):
        kernel.init(jnp.zeros(4, jnp.int32))
    with pytest.raises(ValueError, match="integers"):
        kernel.init(jnp.zeros(3))


# --------------------------------------------------------------------------------------------
# RBM block Gibbs against enumeration (4 visible, 3 hidden: 128 joint states).


def tiny_rbm():
    rng = np.random.default_rng(15)
    return RBM(
        weights=jnp.asarray(rng.standard_normal((4, 3)), jnp.float32),
        visible_bias=jnp.asarray(0.5 * rng.standard_normal(4), jnp.float32),
        hidden_bias=jnp.asarray(0.5 * rng.standard_normal(3), jnp.float32),
    )


VISIBLE_STATES = jnp.asarray((np.arange(16)[:, None] >> np.arange(4)) & 1, jnp.float32)
HIDDEN_STATES = jnp.asarray((np.arange(8)[:, None] >> np.arange(3)) & 1, jnp.float32)


def test_rbm_visible_logdensity_sums_out_hidden_units():
    rbm = tiny_rbm()
    joint = rbm_joint_logdensity(rbm, VISIBLE_STATES[:, None, :], HIDDEN_STATES[None, :, :])
    # Two float32 evaluations of one number: each sums terms no larger in total than
    # Σ|W| + Σ|b| + Σ|c| (+ log 8 for the logsumexp), rounding by ≤ ~8 eps of that sum.
    scale = sum(float(jnp.sum(jnp.abs(leaf))) for leaf in rbm) + math.log(8)
    np.testing.assert_allclose(
        rbm_visible_logdensity(rbm, VISIBLE_STATES),
        jax.scipy.special.logsumexp(joint, axis=1),
        rtol=0,
        atol=16 * EPS32 * scale,
    )
    init = rbm_init(jax.random.key(0), 5, 2, scale=0.1)
    assert init.weights.shape == (5, 2) and init.visible_bias.shape == (5,)
    # For 10 N(0, 0.1²) entries 10 s² / σ² ~ χ²_9 (jnp.std divides by n), so s > 0.3 = 3σ has
    # probability P(χ²_9 > 90) < 1e-14, while an init that ignored `scale` (σ = 1) fails.
    assert init.hidden_bias.shape == (2,) and float(jnp.std(init.weights)) < 0.3


RBM_WEIGHT_ERROR = 0.1  # the named wrong answer: weights 10 % too large


def rbm_joint_probs(rbm) -> np.ndarray:
    """Exact joint probabilities p(v, h) of the 16 × 8 states, float64: (16, 8)."""
    logits = rbm_joint_logdensity(rbm, VISIBLE_STATES[:, None, :], HIDDEN_STATES[None, :, :])
    logits = np.asarray(logits, np.float64).ravel()
    return np.exp(logits - scipy.special.logsumexp(logits)).reshape(16, 8)


def rbm_num_chains(joint_probs, wrong_probs) -> int:
    """Chains for power 0.99 against ``wrong_probs`` in both χ² checks (joint and visible
    marginal) at ALPHA / 2 each, with small cells pooled as the test pools them."""
    return max(
        power.pooled_chi_square_sample_size(joint_probs, wrong_probs, ALPHA / 2, BETA),
        power.pooled_chi_square_sample_size(
            joint_probs.sum(axis=1), wrong_probs.sum(axis=1), ALPHA / 2, BETA
        ),
    )


def test_rbm_block_gibbs_matches_enumerated_joint():
    """χ² of the joint (v, h) and of v alone at ALPHA / 2 each; the number of chains from the
    power calculation against weights 10 % too large (12,467), checked on such chains."""
    rbm = tiny_rbm()
    joint_probs = rbm_joint_probs(rbm)
    wrong_rbm = rbm._replace(weights=rbm.weights * (1 + RBM_WEIGHT_ERROR))
    num_chains = rbm_num_chains(joint_probs, rbm_joint_probs(wrong_rbm))

    def final_counts(machine):
        starts = jnp.zeros((num_chains, 4), jnp.float32)
        states, infos = run_chains(jax.random.key(16), rbm_gibbs(machine), starts, 25)
        assert_always_accepted(infos)
        visible_index = np.asarray(states.position, np.int64) @ (1 << np.arange(4))
        hidden_index = np.asarray(states.hidden, np.int64) @ (1 << np.arange(3))
        joint = np.bincount(visible_index * 8 + hidden_index, minlength=128)
        return joint, np.bincount(visible_index, minlength=16)

    # (v_t, h_t): h_t ~ p(h | v_{t−1}) and v_t ~ p(v | h_t), so the pair has the joint law.
    observed, observed_visible = final_counts(rbm)
    assert chi_square_p_value(observed, joint_probs) > ALPHA / 2
    assert chi_square_p_value(observed_visible, joint_probs.sum(axis=1)) > ALPHA / 2
    # The named wrong answer: chains of an RBM whose weights are 10 % too large.
    wrong, wrong_visible = final_counts(wrong_rbm)
    assert chi_square_p_value(wrong, joint_probs) < ALPHA / 2, "weights 10 % off were missed"
    assert chi_square_p_value(wrong_visible, joint_probs.sum(axis=1)) < ALPHA / 2


# --------------------------------------------------------------------------------------------
# Gaussian full conditionals.


def test_gaussian_gibbs_moments():
    covariance = np.array([[1.0, 0.5, 0.2], [0.5, 1.5, -0.4], [0.2, -0.4, 0.8]])
    precision = np.linalg.inv(covariance)
    mean = np.array([0.5, -1.0, 2.0])
    kernel = gaussian_gibbs(jnp.asarray(mean, jnp.float32), jnp.asarray(precision, jnp.float32))
    # Start far out (3× the target's spread) so a kernel that does not move fails.
    chol = np.linalg.cholesky(9.0 * covariance)
    starts = mean + np.random.default_rng(17).standard_normal((2000, 3)) @ chol.T
    states, infos = run_chains(jax.random.key(17), kernel, jnp.asarray(starts, jnp.float32), 60)
    assert_always_accepted(infos)
    # 3 means and 9 covariance entries checked, each to k SE: Bonferroni over 12 at ALPHA.
    assert_moments_match(states.position, mean, covariance, power.num_standard_errors(ALPHA, 12))


def test_gaussian_gibbs_rejects_bad_shapes():
    with pytest.raises(ValueError, match="mean"):
        gaussian_gibbs(jnp.zeros((2, 2)), jnp.eye(2))
    with pytest.raises(ValueError, match="precision"):
        gaussian_gibbs(jnp.zeros(2), jnp.eye(3))

"""Target densities: unnormalised log-densities for flows (reverse KL) and for MCMC.

``energies``: Rezende & Mohamed's U1–U4, banana, Neal's funnel, Gaussians, Gaussian mixtures.
``lattice``: the 2-D Ising model (with Onsager's exact values) and binary RBMs.
"""

from nflows_jax.targets.energies import (
    REZENDE_ENERGIES,
    GaussianTarget,
    banana_logdensity,
    banana_moments,
    funnel_logdensity,
    gaussian_logdensity,
    gaussian_mixture_logdensity,
    gaussian_mixture_moments,
    ill_conditioned_gaussian,
    u1_logdensity,
    u2_logdensity,
    u3_logdensity,
    u4_logdensity,
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

__all__ = [
    "ISING_CRITICAL_BETA",
    "RBM",
    "REZENDE_ENERGIES",
    "GaussianTarget",
    "banana_logdensity",
    "banana_moments",
    "funnel_logdensity",
    "gaussian_logdensity",
    "gaussian_mixture_logdensity",
    "gaussian_mixture_moments",
    "ill_conditioned_gaussian",
    "ising_energy_per_site",
    "ising_logdensity",
    "magnetisation_per_site",
    "onsager_energy_per_site",
    "onsager_magnetisation",
    "rbm_init",
    "rbm_joint_logdensity",
    "rbm_visible_logdensity",
    "u1_logdensity",
    "u2_logdensity",
    "u3_logdensity",
    "u4_logdensity",
]

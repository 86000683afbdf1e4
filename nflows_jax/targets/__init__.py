"""Target densities: unnormalised log-densities for flows (reverse KL) and for MCMC.

``energies``: Rezende & Mohamed's U1–U4, banana, Neal's funnel, Gaussians, Gaussian mixtures.
``lattice``: the 2-D Ising model (with Onsager's exact values) and binary RBMs.
``posteriors``: Bayesian logistic regression on the breast-cancer data, eight schools (centred
and non-centred), and ``reference_moments`` from long HMC runs.

Continuous log-densities take one point (d,) or a batch (..., d) and return (...); Ising spins
are (..., H, W) and RBM units (..., V).
"""

from nflows_jax.targets.energies import (
    REZENDE_BOX,
    REZENDE_ENERGIES,
    GaussianTarget,
    GridReference,
    banana_logdensity,
    banana_moments,
    confined_logdensity,
    funnel_logdensity,
    gaussian_logdensity,
    gaussian_mixture_logdensity,
    gaussian_mixture_moments,
    grid_reference,
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
from nflows_jax.targets.posteriors import (
    EIGHT_SCHOOLS_CONSTRAINED_BLOCKS,
    EIGHT_SCHOOLS_CONSTRAINED_NAMES,
    EIGHT_SCHOOLS_SIGMA,
    EIGHT_SCHOOLS_Y,
    EightSchools,
    LogisticRegressionPosterior,
    ReferenceMoments,
    breast_cancer_data,
    eight_schools,
    half_cauchy_log_scale_logpdf,
    logistic_regression_posterior,
    reference_moments,
)

__all__ = [
    "EIGHT_SCHOOLS_CONSTRAINED_BLOCKS",
    "EIGHT_SCHOOLS_CONSTRAINED_NAMES",
    "EIGHT_SCHOOLS_SIGMA",
    "EIGHT_SCHOOLS_Y",
    "ISING_CRITICAL_BETA",
    "RBM",
    "REZENDE_BOX",
    "REZENDE_ENERGIES",
    "EightSchools",
    "GaussianTarget",
    "GridReference",
    "LogisticRegressionPosterior",
    "ReferenceMoments",
    "banana_logdensity",
    "banana_moments",
    "breast_cancer_data",
    "confined_logdensity",
    "eight_schools",
    "funnel_logdensity",
    "gaussian_logdensity",
    "gaussian_mixture_logdensity",
    "gaussian_mixture_moments",
    "grid_reference",
    "half_cauchy_log_scale_logpdf",
    "ill_conditioned_gaussian",
    "ising_energy_per_site",
    "ising_logdensity",
    "logistic_regression_posterior",
    "magnetisation_per_site",
    "onsager_energy_per_site",
    "onsager_magnetisation",
    "rbm_init",
    "rbm_joint_logdensity",
    "rbm_visible_logdensity",
    "reference_moments",
    "u1_logdensity",
    "u2_logdensity",
    "u3_logdensity",
    "u4_logdensity",
]

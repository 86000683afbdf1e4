"""Sampling methods: exact samplers, importance sampling, Markov chains and MCMC kernels.

Every MCMC method is a ``Kernel(init, step)`` of pure single-chain functions (see ``base``);
``sample_chains`` vmaps one over chains and scans it over steps.

Shapes: a kernel sees ONE chain's position, (D,) or a pytree; runs and warm-ups take and return
chain-major arrays, positions (C, D) and traces (C, K, D); the diagnostics read (C, T, ...).
"""

from nflows_jax.sampling.adaptation import (
    AdaptationResult,
    chees_adaptation,
    dual_averaging,
    run_adaptation,
    rwmh_adaptation,
    window_adaptation,
)
from nflows_jax.sampling.arviz import to_arviz
from nflows_jax.sampling.base import Kernel, normal_and_uniform, uniform
from nflows_jax.sampling.compose import CycleState, cycle
from nflows_jax.sampling.diagnostics import (
    StuckChainWarning,
    autocorrelation,
    effective_sample_size,
    nested_rhat,
    split_rhat,
    stuck_chains,
)
from nflows_jax.sampling.gibbs import (
    discrete_gibbs,
    gaussian_gibbs,
    ising_gibbs,
    rbm_gibbs,
)
from nflows_jax.sampling.hmc import hmc, jittered_hmc, leapfrog
from nflows_jax.sampling.langevin import mala, ula
from nflows_jax.sampling.mh import independence_mh, mh, rwmh
from nflows_jax.sampling.run import ChainResult, sample_chains
from nflows_jax.sampling.sgmcmc import minibatch_grad_estimator, sghmc, sgld
from nflows_jax.sampling.tempering import parallel_tempering

__all__ = [
    "AdaptationResult",
    "ChainResult",
    "CycleState",
    "Kernel",
    "StuckChainWarning",
    "autocorrelation",
    "chees_adaptation",
    "cycle",
    "discrete_gibbs",
    "dual_averaging",
    "effective_sample_size",
    "gaussian_gibbs",
    "hmc",
    "independence_mh",
    "ising_gibbs",
    "jittered_hmc",
    "leapfrog",
    "mala",
    "mh",
    "minibatch_grad_estimator",
    "nested_rhat",
    "normal_and_uniform",
    "parallel_tempering",
    "rbm_gibbs",
    "run_adaptation",
    "rwmh",
    "rwmh_adaptation",
    "sample_chains",
    "sghmc",
    "sgld",
    "split_rhat",
    "stuck_chains",
    "to_arviz",
    "ula",
    "uniform",
    "window_adaptation",
]

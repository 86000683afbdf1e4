"""Sampling methods: exact samplers, importance sampling, Markov chains and MCMC kernels."""

from nflows_jax.sampling.base import Kernel

__all__ = ["Kernel"]

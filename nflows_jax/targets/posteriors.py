"""Real Bayesian posteriors as MCMC targets: logistic regression on data, and eight schools.

Beside the synthetic energies (``energies``), two posteriors from applied work whose difficulty
comes from data, not from a constructed shape:

* ``logistic_regression_posterior()`` — Bayesian logistic regression on scikit-learn's
  breast-cancer data (569 patients × 30 features, bundled with scikit-learn: no download),
  standardised features plus an intercept, iid normal prior on the 31 coefficients. Smooth,
  log-concave, correlated (the features are strongly collinear).
* ``eight_schools(centred)`` — Rubin's (1981) eight schools, the hierarchical model of the
  PyMC/Stan examples: mu ~ N(0, 5²), tau ~ HalfCauchy(5), theta_j ~ N(mu, tau²),
  y_j ~ N(theta_j, sigma_j²). The centred form has the funnel between log tau and theta that
  makes HMC diverge; the non-centred form (theta = mu + tau theta_tilde) is the same posterior
  and easy. ``constrain`` maps either form's draws to (mu, tau, theta) so they can be compared.
* Neal's funnel in 10 dimensions is ``energies.funnel_logdensity(10)``.

Conventions, as for the energies: each ``logdensity`` is pure and jit/vmap/grad-able, takes one
unconstrained point (D,) or a batch (..., D) and returns (...,) (a scalar for one point). It is
the log of the *joint* density p(data, params) = prior × likelihood over the unconstrained
coordinates (Jacobians included), so it is the unnormalised log-posterior: the evidence
log p(data) is not subtracted. Both the prior and the likelihood are normalised densities.

``reference_moments`` runs long HMC chains to estimate E[x] and E[x²] with Monte-Carlo standard
errors; no reference numbers are hard-coded here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nflows_jax.formatting import show
from nflows_jax.targets.energies import _LOG_2PI, LogDensity, _check_last_axis
from nflows_jax.targets.energies import _normal_logpdf as _normal_logpdf_log_scale

Array = jax.Array


def _check_dtype(dtype: Any) -> jnp.dtype:
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a floating dtype; got {dtype}")
    if jax.dtypes.canonicalize_dtype(dtype) != dtype:
        raise ValueError(
            f"dtype={dtype} needs 64-bit JAX: build the target inside `with jax.enable_x64(True):` "
            "(or set jax_enable_x64) so the data is not silently stored in float32"
        )
    return dtype


def _normal_logpdf(x: Array, mean: Array | float, scale: Array | float) -> Array:
    """log N(x; mean, scale²) for a positive ``scale`` (no log of a variance is formed)."""
    return -0.5 * ((x - mean) / scale) ** 2 - jnp.log(scale) - 0.5 * _LOG_2PI


def half_cauchy_log_scale_logpdf(log_tau: Array, scale: float) -> Array:
    """Log-density of u = log tau when tau ~ HalfCauchy(scale): normalised on the real line.

    p(tau) = 2 / (π s (1 + (tau/s)²)) on tau > 0, and dtau/du = tau, so with v = u - log s,
    log p(u) = log(2/π) + v - log(1 + e^{2v}) = log(2/π) + v - softplus(2v): no overflow for
    any u (e^{2v} is never formed) and exact in both tails. Elementwise, ``log_tau``'s shape.
    """
    v = log_tau - math.log(scale)
    return math.log(2.0 / math.pi) + v - jax.nn.softplus(2.0 * v)


# ---------------------------------------------------------------------------------------------
# Bayesian logistic regression on the breast-cancer data
# ---------------------------------------------------------------------------------------------


class LogisticRegressionPosterior(NamedTuple):
    """Bayesian logistic regression: the target and its data (N observations, D coefficients).

    Attributes:
      logdensity: (..., D) -> (...): log prior + log likelihood (unnormalised log-posterior).
      log_likelihood: (..., D) -> (...): Σ_n log Bernoulli(y_n; sigmoid(X_n · beta)).
      prior_logdensity: (..., D) -> (...): Σ_d log N(beta_d; 0, prior_scale²).
      dim: D (31 for the breast-cancer data with an intercept).
      names: D coordinate names, ``"intercept"`` first, then the feature names.
      X: (N, D) design matrix (first column ones when there is an intercept, features
        standardised to mean 0 and standard deviation 1 when ``standardise``), in ``dtype``.
      y: (N,) labels in {0, 1}, in ``dtype`` (1 = benign, 0 = malignant).
      prior_scale: the prior standard deviation of each coefficient.
    """

    logdensity: LogDensity
    log_likelihood: LogDensity
    prior_logdensity: LogDensity
    dim: int
    names: tuple[str, ...]
    X: Array
    y: Array
    prior_scale: float


def breast_cancer_data(
    *, standardise: bool = True, intercept: bool = True
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """scikit-learn's Wisconsin breast-cancer data as float64 NumPy: (X (569, D), y (569,), names).

    ``standardise`` subtracts each feature's mean and divides by its standard deviation (ddof=0),
    computed on all 569 rows; ``intercept`` prepends a column of ones named ``"intercept"``
    (D = 31 with it, 30 without). The data ship with scikit-learn, so nothing is downloaded.
    """
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    features = np.asarray(data.data, np.float64)
    if standardise:
        features = (features - features.mean(axis=0)) / features.std(axis=0)
    names = tuple(str(n) for n in data.feature_names)
    if intercept:
        features = np.concatenate([np.ones((features.shape[0], 1)), features], axis=1)
        names = ("intercept", *names)
    return features, np.asarray(data.target, np.float64), names


def logistic_regression_posterior(
    prior_scale: float = 1.0,
    *,
    standardise: bool = True,
    intercept: bool = True,
    dtype: Any = jnp.float32,
) -> LogisticRegressionPosterior:
    """Bayesian logistic regression on the breast-cancer data (569 × 30, bundled with sklearn).

    Model: beta_d ~ N(0, prior_scale²) iid for d = 1..D, y_n | beta ~ Bernoulli(sigmoid(x_n ·
    beta)). Log-likelihood ``Σ_n [y_n η_n - softplus(η_n)]`` with η = X beta, computed as
    ``-Σ_n softplus(-(2 y_n - 1) η_n)``, which is exact for ``|η|`` large where log(sigmoid) would
    round to 0 or -inf.

    Args:
      prior_scale: prior standard deviation, > 0.
      standardise: standardise the features (mean 0, sd 1); without it the raw features span
        four orders of magnitude and the posterior is badly conditioned.
      intercept: add an intercept coefficient (first coordinate).
      dtype: floating dtype of the stored data (float64 needs ``jax.enable_x64``).

    Returns:
      :class:`LogisticRegressionPosterior`; ``logdensity`` maps (..., D) -> (...), D = 31.
    """
    if not (isinstance(prior_scale, int | float | np.floating) and prior_scale > 0):
        raise ValueError(f"prior_scale must be a positive number; got {show(prior_scale)}")
    dtype = _check_dtype(dtype)
    features, labels, names = breast_cancer_data(standardise=standardise, intercept=intercept)
    dim = features.shape[1]
    X = jnp.asarray(features, dtype)
    y = jnp.asarray(labels, dtype)
    signs = jnp.asarray(2.0 * labels - 1.0, dtype)
    prior_scale = float(prior_scale)
    log_prior_norm = -dim * (math.log(prior_scale) + 0.5 * _LOG_2PI)

    def prior_logdensity(beta: Array) -> Array:
        _check_last_axis(beta, dim, "logistic regression prior_logdensity")
        beta = jnp.asarray(beta)
        return -0.5 * jnp.sum((beta / prior_scale) ** 2, axis=-1) + log_prior_norm

    def log_likelihood(beta: Array) -> Array:
        _check_last_axis(beta, dim, "logistic regression log_likelihood")
        eta = jnp.asarray(beta) @ X.T  # (..., N)
        return -jnp.sum(jax.nn.softplus(-signs * eta), axis=-1)

    def logdensity(beta: Array) -> Array:
        _check_last_axis(beta, dim, "logistic regression logdensity")
        return prior_logdensity(beta) + log_likelihood(beta)

    return LogisticRegressionPosterior(
        logdensity, log_likelihood, prior_logdensity, dim, names, X, y, prior_scale
    )


# ---------------------------------------------------------------------------------------------
# Eight schools
# ---------------------------------------------------------------------------------------------

EIGHT_SCHOOLS_Y = (28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0)
EIGHT_SCHOOLS_SIGMA = (15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0)
_NUM_SCHOOLS = 8
_MU_SCALE = 5.0
_TAU_SCALE = 5.0

# The layout of ``EightSchools.constrain``'s output: (..., 10) = (mu, tau, theta_1..theta_8).
EIGHT_SCHOOLS_CONSTRAINED_NAMES = ("mu", "tau", *(f"theta[{j}]" for j in range(8)))
EIGHT_SCHOOLS_CONSTRAINED_BLOCKS = {"mu": 0, "tau": 1, "theta": slice(2, 10)}


class EightSchools(NamedTuple):
    """The eight-schools posterior over unconstrained (mu, log tau, theta or theta_tilde) (10,).

    Attributes:
      logdensity: (..., 10) -> (...): log prior + log likelihood, with the log-Jacobian log tau
        of tau = exp(log tau) (unnormalised log-posterior of the unconstrained vector).
      log_likelihood: (..., 10) -> (...): Σ_j log N(y_j; theta_j, sigma_j²).
      prior_logdensity: (..., 10) -> (...): the prior of the unconstrained vector, normalised on
        R^10: log N(mu; 0, 5²) + log p(log tau) + Σ_j log N(theta_j; mu, tau²) (centred) or
        Σ_j log N(theta_tilde_j; 0, 1) (non-centred).
      constrain: (..., 10) -> (..., 10): unconstrained draws to (mu, tau, theta_1..8), the same
        quantities in both parametrisations (layout ``EIGHT_SCHOOLS_CONSTRAINED_NAMES``).
      dim: 10, the length of the unconstrained vector.
      names: the unconstrained coordinates: ``mu``, ``log_tau``, then ``theta[j]`` (centred) or
        ``theta_tilde[j]`` (non-centred).
      blocks: name -> index or slice of the unconstrained vector, e.g. for ``to_arviz``'s
        ``var_names``: ``{"mu": 0, "log_tau": 1, "theta": slice(2, 10)}``.
      y: (8,) observed effects; sigma: (8,) their standard errors.
      centred: which parametrisation.
    """

    logdensity: LogDensity
    log_likelihood: LogDensity
    prior_logdensity: LogDensity
    constrain: Callable[[Array], Array]
    dim: int
    names: tuple[str, ...]
    blocks: dict[str, int | slice]
    y: Array
    sigma: Array
    centred: bool


def eight_schools(centred: bool = False, *, dtype: Any = jnp.float32) -> EightSchools:
    """Rubin's eight schools, centred or non-centred, over an unconstrained (10,) vector.

    Model (as in the PyMC and Stan examples): mu ~ N(0, 5²), tau ~ HalfCauchy(5),
    theta_j | mu, tau ~ N(mu, tau²), y_j | theta_j ~ N(theta_j, sigma_j²), j = 1..8, with
    ``EIGHT_SCHOOLS_Y`` and ``EIGHT_SCHOOLS_SIGMA``.

    * ``centred=True``: coordinates (mu, log tau, theta_1..8).
    * ``centred=False``: coordinates (mu, log tau, theta_tilde_1..8) with theta_tilde ~ N(0, 1)
      iid a priori and theta = mu + tau theta_tilde.

    The two are the same posterior: the non-centred log-density at (mu, log tau, theta_tilde) is
    the centred one at (mu, log tau, mu + tau theta_tilde) plus 8 log tau, the log-Jacobian of
    theta_tilde -> theta. tau = exp(log tau) is never formed for the Gaussian of theta | mu, tau
    (the log-scale enters directly), so the centred density is finite far into the funnel's neck.

    Args:
      centred: the parametrisation.
      dtype: floating dtype of the stored data (float64 needs ``jax.enable_x64``).
    """
    if not isinstance(centred, bool | np.bool_):
        raise ValueError(f"centred must be a bool; got {show(centred)}")
    centred = bool(centred)
    dtype = _check_dtype(dtype)
    y = jnp.asarray(EIGHT_SCHOOLS_Y, dtype)
    sigma = jnp.asarray(EIGHT_SCHOOLS_SIGMA, dtype)
    dim = 2 + _NUM_SCHOOLS
    label = "centred" if centred else "non-centred"

    def split(z: Array, what: str) -> tuple[Array, Array, Array]:
        _check_last_axis(z, dim, f"eight_schools ({label}) {what}")
        z = jnp.asarray(z)
        return z[..., 0], z[..., 1], z[..., 2:]

    def theta_of(mu: Array, log_tau: Array, rest: Array) -> Array:
        if centred:
            return rest
        return mu[..., None] + jnp.exp(log_tau)[..., None] * rest

    def prior_logdensity(z: Array) -> Array:
        mu, log_tau, rest = split(z, "prior_logdensity")
        hyper = _normal_logpdf(mu, 0.0, _MU_SCALE) + half_cauchy_log_scale_logpdf(
            log_tau, _TAU_SCALE
        )
        if centred:
            schools = _normal_logpdf_log_scale(rest, mu[..., None], log_tau[..., None])
        else:
            schools = _normal_logpdf(rest, 0.0, 1.0)
        return hyper + jnp.sum(schools, axis=-1)

    def log_likelihood(z: Array) -> Array:
        mu, log_tau, rest = split(z, "log_likelihood")
        return jnp.sum(_normal_logpdf(y, theta_of(mu, log_tau, rest), sigma), axis=-1)

    def logdensity(z: Array) -> Array:
        split(z, "logdensity")
        return prior_logdensity(z) + log_likelihood(z)

    def constrain(z: Array) -> Array:
        mu, log_tau, rest = split(z, "constrain")
        theta = theta_of(mu, log_tau, rest)
        return jnp.concatenate([mu[..., None], jnp.exp(log_tau)[..., None], theta], axis=-1)

    school = "theta" if centred else "theta_tilde"
    names = ("mu", "log_tau", *(f"{school}[{j}]" for j in range(_NUM_SCHOOLS)))
    blocks = {"mu": 0, "log_tau": 1, school: slice(2, dim)}
    return EightSchools(
        logdensity,
        log_likelihood,
        prior_logdensity,
        constrain,
        dim,
        names,
        blocks,
        y,
        sigma,
        centred,
    )


# ---------------------------------------------------------------------------------------------
# Reference moments from long runs
# ---------------------------------------------------------------------------------------------


class ReferenceMoments(NamedTuple):
    """Monte-Carlo estimates of E[f] and E[f²] per coordinate of f = transform(x): all (D',).

    Attributes:
      mean: E[f], the pooled average over all chains and kept draws.
      second_moment: E[f²], pooled the same way.
      mean_mcse: the Monte-Carlo standard error of ``mean``, sd / sqrt(ESS) with the ``"mean"``
        ESS of f (the ESS that governs the error of an average).
      second_moment_mcse: the same for ``second_moment``, with the ``"mean"`` ESS of f².
      ess: the ``"mean"`` ESS of f.
      rhat: rank-normalised split R-hat of f.
      acceptance_rate: mean acceptance probability (a scalar).
      num_divergent: divergent transitions among the kept steps (a scalar; a non-zero count
        means the estimates may be biased, e.g. the centred eight schools: use the non-centred
        form and ``constrain``).
    """

    mean: Array
    second_moment: Array
    mean_mcse: Array
    second_moment_mcse: Array
    ess: Array
    rhat: Array
    acceptance_rate: Array
    num_divergent: Array


def reference_moments(
    key: Any,
    logdensity: LogDensity,
    positions: Array,
    *,
    step_size: float,
    num_leapfrog_steps: int,
    num_steps: int,
    burn_in: int = 0,
    thin: int = 1,
    inverse_mass_matrix: Array | None = None,
    transform: Callable[[Array], Array] | None = None,
) -> ReferenceMoments:
    """Estimate reference E[f], E[f²] by a long HMC run, f = ``transform(x)`` (default x).

    Runs ``nflows_jax.sampling.hmc`` (fixed ``step_size``, ``num_leapfrog_steps`` and diagonal
    ``inverse_mass_matrix``: tune them beforehand) from ``positions`` (C, D) with
    ``sample_chains``; ``transform`` maps one draw (D,) to (D',) (e.g. ``EightSchools.constrain``)
    and is vmapped over the (C, K) kept draws. Check ``rhat`` (close to 1), ``num_divergent``
    (0) and the standard errors before using the numbers as a reference.
    """
    from nflows_jax.sampling.diagnostics import effective_sample_size, split_rhat
    from nflows_jax.sampling.hmc import hmc
    from nflows_jax.sampling.run import sample_chains

    positions = jnp.asarray(positions)
    if positions.ndim != 2:
        raise ValueError(f"positions must be (C, D) initial points; got shape {positions.shape}")
    kernel = hmc(logdensity, step_size, num_leapfrog_steps, inverse_mass_matrix)
    result = sample_chains(key, kernel, positions, num_steps, burn_in=burn_in, thin=thin)
    draws = result.trace
    if transform is not None:
        draws = jax.vmap(jax.vmap(transform))(draws)
    if draws.ndim != 3:
        raise ValueError(f"transform must map a (D,) draw to a vector (D',); got {draws.shape}")
    squares = draws**2
    ess = effective_sample_size(draws, variant="mean")
    ess_squares = effective_sample_size(squares, variant="mean")
    return ReferenceMoments(
        mean=jnp.mean(draws, axis=(0, 1)),
        second_moment=jnp.mean(squares, axis=(0, 1)),
        mean_mcse=jnp.std(draws, axis=(0, 1)) / jnp.sqrt(ess),
        second_moment_mcse=jnp.std(squares, axis=(0, 1)) / jnp.sqrt(ess_squares),
        ess=ess,
        rhat=split_rhat(draws),
        acceptance_rate=jnp.mean(result.info_trace.acceptance_prob),
        num_divergent=jnp.sum(result.info_trace.is_divergent),
    )


__all__ = [
    "EIGHT_SCHOOLS_CONSTRAINED_BLOCKS",
    "EIGHT_SCHOOLS_CONSTRAINED_NAMES",
    "EIGHT_SCHOOLS_SIGMA",
    "EIGHT_SCHOOLS_Y",
    "EightSchools",
    "LogisticRegressionPosterior",
    "ReferenceMoments",
    "breast_cancer_data",
    "eight_schools",
    "half_cauchy_log_scale_logpdf",
    "logistic_regression_posterior",
    "reference_moments",
]

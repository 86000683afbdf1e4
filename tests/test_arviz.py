"""to_arviz: draws and sample stats round-trip; ArviZ's ESS and R-hat against ours.

Both diagnostics are deterministic functions of the same draws, so where the formulas are the
same the results agree to round-off, and where ArviZ (0.23) uses a different variant the test
pins the difference down exactly with the float64 NumPy transcriptions of test_diagnostics:

* R-hat (``method="rank"``): identical formulas except the fold of the tail R-hat. ArviZ folds
  around the median of the *split* draws (``abs(split - median(split))``, the middle draw of each
  chain dropped for odd T); ours, like the R package posterior, around the median of all C T
  draws. For even T the two coincide and agree to float64 round-off.
* ESS (``method="bulk"`` / ``"mean"``): the same estimator (Stan's: the N/(N-1) factor on the
  lag-0 variance only, Geyer's sequences, the "improved estimate" ρ_{2K} term), so the two agree
  to round-off. Vehtari et al.'s eq. (10) read literally (N/(N-1) at every lag) and without the
  improved term moves the ESS by up to a few 1e-3 relative at N ≈ 500; the float64
  transcription below switches both on and off and shows that the test can tell them apart.

Tolerances, float64: R-hat is a ratio of sums of S = C T squared normal scores; recursive
summation errs by at most S · eps64 relative, so rtol = 4 S eps64 (~4e-12). ESS also goes through
FFT autocovariances (relative error ~ log2(n) eps64 per lag) and a sum over ~10-100 lags divided
by tau ≥ 1/log10(S): rtol 1e-9 bounds that with margin, and lies far below the differences
(1e-4 .. 1e-2) that the variants make. float32 draws exported from a run: ranks are exact, the
scores and sums carry S · U32 ≈ 1.2e-4 relative (worst case; 4 chains × 500 draws), so R-hat
agrees to rtol 2 S U32.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

az = pytest.importorskip("arviz")

from nflows_jax.sampling import (  # noqa: E402
    effective_sample_size,
    hmc,
    rwmh,
    sample_chains,
    sgld,
    split_rhat,
)
from nflows_jax.sampling.arviz import to_arviz  # noqa: E402
from nflows_jax.sampling.run import ChainResult  # noqa: E402
from tests.test_diagnostics import (  # noqa: E402
    ref_ess,
    ref_rank_normalize,
    ref_rhat,
    ref_split,
)

EPS64 = float(np.finfo(np.float64).eps)
U32 = 2.0**-24
DIM = 3


def gaussian_logdensity(x):
    return -0.5 * jnp.sum(x**2 * jnp.array([1.0, 4.0, 0.25]))


@pytest.fixture(scope="module")
def hmc_result() -> ChainResult:
    kernel = hmc(gaussian_logdensity, 0.4, 5)
    positions = jax.random.normal(jax.random.key(1), (4, DIM))
    return sample_chains(jax.random.key(0), kernel, positions, 500)


# ------------------------------------------------------------------------------------------------
# Round trip and sample stats
# ------------------------------------------------------------------------------------------------


def test_draws_round_trip_exactly(hmc_result):
    trace = np.asarray(hmc_result.trace)
    idata = to_arviz(hmc_result)
    x = idata.posterior["x"]
    assert x.dims == ("chain", "draw", "x_dim_0")
    assert x.dtype == trace.dtype
    np.testing.assert_array_equal(x.values, trace)

    names = ["a", "b", "c"]
    by_name = to_arviz(hmc_result, var_names=names).posterior
    for j, name in enumerate(names):
        assert by_name[name].dims == ("chain", "draw")
        np.testing.assert_array_equal(by_name[name].values, trace[..., j])

    blocks = to_arviz(
        hmc_result,
        var_names={"first": 0, "rest": slice(1, 3), "picked": [2, 0]},
        coords={"pair": ["p", "q"]},
        dims={"rest": ["pair"]},
    ).posterior
    np.testing.assert_array_equal(blocks["first"].values, trace[..., 0])
    np.testing.assert_array_equal(blocks["rest"].values, trace[..., 1:3])
    np.testing.assert_array_equal(blocks["picked"].values, trace[..., [2, 0]])
    assert blocks["rest"].dims == ("chain", "draw", "pair")
    assert list(blocks["pair"].values) == ["p", "q"]


def test_pytree_and_scalar_traces():
    kernel = rwmh(gaussian_logdensity, 0.5)
    positions = jnp.zeros((2, DIM))
    result = sample_chains(0, kernel, positions, 20, keep=("position", "logdensity"))
    posterior = to_arviz(result).posterior
    np.testing.assert_array_equal(posterior["position"].values, result.trace["position"])
    np.testing.assert_array_equal(posterior["logdensity"].values, result.trace["logdensity"])
    assert posterior["logdensity"].dims == ("chain", "draw")

    scalar = ChainResult(None, result.trace["logdensity"], None)
    idata = to_arviz(scalar)
    assert idata.posterior["x"].dims == ("chain", "draw")
    assert "sample_stats" not in idata.groups()


def test_sample_stats_are_the_kernels_infos(hmc_result):
    info = hmc_result.info_trace
    stats_ = to_arviz(hmc_result, step_size=0.4).sample_stats
    np.testing.assert_array_equal(stats_["acceptance_rate"].values, info.acceptance_prob)
    np.testing.assert_array_equal(stats_["diverging"].values, info.is_divergent)
    np.testing.assert_array_equal(stats_["energy_error"].values, info.energy_error)
    np.testing.assert_array_equal(stats_["accepted"].values, info.accepted)
    assert stats_["diverging"].dtype == bool
    assert stats_["step_size"].shape == (4, 500)
    assert np.all(stats_["step_size"].values == 0.4)
    for name in ("acceptance_rate", "diverging", "energy_error", "step_size"):
        assert stats_[name].dims == ("chain", "draw")

    per_chain = to_arviz(hmc_result, step_size=np.array([0.1, 0.2, 0.3, 0.4])).sample_stats
    np.testing.assert_array_equal(per_chain["step_size"].values[:, 7], [0.1, 0.2, 0.3, 0.4])


def test_step_size_from_the_info_and_unknown_fields_keep_their_names():
    kernel = sgld(lambda key, x: jax.grad(gaussian_logdensity)(x), 1e-2)
    result = sample_chains(0, kernel, jnp.zeros((2, DIM)), 10)
    stats_ = to_arviz(result).sample_stats
    np.testing.assert_allclose(stats_["step_size"].values, 1e-2, rtol=U32)
    with pytest.raises(ValueError, match="already records it"):
        to_arviz(result, step_size=1e-2)

    info = {"acceptance_prob": jnp.ones((2, 10)), "my_stat": jnp.zeros((2, 10, 4))}
    custom = to_arviz(ChainResult(None, jnp.zeros((2, 10, DIM)), info)).sample_stats
    assert set(custom.data_vars) == {"acceptance_rate", "my_stat"}
    assert custom["my_stat"].shape == (2, 10, 4)


def test_error_messages(hmc_result, monkeypatch):
    with pytest.raises(ValueError, match="ChainResult"):
        to_arviz(np.zeros((4, 10, 3)))
    with pytest.raises(ValueError, match="2 names for D = 3"):
        to_arviz(hmc_result, var_names=["a", "b"])
    with pytest.raises(ValueError, match="repeated"):
        to_arviz(hmc_result, var_names=["a", "a", "b"])
    with pytest.raises(ValueError, match="out of range"):
        to_arviz(hmc_result, var_names={"a": 3})
    with pytest.raises(ValueError, match="selects no coordinate"):
        to_arviz(hmc_result, var_names={"a": slice(3, 5)})
    with pytest.raises(ValueError, match="sequence of D names"):
        to_arviz(hmc_result, var_names="abc")
    with pytest.raises(ValueError, match="step_size must be"):
        to_arviz(hmc_result, step_size=np.ones(3))
    pytree = ChainResult(None, {"a": jnp.zeros((2, 5)), "b": jnp.zeros((2, 5, 3))}, None)
    with pytest.raises(ValueError, match="pytree"):
        to_arviz(pytree, var_names=["u"])
    bad_leaf = ChainResult(None, {"a": jnp.zeros((2, 5)), "b": jnp.zeros((2, 6))}, None)
    with pytest.raises(ValueError, match=r"leading chain and draw axes \(C, K\) = \(2, 5\)"):
        to_arviz(bad_leaf)
    bad_info = ChainResult(None, jnp.zeros((2, 5, 3)), {"acceptance_prob": jnp.zeros((2, 4))})
    with pytest.raises(ValueError, match="acceptance_rate"):
        to_arviz(bad_info)
    monkeypatch.setitem(sys.modules, "arviz", None)  # makes `import arviz` raise ImportError
    with pytest.raises(ImportError, match="`arviz` extra"):
        to_arviz(hmc_result)


# ------------------------------------------------------------------------------------------------
# ESS and R-hat against ArviZ
# ------------------------------------------------------------------------------------------------


def ar1_draws(num_chains: int, num_draws: int, seed: int = 0) -> np.ndarray:
    """(C, T, 6) float64 AR(1) columns, rho = 0, .3, .6, .9, -.3, .5; the last with one chain
    shifted by 0.3 sd so that R-hat is visibly above 1."""
    rhos = np.array([0.0, 0.3, 0.6, 0.9, -0.3, 0.5])
    rng = np.random.default_rng(seed)
    x = np.empty((num_chains, num_draws, rhos.size))
    x[:, 0] = rng.standard_normal((num_chains, rhos.size))
    for t in range(1, num_draws):
        noise = rng.standard_normal((num_chains, rhos.size))
        x[:, t] = rhos * x[:, t - 1] + np.sqrt(1 - rhos**2) * noise
    x[1, :, -1] += 0.3
    return x


@pytest.mark.parametrize("num_draws", [1000, 999])
def test_ess_agrees_with_arviz(num_draws):
    draws = ar1_draws(4, num_draws)
    idata = az.from_dict(posterior={"x": draws})
    with jax.enable_x64(True):
        ours = {
            v: np.asarray(effective_sample_size(jnp.asarray(draws), variant=v))
            for v in ("bulk", "mean")
        }
    for method in ("bulk", "mean"):
        theirs = az.ess(idata, method=method)["x"].values
        np.testing.assert_allclose(ours[method], theirs, rtol=1e-9)
        # Power: the literal eq. (10) without the improved term is more than 1e-4 away, far
        # outside the tolerance, so agreement to 1e-9 is not agreement with any ESS formula.
        columns = [ref_split(draws[..., j]) for j in range(draws.shape[-1])]
        if method == "bulk":
            columns = [ref_rank_normalize(c) for c in columns]
        as_arviz = [ref_ess(c) for c in columns]
        literal = [ref_ess(c, paper_lags=True, improved=False) for c in columns]
        np.testing.assert_allclose(theirs, as_arviz, rtol=1e-9)
        assert np.max(np.abs(np.asarray(literal) / theirs - 1)) > 1e-4


def test_rhat_agrees_with_arviz_for_even_draws_and_differs_only_in_the_fold_for_odd():
    even = ar1_draws(4, 1000)
    with jax.enable_x64(True):
        ours_even = np.asarray(split_rhat(jnp.asarray(even)))
        ours_odd = np.asarray(split_rhat(jnp.asarray(even[:, :999])))
    theirs = az.rhat(az.from_dict(posterior={"x": even}), method="rank")["x"].values
    np.testing.assert_allclose(ours_even, theirs, rtol=4 * even[..., 0].size * EPS64)
    assert ours_even[-1] > 1.01  # the shifted chain is detected by both

    # Odd T: ours folds around the median of all draws; so does this transcription.
    def fold_all(x):
        return np.abs(x - np.median(x))

    odd = even[:, :999]
    expected = [
        max(
            ref_rhat(ref_rank_normalize(ref_split(c))),
            ref_rhat(ref_rank_normalize(ref_split(fold_all(c)))),
        )
        for c in np.moveaxis(odd, -1, 0)
    ]
    np.testing.assert_allclose(ours_odd, expected, rtol=4 * odd[..., 0].size * EPS64)


def test_arviz_diagnostics_on_exported_float32_draws(hmc_result):
    """The exported float32 draws of a real run: R-hat and ESS within float32 round-off of
    ArviZ's float64 values on them."""
    idata = to_arviz(hmc_result)
    exported = idata.posterior["x"].values
    theirs_rhat = az.rhat(idata, method="rank")["x"].values
    num_draws = exported.shape[0] * exported.shape[1]  # T = 500 is even: same fold
    np.testing.assert_allclose(split_rhat(hmc_result.trace), theirs_rhat, rtol=2 * num_draws * U32)

    theirs_ess = az.ess(idata, method="bulk")["x"].values
    # Ours in float32 against ArviZ in float64 on the same draws: the FFT and lag sums carry
    # ~1e-6 relative round-off (as for the TFP comparison in test_diagnostics): rtol 1e-4.
    np.testing.assert_allclose(effective_sample_size(hmc_result.trace), theirs_ess, rtol=1e-4)

"""sample_chains: shapes, thinning/burn-in bookkeeping, per-chain stream keys, progress, sharding.

A tiny Gaussian random-walk Metropolis kernel is defined here so these tests do not depend on the
library's kernels. Every run reuses the module-level KERNEL so that compiled scans are shared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nflows_jax.sampling.base import Kernel, normal_and_uniform
from nflows_jax.sampling.run import ChainResult, _ProgressBar, chain_keys, sample_chains

TARGET_MEAN = jnp.array([1.0, -2.0])
TARGET_SCALE = jnp.array([0.5, 2.0])


class RWState(NamedTuple):
    position: jax.Array
    logdensity: jax.Array


class RWInfo(NamedTuple):
    acceptance_prob: jax.Array
    accepted: jax.Array


def gaussian_logdensity(x):
    return -0.5 * jnp.sum(((x - TARGET_MEAN) / TARGET_SCALE) ** 2)


def random_walk_metropolis(logdensity_fn, scale: float) -> Kernel:
    def init(position):
        return RWState(position, logdensity_fn(position))

    def step(key, state):
        noise, u = normal_and_uniform(key, state.position.shape, state.position.dtype)
        proposal = state.position + scale * noise
        proposal_logdensity = logdensity_fn(proposal)
        log_ratio = proposal_logdensity - state.logdensity
        accepted = jnp.log(u) < log_ratio
        new = RWState(
            jnp.where(accepted, proposal, state.position),
            jnp.where(accepted, proposal_logdensity, state.logdensity),
        )
        return new, RWInfo(jnp.exp(jnp.minimum(log_ratio, 0.0)), accepted)

    return Kernel(init, step)


KERNEL = random_walk_metropolis(gaussian_logdensity, scale=1.2)
KEY = jax.random.key(42)
BASE = dict(num_steps=12, thin=3, burn_in=2)  # the configuration most tests share


def start_positions(num_chains: int) -> jax.Array:
    # Chain i's start depends on i only, so runs with more chains extend runs with fewer.
    index = jnp.arange(num_chains, dtype=jnp.float32)
    return jnp.stack([-3.0 + 0.7 * index, 2.0 - 0.5 * index], axis=1)


def assert_trees_equal(a, b):
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_array_equal(x, y), a, b)


@pytest.fixture(scope="module")
def base_run() -> ChainResult:
    return sample_chains(KEY, KERNEL, start_positions(4), **BASE)


def test_result_is_chain_major_with_documented_shapes(base_run):
    num_kept = BASE["num_steps"] // BASE["thin"]
    chex.assert_shape(base_run.trace, (4, num_kept, 2))
    chex.assert_shape(base_run.info_trace.acceptance_prob, (4, num_kept))
    chex.assert_shape(base_run.final_state.position, (4, 2))
    chex.assert_shape(base_run.final_state.logdensity, (4,))
    # The last kept draw is the state after the last step.
    np.testing.assert_array_equal(base_run.trace[:, -1], base_run.final_state.position)
    # Kernels are run from the given starts: the chains moved and stayed finite.
    assert np.all(np.isfinite(base_run.trace))
    assert np.any(base_run.info_trace.accepted)


def test_thinning_and_burn_in_keep_exactly_the_documented_steps(base_run):
    steps = BASE["burn_in"] + BASE["num_steps"]
    full = sample_chains(KEY, KERNEL, start_positions(4), steps)
    thin, burn_in = BASE["thin"], BASE["burn_in"]
    kept_steps = burn_in + thin * np.arange(1, BASE["num_steps"] // thin + 1) - 1
    np.testing.assert_array_equal(base_run.trace, full.trace[:, kept_steps])
    assert_trees_equal(
        base_run.info_trace, jax.tree_util.tree_map(lambda x: x[:, kept_steps], full.info_trace)
    )
    assert_trees_equal(base_run.final_state, full.final_state)


def test_adding_chains_leaves_existing_chains_unchanged(base_run):
    # Chain i's randomness depends on (key, step, i) only.
    more = sample_chains(KEY, KERNEL, start_positions(6), **BASE)
    first_four = jax.tree_util.tree_map(lambda x: x[:4], more)
    assert_trees_equal(first_four, base_run)
    # ... and the new chains are not copies of old ones.
    assert not np.array_equal(more.trace[4], more.trace[3])


def test_legacy_uint32_key_gives_the_same_draws_as_a_typed_key(base_run):
    legacy = sample_chains(jax.random.PRNGKey(42), KERNEL, start_positions(4), **BASE)
    assert_trees_equal(legacy, base_run)


def test_int_seed_is_read_as_a_legacy_key(base_run):
    """``sample_chains(42, ...)`` is ``sample_chains(jax.random.PRNGKey(42), ...)`` (previously
    an AttributeError); non-key, non-int keys raise a TypeError that says what is accepted."""
    for seed in (42, np.int64(42)):
        assert_trees_equal(sample_chains(seed, KERNEL, start_positions(4), **BASE), base_run)
    with pytest.raises(TypeError, match=r"PRNG key .* or an int seed, got float"):
        sample_chains(42.0, KERNEL, start_positions(4), **BASE)
    with pytest.raises(TypeError, match="got a bool"):
        sample_chains(True, KERNEL, start_positions(4), **BASE)


def test_one_dimensional_positions_need_an_explicit_chain_count():
    """A (2,) array used to run 2 chains of scalars silently; it is ambiguous and raises, and
    ``num_chains`` states the chain axis explicitly (C chains of scalar positions)."""
    with pytest.raises(ValueError, match=r"ambiguous.*positions\[None\].*num_chains=2"):
        sample_chains(KEY, KERNEL, jnp.zeros(2), 3)
    with pytest.raises(ValueError, match="ambiguous"):
        sample_chains(KEY, KERNEL, {"a": jnp.zeros(3), "b": jnp.zeros(3)}, 3)
    with pytest.raises(ValueError, match=r"num_chains=3 but the leading \(chain\) axis .* 4"):
        sample_chains(KEY, KERNEL, start_positions(4), 3, num_chains=3)
    # One chain of a (2,) position, explicitly:
    one = sample_chains(KEY, KERNEL, start_positions(1), 3)
    chex.assert_shape(one.trace, (1, 3, 2))
    # C scalar chains, explicitly: the same draws as chain-major (C, 1) positions squeezed.
    scalar_kernel = random_walk_metropolis(lambda x: -0.5 * jnp.sum(x**2), scale=1.2)
    scalars = sample_chains(KEY, scalar_kernel, jnp.arange(3.0), 3, num_chains=3)
    columns = sample_chains(KEY, scalar_kernel, jnp.arange(3.0)[:, None], 3)
    chex.assert_shape(scalars.trace, (3, 3))
    np.testing.assert_array_equal(scalars.trace, columns.trace[..., 0])


def test_the_kernel_step_is_traced_once_per_run():
    """Burn-in and thinning share ONE trace of the kernel's step (it was traced twice: once more
    for the infos' shapes); a second run with the same kernel and shapes does not trace again."""
    kernel = Kernel(KERNEL.init, chex.assert_max_traces(KERNEL.step, n=1))
    sample_chains(KEY, kernel, start_positions(4), 12, thin=3, burn_in=5)
    sample_chains(jax.random.key(3), kernel, start_positions(4), 12, thin=3, burn_in=5)


def test_forward_mode_through_a_run_matches_the_closed_form():
    """jax.jvp through sample_chains (burn-in, thinning) w.r.t. a target parameter and the starts.

    ULA on N(μ, 1) with step ε is the affine recursion x' = a x + (1 - a) μ + √ε z, a = 1 - ε/2,
    so after t steps ∂x_t/∂μ = 1 - aᵗ and ∂x_t/∂x₀ = aᵗ exactly (the noise does not depend on
    either). With ε = 0.5 (a = 0.75, both exact in float32) each step rounds at most 3 operations
    of size ≤ 1 on the tangent (error ≤ 1.5 eps32) and the recursion damps old errors by a, so the
    computed tangent is within 1.5 eps32 / (1 - a) = 6 eps32 of the closed form.
    """
    from nflows_jax.sampling.langevin import ula

    step_size, burn_in, thin, num_steps = 0.5, 3, 2, 8
    a = 1.0 - step_size / 2

    def run(mu, starts):
        kernel = ula(lambda x: -0.5 * jnp.sum((x - mu) ** 2), step_size)
        return sample_chains(KEY, kernel, starts, num_steps, burn_in=burn_in, thin=thin).trace

    starts = jnp.array([[0.0], [1.0], [-2.0]])
    tangent_mu, tangent_starts = 1.0, 0.5
    _, tangent = jax.jvp(
        run, (jnp.float32(0.3), starts), (jnp.float32(tangent_mu), jnp.full((3, 1), tangent_starts))
    )
    steps = burn_in + thin * np.arange(1, num_steps // thin + 1)  # transitions before each draw
    expected = tangent_mu * (1 - a**steps) + tangent_starts * a**steps  # float64
    chex.assert_shape(tangent, (3, num_steps // thin, 1))
    tolerance = 1.5 * np.finfo(np.float32).eps / (1 - a)
    error = np.abs(np.asarray(tangent, np.float64)[..., 0] - expected)
    assert np.all(error <= tolerance), (error.max(), tolerance)


def test_chain_keys_are_unique_over_a_grid_of_steps_and_chains():
    num_steps, num_chains = 512, 256
    keys = jax.jit(jax.vmap(lambda t: jax.random.key_data(chain_keys(KEY, t, num_chains))))(
        jnp.arange(num_steps)
    )
    words = np.asarray(keys).reshape(-1, 2).astype(np.uint64)
    packed = (words[:, 0] << np.uint64(32)) | words[:, 1]
    assert np.unique(packed).size == num_steps * num_chains
    # A run with fewer chains uses a prefix of the same keys.
    np.testing.assert_array_equal(
        jax.random.key_data(chain_keys(KEY, 7, 5)), np.asarray(keys)[7, :5]
    )


def test_chain_key_draws_are_uncorrelated_across_chains_and_steps():
    """Normals drawn with the stream keys behave like independent N(0, 1) draws.

    Chains i and i XOR 2^b have keys that differ in exactly one bit of one word (b = 0 gives
    adjacent chains); their draws at the same step must be uncorrelated, as must one chain's draws
    at consecutive steps. Each pooled correlation of n pairs has standard error 1/sqrt(n); we
    allow 5 of them (false-alarm rate ~1e-6 per check).
    """
    num_steps, num_chains = 256, 256
    draws = jax.jit(
        jax.vmap(lambda t: jax.vmap(lambda k: jax.random.normal(k))(chain_keys(KEY, t, num_chains)))
    )(jnp.arange(num_steps))
    z = np.asarray(draws, dtype=np.float64)  # (T, C)
    n_all = z.size
    assert abs(z.mean()) < 5 / np.sqrt(n_all)
    assert abs(z.var() - 1.0) < 5 * np.sqrt(2.0 / n_all)
    chains = np.arange(num_chains)
    for bit in range(8):
        low = chains[(chains >> bit) & 1 == 0]
        products = z[:, low] * z[:, low ^ (1 << bit)]
        assert abs(products.mean()) < 5 / np.sqrt(products.size), f"bit {bit}"
    lagged = z[1:] * z[:-1]
    assert abs(lagged.mean()) < 5 / np.sqrt(lagged.size)


def _second_moment(state, info):
    return state.position**2


def test_chains_reach_the_target_and_keep_accepts_a_function():
    """After burn-in the C chains' states are C independent draws from the target.

    Mean: standard error scale/sqrt(C); second moment E[x^2] = m^2 + s^2 with variance
    Var[x^2] = 4 m^2 s^2 + 2 s^4 for a normal. Both within 5 standard errors (false-fail rate
    5.7e-7 per coordinate and moment, normal approximation).
    """
    num_chains = 2000
    result = sample_chains(
        KEY,
        KERNEL,
        3.0 * jax.random.normal(jax.random.key(1), (num_chains, 2)),
        10,
        burn_in=300,
        keep=_second_moment,
        keep_info=False,
    )
    assert result.info_trace is None
    chex.assert_shape(result.trace, (num_chains, 10, 2))
    np.testing.assert_array_equal(result.trace[:, -1], result.final_state.position**2)
    x = np.asarray(result.final_state.position, dtype=np.float64)
    mean, scale = np.asarray(TARGET_MEAN), np.asarray(TARGET_SCALE)
    np.testing.assert_array_less(np.abs(x.mean(0) - mean), 5 * scale / np.sqrt(num_chains))
    second = mean**2 + scale**2
    second_se = np.sqrt((4 * mean**2 * scale**2 + 2 * scale**4) / num_chains)
    np.testing.assert_array_less(np.abs((x**2).mean(0) - second), 5 * second_se)


def test_progress_bar_under_vmap_reaches_the_end_and_changes_nothing(base_run, capfd):
    keys = jnp.stack([KEY, jax.random.key(7)])
    runs = jax.vmap(lambda k: sample_chains(k, KERNEL, start_positions(4), progress=True, **BASE))(
        keys
    )
    jax.effects_barrier()
    err = capfd.readouterr().err
    total = BASE["burn_in"] + BASE["num_steps"]
    assert f"{total}/{total}" in err
    assert_trees_equal(jax.tree_util.tree_map(lambda x: x[0], runs), base_run)


def test_progress_reporter_accepts_batched_and_repeated_reports(capfd):
    bar = _ProgressBar()
    bar.report(np.array([2, 2, 2]), total=4, every=2)  # batched step values
    bar.report(np.int32(2), total=4, every=2)  # the same report again (one call per element)
    bar.report(np.array([4, 4]), total=4, every=2)
    bar.report(np.int32(4), total=4, every=2)  # a late duplicate after the bar closed
    err = capfd.readouterr().err
    assert "4/4" in err
    assert bar._bar is None


def test_bad_arguments_raise_clear_errors():
    positions = start_positions(4)
    with pytest.raises(ValueError, match="multiple of thin"):
        sample_chains(KEY, KERNEL, positions, 10, thin=3)
    with pytest.raises(ValueError, match="ONE key"):
        sample_chains(jax.random.split(KEY, 2), KERNEL, positions, 3)
    with pytest.raises(ValueError, match="legacy uint32 key"):
        sample_chains(jnp.zeros((3, 2), jnp.uint32), KERNEL, positions, 3)
    with pytest.raises(ValueError, match="chain axis"):
        sample_chains(KEY, KERNEL, {"a": jnp.zeros((4, 2)), "b": jnp.zeros((3,))}, 3)
    with pytest.raises(ValueError, match="num_steps"):
        sample_chains(KEY, KERNEL, positions, 0)
    with pytest.raises(ValueError, match="not fields of the state"):
        sample_chains(KEY, KERNEL, positions, 3, keep=("position", "momentum"))


SHARDED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, sys.argv[1])
    from test_run import BASE, KERNEL, KEY, start_positions
    from nflows_jax.sampling.run import sample_chains

    report = {"devices": jax.device_count()}
    arrays = {}
    for num_chains in (8, 6):
        result = sample_chains(KEY, KERNEL, start_positions(num_chains), **BASE)
        sharding = result.trace.sharding
        report[str(num_chains)] = {
            "spec": list(getattr(sharding, "spec", ())),
            "num_devices": len(sharding.device_set),
            "shard_shapes": sorted({s.data.shape for s in result.trace.addressable_shards}),
        }
        arrays[f"trace{num_chains}"] = np.asarray(result.trace)
        arrays[f"logdensity{num_chains}"] = np.asarray(result.final_state.logdensity)
    np.savez(sys.argv[2], **arrays)
    print(json.dumps(report))
    """
)


def test_chains_are_sharded_over_four_host_devices_and_match_the_unsharded_run(tmp_path):
    """Under 4 forced host devices the chain axis is split 4 ways (8 chains -> 2 per device) and
    the numbers equal a single-device run bitwise; 6 chains are padded to 8 and sliced back."""
    script = tmp_path / "sharded.py"
    script.write_text(SHARDED_SCRIPT)
    out = tmp_path / "sharded.npz"
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, str(script), os.path.dirname(__file__), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["devices"] == 4
    assert report["8"]["spec"] == ["chains"]
    assert report["8"]["num_devices"] == 4
    assert report["8"]["shard_shapes"] == [[2, BASE["num_steps"] // BASE["thin"], 2]]
    sharded = np.load(out)
    for num_chains in (8, 6):
        reference = sample_chains(KEY, KERNEL, start_positions(num_chains), **BASE, shard=False)
        np.testing.assert_array_equal(sharded[f"trace{num_chains}"], reference.trace)
        np.testing.assert_array_equal(
            sharded[f"logdensity{num_chains}"], reference.final_state.logdensity
        )

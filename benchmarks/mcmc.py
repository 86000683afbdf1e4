"""Throughput of nflows_jax's MCMC kernels beside blackjax and TFP (JAX substrate), and a floor.

Rows (chain-steps/s = chains x steps / wall seconds):

  banana      RWMH, 10,000 chains x 1,000 steps on the 2-D banana
  gauss_rwmh  RWMH, 1,000 chains x 1,000 steps on a 100-d ill-conditioned Gaussian
  gauss_hmc   HMC with 10 leapfrog steps, 1,000 chains x 1,000 steps, same Gaussian
  ising       checkerboard Gibbs, 1,000 chains x 20 sweeps of a 64x64 Ising model, beta = 0.4
              (no peer has an Ising Gibbs sampler; the floor is the comparison)
  diagnostics seconds per call of bulk ESS and rank R-hat on 10,000 chains x 1,000 draws x 2
              parameters, beside our "mean"/"classic"/"tfp" variants and TFP's own functions
              (ArviZ too when it is installed); a table of its own (time_diagnostics)

Every library runs the same algorithm on the same log-density (the nflows_jax target, vmapped for
TFP's batched API; the Gaussian is ``energies.ill_conditioned_gaussian``, axis-aligned, O(D)), from
the same initial positions (exact draws from the target), with the same proposal scale / step
size, inside one jitted function per library, and stores the same thing: the final position and a
running per-chain sum of acceptance probabilities (one add per chain-step, for every library), so
the reported acceptance rates are means over all chains and steps and must agree closely.
How each library is driven, as its users write it:

  nflows_jax  ``sample_chains(key, kernel, positions, T, thin=T, keep=...)``: one stored draw, and
              the kernel wrapped so that its state carries the acceptance sum (``Tallied``).
  blackjax    ``jax.random.split(step_key, C)`` each step and ``jax.vmap(algorithm.step)``.
  TFP         a ``lax.scan`` over ``kernel.one_step`` with a stateless seed per step (the whole
              batch of chains is one state (C, D); ``sample_chain`` would stack every state).

THE FLOOR of a row is the least work any implementation must do: the same ``lax.scan`` over
steps doing only the log-density evaluations and drawing the same random numbers from one key per
step (RWMH: normals (C, D) + uniforms (C,) and one log-density per chain-step; HMC: momentum
normals (C, D) + uniforms (C,) and 10 value-and-gradient evaluations per chain-step; Ising: the
neighbour sums (jnp.roll) for both colours + one uniform per site per sweep). Its results feed the
next step (the random numbers move the position, the log-density is summed into the carry), so
XLA can neither hoist nor drop any of it.

Timing: each jitted function is called once to compile and warm up, then the row's libraries are
called round-robin ``--repeats`` times; the best wall time (``block_until_ready``) is reported.
Ratios in the table:

  ours/this   = this library's time / our time  (> 1: nflows_jax is faster)
  cost/floor  = this library's time / floor time (1.0 = at the floor; the goal is <= 1.2)
  CPU (s)     = the least process CPU time (all threads) of the timed calls: steadier than wall
                time when other processes share the cores; "CPU cost/floor" is its floor ratio

    python benchmarks/mcmc.py                       # full table, a few minutes on 2 CPU cores
    python benchmarks/mcmc.py --quick               # smoke run, tiny sizes
    python benchmarks/mcmc.py --rows banana ising --repeats 5
    taskset -c 0 python benchmarks/mcmc.py          # one core: see the note on CPU threads

CPU threads: each step of these scans is a few small fused loops (10,000 x 2 floats for the
banana), where XLA:CPU's thread pool costs about as much as it saves. On the shared 2-core machine
this was written on, runs with both cores varied up to 2x from one run to the next (wall time
sometimes above CPU time); a one-core run (``taskset -c 0``) gave steady timings, with every
library between 0.6x and 2x its two-core speed. Compare the ratios within a row; the JSON records
how many cores the process could use.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import blackjax
import jax
import jax.extend.random
import jax.numpy as jnp
import numpy as np
from report import print_tables as report_tables  # benchmarks/ is on sys.path as a script
from tensorflow_probability.substrates import jax as tfp

from nflows_jax.sampling import diagnostics
from nflows_jax.sampling.base import Kernel
from nflows_jax.sampling.gibbs import ising_gibbs
from nflows_jax.sampling.hmc import hmc
from nflows_jax.sampling.mh import rwmh
from nflows_jax.sampling.run import sample_chains
from nflows_jax.targets.energies import (
    banana_logdensity,
    ill_conditioned_gaussian,
)

Array = jax.Array
ROWS = ("banana", "gauss_rwmh", "gauss_hmc", "ising")

# A runner is a jitted (key, positions) -> (final positions, mean acceptance probability).
Runner = Callable[[Array, Array], tuple[Array, Array]]


class Case(NamedTuple):
    """One row of the table: sizes, target and the tuned sampler settings."""

    name: str
    title: str
    num_chains: int
    num_steps: int
    logdensity_fn: Callable[[Array], Array] | None  # one position (D,) -> scalar
    initial_positions: Array  # (C, D) or (C, H, W) spins
    scale: float  # RWMH proposal scale / HMC step size
    num_leapfrog_steps: int = 0


# ------------------------------------------------------------------------------------------------
# Shared pieces


def lean_scan(step_all: Callable, state: Any, key: Array, num_steps: int, num_chains: int):
    """``num_steps`` of ``step_all(step_key, state) -> (state, acceptance_prob (C,))``.

    One key per step (``jax.random.split(key, num_steps)``), the acceptance probabilities summed
    per chain in the carry; nothing is stored per step. Returns (state, acceptance mean).
    """

    def body(carry, step_key):
        state, acceptance_sum = carry
        state, acceptance_prob = step_all(step_key, state)
        return (state, acceptance_sum + acceptance_prob), None

    carry = (state, jnp.zeros((num_chains,), jnp.float32))
    (state, acceptance_sum), _ = jax.lax.scan(body, carry, jax.random.split(key, num_steps))
    return state, jnp.mean(acceptance_sum) / num_steps


class Tallied(NamedTuple):
    """A kernel state plus the sum of the acceptance probabilities seen so far (one chain)."""

    state: Any
    acceptance_sum: Array


def tallied(kernel: Kernel) -> Kernel:
    """``kernel`` whose state also sums ``info.acceptance_prob``: what the peers' scans carry."""

    def init(position):
        return Tallied(kernel.init(position), jnp.zeros((), jnp.float32))

    def step(key, tally):
        state, info = kernel.step(key, tally.state)
        return Tallied(state, tally.acceptance_sum + info.acceptance_prob), info

    return Kernel(init, step)


def nflows_runner(kernel: Kernel, num_steps: int) -> Runner:
    """``sample_chains`` storing one draw: the acceptance sums after the last step (C, 1)."""
    kernel = tallied(kernel)

    @jax.jit
    def run(key, positions):
        result = sample_chains(
            key,
            kernel,
            positions,
            num_steps,
            thin=num_steps,
            keep=lambda tally, info: tally.acceptance_sum,
            keep_info=False,
        )
        return result.final_state.state.position, jnp.mean(result.trace) / num_steps

    return run


def blackjax_run(algorithm, case: Case) -> Runner:
    """blackjax as its users drive it: ``split(step_key, C)`` each step, ``vmap(step)``."""

    def step_all(step_key, states):
        keys = jax.random.split(step_key, case.num_chains)
        states, infos = jax.vmap(algorithm.step)(keys, states)
        return states, infos.acceptance_rate

    @jax.jit
    def run(key, positions):
        states = jax.vmap(algorithm.init)(positions)
        states, acceptance = lean_scan(step_all, states, key, case.num_steps, case.num_chains)
        return states.position, acceptance

    return run


def floor_run(step_all: Callable, case: Case) -> Runner:
    """A floor's scan; ``step_all(key, (position, logdensity_sum))`` does the row's minimum work.

    The log-density sum is returned (in the acceptance slot, not reported) so every evaluation is
    live and XLA cannot drop it.
    """

    @jax.jit
    def run(key, positions):
        carry = (positions, jnp.zeros(case.num_chains))
        (position, logdensity_sum), _ = lean_scan(
            step_all, carry, key, case.num_steps, case.num_chains
        )
        return position, jnp.mean(logdensity_sum)

    return run


# ------------------------------------------------------------------------------------------------
# RWMH


def blackjax_rwmh(case: Case) -> Runner:
    dim = case.initial_positions.shape[-1]
    algorithm = blackjax.additive_step_random_walk.normal_random_walk(
        case.logdensity_fn, case.scale * jnp.ones(dim)
    )

    return blackjax_run(algorithm, case)


def tfp_lean_run(kernel, case: Case) -> Runner:
    """A scan over ``kernel.one_step`` with one stateless seed per step (the whole batch)."""

    def step_all(seed, carry):
        state, results = carry
        state, results = kernel.one_step(state, results, seed=seed)
        acceptance_prob = jnp.exp(jnp.minimum(results.log_accept_ratio, 0.0))
        return (state, results), acceptance_prob

    @jax.jit
    def run(key, positions):
        carry = (positions, kernel.bootstrap_results(positions))
        (state, _), acceptance = lean_scan(step_all, carry, key, case.num_steps, case.num_chains)
        return state, acceptance

    return run


def tfp_rwmh(case: Case) -> Runner:
    kernel = tfp.mcmc.RandomWalkMetropolis(
        jax.vmap(case.logdensity_fn), new_state_fn=tfp.mcmc.random_walk_normal_fn(case.scale)
    )
    return tfp_lean_run(kernel, case)


def floor_rwmh(case: Case) -> Runner:
    """One log-density per chain-step + normals (C, D) and uniforms (C,) from one key per step."""
    batched_logdensity = jax.vmap(case.logdensity_fn)

    def step_all(step_key, carry):
        position, logdensity_sum = carry
        normal_key, uniform_key = jax.random.split(step_key)
        noise = jax.random.normal(normal_key, position.shape)
        uniforms = jax.random.uniform(uniform_key, position.shape[:1])
        position = position + case.scale * noise  # the random numbers feed the next step
        logdensity_sum = logdensity_sum + batched_logdensity(position) + uniforms
        return (position, logdensity_sum), jnp.zeros(case.num_chains)

    return floor_run(step_all, case)


# ------------------------------------------------------------------------------------------------
# HMC


def blackjax_hmc(case: Case) -> Runner:
    dim = case.initial_positions.shape[-1]
    algorithm = blackjax.hmc(
        case.logdensity_fn,
        step_size=case.scale,
        inverse_mass_matrix=jnp.ones(dim),
        num_integration_steps=case.num_leapfrog_steps,
    )

    return blackjax_run(algorithm, case)


def tfp_hmc(case: Case) -> Runner:
    kernel = tfp.mcmc.HamiltonianMonteCarlo(
        jax.vmap(case.logdensity_fn),
        step_size=case.scale,
        num_leapfrog_steps=case.num_leapfrog_steps,
    )
    return tfp_lean_run(kernel, case)


def floor_hmc(case: Case) -> Runner:
    """L value-and-gradient evaluations per chain-step + momentum normals (C, D), uniforms (C,)."""
    value_and_grad = jax.vmap(jax.value_and_grad(case.logdensity_fn))
    step_size = case.scale

    def step_all(step_key, carry):
        position, logdensity_sum = carry
        normal_key, uniform_key = jax.random.split(step_key)
        momentum = jax.random.normal(normal_key, position.shape)
        uniforms = jax.random.uniform(uniform_key, position.shape[:1])
        position = position + step_size * momentum

        def gradient_step(_, carry):
            # Each evaluation depends on the previous one, so none can be skipped or batched.
            position, logdensity_sum = carry
            logdensity, grad = value_and_grad(position)
            return position + step_size * grad, logdensity_sum + logdensity

        position, logdensity_sum = jax.lax.fori_loop(
            0, case.num_leapfrog_steps, gradient_step, (position, logdensity_sum + uniforms)
        )
        return (position, logdensity_sum), jnp.zeros(case.num_chains)

    return floor_run(step_all, case)


# ------------------------------------------------------------------------------------------------
# Ising


def floor_ising(case: Case) -> Runner:
    """Per sweep: neighbour sums for both colours + one uniform per site, from one key."""
    _, height, width = case.initial_positions.shape
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    black = jnp.asarray((rows + cols) % 2 == 0)

    def neighbour_sum(spins):
        return (
            jnp.roll(spins, 1, axis=-1)
            + jnp.roll(spins, -1, axis=-1)
            + jnp.roll(spins, 1, axis=-2)
            + jnp.roll(spins, -1, axis=-2)
        )

    def step_all(step_key, spins):
        uniforms = jax.random.uniform(step_key, spins.shape)
        # The least a colour update can do with the field and its uniforms: a compare and select.
        threshold = 8.0 * uniforms - 4.0  # neighbour sums lie in [-4, 4]
        for colour in (black, ~black):
            drawn = jnp.where(neighbour_sum(spins) > threshold, 1.0, -1.0).astype(spins.dtype)
            spins = jnp.where(colour, drawn, spins)
        return spins, jnp.zeros(case.num_chains)

    @jax.jit
    def run(key, spins):
        spins, _ = lean_scan(step_all, spins, key, case.num_steps, case.num_chains)
        return spins, jnp.zeros(())

    return run


# ------------------------------------------------------------------------------------------------
# Cases


BANANA_SCALE = 1.0
RWMH_GAUSS_SCALE = 0.007
HMC_STEP_SIZE = 0.01
HMC_LEAPFROG_STEPS = 10
ISING_BETA = 0.4
GAUSS_DIM = 100


def banana_draws(key: Array, num_chains: int) -> Array:
    """Exact draws from ``banana_logdensity`` with its defaults (s² = 100, b = 0.1): (C, 2)."""
    z = jax.random.normal(key, (num_chains, 2))
    x1 = 10.0 * z[:, 0]
    return jnp.stack([x1, z[:, 1] + 0.1 * (x1**2 - 100.0)], axis=1)


def make_case(name: str, quick: bool, key: Array) -> Case:
    """A row's sizes and target; chains start at exact draws so acceptance rates are stationary."""
    if name == "banana":
        num_chains, num_steps = (256, 50) if quick else (10_000, 1_000)
        return Case(
            name,
            "RWMH, 2-D banana",
            num_chains,
            num_steps,
            banana_logdensity,
            banana_draws(key, num_chains),
            BANANA_SCALE,
        )
    if name in ("gauss_rwmh", "gauss_hmc"):
        num_chains, num_steps = (64, 30) if quick else (1_000, 1_000)
        target = ill_conditioned_gaussian(dim=GAUSS_DIM)
        # The covariance is diagonal (rotate=False): exact draws are scaled normals.
        stds = jnp.sqrt(jnp.diagonal(target.cov))
        positions = stds * jax.random.normal(key, (num_chains, GAUSS_DIM))
        logdensity = target.logdensity
        if name == "gauss_rwmh":
            return Case(
                name,
                f"RWMH, {GAUSS_DIM}-d ill-conditioned Gaussian",
                num_chains,
                num_steps,
                logdensity,
                positions,
                RWMH_GAUSS_SCALE,
            )
        return Case(
            name,
            f"HMC (L={HMC_LEAPFROG_STEPS}), {GAUSS_DIM}-d ill-conditioned Gaussian",
            num_chains,
            num_steps,
            logdensity,
            positions,
            HMC_STEP_SIZE,
            HMC_LEAPFROG_STEPS,
        )
    if name == "ising":
        num_chains, side, num_steps = (8, 16, 20) if quick else (1_000, 64, 20)
        spins = jnp.where(jax.random.bernoulli(key, 0.5, (num_chains, side, side)), 1.0, -1.0)
        return Case(
            name,
            f"Gibbs sweeps, {side}x{side} Ising, beta={ISING_BETA}",
            num_chains,
            num_steps,
            None,
            spins,
            0.0,
        )
    raise ValueError(f"unknown row {name!r}; choose from {ROWS}")


def runners_for(case: Case) -> dict[str, Runner]:
    """The libraries of a row, ours first, the floor last."""
    if case.name in ("banana", "gauss_rwmh"):
        return {
            "nflows_jax": nflows_runner(rwmh(case.logdensity_fn, case.scale), case.num_steps),
            "blackjax": blackjax_rwmh(case),
            "tfp": tfp_rwmh(case),
            "floor": floor_rwmh(case),
        }
    if case.name == "gauss_hmc":
        kernel = hmc(case.logdensity_fn, case.scale, case.num_leapfrog_steps)
        return {
            "nflows_jax": nflows_runner(kernel, case.num_steps),
            "blackjax": blackjax_hmc(case),
            "tfp": tfp_hmc(case),
            "floor": floor_hmc(case),
        }
    return {
        "nflows_jax": nflows_runner(ising_gibbs(ISING_BETA), case.num_steps),
        "floor": floor_ising(case),
    }


# ------------------------------------------------------------------------------------------------
# Diagnostics timing (its own table: seconds per call, not chain-steps per second)

DIAGNOSTICS_ROW = "diagnostics"


def time_diagnostics(quick: bool, repeats: int, key: Array) -> list[dict[str, Any]]:
    """Seconds per call of ESS / R-hat on iid normal draws (C, T, 2), round-robin, best of
    ``repeats``. Ours are the public functions as users call them (eager; chain-major); TFP's get
    time-major draws made beforehand, so no transpose is timed for them. ArviZ, when installed,
    gets NumPy arrays (its own backend)."""
    num_chains, num_draws = (64, 100) if quick else (10_000, 1_000)
    draws = jax.random.normal(key, (num_chains, num_draws, 2))
    time_major = jax.block_until_ready(jnp.swapaxes(draws, 0, 1))
    ess, rhat = diagnostics.effective_sample_size, diagnostics.split_rhat
    tfp_ess = jax.jit(
        lambda x: tfp.mcmc.effective_sample_size(
            x, filter_beyond_positive_pairs=True, cross_chain_dims=1
        )
    )
    tfp_rhat = jax.jit(lambda x: tfp.mcmc.potential_scale_reduction(x, split_chains=True))
    calls: dict[str, Callable[[], Any]] = {
        "nflows_jax ESS bulk": lambda: ess(draws),
        "nflows_jax ESS mean": lambda: ess(draws, variant="mean"),
        "nflows_jax ESS tfp": lambda: ess(draws, variant="tfp"),
        "tfp effective_sample_size": lambda: tfp_ess(time_major),
        "nflows_jax R-hat rank": lambda: rhat(draws),
        "nflows_jax R-hat classic": lambda: rhat(draws, variant="classic"),
        "nflows_jax R-hat tfp": lambda: rhat(draws, variant="tfp"),
        "tfp potential_scale_reduction": lambda: tfp_rhat(time_major),
    }
    try:
        import arviz

        dataset = arviz.convert_to_dataset(np.asarray(draws))
        calls["arviz ess bulk"] = lambda: arviz.ess(dataset, method="bulk")
        calls["arviz rhat rank"] = lambda: arviz.rhat(dataset, method="rank")
    except ImportError:
        pass
    first, wall, cpu = {}, {name: [] for name in calls}, {name: [] for name in calls}
    for name, call in calls.items():
        start = time.perf_counter()
        jax.block_until_ready(call())
        first[name] = time.perf_counter() - start
    for _ in range(repeats):
        for name, call in calls.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            jax.block_until_ready(call())
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - cpu_start)
    rows = []
    for name in calls:
        rows.append(
            {
                "call": name,
                "shape": [num_chains, num_draws, 2],
                "seconds": min(wall[name]),
                "cpu_seconds": min(cpu[name]),
                "first_call_seconds": first[name],
                "all_seconds": wall[name],
                "all_cpu_seconds": cpu[name],
            }
        )
        print(
            f"  diagnostics {name:32s} best {min(wall[name]):.3f} s, CPU {min(cpu[name]):.3f} s"
            f" (first call {first[name]:.1f} s)",
            flush=True,
        )
    return rows


# ------------------------------------------------------------------------------------------------
# Measurement and report


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when a --quick timing rounds to 0 s of CPU."""
    return numerator / denominator if denominator > 0 else float("nan")


def run_case(case: Case, repeats: int, key: Array) -> list[dict[str, Any]]:
    """Compile + warm up every library of the row, then time them round-robin ``repeats`` times.

    Round-robin rather than one library after the other: on a shared machine a burst of load then
    hits every library of the row alike instead of one of them; the best time of each is kept.
    """
    runners = runners_for(case)
    positions = case.initial_positions
    results = {}
    for library, run in runners.items():
        start = time.perf_counter()
        _, acceptance = jax.block_until_ready(run(key, positions))
        results[library] = {
            "first_call_seconds": time.perf_counter() - start,
            "acceptance": float(acceptance),
            "all_seconds": [],
            "all_cpu_seconds": [],
        }
    for _ in range(repeats):
        for library, run in runners.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            jax.block_until_ready(run(key, positions))
            results[library]["all_seconds"].append(time.perf_counter() - start)
            results[library]["all_cpu_seconds"].append(time.process_time() - cpu_start)
    chain_steps = case.num_chains * case.num_steps
    rows = []
    for library, timing in results.items():
        seconds = min(timing["all_seconds"])
        cpu_seconds = min(timing["all_cpu_seconds"])
        rows.append(
            {
                "row": case.name,
                "title": case.title,
                "library": library,
                "num_chains": case.num_chains,
                "num_steps": case.num_steps,
                "seconds": seconds,
                "chain_steps_per_s": chain_steps / seconds,
                "ours_speedup": seconds / min(results["nflows_jax"]["all_seconds"]),
                "cost_over_floor": seconds / min(results["floor"]["all_seconds"]),
                "cpu_seconds": cpu_seconds,
                "cpu_cost_over_floor": _ratio(
                    cpu_seconds, min(results["floor"]["all_cpu_seconds"])
                ),
                **timing,
            }
        )
        print(
            f"  {case.name:10s} {library:32s} {format_rate(chain_steps / seconds):>8s} "
            "chain-steps/s"
            f"  (best {seconds:.3f} s, CPU {cpu_seconds:.3f} s, of {len(timing['all_seconds'])};"
            " first call "
            f"{timing['first_call_seconds']:.1f} s)",
            flush=True,
        )
    return rows


def format_rate(rate: float) -> str:
    """Chain-steps per second with a unit that keeps three significant digits: 13.1 M, 3.65 k."""
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if rate >= size:
            return f"{rate / size:.3g} {unit}"
    return f"{rate:.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run")
    parser.add_argument(
        "--rows", nargs="+", choices=(*ROWS, DIAGNOSTICS_ROW), default=[*ROWS, DIAGNOSTICS_ROW]
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed calls; the best is kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/mcmc.json")
    args = parser.parse_args()

    device = jax.devices()[0]
    load_at_start = os.getloadavg()
    print(
        f"jax {jax.__version__}, blackjax {blackjax.__version__}, tfp {tfp.__version__}, "
        f"device {device.device_kind} ({device.platform}), {os.cpu_count()} CPUs "
        f"({len(os.sched_getaffinity(0))} usable), "
        f"load average {load_at_start}",
        flush=True,
    )
    start = time.perf_counter()
    results = []
    for index, name in enumerate(args.rows):
        if name == DIAGNOSTICS_ROW:
            continue
        case_key, run_key = jax.random.split(
            jax.random.fold_in(jax.random.PRNGKey(args.seed), index)
        )
        results += run_case(
            make_case(name, args.quick, case_key),
            args.repeats,
            run_key,
        )
    meta = {
        "jax": jax.__version__,
        "blackjax": blackjax.__version__,
        "tfp": tfp.__version__,
        "device": device.device_kind,
        "platform": device.platform,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "load_average_at_start": load_at_start,
        "command": " ".join(sys.argv),
        "quick": args.quick,
        "repeats": args.repeats,
        "total_seconds": time.perf_counter() - start,
    }
    report = {"meta": meta, "rows": results}
    if DIAGNOSTICS_ROW in args.rows:
        diagnostics_key = jax.random.fold_in(jax.random.PRNGKey(args.seed), len(ROWS))
        report["diagnostics"] = time_diagnostics(args.quick, args.repeats, diagnostics_key)
        meta["total_seconds"] = time.perf_counter() - start
    meta["load_average_at_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out} ({meta['total_seconds']:.0f} s)")
    print(
        "\nours/this = this library's wall time / nflows_jax's wall time (> 1: ours is faster); "
        "cost/floor = wall time / the floor's wall time (1.0 = at the floor); CPU cost/floor: the "
        "same with process CPU time, steadier than wall time on a shared machine. Best of "
        f"{args.repeats} timed calls each."
    )
    report_tables(out)


if __name__ == "__main__":
    main()

"""Adaptive HMC end to end: warm-up + sampling, ESS per gradient and per second, ours vs blackjax.

Targets (``nflows_jax.targets.posteriors``): the Bayesian logistic regression on the breast-cancer
data (D = 31) and the non-centred eight schools (D = 10). Samplers, all with C chains (1,024 by
default) in one process, each warm-up followed by the same number of sampling steps:

  ours_window    ``window_adaptation`` (Stan's windows, diagonal M⁻¹, cross-chain statistics) of
                 HMC with ``--leapfrog`` steps, then ``sample_chains`` with the returned kernel
  ours_chees     ``chees_adaptation`` (diagonal M⁻¹ from the ensemble), then its ``jittered_hmc``
  bj_window_nuts blackjax ``window_adaptation`` + NUTS, vmapped over chains as blackjax users run
                 it (each chain adapts on its own: Stan's algorithm per chain)
  bj_chees       blackjax ``chees_adaptation`` (``mass_matrix_estimation="diagonal"``, Adam with
                 learning rate 0.025 as its docs use), then ``dynamic_hmc`` with its parameters

Reported per row: bulk ESS from OUR ``effective_sample_size`` on the sampling-phase draws (C, S,
D) of every sampler (the minimum over coordinates and the mean), gradient evaluations counted
from the samplers' own infos (ours: ``num_gradient_evaluations`` / ``info.num_leapfrog_steps``;
blackjax: ``info.num_integration_steps`` of NUTS and dynamic HMC, summed over chains and steps,
warm-up and sampling, plus one initial gradient per chain and phase), and wall seconds of warm-up
and sampling runs, compiled beforehand (AOT ``lower().compile()``; compile seconds are reported
apart). ESS per gradient = min ESS / all gradients; ESS per second = min ESS / (warm-up +
sampling run seconds), compile excluded.

    python benchmarks/adaptation.py                  # 1,024 chains, 1,000 + 1,000 steps
    python benchmarks/adaptation.py --quick          # smoke run: 64 chains, 200 + 200 steps
    python benchmarks/adaptation.py --targets eight_schools --chains 256 --seeds 0

Every sampler starts from the same positions, Stan's default U(-2, 2) per unconstrained coordinate
(wider starts, e.g. N(0, 2²), leave a few eight-schools chains at log tau ≈ 4 where a step size
shared by all chains is far too large: they never move, see the note in the report), and gets
independent keys for warm-up and sampling. The JSON goes to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from report import print_tables as report_tables  # benchmarks/ is on sys.path as a script
from timing import call_timed, compile_timed

from nflows_jax.sampling.adaptation import adapt, chees_adaptation, window_adaptation
from nflows_jax.sampling.diagnostics import effective_sample_size, split_rhat
from nflows_jax.targets.posteriors import eight_schools, logistic_regression_posterior

Array = jax.Array
TARGETS = ("logistic_regression", "eight_schools")
SAMPLERS = ("ours_window", "ours_chees", "bj_window_nuts", "bj_chees")


def target(name: str) -> tuple[Callable[[Array], Array], int]:
    if name == "logistic_regression":
        posterior = logistic_regression_posterior()
    elif name == "eight_schools":
        posterior = eight_schools(centred=False)
    else:
        raise ValueError(f"unknown target {name!r}; choose from {TARGETS}")
    return posterior.logdensity, posterior.dim


# ------------------------------------------------------------------------------------------------
# Each sampler: warm-up fn (key, positions) -> (state, params, warm-up gradients) and a sampling
# fn built from the warm-up's output: (key, state) -> (draws (C, S, D), sampling gradients).


def ours(kind: str, logdensity_fn, num_warmup: int, num_samples: int, leapfrog: int):
    if kind == "window":
        warmup = window_adaptation(logdensity_fn, leapfrog, initial_step_size=0.1)
    else:
        warmup = chees_adaptation(logdensity_fn, initial_step_size=0.1)

    def run_warmup(key, positions):
        states, parameters, trace = adapt(key, warmup, positions, num_warmup)
        gradients = jnp.sum(trace["num_gradient_evaluations"].astype(jnp.float32))
        return states, parameters, gradients + positions.shape[0]

    def sampler(parameters):
        kernel = warmup.build_kernel(**parameters, **dict(warmup.fixed_parameters))

        def run_sampling(key, states):
            # Step the warm-up's states on (ChEES's Halton counter continues; sample_chains
            # would re-init them), with per-step split keys exactly as the blackjax rows do.
            num_chains = states.position.shape[0]

            def body(states, t):
                keys = jax.random.split(jax.random.fold_in(key, t), num_chains)
                states, info = jax.vmap(kernel.step)(keys, states)
                return states, (states.position, info.num_leapfrog_steps)

            _, (draws, steps) = jax.lax.scan(body, states, jnp.arange(num_samples))
            return jnp.swapaxes(draws, 0, 1), jnp.sum(steps.astype(jnp.float32))

        return run_sampling

    return run_warmup, sampler


def blackjax_window_nuts(logdensity_fn, num_warmup: int, num_samples: int):
    warmup = blackjax.window_adaptation(
        blackjax.nuts,
        logdensity_fn,
        initial_step_size=0.1,
        adaptation_info_fn=blackjax.adaptation.base.get_filter_adapt_info_fn(
            info_keys={"num_integration_steps"}
        ),
    )

    def run_warmup(key, positions):
        keys = jax.random.split(key, positions.shape[0])
        (state, parameters), info = jax.vmap(lambda k, p: warmup.run(k, p, num_warmup))(
            keys, positions
        )
        gradients = jnp.sum(info.info.num_integration_steps.astype(jnp.float32))
        return state, parameters, gradients + positions.shape[0]

    def sampler(parameters):
        def run_sampling(key, states):
            num_chains = states.position.shape[0]

            def one_step(key, state, params):
                return blackjax.nuts(logdensity_fn, **params).step(key, state)

            def body(states, step_key):
                keys = jax.random.split(step_key, num_chains)
                states, info = jax.vmap(one_step)(keys, states, parameters)
                return states, (states.position, info.num_integration_steps)

            _, (draws, steps) = jax.lax.scan(body, states, jax.random.split(key, num_samples))
            return jnp.swapaxes(draws, 0, 1), jnp.sum(steps.astype(jnp.float32))

        return run_sampling

    return run_warmup, sampler


def blackjax_chees(logdensity_fn, num_chains: int, num_warmup: int, num_samples: int):
    warmup = blackjax.chees_adaptation(
        logdensity_fn,
        num_chains,
        mass_matrix_estimation="diagonal",
        adaptation_info_fn=blackjax.adaptation.base.get_filter_adapt_info_fn(
            info_keys={"num_integration_steps"}
        ),
    )
    optimizer = optax.adam(0.025)

    def run_warmup(key, positions):
        (states, parameters), info = warmup.run(
            key, positions, 0.1, optimizer, num_warmup, max_sampling_steps=num_samples
        )
        gradients = jnp.sum(info.info.num_integration_steps.astype(jnp.float32))
        arrays = {k: v for k, v in parameters.items() if not callable(v)}
        return states, arrays, gradients + positions.shape[0]

    def sampler(arrays):
        # The two functions ChEES hands back are rebuilt the way blackjax builds them: the
        # Halton jitter of the step counter (its default jitter generator).
        max_bits = np.ceil(np.log2(num_warmup + num_samples))

        def integration_steps_fn(random_generator_arg, num_leapfrog_steps):
            jitter = blackjax.mcmc.dynamic_hmc.halton_sequence(random_generator_arg, max_bits)
            return jnp.asarray(jnp.ceil(jitter * num_leapfrog_steps), dtype=int)

        algorithm = blackjax.dynamic_hmc(
            logdensity_fn,
            step_size=arrays["step_size"],
            inverse_mass_matrix=arrays["inverse_mass_matrix"],
            next_random_arg_fn=lambda i: i + 1,
            integration_steps_fn=integration_steps_fn,
            integration_steps_params=tuple(arrays["integration_steps_params"]),
        )

        def run_sampling(key, states):
            def body(states, step_key):
                keys = jax.random.split(step_key, num_chains)
                states, info = jax.vmap(algorithm.step)(keys, states)
                return states, (states.position, info.num_integration_steps)

            _, (draws, steps) = jax.lax.scan(body, states, jax.random.split(key, num_samples))
            return jnp.swapaxes(draws, 0, 1), jnp.sum(steps.astype(jnp.float32))

        return run_sampling

    return run_warmup, sampler


# ------------------------------------------------------------------------------------------------


def run_row(name, target_name, parts, key, positions) -> dict[str, Any]:
    run_warmup, sampler = parts
    key_warm, key_sample = jax.random.split(key)
    compiled, warm_compile, _ = compile_timed(run_warmup, (key_warm, positions))
    (states, parameters, warm_grads), warm_seconds, _ = call_timed(compiled, (key_warm, positions))
    # The sampling kernel is built from concrete warm-up parameters, as a user would.
    parameters = jax.device_get(parameters)
    run_sampling = sampler(parameters)
    compiled, sample_compile, _ = compile_timed(run_sampling, (key_sample, states))
    (draws, sample_grads), sample_seconds, _ = call_timed(compiled, (key_sample, states))
    ess = np.asarray(effective_sample_size(draws), np.float64)
    gradients = float(warm_grads) + float(sample_grads)
    seconds = warm_seconds + sample_seconds
    step_size = np.asarray(parameters["step_size"], np.float64)
    return {
        "target": target_name,
        "sampler": name,
        "num_chains": int(positions.shape[0]),
        "min_ess": float(ess.min()),
        "mean_ess": float(ess.mean()),
        "gradients": gradients,
        "warmup_gradients": float(warm_grads),
        "warmup_seconds": warm_seconds,
        "sampling_seconds": sample_seconds,
        "compile_seconds": warm_compile + sample_compile,
        "min_ess_per_gradient": float(ess.min()) / gradients,
        "min_ess_per_second": float(ess.min()) / seconds,
        "max_rhat": float(np.max(np.asarray(split_rhat(draws)))),
        "mean_step_size": float(step_size.mean()),
        "finite_draws": bool(np.all(np.isfinite(np.asarray(draws)))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 chains, 200 + 200 steps")
    parser.add_argument("--chains", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--leapfrog", type=int, default=10, help="L of ours_window's HMC")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="independent replicates"
    )
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--append", action="store_true", help="add the rows to those already in --out (same setup)"
    )
    args = parser.parse_args()
    num_chains = args.chains or (64 if args.quick else 1024)
    num_warmup = args.warmup or (200 if args.quick else 1000)
    num_samples = args.samples or (200 if args.quick else 1000)
    out = Path(args.out or f"benchmarks/results/adaptation{'_quick' if args.quick else ''}.json")
    meta = {
        "command": " ".join(sys.argv),
        "num_chains": num_chains,
        "num_warmup": num_warmup,
        "num_samples": num_samples,
        "leapfrog": args.leapfrog,
        "jax": jax.__version__,
        "blackjax": blackjax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
    }

    def write(rows: list[dict[str, Any]]) -> None:
        """After every row, so an interrupted run keeps what it measured."""
        payload = {"meta": meta, "rows": rows}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(payload, indent=2))

    rows = []
    if args.append and out.exists():
        previous = json.loads(out.read_text())
        same = ("num_chains", "num_warmup", "num_samples", "leapfrog")
        expected = {"num_chains": num_chains, "num_warmup": num_warmup,
                    "num_samples": num_samples, "leapfrog": args.leapfrog}  # fmt: skip
        if any(previous["meta"][k] != expected[k] for k in same):
            raise SystemExit(f"--append: {out} was run with another setup: {previous['meta']}")
        rows = previous["rows"]
        meta["command"] = previous["meta"]["command"] + " ; " + meta["command"]
    for seed in args.seeds:
        key = jax.random.PRNGKey(seed)
        for target_name in args.targets:
            logdensity_fn, dim = target(target_name)
            key, key_init = jax.random.split(key)
            # Stan's default initialisation: U(-2, 2) on every unconstrained coordinate.
            positions = jax.random.uniform(key_init, (num_chains, dim), minval=-2.0, maxval=2.0)
            builders = {
                "ours_window": lambda f=logdensity_fn: ours(
                    "window", f, num_warmup, num_samples, args.leapfrog
                ),
                "ours_chees": lambda f=logdensity_fn: ours(
                    "chees", f, num_warmup, num_samples, args.leapfrog
                ),
                "bj_window_nuts": lambda f=logdensity_fn: blackjax_window_nuts(
                    f, num_warmup, num_samples
                ),
                "bj_chees": lambda f=logdensity_fn: blackjax_chees(
                    f, num_chains, num_warmup, num_samples
                ),
            }
            for name in args.samplers:
                key, key_row = jax.random.split(key)
                row = {
                    "seed": seed,
                    **run_row(name, target_name, builders[name](), key_row, positions),
                }
                rows.append(row)
                write(rows)
                print(
                    f"seed {seed} {target_name:20s} {name:15s} min ESS {row['min_ess']:8.0f}  "
                    f"grads {row['gradients']:10.3g}  run {row['warmup_seconds']:.1f}+"
                    f"{row['sampling_seconds']:.1f} s  compile {row['compile_seconds']:.1f} s  "
                    f"R-hat {row['max_rhat']:.4f}",
                    flush=True,
                )
    write(rows)
    print(f"wrote {out}")
    report_tables(out)


if __name__ == "__main__":
    main()

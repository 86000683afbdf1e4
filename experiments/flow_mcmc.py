"""Flows meet MCMC: tuned local samplers against flow-based ones on toy and real posteriors.

    python experiments/flow_mcmc.py --out runs/flow_mcmc                   # all targets, 3 seeds
    python experiments/flow_mcmc.py --targets funnel --seeds 0 1 2 --out runs/flow_mcmc_funnel
    python experiments/flow_mcmc.py --quick --out runs/flow_mcmc_quick     # smoke run, < 3 min

Targets (``--targets``): Neal's funnel (10-D), the banana, Rezende & Mohamed's U1–U4 (U2–U4
confined to their box, ``targets.confined_logdensity``), a bimodal 2-D Gaussian mixture, eight
schools (non-centred and centred) and the Bayesian logistic regression on the breast-cancer data
(31-D). Methods, each run with ``--chains`` chains and ``--draws`` kept draws per chain:

* ``rwmh``: random-walk Metropolis, per-coordinate scale tuned to acceptance 0.234
  (``adaptation.rwmh_adaptation``);
* ``hmc``: HMC with Stan's windowed warm-up (``window_adaptation``, L = ``--leapfrog``);
* ``chees``: ChEES-HMC (``chees_adaptation``: step size and jittered trajectory length);
* ``flow_is``: importance sampling from a flow trained by reverse KL (``fit_reverse_kl``);
  ``chains × draws`` weighted draws, ESS = the weights' Kish ESS;
* ``flow_imh``: independence MH with the same flow as proposal;
* ``neutra``: window-adapted HMC on the flow's pull-back of the target (``neutra``), pushed
  forward to the original space.

Reported per (target, method), as the mean and standard error over ``--seeds`` (each seed trains
its own flow and runs its own chains): the minimum over coordinates of the bulk ESS; the cost in
target evaluations (gradient evaluations for HMC-type methods, log-density evaluations for RWMH,
IS and IMH, each counted as one), warm-up included, with and without the flow's training (S
steps × B reparameterised samples, each one gradient of log p̃); ESS per evaluation and per
second; the bias of E[x] and E[x²] against exact values (funnel, banana, mixture), quadrature
(U1–U4) or a long reference run (eight schools, logistic regression: window-adapted HMC,
``--ref-chains`` × ``--ref-draws``, cached in ``<out>/references.json``), as max over coordinates
of |error| / sd;
the max split R-hat (chains only) and the acceptance rate. Figures: ``ess_per_evaluation.png``,
``bias.png``, ``samples_2d.png`` and ``funnel.png``; numbers in ``metrics.json`` and the
table in ``table.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from nflows_jax import flows
from nflows_jax.bijectors import chain, repeat, reverse_permutation
from nflows_jax.bijectors.coupling import affine_coupling, spline_coupling
from nflows_jax.bijectors.elementwise import elementwise_affine
from nflows_jax.flow_mcmc import (
    fit_reverse_kl,
    flow_importance_sampling,
    flow_independence_mh,
    neutra,
    push_forward_chains,
)
from nflows_jax.sampling import (
    StuckChainWarning,
    effective_sample_size,
    sample_chains,
    split_rhat,
    stuck_chains,
)
from nflows_jax.sampling.adaptation import chees_adaptation, rwmh_adaptation, window_adaptation
from nflows_jax.targets import (
    REZENDE_BOX,
    REZENDE_ENERGIES,
    banana_logdensity,
    banana_moments,
    confined_logdensity,
    eight_schools,
    funnel_logdensity,
    gaussian_mixture_logdensity,
    gaussian_mixture_moments,
    grid_reference,
    logistic_regression_posterior,
)

METHODS = ("rwmh", "hmc", "chees", "flow_is", "flow_imh", "neutra")
CHAIN_METHODS = ("rwmh", "hmc", "chees", "flow_imh", "neutra")
WALL_WIDTH = 0.1
MIXTURE = {"weights": [0.5, 0.5], "means": [[-2.5, 0.0], [2.5, 0.0]], "scales": [0.6, 0.6]}


class Target(NamedTuple):
    logdensity: Callable
    dim: int
    reference: Callable[[argparse.Namespace, Path], tuple[np.ndarray, np.ndarray]]  # E x, E x²
    init_scale: float  # the chains start at N(0, init_scale²)


def exact(mean, second) -> Callable:
    return lambda args, out: (np.asarray(mean, np.float64), np.asarray(second, np.float64))


def funnel_target() -> Target:
    dim, v_scale = 10, 3.0
    second = np.full(dim, math.exp(v_scale**2 / 2))
    second[0] = v_scale**2
    return Target(funnel_logdensity(dim, v_scale), dim, exact(np.zeros(dim), second), 1.0)


def banana_target() -> Target:
    mean, cov = banana_moments()
    return Target(banana_logdensity, 2, exact(mean, np.diag(cov)), 1.0)


def mixture_target() -> Target:
    mean, cov = gaussian_mixture_moments(**MIXTURE)
    second = np.diag(cov) + np.asarray(mean) ** 2
    return Target(gaussian_mixture_logdensity(**MIXTURE), 2, exact(mean, second), 1.0)


def rezende_target(name: str) -> Target:
    logdensity = confined_logdensity(REZENDE_ENERGIES[name], REZENDE_BOX, WALL_WIDTH)

    def reference(args, out):
        grid = grid_reference(logdensity, REZENDE_BOX + 10 * WALL_WIDTH, 1000)
        return grid.mean, grid.second_moment

    return Target(logdensity, 2, reference, 1.0)


def long_run_reference(name: str, logdensity, dim: int, transform=None) -> Callable:
    """E[x], E[x²] from a long window-adapted HMC run, cached under ``out``."""

    def reference(args, out):
        cache = out / "references.json"
        stored = json.loads(cache.read_text()) if cache.exists() else {}
        if name not in stored:
            key = jax.random.PRNGKey(12345)
            warm_key, run_key, init_key = jax.random.split(key, 3)
            positions = 0.5 * jax.random.normal(init_key, (args.ref_chains, dim))
            warmup = window_adaptation(logdensity, args.leapfrog)
            adapted = warmup.run(warm_key, positions, args.ref_warmup)
            result = sample_chains(
                run_key, adapted.kernel, adapted.states.position, args.ref_draws, keep_info=False
            )
            draws = np.asarray(result.trace, np.float64)
            if transform is not None:
                draws = np.asarray(jax.vmap(jax.vmap(transform))(result.trace), np.float64)
            stored[name] = {
                "mean": draws.mean(axis=(0, 1)).tolist(),
                "second": (draws**2).mean(axis=(0, 1)).tolist(),
                "rhat_max": float(np.max(split_rhat(jnp.asarray(draws)))),
                "ess_min": float(np.min(effective_sample_size(jnp.asarray(draws)))),
                "chains": args.ref_chains,
                "draws": args.ref_draws,
            }
            out.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(stored, indent=2))
            print(f"reference {name}: R-hat {stored[name]['rhat_max']:.4f}, "
                  f"min ESS {stored[name]['ess_min']:.0f}", flush=True)  # fmt: skip
        return np.asarray(stored[name]["mean"]), np.asarray(stored[name]["second"])

    return reference


def schools_targets() -> dict[str, Target]:
    non_centred, centred = eight_schools(centred=False), eight_schools(centred=True)
    ref_nc = long_run_reference("eight_schools_nc", non_centred.logdensity, 10)

    def to_centred(z):  # (mu, log tau, theta~) -> (mu, log tau, theta = mu + tau theta~)
        return jnp.concatenate([z[:2], z[0] + jnp.exp(z[1]) * z[2:]])

    ref_c = long_run_reference("eight_schools_c", non_centred.logdensity, 10, to_centred)
    return {
        "eight_schools_nc": Target(non_centred.logdensity, 10, ref_nc, 1.0),
        "eight_schools_c": Target(centred.logdensity, 10, ref_c, 1.0),
    }


def logistic_target() -> Target:
    posterior = logistic_regression_posterior()
    reference = long_run_reference("logistic", posterior.logdensity, posterior.dim)
    return Target(posterior.logdensity, posterior.dim, reference, 0.1)


def all_targets() -> dict[str, Target]:
    targets = {"funnel": funnel_target(), "banana": banana_target()}
    targets.update({name: rezende_target(name) for name in ("u1", "u2", "u3", "u4")})
    targets["mixture"] = mixture_target()
    targets.update(schools_targets())
    targets["logistic"] = logistic_target()
    return targets


def make_flow(dim: int, layers: int, hidden: int) -> flows.Flow:
    """Spline couplings in 2-D (curved, bounded targets), affine couplings above; a final
    elementwise affine layer carries the target's location and scale."""
    if dim == 2:
        coupling = spline_coupling(2, hidden=(hidden, hidden), num_bins=8, bound=5.0)
    else:
        coupling = affine_coupling(dim, hidden=(hidden, hidden))
    body = repeat(chain(coupling, reverse_permutation()), layers)
    return flows.Flow(flows.standard_normal(dim), chain(body, elementwise_affine()))


def train_flow(target: Target, args, key) -> tuple[flows.Flow, object, dict]:
    flow = make_flow(target.dim, args.flow_layers, args.flow_hidden)
    init_key, fit_key = jax.random.split(key)
    params = flows.init(flow, init_key, jnp.zeros((2, target.dim)))
    schedule = optax.cosine_decay_schedule(args.flow_lr, args.flow_steps, alpha=0.05)
    optimizer = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(schedule))
    start = time.perf_counter()
    result = fit_reverse_kl(
        flow,
        params,
        target.logdensity,
        optimizer,
        args.flow_steps,
        key=fit_key,
        num_samples=args.flow_batch,
        anneal_steps=args.flow_steps // 4,
        mask_nonfinite=True,
        progress=False,
        log_every=max(args.flow_steps // 10, 1),
    )
    jax.block_until_ready(result.params)
    info = {
        "train_s": time.perf_counter() - start,
        "train_evaluations": args.flow_steps * args.flow_batch,
        "final_loss": float(result.history["loss"][-1]),
    }
    return flow, result.params, info


def draw_statistics(draws: np.ndarray, reference, weights: np.ndarray | None = None) -> dict:
    """Bias of E[x], E[x²] (max over coordinates, in reference standard deviations)."""
    mean_ref, second_ref = reference
    sd = np.sqrt(np.maximum(second_ref - mean_ref**2, 1e-12))
    flat = draws.reshape(-1, draws.shape[-1]).astype(np.float64)
    if weights is None:
        mean, second = flat.mean(0), (flat**2).mean(0)
    else:
        w = weights / weights.sum()
        mean, second = w @ flat, w @ flat**2
    # E[x²] is compared on the scale of its own spread, sd(x²) ≈ sqrt(2)·E[x²] for a Gaussian.
    return {
        "bias_mean": float(np.max(np.abs(mean - mean_ref) / sd)),
        "bias_second": float(np.max(np.abs(second - second_ref) / (np.sqrt(2.0) * second_ref))),
    }


def chain_statistics(trace: jax.Array) -> dict:
    """Min bulk ESS, max R-hat, and the chains that never moved (which make ESS 0, R-hat inf)."""
    with warnings.catch_warnings():  # stuck chains are counted below instead
        warnings.simplefilter("ignore", StuckChainWarning)
        ess = np.asarray(effective_sample_size(trace))
        rhat = np.asarray(split_rhat(trace))
    stuck = np.asarray(stuck_chains(trace)).reshape(trace.shape[0], -1).any(axis=1)
    return {
        "ess_min": float(np.min(ess)),
        "rhat_max": float(np.max(rhat)),
        "stuck_chains": int(stuck.sum()),
    }


def acceptance(info_trace) -> float:
    return float(np.mean(np.asarray(info_trace.acceptance_prob)))


def run_method(method: str, target: Target, reference, flow_bundle, args, key) -> dict:
    """One (target, method, seed) cell: draws, their statistics and their cost."""
    warm_key, run_key, init_key = jax.random.split(key, 3)
    chains, draws = args.chains, args.draws
    positions = target.init_scale * jax.random.normal(init_key, (chains, target.dim))
    start = time.perf_counter()
    row: dict = {}
    if method in ("rwmh", "hmc", "chees", "neutra"):
        logdensity = target.logdensity
        transport = None
        if method == "neutra":
            flow, params, _ = flow_bundle
            transport = neutra(target.logdensity, flow, params)
            logdensity = transport.logdensity
            positions = jax.random.normal(init_key, (chains, target.dim))
        if method == "rwmh":
            warmup = rwmh_adaptation(logdensity)
        elif method == "chees":
            warmup = chees_adaptation(logdensity)
        else:
            warmup = window_adaptation(logdensity, args.leapfrog)
        adapted = warmup.run(warm_key, positions, args.warmup)
        result = sample_chains(run_key, adapted.kernel, adapted.states.position, draws)
        if transport is not None:
            result = push_forward_chains(transport, result)
        trace = jax.block_until_ready(result.trace)
        info = result.info_trace
        if method == "rwmh":
            sampling_evaluations = chains * draws
        elif hasattr(info, "num_leapfrog_steps"):
            sampling_evaluations = int(np.sum(np.asarray(info.num_leapfrog_steps, np.int64)))
        else:
            sampling_evaluations = chains * draws * args.leapfrog
        row.update(chain_statistics(trace), acceptance=acceptance(info))
        row["evaluations"] = adapted.num_gradient_evaluations + sampling_evaluations
        row["parameters"] = {
            k: float(v)
            for k, v in adapted.parameters.items()
            if isinstance(v, (int, float)) or (hasattr(v, "shape") and np.shape(v) == ())
        }
        samples = np.asarray(trace)
    elif method == "flow_imh":
        flow, params, _ = flow_bundle
        kernel = flow_independence_mh(target.logdensity, flow, params)
        starts = flows.sample(flow, params, init_key, chains)
        result = sample_chains(run_key, kernel, starts, draws)
        trace = jax.block_until_ready(result.trace)
        row.update(chain_statistics(trace), acceptance=acceptance(result.info_trace))
        row["evaluations"] = chains * (draws + 1)
        samples = np.asarray(trace)
    elif method == "flow_is":
        flow, params, _ = flow_bundle
        num = chains * draws
        result = flow_importance_sampling(run_key, flow, params, target.logdensity, num)
        samples = np.asarray(jax.block_until_ready(result.samples))
        log_w = np.asarray(result.log_weights, np.float64)
        weights = np.exp(log_w - log_w.max())
        row.update(ess_min=float(result.ess), log_z=float(result.log_z), evaluations=num)
        row["log_z_se"] = float(result.log_z_se)
        row.update(draw_statistics(samples, reference, weights))
    else:
        raise ValueError(f"unknown method {method!r}")
    row["seconds"] = time.perf_counter() - start
    if method != "flow_is":
        row.update(draw_statistics(samples, reference))
    training = flow_bundle[2] if method.startswith("flow") or method == "neutra" else None
    row["train_evaluations"] = training["train_evaluations"] if training else 0
    row["train_s"] = training["train_s"] if training else 0.0
    total = row["evaluations"] + row["train_evaluations"]
    row["ess_per_evaluation"] = row["ess_min"] / total
    row["ess_per_evaluation_sampling_only"] = row["ess_min"] / row["evaluations"]
    row["ess_per_second"] = row["ess_min"] / (row["seconds"] + row["train_s"])
    row["ess_per_second_sampling_only"] = row["ess_min"] / row["seconds"]
    row["scatter"] = samples.reshape(-1, target.dim)[:: max(samples.size // target.dim // 2000, 1)]
    return row


SUMMARY_KEYS = (
    "ess_min",
    "ess_per_evaluation",
    "ess_per_evaluation_sampling_only",
    "ess_per_second",
    "ess_per_second_sampling_only",
    "bias_mean",
    "bias_second",
    "rhat_max",
    "acceptance",
    "stuck_chains",
    "evaluations",
    "train_evaluations",
    "seconds",
    "train_s",
)


def summarise(rows: list[dict]) -> dict:
    out = {}
    for name in SUMMARY_KEYS:
        values = np.array([r[name] for r in rows if name in r], np.float64)
        if len(values):
            se = (
                float(np.std(values, ddof=1) / math.sqrt(len(values)))
                if len(values) > 1
                else math.nan
            )
            out[name] = {"mean": float(values.mean()), "se": se, "values": values.tolist()}
    return out


def write_table(summary: dict, path: Path) -> None:
    """Markdown: one row per (target, method), mean ± SE over seeds."""

    def cell(stats: dict, name: str, fmt: str) -> str:
        if name not in stats:
            return "–"
        mean, se = stats[name]["mean"], stats[name]["se"]
        return format(mean, fmt) + ("" if math.isnan(se) else " ± " + format(se, fmt))

    lines = [
        "| target | method | min ESS | ESS / 1k evals (incl. training) | ESS / 1k evals "
        "(sampling) | ESS / s | bias E[x] | bias E[x²] | max R-hat | acceptance |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for target, methods in summary.items():
        for method, stats in methods.items():
            per_k = {
                k: {"mean": 1e3 * v["mean"], "se": 1e3 * v["se"]}
                for k, v in stats.items()
                if k.startswith("ess_per_evaluation")
            }
            lines.append(
                f"| {target} | {method} | {cell(stats, 'ess_min', '.0f')} | "
                f"{cell(per_k, 'ess_per_evaluation', '.3g')} | "
                f"{cell(per_k, 'ess_per_evaluation_sampling_only', '.3g')} | "
                f"{cell(stats, 'ess_per_second', '.3g')} | {cell(stats, 'bias_mean', '.3f')} | "
                f"{cell(stats, 'bias_second', '.3f')} | {cell(stats, 'rhat_max', '.3f')} | "
                f"{cell(stats, 'acceptance', '.2f')} |"
            )
    path.write_text("\n".join(lines) + "\n")


def plot_bars(summary: dict, metric: str, path: Path, ylabel: str, log: bool) -> None:
    """Bars of the mean over seeds with SE whiskers; on a log axis a zero mean (e.g. ESS 0 from
    stuck chains) is an "x" on the bottom edge."""
    names = list(summary)
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(names)), 4))
    width = 0.8 / len(METHODS)
    cells = [
        (t, k, summary[name][method][metric])
        for t, name in enumerate(names)
        for k, method in enumerate(METHODS)
        if metric in summary[name].get(method, {})
    ]
    positive = [c["mean"] for _, _, c in cells if c["mean"] > 0]
    floor = min(positive) / 3 if log and positive else 0.0
    for k, method in enumerate(METHODS):
        mine = [(t, c) for t, kk, c in cells if kk == k]
        xs = [t + (k - len(METHODS) / 2 + 0.5) * width for t, _ in mine]
        ys = [c["mean"] for _, c in mine]
        es = [0.0 if math.isnan(c["se"]) else c["se"] for _, c in mine]
        shown = [(x, y, e) for x, y, e in zip(xs, ys, es, strict=True) if not log or y > 0]
        if shown:
            bx, by, be = zip(*shown, strict=True)
            ax.bar(bx, by, width, yerr=be, label=method, color=f"C{k}", capsize=2)
        zeros = [x for x, y in zip(xs, ys, strict=True) if log and y <= 0]
        if zeros:
            ax.plot(zeros, [floor * 1.3] * len(zeros), "x", color=f"C{k}", ms=7, mew=2)
    ax.set_xticks(range(len(names)), names, rotation=20)
    if log:
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor)
        ax.set_title("x: zero (a chain never moved, so the min ESS is 0)", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, ncol=3)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_scatter(scatters: dict, path: Path, names: list[str], index=(0, 1), title="") -> None:
    names = [n for n in names if any((n, m) in scatters for m in METHODS)]  # draws kept
    if not names:
        return
    size = (2.2 * len(METHODS), 2.2 * len(names))
    fig, axes = plt.subplots(len(names), len(METHODS), figsize=size, squeeze=False)
    for row, name in zip(axes, names, strict=True):
        for ax, method in zip(row, METHODS, strict=True):
            points = scatters.get((name, method))
            if points is not None:
                ax.plot(points[:, index[0]], points[:, index[1]], ".", ms=1, alpha=0.3)
            ax.set_title(f"{name}: {method}", fontsize=7)
            ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def main(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    targets = all_targets()
    unknown = set(args.targets) - set(targets)
    if unknown:
        raise SystemExit(f"unknown targets {sorted(unknown)}; choose from {sorted(targets)}")
    results, scatters, summary = {}, {}, {}
    metrics_path = out / "metrics.json"
    if args.resume and metrics_path.exists():  # keep the finished targets, run the others
        previous = json.loads(metrics_path.read_text())
        results, summary = previous["runs"], previous["summary"]
        for name in results:
            saved = out / f"scatter_{name}.npz"
            if saved.exists():
                scatters.update({(name, m): a for m, a in np.load(saved).items()})
    for name in args.targets:
        if name in results:
            print(f"{name}: already in {metrics_path}, skipped", flush=True)
            continue
        target = targets[name]
        reference = target.reference(args, out)
        results[name] = {method: [] for method in args.methods}
        for seed in args.seeds:
            key = jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(name.encode()))
            flow_key, *method_keys = jax.random.split(key, 1 + len(args.methods))
            needs_flow = any(m in ("flow_is", "flow_imh", "neutra") for m in args.methods)
            bundle = train_flow(target, args, flow_key) if needs_flow else None
            if bundle is not None:
                print(f"{name} seed {seed}: flow trained in {bundle[2]['train_s']:.1f} s, "
                      f"final loss {bundle[2]['final_loss']:.3f}", flush=True)  # fmt: skip
            for method, method_key in zip(args.methods, method_keys, strict=True):
                row = run_method(method, target, reference, bundle, args, method_key)
                scatters[(name, method)] = row.pop("scatter")
                results[name][method].append(row)
                print(
                    f"{name} seed {seed} {method:>8}: ESS {row['ess_min']:8.0f}, "
                    f"ESS/eval {row['ess_per_evaluation']:.2e} "
                    f"(sampling only {row['ess_per_evaluation_sampling_only']:.2e}), "
                    f"ESS/s {row['ess_per_second']:8.1f}, bias {row['bias_mean']:.3f}/"
                    f"{row['bias_second']:.3f}, R-hat {row.get('rhat_max', math.nan):.3f}, "
                    f"accept {row.get('acceptance', math.nan):.2f}, "
                    f"stuck chains {row.get('stuck_chains', 0)}",
                    flush=True,
                )
        summary[name] = {m: summarise(rows) for m, rows in results[name].items()}
        metrics = {"config": vars(args), "summary": summary, "runs": results}
        metrics_path.write_text(json.dumps(metrics, indent=2, default=float))
        np.savez(out / f"scatter_{name}.npz", **{m: scatters[(name, m)] for m in args.methods})
        write_table(summary, out / "table.md")
    plot_bars(summary, "ess_per_evaluation", out / "ess_per_evaluation.png",
              "min bulk ESS per target evaluation\n(flow training included)", log=True)  # fmt: skip
    plot_bars(summary, "bias_mean", out / "bias.png", "max |E[x] error| / sd", log=False)
    two_d = [n for n in summary if targets[n].dim == 2]
    plot_scatter(scatters, out / "samples_2d.png", two_d, title="draws per method")
    if "funnel" in summary:
        plot_scatter(scatters, out / "funnel.png", ["funnel"], (1, 0), "funnel: x1 (horizontal), v")
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    names = ["funnel", "banana", "u1", "u2", "u3", "u4", "mixture", "eight_schools_nc",
             "eight_schools_c", "logistic"]  # fmt: skip
    parser.add_argument("--targets", nargs="+", default=names)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--chains", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--leapfrog", type=int, default=10, help="L of window-adapted HMC")
    parser.add_argument("--flow-layers", type=int, default=6)
    parser.add_argument("--flow-hidden", type=int, default=64)
    parser.add_argument("--flow-steps", type=int, default=2000)
    parser.add_argument("--flow-batch", type=int, default=256)
    parser.add_argument("--flow-lr", type=float, default=1e-3)
    parser.add_argument("--ref-chains", type=int, default=256)
    parser.add_argument("--ref-warmup", type=int, default=1000)
    parser.add_argument("--ref-draws", type=int, default=4000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--resume", action="store_true", help="skip targets already in --out")
    parser.add_argument("--out", default="runs/flow_mcmc")
    args = parser.parse_args(argv)
    if args.quick:
        args.chains, args.warmup, args.draws, args.seeds = 16, 150, 100, [0]
        args.flow_steps, args.flow_batch, args.flow_layers = 100, 64, 2
        args.ref_chains, args.ref_warmup, args.ref_draws = 16, 150, 200
    return args


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(None if main(parse_args()) else 1)

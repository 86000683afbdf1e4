"""Sampling and density time of MAF and IAF flows (affine and spline), beside flowjax.

A MAF evaluates a density in one MADE pass and samples in D sequential passes; an IAF is the
other way round. This script measures both directions of both, at d = 64, 256, 784:

  sample    N draws from the flow (``flows.sample`` / flowjax ``dist.sample``)
  log_prob  the log-density of a batch of N data points (``flows.log_prob`` / ``dist.log_prob``)

Models, each a flow of ``LAYERS`` layers with a MADE of ``HIDDEN`` hidden units:

  nflows_jax  ``repeat(chain(masked_autoregressive(d, t, hidden), reverse_permutation()), L)``
              (MAF) and the same with ``inverse_autoregressive`` (IAF), for the transformer
              t = ``affine_transformer()`` and ``rational_quadratic_spline(num_bins=8, bound=3)``.
  flowjax     ``masked_autoregressive_flow(flow_layers=L, nn_width=H, nn_depth=2, transformer=...)``
              with flowjax's default affine (softplus scale) and ``RationalQuadraticSpline(
              knots=7, interval=3)``: flowjax's ``knots`` counts the interior knots, so 7 gives
              8 bins, as our ``num_bins=8``. ``invert=True`` (flowjax's default) is a MAF (fast
              density, D passes to sample), ``invert=False`` an IAF. Its layers are separated by
              random permutations, ours by reversals (both a gather of the D coordinates).

Both libraries' MADEs are D -> H -> H -> D·P with ReLU and masked weights; the parameter counts
are printed and stored (the spline's P is 23 for ours, 25 for flowjax, whose two end
derivatives are free where ours are fixed at 1). Ours are perturbed from their identity init
(every params leaf + 0.01·N(0, 1)) so the flow is not trivially the identity; flowjax's output
layer starts random anyway. Timings do not depend on the values.

Timing, all in one process: each call is a ``jax.jit`` of (params, key) or (params, x) (the
params are arguments, not constants folded into the program); ``compile`` is the wall time of
``jit(f).lower(...).compile()``, so it excludes any execution; then one warm-up call, then
``--repeats`` timed calls (``block_until_ready``), of which the median is reported. A call that
takes longer than ``--row-budget`` seconds is repeated fewer times (at least 2, or once when the
warm-up call alone took longer than the budget: the sequential directions at d = 784 with the
spline, about 35 s each); the number of repeats is stored with each row. Process CPU time (all
threads) is recorded beside wall time: on a shared machine it is the steadier of the two.

Sanity checks: our MAF's samples get a finite log_prob (every d, both transformers), and so do
flowjax's MAF samples.

    python benchmarks/autoregressive.py            # the table (12 min on 2 shared CPU cores)
    python benchmarks/autoregressive.py --quick    # smoke run, d = 8 (about a minute)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import flowjax
import jax
import jax.numpy as jnp
import numpy as np
from flowjax.bijections import RationalQuadraticSpline
from flowjax.distributions import StandardNormal
from flowjax.flows import masked_autoregressive_flow
from report import print_tables as report_tables  # benchmarks/ is on sys.path as a script

from nflows_jax import flows
from nflows_jax.bijectors import (
    affine_transformer,
    chain,
    inverse_autoregressive,
    masked_autoregressive,
    rational_quadratic_spline,
    repeat,
    reverse_permutation,
)

DIMS = (64, 256, 784)
QUICK_DIMS = (8,)
BATCH = 64
LAYERS = 2
HIDDEN = (256, 256)
QUICK_HIDDEN = (32, 32)
NUM_BINS = 8
BOUND = 3.0
MODELS = ("maf_affine", "maf_spline", "iaf_affine", "iaf_spline")
DIRECTIONS = ("sample", "log_prob")


def count(tree: Any) -> int:
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(tree)))


# A built model: (params pytree, sample(params, key) -> (N, d), log_prob(params, x) -> (N,)).
Built = tuple[Any, Callable, Callable, int]


def build_ours(model: str, dim: int, hidden: tuple[int, ...], batch: int, key) -> Built:
    kind, transformer_name = model.split("_")
    transformer = (
        affine_transformer()
        if transformer_name == "affine"
        else rational_quadratic_spline(num_bins=NUM_BINS, bound=BOUND)
    )
    layer_fn = masked_autoregressive if kind == "maf" else inverse_autoregressive
    layer = chain(layer_fn(dim, transformer, hidden=hidden), reverse_permutation())
    flow = flows.Flow(flows.standard_normal(dim), repeat(layer, LAYERS))
    init_key, noise_key = jax.random.split(key)
    params = flows.init(flow, init_key, jnp.zeros((batch, dim)))
    leaves, treedef = jax.tree_util.tree_flatten(params)
    noise_keys = jax.random.split(noise_key, len(leaves))
    leaves = [
        leaf + 0.01 * jax.random.normal(k, leaf.shape, leaf.dtype)
        for leaf, k in zip(leaves, noise_keys, strict=True)
    ]
    params = jax.tree_util.tree_unflatten(treedef, leaves)

    def sample(params, key):
        return flows.sample(flow, params, key, batch)

    def log_prob(params, x):
        return flows.log_prob(flow, params, x)

    return params, sample, log_prob, count(params)


def build_flowjax(model: str, dim: int, hidden: tuple[int, ...], batch: int, key) -> Built:
    kind, transformer_name = model.split("_")
    kwargs = {}
    if transformer_name == "spline":
        kwargs["transformer"] = RationalQuadraticSpline(knots=NUM_BINS - 1, interval=BOUND)
    dist = masked_autoregressive_flow(
        key,
        base_dist=StandardNormal((dim,)),
        flow_layers=LAYERS,
        nn_width=hidden[0],
        nn_depth=len(hidden),
        invert=kind == "maf",
        **kwargs,
    )
    arrays, static = eqx.partition(dist, eqx.is_array)
    # Trainable parameters: the floating-point arrays of the bijection (the masks are bool, the
    # permutations int; the base distribution's loc/scale are fixed).
    trainable = eqx.filter(dist.bijection, eqx.is_inexact_array)

    def sample(arrays, key):  # flowjax wants a typed key; the raw bits are the same as ours
        return eqx.combine(arrays, static).sample(jax.random.wrap_key_data(key), (batch,))

    def log_prob(arrays, x):
        return eqx.combine(arrays, static).log_prob(x)

    return arrays, sample, log_prob, count(trainable)


BUILDERS = {"nflows_jax": build_ours, "flowjax": build_flowjax}


def time_call(fn: Callable, args: tuple, repeats: int, row_budget: float) -> dict[str, Any]:
    """Compile ``jit(fn)`` for ``args``, warm it up, time it; the compiled function and output.

    ``repeats`` timed calls after the warm-up, fewer when they would take more than
    ``row_budget`` seconds in all (at least 2, or 1 when one call alone exceeds the budget).
    """
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))  # warm-up
    first = time.perf_counter() - start
    fit = int(row_budget / max(first, 1e-9))
    n = 1 if fit < 1 else max(2, min(repeats, fit))
    times, cpu_times = [], []
    for _ in range(n):
        start, cpu_start = time.perf_counter(), time.process_time()
        out = jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return {
        "compile_seconds": compile_seconds,
        "seconds": statistics.median(times),
        "min_seconds": min(times),
        "cpu_seconds": statistics.median(cpu_times),
        "warmup_seconds": first,
        "all_seconds": times,
        "all_cpu_seconds": cpu_times,
        "compiled": compiled,
        "out": out,
    }


def run(dims, hidden, batch, repeats, row_budget, seed, libraries) -> tuple[list[dict], list[dict]]:
    rows, checks = [], []
    key = jax.random.PRNGKey(seed)
    for dim in dims:
        data = jax.random.normal(jax.random.fold_in(key, dim), (batch, dim))
        sample_key = jax.random.fold_in(key, 10_000 + dim)
        for model in MODELS:
            for library in libraries:
                params, sample, log_prob, num_params = BUILDERS[library](
                    model, dim, hidden, batch, jax.random.fold_in(key, dim * 7 + 1)
                )
                timed = {}
                for direction in DIRECTIONS:
                    fn, arg = (sample, sample_key) if direction == "sample" else (log_prob, data)
                    timed[direction] = t = time_call(fn, (params, arg), repeats, row_budget)
                    row = {
                        "library": library,
                        "model": model,
                        "d": dim,
                        "direction": direction,
                        "batch": batch,
                        "seconds": t["seconds"],
                        "per_s": batch / t["seconds"],
                        "compile_seconds": t["compile_seconds"],
                        "min_seconds": t["min_seconds"],
                        "cpu_seconds": t["cpu_seconds"],
                        "warmup_seconds": t["warmup_seconds"],
                        "all_seconds": t["all_seconds"],
                        "all_cpu_seconds": t["all_cpu_seconds"],
                        "params": num_params,
                    }
                    rows.append(row)
                    print(
                        f"  d={dim:4d} {library:10s} {model:10s} {direction:8s} "
                        f"{t['seconds'] * 1e3:10.2f} ms  {batch / t['seconds']:12.1f}/s  compile "
                        f"{t['compile_seconds']:6.2f} s  CPU {t['cpu_seconds'] * 1e3:.2f} ms  "
                        f"({len(t['all_seconds'])} repeats, "
                        f"{num_params:,} params)",
                        flush=True,
                    )
                if model.startswith("maf"):  # the compiled log_prob on the compiled samples
                    lp = jax.block_until_ready(
                        timed["log_prob"]["compiled"](params, timed["sample"]["out"])
                    )
                    finite = bool(jnp.all(jnp.isfinite(lp)))
                    checks.append(
                        {
                            "library": library,
                            "model": model,
                            "d": dim,
                            "check": "log_prob(sample) finite",
                            "ok": finite,
                            "mean_log_prob": float(jnp.mean(lp)),
                        }
                    )
                    print(
                        f"    check: log_prob of its own samples finite: {finite} "
                        f"(mean {float(jnp.mean(lp)):.2f})",
                        flush=True,
                    )
                    if not finite:
                        raise SystemExit(f"{library} {model} d={dim}: non-finite log_prob")
    return rows, checks


def find(rows, library, model, dim, direction) -> dict | None:
    for r in rows:
        if (r["library"], r["model"], r["d"], r["direction"]) == (library, model, dim, direction):
            return r
    return None


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


def ratios(rows, dims, libraries) -> list[dict]:
    """IAF-over-MAF sampling speedups and flowjax-over-ours time ratios (> 1: ours faster).

    Each ratio is given for the median wall time and the median process CPU time (all threads),
    the steadier of the two when other jobs share the cores.
    """
    out = []
    for dim in dims:
        for library in libraries:
            for transformer in ("affine", "spline"):
                maf = find(rows, library, f"maf_{transformer}", dim, "sample")
                iaf = find(rows, library, f"iaf_{transformer}", dim, "sample")
                out.append(
                    {
                        "ratio": "iaf_sampling_speedup",
                        "library": library,
                        "transformer": transformer,
                        "d": dim,
                        "value": _ratio(maf["seconds"], iaf["seconds"]),
                        "cpu_value": _ratio(maf["cpu_seconds"], iaf["cpu_seconds"]),
                    }
                )
        if "flowjax" not in libraries:
            continue
        for model in MODELS:
            for direction in DIRECTIONS:
                ours = find(rows, "nflows_jax", model, dim, direction)
                theirs = find(rows, "flowjax", model, dim, direction)
                out.append(
                    {
                        "ratio": "flowjax_over_ours",
                        "model": model,
                        "direction": direction,
                        "d": dim,
                        "value": _ratio(theirs["seconds"], ours["seconds"]),
                        "cpu_value": _ratio(theirs["cpu_seconds"], ours["cpu_seconds"]),
                    }
                )
    return out


def targets(ratio_rows, dims) -> list[dict]:
    """The issue's targets at the largest d: IAF sampling >= 100x MAF's; ours >= flowjax (MAF)."""
    dim = max(dims)
    out = []
    for r in ratio_rows:
        if r["d"] != dim:
            continue
        if r["ratio"] == "iaf_sampling_speedup" and r["library"] == "nflows_jax":
            name = f"IAF sampling >= 100x MAF sampling, {r['transformer']}, d = {dim}"
            out.append(
                {
                    "target": name,
                    "value": r["value"],
                    "cpu_value": r["cpu_value"],
                    "met": r["value"] >= 100,
                    "met_cpu": r["cpu_value"] >= 100,
                }
            )
        if r["ratio"] == "flowjax_over_ours" and r["model"].startswith("maf"):
            name = f"ours >= flowjax, {r['model']} {r['direction']}, d = {dim}"
            out.append(
                {
                    "target": name,
                    "value": r["value"],
                    "cpu_value": r["cpu_value"],
                    "met": r["value"] >= 1,
                    "met_cpu": r["cpu_value"] >= 1,
                }
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny d and few repeats")
    parser.add_argument("--dims", type=int, nargs="+", default=None)
    parser.add_argument("--batch", type=int, default=BATCH, help="N samples / data points")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls; the median is kept")
    parser.add_argument(
        "--row-budget", type=float, default=10.0, help="seconds of timed calls per row, at most"
    )
    parser.add_argument("--libraries", nargs="+", default=list(BUILDERS), choices=list(BUILDERS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/autoregressive.json")
    args = parser.parse_args()
    dims = tuple(args.dims or (QUICK_DIMS if args.quick else DIMS))
    hidden = QUICK_HIDDEN if args.quick else HIDDEN
    repeats = 2 if args.quick else args.repeats

    device = jax.devices()[0]
    print(
        f"jax {jax.__version__}, flowjax {flowjax.__version__}, device {device.device_kind} "
        f"({device.platform}), {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
        f"load average {os.getloadavg()}; d = {dims}, N = {args.batch}, L = {LAYERS}, "
        f"hidden = {hidden}",
        flush=True,
    )
    load_at_start = os.getloadavg()
    start = time.perf_counter()
    rows, checks = run(
        dims, hidden, args.batch, repeats, args.row_budget, args.seed, args.libraries
    )
    ratio_rows = ratios(rows, dims, args.libraries)
    param_counts = []
    for dim in dims:
        for model in MODELS:
            counts = {
                lib: find(rows, lib, model, dim, "sample")["params"] for lib in args.libraries
            }
            param_counts.append({"model": model, "d": dim, **counts})
            print(
                f"  params d={dim:4d} {model:10s} "
                + ", ".join(f"{k} {v:,}" for k, v in counts.items())
            )
    print()
    for r in ratio_rows:
        label = (
            f"IAF/MAF sampling speedup, {r['library']} {r['transformer']}"
            if r["ratio"] == "iaf_sampling_speedup"
            else f"flowjax/ours time, {r['model']} {r['direction']}"
        )
        print(f"  d={r['d']:4d} {label:48s} {r['value']:8.2f} (CPU {r['cpu_value']:.2f})")
    target_rows = targets(ratio_rows, dims)
    print()
    for t in target_rows:
        print(
            f"  {t['target']:56s} wall {t['value']:8.2f} {'met' if t['met'] else 'NOT met'};"
            f" CPU {t['cpu_value']:8.2f} {'met' if t['met_cpu'] else 'NOT met'}"
        )

    meta = {
        "jax": jax.__version__,
        "flowjax": flowjax.__version__,
        "device": device.device_kind,
        "platform": device.platform,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "load_average_at_start": load_at_start,
        "command": " ".join(sys.argv),
        "quick": args.quick,
        "dims": dims,
        "batch": args.batch,
        "layers": LAYERS,
        "hidden": hidden,
        "num_bins": NUM_BINS,
        "bound": BOUND,
        "repeats": repeats,
        "row_budget_seconds": args.row_budget,
    }
    meta["load_average_at_end"] = os.getloadavg()
    meta["total_seconds"] = time.perf_counter() - start
    report = {
        "meta": meta,
        "rows": rows,
        "ratios": ratio_rows,
        "targets": target_rows,
        "param_counts": param_counts,
        "checks": checks,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out} ({meta['total_seconds']:.0f} s)")
    report_tables(out)


if __name__ == "__main__":
    main()

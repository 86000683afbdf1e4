"""Rewrite the generated tables of BENCHMARKS.md from the benchmark scripts' JSON results.

BENCHMARKS.md is prose around tables. Every table that a ``benchmarks/`` script measured sits
between two marker lines,

    <!-- generated: NAME -->
    ...
    <!-- end generated -->

and this script replaces what lies between them with ``RENDERERS[NAME]`` applied to the JSON
files that renderer reads from the results folder. Everything outside the markers is left as it
is, so the prose stays hand-written while no table can drift from its data. Rendering depends on
the JSON files only (no clock, no machine state), so running it twice changes nothing. A region
whose JSON files are not all there is left untouched, with a warning. The ``environment`` region
(machine and package versions) comes from ``environment.json``, which ``run_all.py`` records when
it runs the scripts; without that file it describes the current environment and says so.

Only the standard library is used, so ``make bench-report`` takes a second and the tests can import
this module without JAX.

    python benchmarks/report.py                  # benchmarks/results/ -> BENCHMARKS.md
    python benchmarks/report.py --check          # exit 1 if BENCHMARKS.md is not up to date
    python benchmarks/report.py --results runs/bench-quick/results \\
        --out runs/bench-quick/BENCHMARKS.md     # render into a copy (what run_all --quick does)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_MARKDOWN = ROOT / "BENCHMARKS.md"
ENVIRONMENT_FILE = "environment.json"

# The packages whose versions BENCHMARKS.md states (distribution names, as pip knows them).
PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "distrax",
    "chex",
    "blackjax",
    "flowjax",
    "equinox",
    "tfp-nightly",
    "numpy",
    "arviz",
)

BEGIN = re.compile(r"^<!-- generated: (?P<name>[A-Za-z0-9_./-]+) -->$")
END = "<!-- end generated -->"
MINUS = "\u2212"


# ------------------------------------------------------------------------------------------------
# Markers


class MarkerError(ValueError):
    """The document's markers do not pair up, repeat a name, or name no renderer."""


class Region(NamedTuple):
    name: str
    begin: int  # index of the begin marker line
    end: int  # index of the end marker line


def find_regions(lines: Sequence[str], known: Sequence[str] | None = None) -> list[Region]:
    """The generated regions of a document given as lines; MarkerError on any malformed marker."""
    regions, open_name, open_line, seen = [], None, -1, set()
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("<!-- generated") and not BEGIN.match(stripped):
            raise MarkerError(f"line {index + 1}: malformed begin marker {stripped!r}")
        match = BEGIN.match(stripped)
        if match:
            if open_name is not None:
                raise MarkerError(
                    f"line {index + 1}: region {match['name']!r} begins inside {open_name!r} "
                    f"(opened on line {open_line + 1})"
                )
            open_name, open_line = match["name"], index
            if open_name in seen:
                raise MarkerError(f"line {index + 1}: region {open_name!r} appears twice")
            if known is not None and open_name not in known:
                raise MarkerError(f"line {index + 1}: no renderer is called {open_name!r}")
            seen.add(open_name)
        elif stripped == END:
            if open_name is None:
                raise MarkerError(f"line {index + 1}: end marker without a begin marker")
            regions.append(Region(open_name, open_line, index))
            open_name = None
    if open_name is not None:
        raise MarkerError(f"line {open_line + 1}: region {open_name!r} is never closed")
    return regions


# ------------------------------------------------------------------------------------------------
# Formatting helpers


def table(header: Sequence[str], align: str, rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; ``align`` has one letter per column, l (left) or r (right)."""
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def signed(value: float, spec: str) -> str:
    """``format(value, spec)`` with a typographic minus sign."""
    return format(value, spec).replace("-", MINUS)


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Sample mean and its standard error (sample s.d. / sqrt(n)); s.e. NaN for one value."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, statistics.stdev(values) / math.sqrt(len(values))


def pm(mean: float, se: float, spec: str = ".3f", plus: bool = False) -> str:
    sign = "+" if plus else ""
    return f"{signed(mean, sign + spec)} ± {format(se, spec)}"


def sig3(value: float) -> str:
    """Three significant digits, trailing zeros kept (1.00, 25.9, 412)."""
    return format(value, "#.3g").rstrip(".")


def times(value: float) -> str:
    return f"{value:.2f}×"


def speedup(value: float) -> str:
    return f"{value:,.0f}×" if value >= 100 else f"{value:.1f}×"


def count_ratio(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def rate(value: float) -> str:
    """Chain-steps per second with a unit and three significant digits: 26.9 M, 658 k."""
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.3g}"


def duration(seconds: float) -> str:
    """Seconds to a short human duration: 2.62 s, 8 ms, 290 µs, 52 min."""
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def verdict(failures: Sequence[str]) -> str:
    """'yes' when no part of a target failed, else the failed parts ("K=64 no, ...")."""
    return "; ".join(failures) if failures else "yes"


def first_key(mapping: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in mapping:
            return mapping[key]
    return None


def source_line(*named: tuple[str, dict[str, Any]]) -> str:
    """An italic line naming the JSON files of a table and, where recorded, their load and time."""
    parts = []
    for filename, data in named:
        meta = {**data, **data.get("meta", {})}
        before = first_key(
            meta, "load_average_at_start", "load_average_before", "load_average_start"
        )
        after = first_key(meta, "load_average_at_end", "load_average_after", "load_average_end")
        total = first_key(meta, "total_seconds", "total_s")
        notes = []
        if before is not None:
            load = f"1-minute load average {before[0]:.1f} at the start"
            if after is not None:
                load += f", {after[0]:.1f} at the end"
            notes.append(load)
        if total is not None:
            notes.append(f"{total:.0f} s in all")
        if meta.get("quick"):
            notes.append("**quick smoke run**")
        parts.append(f"`{filename}`" + (f" ({'; '.join(notes)})" if notes else ""))
    return "*Data: " + ", ".join(parts) + ".*"


# ------------------------------------------------------------------------------------------------
# Renderers: each takes {filename: parsed JSON} for the files it names, returns Markdown.


class Context(NamedTuple):
    data: dict[str, Any]  # filename -> parsed JSON, for the files the renderer needs
    out_dir: Path  # the folder of the Markdown file being written (for relative links)


def flows_2d_speed(ctx: Context) -> str:
    data = ctx.data["flows_2d.json"]
    rows = data["timings"]
    ours = {r["layers"]: r["steps_per_s"] for r in rows if r["library"] == "nflows_jax"}
    body = [
        [
            r["library"],
            str(r["layers"]),
            f"{r['compile_s']:.2f}",
            f"{r['steps_per_s']:.1f}",
            f"{ours[r['layers']] / r['steps_per_s']:.2f}",
        ]
        for r in rows
    ]
    compile_ratios = []
    for library in dict.fromkeys(r["library"] for r in rows):
        by_k = {r["layers"]: r["compile_s"] for r in rows if r["library"] == library}
        compile_ratios.append(f"{library} {by_k[max(by_k)] / by_k[min(by_k)]:.2f}×")
    ks = sorted(ours)
    return "\n\n".join(
        [
            table(["library", "K", "compile (s)", "steps/s", "ours / this library"], "lrrrr", body),
            f"Compile time K={ks[-1]} / K={ks[0]}: " + ", ".join(compile_ratios) + ".",
            source_line(("flows_2d.json", data)),
        ]
    )


def flows_2d_targets(ctx: Context) -> str:
    data = ctx.data["flows_2d.json"]
    rows = data["timings"]
    steps = {(r["library"], r["layers"]): r["steps_per_s"] for r in rows}
    compile_s = {(r["library"], r["layers"]): r["compile_s"] for r in rows}
    ks = sorted({r["layers"] for r in rows})
    deep = ks[1:] or ks
    body = []
    compile_ratio = compile_s["nflows_jax", ks[-1]] / compile_s["nflows_jax", ks[0]]
    body.append(
        [
            f"compile(K={ks[-1]}) ≤ 1.5 × compile(K={ks[0]})",
            times(compile_ratio),
            "yes" if compile_ratio <= 1.5 else "no",
        ]
    )
    for peer, goal in (("distrax", 1.5), ("flowjax", 1.2)):
        ratios = {k: steps["nflows_jax", k] / steps[peer, k] for k in deep}
        failed = [f"K={k} no" for k in deep if ratios[k] < goal]
        body.append(
            [
                f"steps/s ≥ {goal}× {peer} at " + " and ".join(f"K={k}" for k in deep),
                " and ".join(times(ratios[k]) for k in deep),
                verdict(failed),
            ]
        )
    moons = data["test_ll"].get("two_moons")
    if moons is not None:
        ours_mean, ours_se = moons["mean_se"]["nflows_jax"]
        peer_mean, peer_se = moons["mean_se"]["flowjax"]
        diff, diff_se = moons["ours_minus_peer_mean_se"]["flowjax"]
        seeds = len(moons["per_seed"]["nflows_jax"])
        # "No worse" = not significantly worse: the paired difference is above -2 s.e.
        if diff >= 0:
            met = "yes"
        elif diff >= -2 * diff_se:
            met = f"yes, within {-diff / diff_se:.1f} s.e."
        else:
            met = "no"
        body.append(
            [
                "two-moons test LL no worse than flowjax",
                f"{pm(ours_mean, ours_se)} vs {pm(peer_mean, peer_se)} ({seeds} seeds; "
                f"paired {pm(diff, diff_se)})",
                met,
            ]
        )
    return table(["target", "measured", "met?"], "lll", body)


def flows_2d_quality(ctx: Context) -> str:
    data = ctx.data["flows_2d.json"]
    fits = data["test_ll"]
    libraries = list(next(iter(fits.values()))["mean_se"])
    peers = [lib for lib in libraries if lib != "nflows_jax"]
    body = []
    for dataset, fit in fits.items():
        cells = [dataset]
        cells += [pm(*fit["mean_se"][lib]) for lib in libraries]
        cells += [pm(*fit["ours_minus_peer_mean_se"][p], plus=True) for p in peers]
        body.append(cells)
    header = ["dataset", *libraries, *(f"ours − {p}" for p in peers)]
    config = data["config"]
    caption = (
        f"K={config['layers_for_quality']}, {config['fit_steps']} steps, mean ± s.e. over "
        f"{config['seeds']} seeds."
    )
    return "\n\n".join(
        [
            table(header, "l" + "r" * (len(header) - 1), body),
            caption + " " + source_line(("flows_2d.json", data)),
        ]
    )


ABLATION_VARIANTS = {
    "base": "before issue 6: exp(5 tanh(r/5)) scale, zero output layer, flax hidden init "
    "(zero biases)",
    "softplus": "softplus scale (flowjax's: softplus(r + c) + 0.01)",
    "density_affine": "density direction affine, z = a·y + t (flowjax's `invert=True`)",
    "uniform_output": "random (uniform) output layer instead of zero",
    "kernel_only": "hidden kernels U(±1/√fan_in), biases still zero",
    "bias_only": "hidden biases U(±1/√fan_in), LeCun-normal kernels",
    "uniform_hidden": "hidden kernels and biases U(±1/√fan_in) (the library now)",
    "uniform_hidden+softplus": "the library now + softplus scale",
    "uniform_hidden+density_affine": "the library now + density-direction affine",
    "flowjax_like": "all four of flowjax's choices",
}
LIBRARY_VARIANT = "uniform_hidden"


def ablation_table(filename: str) -> Callable[[Context], str]:
    """Variants as rows, datasets as columns: test LL mean ± s.e. over the file's seeds."""

    def render(ctx: Context) -> str:
        data = ctx.data[filename]
        rows = data["rows"]
        variants = list(dict.fromkeys(r["variant"] for r in rows))
        datasets = list(dict.fromkeys(r["dataset"] for r in rows))
        cell = {(r["variant"], r["dataset"]): pm(r["mean"], r["se"]) for r in rows}
        body = []
        for variant in variants:
            bold = "**" if variant == LIBRARY_VARIANT else ""
            description = ABLATION_VARIANTS.get(variant, "")
            cells = [f"`{variant}`", f"{bold}{description}{bold}" if description else ""]
            cells += [f"{bold}{cell.get((variant, d), '—')}{bold}" for d in datasets]
            body.append(cells)
        header = ["variant", "change", *(f"{d} test LL (mean ± s.e.)" for d in datasets)]
        meta = data["meta"]
        first, last = meta["seed_offset"], meta["seed_offset"] + meta["seeds"] - 1
        caption = (
            f"K={meta['layers']}, {meta['steps']} steps, batch {meta['batch']}, seeds "
            f"{first}..{last}."
        )
        return "\n\n".join(
            [
                table(header, "ll" + "r" * len(datasets), body),
                caption + " " + source_line((filename, data)),
            ]
        )

    return render


def glow_table(filename: str) -> Callable[[Context], str]:
    def render(ctx: Context) -> str:
        data = ctx.data[filename]
        rows = data["rows"]
        body = []
        for r in rows:
            ratio = r.get("floor_over_variant_time")
            peak = r.get("xla_peak_mb")
            body.append(
                [
                    str(r["K"]),
                    r["variant"],
                    f"{r['compile_s']:.2f}",
                    f"{r['lower_s']:.2f} + {r['xla_compile_s']:.2f}",
                    f"{r['steps_per_s']:.3f}",
                    "n/a" if ratio is None else sig3(ratio),
                    "n/a" if peak is None else f"{peak:.0f}",
                ]
            )
        header = [
            "K",
            "variant",
            "compile (s)",
            "of which lower + XLA compile (s)",
            "steps/s",
            "step time / floor's",
            "XLA peak memory (MB)",
        ]
        growth = []
        for variant in dict.fromkeys(r["variant"] for r in rows):
            by_k = {r["K"]: r for r in rows if r["variant"] == variant}
            lo, hi = by_k[min(by_k)], by_k[max(by_k)]
            first_call = hi["compile_s"] / lo["compile_s"]
            xla = (hi["lower_s"] + hi["xla_compile_s"]) / (lo["lower_s"] + lo["xla_compile_s"])
            growth.append(f"{variant} {first_call:.2f}× ({xla:.2f}×)")
        ks = sorted({r["K"] for r in rows})
        return "\n\n".join(
            [
                table(header, "rlrrrrr", body),
                f"Compile K={ks[-1]} / K={ks[0]}, first-call definition (lower + XLA compile "
                "alone): " + ", ".join(growth) + ". " + source_line((filename, data)),
            ]
        )

    return render


AUTOREGRESSIVE_LIBRARY_NAMES = {"nflows_jax": "ours"}


def _model_label(model: str) -> str:
    kind, transformer = model.split("_")
    return f"{kind.upper()} {transformer}"


def autoregressive_times(ctx: Context) -> str:
    data = ctx.data["autoregressive.json"]
    rows = data["rows"]
    libraries = list(dict.fromkeys(r["library"] for r in rows))
    found = {(r["library"], r["model"], r["d"], r["direction"]): r for r in rows}
    both = "nflows_jax" in libraries and "flowjax" in libraries
    header = ["d", "model", "direction"]
    for lib in libraries:
        name = AUTOREGRESSIVE_LIBRARY_NAMES.get(lib, lib)
        header += [name, f"{name} compile"]
    if both:
        header += ["flowjax/ours (wall)", "(CPU)"]
    body = []
    for dim in sorted({r["d"] for r in rows}):
        for model in dict.fromkeys(r["model"] for r in rows):
            for direction in dict.fromkeys(r["direction"] for r in rows):
                cells = [str(dim), _model_label(model), direction]
                for lib in libraries:
                    r = found[lib, model, dim, direction]
                    cells += [duration(r["seconds"]), f"{r['compile_seconds']:.1f} s"]
                if both:
                    ours = found["nflows_jax", model, dim, direction]
                    theirs = found["flowjax", model, dim, direction]
                    cells.append(f"{theirs['seconds'] / ours['seconds']:.2f}")
                    cells.append(f"{theirs['cpu_seconds'] / ours['cpu_seconds']:.2f}")
                body.append(cells)
    meta = data["meta"]
    caption = (
        f"N = {meta['batch']}, L = {meta['layers']}, MADE hidden {tuple(meta['hidden'])}; "
        f"median of up to {meta['repeats']} calls within {meta['row_budget_seconds']:.0f} s per "
        "cell."
    )
    return "\n\n".join(
        [
            table(header, "lll" + "r" * (len(header) - 3), body),
            caption + " " + source_line(("autoregressive.json", data)),
        ]
    )


def autoregressive_iaf_speedup(ctx: Context) -> str:
    data = ctx.data["autoregressive.json"]
    ratios = [r for r in data["ratios"] if r["ratio"] == "iaf_sampling_speedup"]
    columns = list(dict.fromkeys((r["library"], r["transformer"]) for r in ratios))
    value = {(r["library"], r["transformer"], r["d"]): r for r in ratios}
    body = []
    for dim in sorted({r["d"] for r in ratios}):
        cells = [str(dim)]
        for library, transformer in columns:
            r = value[library, transformer, dim]
            cells.append(f"{count_ratio(r['value'])} ({count_ratio(r['cpu_value'])})")
        body.append(cells)
    header = ["d"] + [
        f"{AUTOREGRESSIVE_LIBRARY_NAMES.get(lib, lib)} {transformer}"
        for lib, transformer in columns
    ]
    return table(header, "r" * len(header), body)


def autoregressive_targets(ctx: Context) -> str:
    data = ctx.data["autoregressive.json"]
    ratios = data["ratios"]
    dim = max(r["d"] for r in ratios)

    def row(target: str, goal: float, selected: list[tuple[str, dict]], unit: str) -> list[str]:
        show = count_ratio if unit == "count" else "{:.2f}".format
        measured = ", ".join(
            f"{label} {show(r['value'])}× (CPU {show(r['cpu_value'])}×)" for label, r in selected
        )
        failed = []
        for label, r in selected:
            if r["value"] < goal:
                failed.append(f"{label} no (CPU: {'yes' if r['cpu_value'] >= goal else 'no'})")
        return [target, measured, verdict(failed)]

    body = []
    iaf = [
        (r["transformer"], r)
        for r in ratios
        if r["ratio"] == "iaf_sampling_speedup" and r["library"] == "nflows_jax" and r["d"] == dim
    ]
    body.append(row("IAF sampling ≥ 100× MAF sampling", 100, iaf, "count"))
    for direction, label in (("sample", "sampling"), ("log_prob", "density")):
        maf = [
            (r["model"].split("_")[1], r)
            for r in ratios
            if r["ratio"] == "flowjax_over_ours"
            and r["model"].startswith("maf")
            and r["direction"] == direction
            and r["d"] == dim
        ]
        if maf:
            body.append(row(f"ours ≥ flowjax, MAF {label}", 1, maf, "ratio"))
    return table(["target", f"measured (d = {dim}), wall (CPU)", "met? (wall)"], "lll", body)


def generation_speed(ctx: Context) -> str:
    main, gated = ctx.data["generation.json"], ctx.data["generation_gated.json"]
    body = []
    rows = [(r, "") for r in main["rows"]]
    for extra in gated["rows"]:
        # Beside the main file's row of the same model (at the end when it has none).
        same = [i for i, (r, _) in enumerate(rows) if r["model"] == extra["model"]]
        rows.insert(same[-1] + 1 if same else len(rows), (extra, " (`--rows gated` run)"))
    for r, suffix in rows:
        model = r["model"]
        if model == "wavenet":
            met = r["speedup"] >= 50
            body.append(
                [
                    f"WaveNet, T = {r['length']:,}, RF {r['receptive_field']:,}, "
                    f"batch {r['batch']}",
                    f"{r['naive_samples_per_s']:.1f} samples/s (a full run ≈ "
                    f"{duration(r['naive_full_length_s_extrapolated'])}, extrapolated)",
                    f"{r['fast_samples_per_s']:,.0f} samples/s ({r['fast_s']:.2f} s)",
                    f"**{speedup(r['speedup'])}**" if met else speedup(r["speedup"]),
                    f"≥ 50×: {'met' if met else 'not met'}",
                ]
            )
        elif model in ("pixelcnn", "gated_pixelcnn"):
            height, width, _ = r["image"]
            name = "PixelCNN" if model == "pixelcnn" else "Gated PixelCNN"
            met = r["speedup"] >= 10
            target = f"≥ 10×: {'met' if met else 'not met'}"
            if model == "gated_pixelcnn":
                met, target = False, "(the target names PixelCNN)"
            body.append(
                [
                    f"{name}, {height}×{width}, batch {r['batch']}{suffix}",
                    f"{r['naive_s']:.2f} s",
                    f"{r['fast_s']:.2f} s",
                    f"**{speedup(r['speedup'])}**" if met else speedup(r["speedup"]),
                    target,
                ]
            )
        elif model == "parallel_wavenet":
            met = r["speedup"] >= 10
            body.append(
                [
                    f"Parallel WaveNet student, T = {r['length']:,}, batch {r['batch']}",
                    f"teacher with queues: {r['teacher_fast_s']:.2f} s",
                    f"student: {r['student_s']:.3f} s",
                    f"**{speedup(r['speedup'])}**" if met else speedup(r["speedup"]),
                    f"≥ 10×: {'met' if met else 'not met'}",
                ]
            )
        else:
            raise ValueError(f"generation: no row format for model {model!r}")
    header = ["model", "naive loop (or teacher)", "fast sampler (or student)", "speed-up", "target"]
    return "\n\n".join(
        [
            table(header, "lrrrl", body),
            source_line(("generation.json", main), ("generation_gated.json", gated)),
        ]
    )


ADAPTATION_SAMPLERS = ("ours_window", "ours_chees", "bj_window_nuts", "bj_chees")
ADAPTATION_SETUP = ("num_chains", "num_warmup", "num_samples", "leapfrog")


def _sampler_order(sampler: str) -> int:
    return ADAPTATION_SAMPLERS.index(sampler) if sampler in ADAPTATION_SAMPLERS else 99


def adaptation_summary(ctx: Context) -> str:
    files = ("adaptation.json", "adaptation_chees_seeds.json")
    setups = {f: tuple(ctx.data[f]["meta"][k] for k in ADAPTATION_SETUP) for f in files}
    if len(set(setups.values())) != 1:
        raise ValueError(f"adaptation: the two files were run with different setups: {setups}")
    rows = [r for f in files for r in ctx.data[f]["rows"]]
    keys = sorted(
        {(r["target"], r["sampler"]) for r in rows}, key=lambda k: (k[0], _sampler_order(k[1]))
    )

    def cell(values: list[float], spec: str) -> str:
        if len(values) < 2:
            return format(values[0], spec)
        mean, se = mean_se(values)
        return f"{mean:{spec}} ± {se:{spec}}"

    body = []
    for target, sampler in keys:
        group = [r for r in rows if (r["target"], r["sampler"]) == (target, sampler)]
        body.append(
            [
                target,
                sampler,
                str(len(group)),
                cell([1000 * r["min_ess_per_gradient"] for r in group], ".3f"),
                cell([r["min_ess_per_second"] for r in group], ".1f"),
                f"{max(r['max_rhat'] for r in group):.4f}",
            ]
        )
    header = [
        "target",
        "sampler",
        "seeds",
        "min ESS / 1k grad",
        "min ESS / s",
        "max R-hat (worst seed)",
    ]
    meta = ctx.data["adaptation.json"]["meta"]
    caption = (
        f"{meta['num_chains']:,} chains, {meta['num_warmup']:,} warm-up + {meta['num_samples']:,} "
        "sampling steps; mean ± s.e. over seeds where there are several."
    )
    named = [(f, ctx.data[f]) for f in files]
    return "\n\n".join([table(header, "llrrrr", body), caption + " " + source_line(*named)])


def adaptation_rows(ctx: Context) -> str:
    data = ctx.data["adaptation.json"]
    rows = data["rows"]
    several_seeds = len({r["seed"] for r in rows}) > 1
    header = [
        "target",
        "sampler",
        "min ESS",
        "mean ESS",
        "gradients",
        "min ESS / 1k grad",
        "min ESS / s",
        "max R-hat",
        "warm-up s",
        "sampling s",
        "compile s",
    ]
    body = []
    for r in rows:
        cells = [
            r["target"],
            r["sampler"],
            f"{r['min_ess']:.0f}",
            f"{r['mean_ess']:.0f}",
            f"{r['gradients']:.3g}",
            f"{1000 * r['min_ess_per_gradient']:.3f}",
            f"{r['min_ess_per_second']:.1f}",
            f"{r['max_rhat']:.4f}",
            f"{r['warmup_seconds']:.1f}",
            f"{r['sampling_seconds']:.1f}",
            f"{r['compile_seconds']:.1f}",
        ]
        body.append([str(r["seed"]), *cells] if several_seeds else cells)
    if several_seeds:
        header = ["seed", *header]
    return "\n\n".join(
        [
            table(header, "l" * (len(header) - 9) + "r" * 9, body),
            source_line(("adaptation.json", data)),
        ]
    )


MCMC_ROW_NAMES = {
    "banana": "banana",
    "gauss_rwmh": "Gaussian RWMH",
    "gauss_hmc": "HMC",
    "ising": "Ising Gibbs",
}


def mcmc_speed(ctx: Context) -> str:
    data = ctx.data["mcmc.json"]
    body, previous = [], None
    for r in data["rows"]:
        title = ""
        if r["row"] != previous:
            title = f"{r['title']}, {r['num_chains']:,} × {r['num_steps']:,}"
            previous = r["row"]
        mine_or_floor = r["library"] in ("nflows_jax", "floor")
        body.append(
            [
                title,
                r["library"],
                rate(r["chain_steps_per_s"]),
                "—" if r["library"] == "floor" else f"{r['acceptance']:.3f}",
                "—" if mine_or_floor else f"{r['ours_speedup']:.2f}",
                f"{r['cost_over_floor']:.2f}",
                f"{r['cpu_cost_over_floor']:.2f}",
            ]
        )
    header = [
        "row",
        "library",
        "chain-steps/s",
        "acceptance",
        "ours/this",
        "cost/floor (wall)",
        "cost/floor (CPU)",
    ]
    caption = f"Best of {data['meta']['repeats']} timed calls per library."
    return "\n\n".join(
        [table(header, "llrrrrr", body), caption + " " + source_line(("mcmc.json", data))]
    )


def mcmc_targets(ctx: Context) -> str:
    rows = ctx.data["mcmc.json"]["rows"]
    by_row: dict[str, list[dict]] = {}
    for r in rows:
        by_row.setdefault(r["row"], []).append(r)
    body = []
    fastest, failed = [], []
    for name, group in by_row.items():
        peers = [r for r in group if r["library"] not in ("nflows_jax", "floor")]
        if not peers:
            continue
        best = min(peers, key=lambda r: r["ours_speedup"])
        label = MCMC_ROW_NAMES.get(name, name)
        fastest.append(f"{label} {times(best['ours_speedup'])} {best['library']}")
        if best["ours_speedup"] < 1:
            failed.append(f"{label} no")
    body.append(["≥ fastest peer on every row", ", ".join(fastest), verdict(failed)])
    hmc = {r["library"]: r for r in by_row.get("gauss_hmc", [])}
    if "blackjax" in hmc:
        value = hmc["blackjax"]["ours_speedup"]
        body.append(["HMC ≥ 1.5× blackjax", times(value), "yes" if value >= 1.5 else "no"])
    floors, failed = [], []
    for name, group in by_row.items():
        ours = next(r for r in group if r["library"] == "nflows_jax")
        label = MCMC_ROW_NAMES.get(name, name)
        floors.append(
            f"{label} {times(ours['cost_over_floor'])} wall "
            f"({times(ours['cpu_cost_over_floor'])} CPU)"
        )
        if ours["cost_over_floor"] > 1.2:
            cpu = "yes" if ours["cpu_cost_over_floor"] <= 1.2 else "no"
            failed.append(f"{label} no (CPU: {cpu})")
    body.append(["every kernel within 1.2× of its floor", ", ".join(floors), verdict(failed)])
    return table(["target", "measured", "met? (wall)"], "lll", body)


DIAGNOSTICS_CALLS = {
    "nflows_jax ESS bulk": "nflows_jax `effective_sample_size` (bulk, default)",
    "nflows_jax ESS mean": 'nflows_jax `effective_sample_size(variant="mean")`',
    "nflows_jax ESS tfp": 'nflows_jax `effective_sample_size(variant="tfp")`',
    "tfp effective_sample_size": "tfp `effective_sample_size`",
    "nflows_jax R-hat rank": "nflows_jax `split_rhat` (rank, default)",
    "nflows_jax R-hat classic": 'nflows_jax `split_rhat(variant="classic")`',
    "nflows_jax R-hat tfp": 'nflows_jax `split_rhat(variant="tfp")`',
    "tfp potential_scale_reduction": "tfp `potential_scale_reduction`",
    "arviz ess bulk": 'ArviZ `ess(method="bulk")`',
    "arviz rhat rank": 'ArviZ `rhat(method="rank")`',
}


def mcmc_diagnostics(ctx: Context) -> str:
    data = ctx.data["mcmc_diagnostics.json"]
    rows = data["diagnostics"]
    body = [
        [
            DIAGNOSTICS_CALLS.get(r["call"], r["call"]),
            f"{r['seconds']:.2f}",
            f"{r['cpu_seconds']:.2f}",
        ]
        for r in rows
    ]
    chains, draws, params = rows[0]["shape"]
    caption = (
        f"{chains:,} chains × {draws:,} draws × {params} parameters, best of "
        f"{data['meta']['repeats']}."
    )
    return "\n\n".join(
        [
            table(["call", "wall (s)", "CPU (s)"], "lrr", body),
            caption + " " + source_line(("mcmc_diagnostics.json", data)),
        ]
    )


def scaling_figures(ctx: Context) -> str:
    figures = ctx.data["scaling.json"].get("figures", {})
    links = []
    for sweep, path in figures.items():
        target = Path(path) if Path(path).is_absolute() else ROOT / path
        links.append(f"![{sweep}]({Path(os.path.relpath(target, ctx.out_dir)).as_posix()})")
    return "\n\n".join(links) if links else "*scaling.json names no figures.*"


def _generic_cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return format(value, ".3g")
    if isinstance(value, list):
        if value and all(isinstance(v, int | float) for v in value):
            return f"{_generic_cell(value[0])} … {_generic_cell(value[-1])} ({len(value)})"
        return ", ".join(_generic_cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def generic_table(records: Sequence[dict[str, Any]]) -> str:
    """Any list of flat records as a table: the keys, in order of first appearance, are columns."""
    columns = list(dict.fromkeys(key for record in records for key in record))
    body = [[_generic_cell(record.get(c)) for c in columns] for record in records]

    def numeric(column: str) -> bool:
        values = [r[column] for r in records if r.get(column) is not None]
        return bool(values) and all(isinstance(v, int | float) for v in values)

    align = "".join("r" if numeric(c) else "l" for c in columns)
    return table(columns, align, body)


def scaling_table(ctx: Context) -> str:
    data = ctx.data["scaling.json"]
    # The slopes are the sweeps' summary (one record per line of a figure); fall back to the
    # raw points when a file has none.
    records = data.get("slopes") or data.get("rows") or []
    if not records:
        return "*scaling.json has no rows.*"
    return "\n\n".join([generic_table(records), source_line(("scaling.json", data))])


# ------------------------------------------------------------------------------------------------
# The environment


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _os_name() -> str | None:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return None


def _git_commit() -> dict[str, Any] | None:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit, "modified_files": len(status.splitlines())}


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def current_environment() -> dict[str, Any]:
    """The machine and package versions of this process (no JAX import, no clock)."""
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": _memory_gib(),
        "os": _os_name(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "git": _git_commit(),
    }


def _same_version(a: str, b: str) -> bool:
    return a.replace("-", ".") == b.replace("-", ".")


# Which recorded meta key of a result file names which package.
META_PACKAGES = {"jax": "jax", "blackjax": "blackjax", "flowjax": "flowjax", "tfp": "tfp-nightly"}


def version_mismatches(environment: dict[str, Any], results: dict[str, Any]) -> list[str]:
    """Result files whose own recorded package versions differ from the environment's."""
    packages = environment.get("packages", {})
    out = []
    for filename, data in sorted(results.items()):
        meta = {**data, **data.get("meta", {})} if isinstance(data, dict) else {}
        for key, package in META_PACKAGES.items():
            recorded, stated = meta.get(key), packages.get(package)
            if isinstance(recorded, str) and stated and not _same_version(recorded, stated):
                out.append(f"`{filename}` ran with {package} {recorded}")
    return out


def environment_markdown(
    environment: dict[str, Any], recorded: bool, mismatches: Sequence[str]
) -> str:
    parts = []
    if recorded:
        when = environment.get("started_utc", "?")
        if environment.get("environment_only"):
            line = f"Recorded by `benchmarks/run_all.py --environment-only` on {when} (UTC)."
        elif environment.get("quick"):
            line = (
                f"Recorded by `make bench QUICK=1`, started {when} (UTC): a **quick smoke run**, "
                "its numbers mean nothing."
            )
        else:
            line = f"Recorded by `make bench`, started {when} (UTC)."
        parts.append(line)
        if environment.get("note"):
            parts.append(environment["note"])
    else:
        parts.append(
            f"**`{ENVIRONMENT_FILE}` is missing from the results folder: this is the environment "
            "the report was rendered in, not necessarily the one the numbers were measured in.**"
        )
    memory = environment.get("memory_gib")
    machine = (
        f"Machine: {environment.get('cpu_model') or 'unknown CPU'} "
        f"({environment.get('machine', '?')}), {environment.get('cpu_count', '?')} cores "
        f"({environment.get('cpus_usable', '?')} usable), "
        + (f"{memory:.1f} GiB RAM" if memory else "RAM unknown")
        + f"; {environment.get('os') or '?'}, {environment.get('platform', '?')}; "
        f"Python {environment.get('python', '?')}"
    )
    if environment.get("jax_devices"):
        machine += "; JAX devices: " + ", ".join(environment["jax_devices"])
    git = environment.get("git")
    if git:
        dirty = f", {git['modified_files']} files modified" if git["modified_files"] else ""
        machine += f"; nflows_jax at commit `{git['commit'][:12]}`{dirty}"
    parts.append(machine + ".")
    packages = environment.get("packages", {})
    parts.append(
        table(
            ["package", "version"],
            "ll",
            [[name, version or "not installed"] for name, version in packages.items()],
        )
    )
    scripts = environment.get("scripts")
    if scripts:
        body = [[f"`{s['command']}`", f"{s['wall_s']:.0f}", str(s["returncode"])] for s in scripts]
        total = sum(s["wall_s"] for s in scripts)
        parts.append(table(["command", "wall (s)", "exit"], "lrr", body))
        parts.append(f"{total / 60:.1f} minutes in all.")
    if mismatches:
        parts.append(
            "Result files whose own recorded versions differ from the table above (rerun by "
            "hand since): " + "; ".join(mismatches) + "."
        )
    return "\n\n".join(parts)


# ------------------------------------------------------------------------------------------------
# The registry and the document


class Renderer(NamedTuple):
    sources: tuple[str, ...]  # JSON files in the results folder; all must exist
    render: Callable[[Context], str]


RENDERERS: dict[str, Renderer] = {
    "flows_2d/speed": Renderer(("flows_2d.json",), flows_2d_speed),
    "flows_2d/targets": Renderer(("flows_2d.json",), flows_2d_targets),
    "flows_2d/quality": Renderer(("flows_2d.json",), flows_2d_quality),
    "flows_ablation/two_moons": Renderer(
        ("flows_ablation.json",), ablation_table("flows_ablation.json")
    ),
    "flows_ablation/tail": Renderer(
        ("flows_ablation_tail.json",), ablation_table("flows_ablation_tail.json")
    ),
    "glow/scan": Renderer(("glow.json",), glow_table("glow.json")),
    "glow/default": Renderer(("glow_default.json",), glow_table("glow_default.json")),
    "autoregressive/times": Renderer(("autoregressive.json",), autoregressive_times),
    "autoregressive/iaf_speedup": Renderer(("autoregressive.json",), autoregressive_iaf_speedup),
    "autoregressive/targets": Renderer(("autoregressive.json",), autoregressive_targets),
    "generation/speed": Renderer(("generation.json", "generation_gated.json"), generation_speed),
    "adaptation/summary": Renderer(
        ("adaptation.json", "adaptation_chees_seeds.json"), adaptation_summary
    ),
    "adaptation/rows": Renderer(("adaptation.json",), adaptation_rows),
    "mcmc/speed": Renderer(("mcmc.json",), mcmc_speed),
    "mcmc/targets": Renderer(("mcmc.json",), mcmc_targets),
    "mcmc/diagnostics": Renderer(("mcmc_diagnostics.json",), mcmc_diagnostics),
    "scaling/figures": Renderer(("scaling.json",), scaling_figures),
    "scaling/table": Renderer(("scaling.json",), scaling_table),
}
ENVIRONMENT_REGION = "environment"
KNOWN_REGIONS = (ENVIRONMENT_REGION, *RENDERERS)


def load_results(results_dir: Path) -> dict[str, Any]:
    """Every JSON file of the results folder, by file name."""
    return {
        path.name: json.loads(path.read_text()) for path in sorted(Path(results_dir).glob("*.json"))
    }


def render_region(name: str, results: dict[str, Any], out_dir: Path) -> str | None:
    """The Markdown of one region, or None when one of its JSON files is missing."""
    if name == ENVIRONMENT_REGION:
        recorded = ENVIRONMENT_FILE in results
        environment = results[ENVIRONMENT_FILE] if recorded else current_environment()
        others = {k: v for k, v in results.items() if k != ENVIRONMENT_FILE}
        return environment_markdown(environment, recorded, version_mismatches(environment, others))
    renderer = RENDERERS[name]
    if any(source not in results for source in renderer.sources):
        return None
    context = Context({s: results[s] for s in renderer.sources}, Path(out_dir))
    try:
        return renderer.render(context)
    except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError) as error:
        raise RuntimeError(
            f"region {name!r}: cannot render from {', '.join(renderer.sources)}: "
            f"{type(error).__name__}: {error}"
        ) from error


def print_tables(result_path: Path) -> None:
    """Print every region rendered from the results file just written at ``result_path`` (with
    the other files beside it), as BENCHMARKS.md shows it: the benchmark scripts print their
    tables with these renderers, so each table has one definition."""
    result_path = Path(result_path)
    results = load_results(result_path.parent)
    names = [name for name, r in RENDERERS.items() if result_path.name in r.sources]
    if not names:
        print(f"(no BENCHMARKS.md table reads {result_path.name})")
    for name in names:
        rendered = render_region(name, results, result_path.parent)
        missing = [s for s in RENDERERS[name].sources if s not in results]
        print(f"\n{name}:" + (f" needs {', '.join(missing)} too" if rendered is None else ""))
        if rendered is not None:
            print(rendered)


def render_document(text: str, results: dict[str, Any], out_dir: Path) -> tuple[str, list[str]]:
    """The document with every region re-rendered, and the warnings (regions left as they were)."""
    lines = text.split("\n")
    regions = find_regions(lines, KNOWN_REGIONS)
    warnings, out, position = [], [], 0
    for region in regions:
        out += lines[position : region.begin + 1]
        rendered = render_region(region.name, results, out_dir)
        if rendered is None:
            missing = [s for s in RENDERERS[region.name].sources if s not in results]
            warnings.append(f"{region.name}: left as it was, {', '.join(missing)} missing")
            out += lines[region.begin + 1 : region.end]
        else:
            out += ["", *rendered.split("\n"), ""]
        position = region.end
    out += lines[position:]
    return "\n".join(out), warnings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="folder of JSONs")
    parser.add_argument("--template", type=Path, default=DEFAULT_MARKDOWN, help="Markdown read")
    parser.add_argument("--out", type=Path, default=None, help="Markdown written (the template)")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the output would change"
    )
    args = parser.parse_args(argv)
    out = args.out or args.template
    text = args.template.read_text()
    results = load_results(args.results)
    if ENVIRONMENT_FILE not in results:
        print(
            f"warning: no {ENVIRONMENT_FILE} in {args.results}: the header describes the current "
            "environment",
            file=sys.stderr,
        )
    rendered, warnings = render_document(text, results, out.resolve().parent)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    current = out.read_text() if out.exists() else None
    if args.check:
        if rendered != current:
            print(f"{out} is not up to date with {args.results}: run make bench-report")
            return 1
        print(f"{out} is up to date")
        return 0
    if rendered != current:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(rendered)
        print(f"wrote {out}")
    else:
        print(f"{out} unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How cost grows with the work: five sweeps, ours beside the peers where they exist (log-log).

Sweeps (each point timed by ``timing.time_calls``: compile apart, then the median of repeated
calls within a per-point time budget, the libraries of a point called round-robin so that load
from other processes falls on all of them alike):

  chains      chain-steps/s against the number of chains (10 .. 100k) on a 2-d standard
              Gaussian, 100 steps per call: RWMH and HMC (10 leapfrog steps), nflows_jax beside
              blackjax and TFP and the floor, each built by ``mcmc.py`` (same kernels, same
              driving code, same stored output; the floor does only the log-density evaluations
              and draws the random numbers).
  dimension   the same samplers and libraries against the dimension D = 2 .. 512 at 1,000 chains.
              The proposal scale shrinks as 2.38 / sqrt(D) (RWMH) and the step size as
              (2 / D)^(1/4) (HMC), so acceptance stays in the same range at every D.
  flow_depth  seconds per Adam train step of a K-coupling RealNVP on 2-d data (batch 512, MLP
              64-64), K = 1 .. 32: nflows_jax (the layers in one ``lax.scan``), distrax (a Python
              ``Chain``) and flowjax (scanned, equinox), each built by ``flows_2d.py``; the compile
              seconds against K beside it.
  image_size  seconds per Adam train step of our multi-scale image flows on H×H×1 images,
              H = 8 .. 64, batch 16: Glow (2 levels of 4 steps, ConvResNet 64 channels, one block;
              the library's CPU default, unrolled) and multi-scale RealNVP (2 levels, 2 pairs per
              mask, ConvResNet 64 channels, two blocks). No peer: neither distrax nor flowjax
              ships a multi-scale image flow, and ``glow.py`` compares our own variants only.
  generation  seconds to generate T steps of a WaveNet (dilations 1..512 twice, 32 residual and
              64 skip channels, 256-way softmax; ``generation.py``'s model), batch 8,
              T = 256 .. 8192: ``sample_fast`` (per-layer queues) whole; the naive loop (a full
              pass over the length-T buffer per step) timed over its first 8 steps and scaled by
              T / 8 (each of its steps costs the same), and also run whole where that is short,
              to check the scaling. Beside it, PixelCNN (64 features, 6 layers, Bernoulli) naive
              and fast sampling of 8 images against the image side.

Slopes: each line's log-log slope of seconds per call against x, over all its points and over its
top three (the large-x regime), are in the JSON and the legends: 1 = cost linear in x.

Noise: on a 2-core machine shared with other work, XLA's thread pool gets two cores or one
depending on what else runs, so a call can take up to twice as long from one minute to the next
(``cpu_seconds / seconds`` in a row says how many cores its calls got, and each row keeps the
1-minute load average). Compare the libraries within a point; read slopes over a decade or more.

    python benchmarks/scaling.py              # every sweep (about 7 minutes on 2 CPU cores)
    python benchmarks/scaling.py --quick      # 2-3 points per sweep, tiny sizes (< 2 minutes)
    python benchmarks/scaling.py --sweeps chains dimension --budget-s 3

Writes ``--out`` (default benchmarks/results/scaling.json; with ``--quick``
runs/bench-quick/scaling.json) and one PNG per sweep into ``--figures`` (default docs/benchmarks/;
with ``--quick``, the folder of ``--out``), so a smoke run never overwrites the committed results.
``--replot`` redraws the figures from ``--out``'s rows without timing anything.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

matplotlib.use("Agg")
import flows_2d  # benchmarks/ is on sys.path when run as a script
import glow
import matplotlib.pyplot as plt
import matplotlib.ticker as ticker
import mcmc
from timing import time_call, time_calls
from train_step import adam_step

from nflows_jax import flows
from nflows_jax.bijectors import architectures
from nflows_jax.data import two_moons
from nflows_jax.models.likelihoods import bernoulli, categorical
from nflows_jax.models.pixelcnn import PixelCNNNet, image_autoregressive
from nflows_jax.models.wavenet import wavenet, wavenet_dilations
from nflows_jax.targets.energies import ill_conditioned_gaussian
from nflows_jax.testing import perturb

Array = jax.Array
Row = dict[str, Any]
SWEEPS = ("chains", "dimension", "flow_depth", "image_size", "generation")


class Sizes(NamedTuple):
    """Every sweep's x values and fixed sizes, full or quick."""

    chains: tuple[int, ...]
    chains_dim: int
    dims: tuple[int, ...]
    dims_chains: int
    mcmc_steps: int
    depths: tuple[int, ...]
    image_sides: tuple[int, ...]
    image_batch: int
    image_steps: int  # Glow steps per level; RealNVP gets half as many coupling pairs per mask
    image_hidden: int
    image_variants: int  # 2: Glow and RealNVP; 1: Glow only
    lengths: tuple[int, ...]
    naive_full_max_length: int  # the naive WaveNet loop also runs whole up to this length
    wavenet_layers: int  # dilations 1 .. 2^(layers-1), twice
    pixelcnn_sides: tuple[int, ...]
    pixelcnn_features: int
    pixelcnn_layers: int
    generation_batch: int


FULL = Sizes(
    chains=(10, 100, 1_000, 10_000, 100_000),
    chains_dim=2,
    dims=(2, 8, 32, 128, 512),
    dims_chains=1_000,
    mcmc_steps=100,
    depths=(1, 2, 4, 8, 16, 32),
    image_sides=(8, 16, 32, 64),
    image_batch=16,
    image_steps=4,
    image_hidden=64,
    image_variants=2,
    lengths=(256, 512, 1024, 2048, 4096, 8192),
    naive_full_max_length=512,
    wavenet_layers=10,
    pixelcnn_sides=(7, 14, 28),
    pixelcnn_features=64,
    pixelcnn_layers=6,
    generation_batch=8,
)
QUICK = Sizes(
    chains=(10, 1_000),
    chains_dim=2,
    dims=(2, 32),
    dims_chains=100,
    mcmc_steps=10,
    depths=(1, 4),
    image_sides=(8, 16),
    image_batch=4,
    image_steps=2,
    image_hidden=8,
    image_variants=1,
    lengths=(64, 256),
    naive_full_max_length=64,
    wavenet_layers=4,
    pixelcnn_sides=(4, 8),
    pixelcnn_features=16,
    pixelcnn_layers=2,
    generation_batch=2,
)

HMC_LEAPFROG_STEPS = 10
NAIVE_PREFIX_STEPS = 8


def make_row(
    sweep: str,
    panel: str,
    library: str,
    x_name: str,
    x: int,
    timing: dict[str, Any],
    work: float,
    unit: str,
    **extra: Any,
) -> Row:
    """One JSON row: ``work`` units per call, so throughput = work / median seconds."""
    timing = {name: value for name, value in timing.items() if name != "output"}
    row = {
        "sweep": sweep,
        "panel": panel,
        "library": library,
        "x_name": x_name,
        "x": x,
        **timing,
        "work_per_call": work,
        "throughput": work / timing["seconds"],
        "throughput_unit": unit,
        "load_average_1min": os.getloadavg()[0],  # other processes share the cores
        **extra,
    }
    print(
        f"  {sweep:10s} {panel:22s} {library:22s} {x_name}={x:<7,} "
        f"{timing['seconds']:9.4f} s/call  {work / timing['seconds']:12.4g} {unit:14s} "
        f"compile {timing['compile_s']:5.2f} s  ({timing['repeats']} calls)",
        flush=True,
    )
    return row


# ------------------------------------------------------------------------------------------------
# MCMC: chains and dimension


def gaussian_case(sampler: str, num_chains: int, dim: int, num_steps: int, key: Array):
    """An ``mcmc.Case`` on the D-d standard Gaussian, chains started at exact draws.

    Named like ``mcmc.py``'s Gaussian rows, so ``mcmc.runners_for`` builds every library's
    runner for it exactly as that benchmark does.
    """
    target = ill_conditioned_gaussian(dim=dim, condition_number=1.0)  # identity covariance
    positions = jax.random.normal(key, (num_chains, dim))
    if sampler == "rwmh":
        return mcmc.Case(
            "gauss_rwmh", "RWMH", num_chains, num_steps, target.logdensity, positions,
            2.38 / math.sqrt(dim),
        )  # fmt: skip
    return mcmc.Case(
        "gauss_hmc", f"HMC (L={HMC_LEAPFROG_STEPS})", num_chains, num_steps, target.logdensity,
        positions, (2.0 / dim) ** 0.25, HMC_LEAPFROG_STEPS,
    )  # fmt: skip


def mcmc_sweep(
    sweep: str, points: list[tuple[int, int]], num_steps: int, budget_s: float, key: Array
) -> list[Row]:
    """(num_chains, dim) points; every sampler and library at each, chain-steps/s."""
    rows = []
    x_name = "num_chains" if sweep == "chains" else "dim"
    for sampler in ("rwmh", "hmc"):
        for index, (num_chains, dim) in enumerate(points):
            case_key, run_key = jax.random.split(jax.random.fold_in(key, index))
            case = gaussian_case(sampler, num_chains, dim, num_steps, case_key)
            runners = mcmc.runners_for(case)
            calls = {
                name: (run, (run_key, case.initial_positions)) for name, run in runners.items()
            }
            timings = time_calls(calls, budget_s=budget_s, min_repeats=5)
            for library, timing in timings.items():
                _, acceptance = timing["output"]
                rows.append(
                    make_row(
                        sweep,
                        case.title,
                        library,
                        x_name,
                        num_chains if sweep == "chains" else dim,
                        timing,
                        num_chains * num_steps,
                        "chain-steps/s",
                        num_chains=num_chains,
                        dim=dim,
                        num_steps=num_steps,
                        scale=case.scale,
                        acceptance=None if library == "floor" else float(acceptance),
                    )
                )
    return rows


# ------------------------------------------------------------------------------------------------
# Flows: depth (2-d RealNVP, three libraries) and image size (ours)


def flow_depth_sweep(sizes: Sizes, budget_s: float, key: Array) -> list[Row]:
    batch = two_moons(key, flows_2d.BATCH)
    rows = []
    for num_layers in sizes.depths:
        calls = {}
        for library, setup in flows_2d.LIBRARIES.items():
            step, state, _ = setup(num_layers, jax.random.PRNGKey(1))
            calls[library] = (step, (state, batch))
        for library, timing in time_calls(calls, budget_s=budget_s).items():
            rows.append(
                make_row(
                    "flow_depth",
                    "RealNVP on 2-d data",
                    library,
                    "layers",
                    num_layers,
                    timing,
                    1,
                    "steps/s",
                    batch=flows_2d.BATCH,
                    hidden=list(flows_2d.HIDDEN),
                )
            )
    return rows


def image_flows(sizes: Sizes, shape: tuple[int, int, int]) -> dict[str, object]:
    """Our multi-scale flows on ``shape``, 2 levels each (the library's CPU default unroll)."""
    steps, hidden = sizes.image_steps, sizes.image_hidden
    builders = {
        f"Glow (2 levels × {steps} steps)": lambda: architectures.glow(
            shape, levels=2, steps_per_level=steps, hidden=hidden, num_blocks=1
        ),
        f"RealNVP multi-scale (2 levels × {steps // 2} pairs)": (
            lambda: architectures.realnvp_multiscale(
                shape, levels=2, steps_per_level=steps // 2, hidden=hidden, num_blocks=2
            )
        ),
    }
    return {name: build() for name, build in list(builders.items())[: sizes.image_variants]}


def image_train_step(bijector, image_shape: tuple[int, int, int]):
    """(flow, step): the same Adam train step as ``glow.py``'s (mean negative log_prob)."""
    flow = flows.Flow(flows.standard_normal(image_shape), bijector)

    def loss_fn(params, x):
        return -jnp.mean(flows.log_prob(flow, params, x))

    return flow, adam_step(loss_fn, IMAGE_OPTIMIZER)


IMAGE_OPTIMIZER = optax.adam(glow.LEARNING_RATE)


def init_params(flow, key: Array, batch: Array):
    """``flows.init`` under ``jax.jit``: the same params, in half the time of the eager call."""
    return jax.jit(lambda key, x: flows.init(flow, key, x))(key, batch)


def shapes(tree) -> Any:
    return jax.tree.map(lambda leaf: (leaf.shape, leaf.dtype), tree)


def image_size_sweep(sizes: Sizes, budget_s: float, key: Array) -> list[Row]:
    """Each flow's params are initialised once, on the smallest images, and reused at every size:
    they are convolution kernels and per-channel values, whose shapes do not depend on H and W
    (checked with ``jax.eval_shape``), and initialising costs more than timing a step."""
    data_key, init_key = jax.random.split(key)
    params = {}
    rows = []
    for side in sizes.image_sides:
        shape = (side, side, 1)
        # Dequantised-looking pixels in [0, 1): the step's cost does not depend on the values.
        batch = jax.random.uniform(jax.random.fold_in(data_key, side), (sizes.image_batch, *shape))
        calls = {}
        for variant, bijector in image_flows(sizes, shape).items():
            flow, step = image_train_step(bijector, shape)
            if variant not in params:
                params[variant] = init_params(flow, init_key, batch)
            expected = jax.eval_shape(lambda x, flow=flow: flows.init(flow, init_key, x), batch)
            if shapes(expected) != shapes(params[variant]):
                raise ValueError(f"{variant}: params at {side}×{side} differ from the first size")
            calls[variant] = (
                step,
                ((params[variant], IMAGE_OPTIMIZER.init(params[variant])), batch),
            )
        for variant, timing in time_calls(calls, budget_s=budget_s, min_repeats=2).items():
            rows.append(
                make_row(
                    "image_size",
                    "train step (slope 2: linear in pixels)",
                    variant,
                    "side",
                    side,
                    timing,
                    sizes.image_batch,
                    "images/s",
                    batch=sizes.image_batch,
                    pixels=side * side,
                )
            )
    return rows


# ------------------------------------------------------------------------------------------------
# Generation: WaveNet against length, PixelCNN against image side


def naive_prefix(model, batch: int, length: int, num_steps: int):
    """The naive loop's first ``num_steps`` steps on a length-T buffer (each a full pass)."""

    def run(params, key):
        def step(t, x):
            out = model.outputs(params, x)[:, t]
            return x.at[:, t].set(model.likelihood.sample(jax.random.fold_in(key, t), out))

        return jax.lax.fori_loop(0, num_steps, step, jnp.zeros((batch, length), jnp.int32))

    return run


def wavenet_rows(sizes: Sizes, budget_s: float) -> list[Row]:
    dilations = wavenet_dilations(2, sizes.wavenet_layers)
    model = wavenet(categorical(256), dilations, channels=32, skip_channels=64)
    params = perturb(model.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.05)
    key = jax.random.PRNGKey(2)
    batch = sizes.generation_batch
    panel = f"WaveNet (RF {model.receptive_field})"
    rows = []
    for length in sizes.lengths:
        work = batch * length

        def fast(params, key, length=length):
            return model.sample_fast(params, key, batch, length)

        timing = time_call(fast, params, key, budget_s=budget_s)
        rows.append(
            make_row("generation", panel, "fast (queues)", "length", length, timing, work,
                     "samples/s", batch=batch)
        )  # fmt: skip
        prefix = time_call(
            naive_prefix(model, batch, length, NAIVE_PREFIX_STEPS), params, key, budget_s=budget_s
        )
        scale = length / NAIVE_PREFIX_STEPS  # every naive step is the same full pass
        scaled = {
            **prefix,
            "seconds": prefix["seconds"] * scale,
            "cpu_seconds": prefix["cpu_seconds"] * scale,
            "all_seconds": [s * scale for s in prefix["all_seconds"]],
        }
        rows.append(
            make_row("generation", panel, "naive (from 8 steps)", "length", length, scaled, work,
                     "samples/s", batch=batch, extrapolated_from_steps=NAIVE_PREFIX_STEPS,
                     measured_prefix_seconds=prefix["seconds"])
        )  # fmt: skip
        if length <= sizes.naive_full_max_length:

            def naive(params, key, length=length):
                return model.sample_naive(params, key, batch, length)

            timing = time_call(naive, params, key, budget_s=budget_s, min_repeats=2)
            rows.append(
                make_row("generation", panel, "naive (whole loop)", "length", length, timing,
                         work, "samples/s", batch=batch)
            )  # fmt: skip
    return rows


def pixelcnn_rows(sizes: Sizes, budget_s: float) -> list[Row]:
    rows = []
    batch = sizes.generation_batch
    net = PixelCNNNet(features=sizes.pixelcnn_features, num_layers=sizes.pixelcnn_layers)
    for side in sizes.pixelcnn_sides:
        model = image_autoregressive(net, bernoulli(), (side, side, 1))
        params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, side, side, 1), jnp.int32))
        key = jax.random.PRNGKey(3)
        for variant, sampler in (("naive", model.sample), ("fast (windows)", model.sample_fast)):

            def draw(params, key, sampler=sampler):
                return sampler(params, key, batch)

            timing = time_call(draw, params, key, budget_s=budget_s, min_repeats=2)
            rows.append(
                make_row("generation", "PixelCNN", variant, "side", side, timing,
                         batch * side * side, "pixels/s", batch=batch)
            )  # fmt: skip
    return rows


def generation_sweep(sizes: Sizes, budget_s: float, key: Array) -> list[Row]:
    del key  # the models use fixed keys, as generation.py does
    return wavenet_rows(sizes, budget_s) + pixelcnn_rows(sizes, budget_s)


# ------------------------------------------------------------------------------------------------
# Slopes and figures


def log_slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y against log x (None with fewer than two points)."""
    if len(xs) < 2:
        return None
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def lines(rows: list[Row]) -> dict[tuple[str, str, str], list[Row]]:
    """Rows grouped by (sweep, panel, library), sorted by x."""
    grouped: dict[tuple[str, str, str], list[Row]] = {}
    for row in rows:
        grouped.setdefault((row["sweep"], row["panel"], row["library"]), []).append(row)
    return {k: sorted(v, key=lambda r: r["x"]) for k, v in grouped.items()}


def slopes(rows: list[Row]) -> list[dict[str, Any]]:
    """Each line's log-log slope of seconds per call against x: all points and the top three."""
    out = []
    for (sweep, panel, library), line in lines(rows).items():
        xs, seconds = [r["x"] for r in line], [r["seconds"] for r in line]
        out.append(
            {
                "sweep": sweep,
                "panel": panel,
                "library": library,
                "x": xs,
                "slope_all": log_slope(xs, seconds),
                "slope_top3": log_slope(xs[-3:], seconds[-3:]),
            }
        )
    return out


FIGURE_FILES = {
    "chains": "scaling_chains.png",
    "dimension": "scaling_dimension.png",
    "flow_depth": "scaling_flow_depth.png",
    "image_size": "scaling_image_size.png",
    "generation": "scaling_generation.png",
}
X_LABELS = {
    "num_chains": "chains",
    "dim": "dimension D",
    "layers": "coupling layers K",
    "side": "image side H (H×H×1)",
    "length": "sequence length T",
}
STYLES = {"floor": {"color": "0.5", "linestyle": "--"}}


def figure_text(sweep: str, sizes: Sizes) -> tuple[str, str, str]:
    """(title, y key of the rows, y label) of a sweep's figure."""
    steps = f"{sizes.mcmc_steps} steps per call"
    if sweep == "chains":
        title = f"MCMC throughput vs number of chains ({sizes.chains_dim}-d Gaussian, {steps})"
        return title, "throughput", "chain-steps / s"
    if sweep == "dimension":
        title = f"MCMC throughput vs dimension ({sizes.dims_chains:,} chains, {steps})"
        return title, "throughput", "chain-steps / s"
    if sweep == "flow_depth":
        title = f"RealNVP on 2-d data, batch {flows_2d.BATCH}: Adam train step vs depth"
        return title, "seconds", "seconds per train step"
    if sweep == "image_size":
        title = f"Our multi-scale image flows, batch {sizes.image_batch}: Adam train step vs size"
        return title, "seconds", "seconds per train step"
    title = f"Generation time, batch {sizes.generation_batch}"
    return title, "seconds", "seconds per call (whole generation)"


def short_number(value: float) -> str:
    """10, 100, 1k, 10k, 100k: tick labels."""
    return f"{value / 1000:g}k" if value >= 1000 and value % 1000 == 0 else f"{value:g}"


def label(library: str, line: list[Row]) -> str:
    """The line's name and the log-log slope of its time over its top three points."""
    xs, seconds = [r["x"] for r in line], [r["seconds"] for r in line]
    slope = log_slope(xs[-3:], seconds[-3:])
    return library if slope is None else f"{library}: time ∝ x^{slope:.2f}"


def style_axis(ax, x_values: list[int], x_name: str, y_key: str) -> None:
    """Log-log; x ticks at the sweep's values; y ticks at 1, 2, 5 per decade (short sweeps span
    less than a decade, where plain log ticks would leave the axis unlabelled)."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(x_values, [short_number(x) for x in x_values])
    ax.minorticks_off()
    ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    if y_key == "throughput":
        ax.yaxis.set_major_formatter(ticker.EngFormatter(sep=" "))
    else:
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    ax.set_xlabel(X_LABELS[x_name])
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)


def draw_figure(sweep: str, rows: list[Row], sizes: Sizes, machine: str, path: Path) -> None:
    """One panel per ``panel`` of the sweep (plus compile time against depth for flow_depth)."""
    title, y_key, y_label = figure_text(sweep, sizes)
    sweep_lines = {k: v for k, v in lines(rows).items() if k[0] == sweep}
    panels = list(dict.fromkeys(panel for _, panel, _ in sweep_lines))
    with_compile_panel = sweep in ("flow_depth", "image_size")
    num_axes = len(panels) + with_compile_panel
    fig, axes = plt.subplots(1, num_axes, figsize=(5.6 * num_axes, 3.9), squeeze=False)
    axes = list(axes[0])
    for ax, panel in zip(axes, panels, strict=False):
        panel_lines = {k[2]: v for k, v in sweep_lines.items() if k[1] == panel}
        for library, line in panel_lines.items():
            xs, ys = [r["x"] for r in line], [r[y_key] for r in line]
            ax.plot(xs, ys, marker="o", label=label(library, line), **STYLES.get(library, {}))
        x_values = sorted({r["x"] for line in panel_lines.values() for r in line})
        ax.set_title(panel, fontsize=10)
        ax.set_ylabel(y_label)
        style_axis(ax, x_values, next(iter(panel_lines.values()))[0]["x_name"], y_key)
    if with_compile_panel:
        ax = axes[-1]
        for (_, _, library), line in sweep_lines.items():
            ax.plot([r["x"] for r in line], [r["compile_s"] for r in line], marker="o",
                    label=library)  # fmt: skip
        ax.set_title("compile: lower + XLA compile, nothing run", fontsize=10)
        ax.set_ylabel("compile seconds")
        style_axis(ax, x_values, line[0]["x_name"], "compile_s")
    fig.suptitle(f"{title} — {machine}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------


def machine_name() -> str:
    device = jax.devices()[0]
    if device.platform == "cpu":
        return f"{len(os.sched_getaffinity(0))} CPU cores"
    return f"1 {device.device_kind}"


def run_sweep(sweep: str, sizes: Sizes, budget_s: float, key: Array) -> list[Row]:
    if sweep == "chains":
        points = [(c, sizes.chains_dim) for c in sizes.chains]
        return mcmc_sweep(sweep, points, sizes.mcmc_steps, budget_s, key)
    if sweep == "dimension":
        points = [(sizes.dims_chains, d) for d in sizes.dims]
        return mcmc_sweep(sweep, points, sizes.mcmc_steps, budget_s, key)
    if sweep == "flow_depth":
        return flow_depth_sweep(sizes, budget_s, key)
    if sweep == "image_size":
        return image_size_sweep(sizes, budget_s, key)
    return generation_sweep(sizes, budget_s, key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2-3 points per sweep, tiny sizes")
    parser.add_argument("--sweeps", nargs="+", choices=SWEEPS, default=list(SWEEPS))
    parser.add_argument(
        "--budget-s", type=float, default=None, help="timed seconds per point (3 calls at least)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        default=None,
        help="JSON path (default benchmarks/results/scaling.json; runs/bench-quick/ with --quick)",
    )
    parser.add_argument("--figures", default=None, help="folder for the PNGs (see the docstring)")
    parser.add_argument(
        "--replot", action="store_true", help="redraw the figures from --out's rows, time nothing"
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    budget_s = args.budget_s if args.budget_s is not None else (0.2 if args.quick else 1.0)
    default_out = "runs/bench-quick" if args.quick else "benchmarks/results"
    out = Path(args.out or f"{default_out}/scaling.json")
    figures = Path(args.figures or (out.parent if args.quick else "docs/benchmarks"))
    machine = machine_name()
    if args.replot:
        report = json.loads(out.read_text())
        sizes = Sizes(**report["sizes"])
        figures.mkdir(parents=True, exist_ok=True)
        for sweep in dict.fromkeys(row["sweep"] for row in report["rows"]):
            draw_figure(
                sweep,
                report["rows"],
                sizes,
                report["meta"]["machine"],
                figures / FIGURE_FILES[sweep],
            )
        print(f"redrew the figures of {out} in {figures}")
        return

    load_at_start = os.getloadavg()
    print(f"jax {jax.__version__}, {machine}, load average {load_at_start}", flush=True)
    started = time.perf_counter()
    rows, sweep_seconds = [], {}
    for index, sweep in enumerate(args.sweeps):
        sweep_started = time.perf_counter()
        rows += run_sweep(sweep, sizes, budget_s, jax.random.PRNGKey(args.seed + index))
        sweep_seconds[sweep] = time.perf_counter() - sweep_started
        print(f"{sweep}: {sweep_seconds[sweep]:.0f} s", flush=True)

    figures.mkdir(parents=True, exist_ok=True)
    figure_files = {}
    for sweep in args.sweeps:
        path = figures / FIGURE_FILES[sweep]
        draw_figure(sweep, rows, sizes, machine, path)
        figure_files[sweep] = str(path)

    import blackjax
    from tensorflow_probability.substrates import jax as tfp

    meta = {
        "jax": jax.__version__,
        "blackjax": blackjax.__version__,
        "tfp": tfp.__version__,
        "distrax": flows_2d.distrax.__version__,
        "machine": machine,
        "platform": jax.devices()[0].platform,
        "cpu": platform.machine(),
        "cpus": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg(),
        "command": " ".join(sys.argv),
        "quick": args.quick,
        "budget_s_per_point": budget_s,
        "sweep_seconds": sweep_seconds,
        "total_seconds": time.perf_counter() - started,
    }
    report = {
        "meta": meta,
        "sizes": sizes._asdict(),
        "rows": rows,
        "slopes": slopes(rows),
        "figures": figure_files,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}, figures in {figures} ({meta['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()

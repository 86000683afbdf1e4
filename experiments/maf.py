"""MAF, IAF and RealNVP, each with an affine and a rational-quadratic spline transformer (issue 8).

Six flows of ``nflows_jax`` at equal budget: ``repeat(chain(layer, reverse_permutation()), K)``
with the same K, the same conditioner hidden widths, the same optimizer, batch and steps, where
``layer`` is

    maf_*      masked_autoregressive(D, transformer, hidden)   density: 1 MADE pass per layer
    iaf_*      inverse_autoregressive(D, transformer, hidden)  density: D MADE passes per layer
    realnvp_*  coupling_layer(D, transformer, hidden, mask="half")  density: 1 MLP pass per layer

and ``transformer`` is ``affine_transformer()`` (``*_affine``) or
``rational_quadratic_spline(num_bins, bound)`` (``*_spline``). On the 2-D toy sets flowjax's
spline coupling flow (``coupling_flow`` with ``RationalQuadraticSpline(knots=num_bins - 1,
interval=bound)``: the same number of bins, 3·num_bins - 1 params per entry, the same conditioner
widths and depth) is trained beside them as an outside baseline.

Task ``toy``: for each dataset and each seed s, every flow is initialised from key(s), trained on
the same stream of fresh batches and scored on the same 20,000 held-out points (mean test
log-likelihood, nats). The (dataset, seed) pairs are ``jax.vmap``-ed (the dataset is a traced
``lax.switch`` index), so each flow compiles once for all sets and seeds. The seed-0 log-density on
a grid is kept for the heatmap figure.

Task ``digits``: sklearn's 8×8 digits (17 levels stored with num_bits = 5, the fixed 1500 / 297
split of ``experiments/images.py``), flattened to 64 dims, uniformly dequantized, logit
pre-processed (``logit_preprocess(0.05)`` chained into the flow, so the density is on pixel space)
and scored in test bits/dim (an upper bound on the discrete model's, averaged over
``--test-dequant`` uniform draws per test image). IAF's density on 64 dims is 64 sequential MADE
passes per layer: on 2 shared CPU cores one vmapped 3-seed step of the affine IAF took 0.6 s (90×
the MAF's) and the spline IAF did not finish 3 steps in about a minute, so the affine IAF trains
for ``--iaf-digits-steps`` (default 200, not the others' 1000) and the spline IAF is skipped
unless ``--iaf-spline-digits-steps`` is given; metrics.json records the steps of every model.

Reported: mean ± standard error over seeds, paired per-seed differences (spline − affine within
each family; our spline coupling − flowjax's), parameter counts (for MADE flows also the
"effective" count, the weights the masks leave connected), wall time per flow (compile included).

    python experiments/maf.py --out runs/maf                  # both tasks (≈ 20 min, 2 CPUs)
    python experiments/maf.py --tasks toy --out runs/maf      # one task; metrics.json is merged
    python experiments/maf.py --quick --out runs/maf_quick    # smoke run (< 1 min)

Written under ``--out``: ``metrics.json``, ``densities.png`` (rows: datasets; columns: data, then
each flow's seed-0 density), ``summary.png`` (mean ± s.e. per flow, one panel per dataset),
``paired.png`` (the paired differences). ``--replot`` redraws the last two from metrics.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
import paramax
from flowjax.bijections import RationalQuadraticSpline
from flowjax.distributions import StandardNormal
from flowjax.flows import coupling_flow

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from nflows_jax import flows
from nflows_jax.bijectors import (
    affine_transformer,
    chain,
    coupling_layer,
    inverse_autoregressive,
    masked_autoregressive,
    rational_quadratic_spline,
    repeat,
    reverse_permutation,
)
from nflows_jax.bijectors.autoregressive import made_conditioner
from nflows_jax.data import DIGITS_NUM_LEVELS, load_digits, sample_toy
from nflows_jax.dequantize import bits_per_dim, logit_preprocess, uniform_dequantize
from nflows_jax.image_flows import pixel_histogram_bits_per_dim

FAMILIES = ("maf", "iaf", "realnvp")
TRANSFORMERS = ("affine", "spline")
OURS = tuple(f"{family}_{kind}" for family in FAMILIES for kind in TRANSFORMERS)
FLOWJAX = "flowjax_spline"
TOY_DATASETS = ("two_moons", "eight_gaussians", "checkerboard", "pinwheel")
TEST_POINTS = 20_000
PLOT_LIMIT = 4.5
DIGITS_BITS = 5  # 17 levels (0..16) stored in 32 bins, as in experiments/images.py
DIGITS_SHAPE = 64
QUICK_TOY = ("iaf_affine", "realnvp_spline", FLOWJAX)  # --quick: every layer kind, < 1 min
QUICK_DIGITS = ("maf_spline", "realnvp_affine")
LABELS = {
    "maf_affine": "MAF affine",
    "maf_spline": "MAF spline",
    "iaf_affine": "IAF affine",
    "iaf_spline": "IAF spline",
    "realnvp_affine": "RealNVP affine",
    "realnvp_spline": "RealNVP spline",
    FLOWJAX: "flowjax spline coupling",
}

# A setup is (init(key) -> state, step(state, batch) -> (state, loss), log_prob(state, x) -> (B,)),
# all traceable so that seeds can be vmapped.
Setup = tuple[Callable, Callable, Callable]


# ------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------


def make_transformer(kind: str, args):
    if kind == "affine":
        return affine_transformer()
    if kind == "spline":
        return rational_quadratic_spline(args.bins, args.bound)
    raise ValueError(f"unknown transformer {kind!r}")


def make_core(model: str, event_size: int, args):
    """K layers of ``model`` with a reversal after each, one ``lax.scan``."""
    family, kind = model.split("_")
    transformer = make_transformer(kind, args)
    hidden = tuple(args.hidden)
    if family == "maf":
        layer = masked_autoregressive(event_size, transformer, hidden)
    elif family == "iaf":
        layer = inverse_autoregressive(event_size, transformer, hidden)
    elif family == "realnvp":
        layer = coupling_layer(event_size, transformer, hidden, mask="half")
    else:
        raise ValueError(f"unknown family {family!r}")
    return repeat(chain(layer, reverse_permutation()), args.layers)


def make_optimizer(args, num_steps: int) -> optax.GradientTransformation:
    schedule = optax.cosine_decay_schedule(args.lr, max(num_steps, 1), alpha=0.05)
    return optax.chain(optax.clip_by_global_norm(10.0), optax.adam(schedule))


def adam_step(loss_fn: Callable, optimizer: optax.GradientTransformation) -> Callable:
    def step(state, batch):
        params, opt_state = state
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return step


def ours_setup(flow: flows.Flow, example: jax.Array, loss_fn, optimizer) -> Setup:
    def init(key):
        params = flows.init(flow, key, example)
        return params, optimizer.init(params)

    def log_prob(state, x):
        return flows.log_prob(flow, state[0], x)

    return init, adam_step(loss_fn, optimizer), log_prob


def toy_setup(model: str, args, num_steps: int) -> Setup:
    optimizer = make_optimizer(args, num_steps)
    if model == FLOWJAX:
        return flowjax_setup(args, optimizer)
    flow = flows.Flow(flows.standard_normal(2), make_core(model, 2, args))

    def loss_fn(params, x):
        return -jnp.mean(flows.log_prob(flow, params, x))

    return ours_setup(flow, jnp.zeros((args.batch, 2)), loss_fn, optimizer)


def flowjax_flow(key, args):
    return coupling_flow(
        key,
        base_dist=StandardNormal((2,)),
        transformer=RationalQuadraticSpline(knots=args.bins - 1, interval=args.bound),
        flow_layers=args.layers,
        nn_width=args.hidden[0],
        nn_depth=len(args.hidden),
    )


def flowjax_setup(args, optimizer) -> Setup:
    if len(set(args.hidden)) != 1:
        raise ValueError("flowjax's conditioner has equal widths; pass equal --hidden widths")
    _, static = eqx.partition(flowjax_flow(jax.random.PRNGKey(0), args), eqx.is_inexact_array)

    def init(key):
        params, _ = eqx.partition(flowjax_flow(key, args), eqx.is_inexact_array)
        return params, optimizer.init(params)

    def loss_fn(params, x):
        return -jnp.mean(paramax.unwrap(eqx.combine(params, static)).log_prob(x))

    def log_prob(state, x):
        return paramax.unwrap(eqx.combine(state[0], static)).log_prob(x)

    return init, adam_step(loss_fn, optimizer), log_prob


def digits_flow(model: str, args) -> flows.Flow:
    """N(0, I) on 64 dims -> K layers -> logit space -> pixels in [0, 1)."""
    core = make_core(model, DIGITS_SHAPE, args)
    return flows.Flow(flows.standard_normal(DIGITS_SHAPE), chain(core, logit_preprocess(0.05)))


def count_params(tree) -> int:
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(tree)))


def effective_made_params(event_size: int, params_per_entry: int, hidden, layers: int) -> int:
    """Weights a MADE's masks leave connected, plus biases, times the number of layers."""
    degrees = made_conditioner(event_size, params_per_entry, tuple(hidden)).degrees
    inputs = np.asarray(degrees.inputs)
    previous, total = inputs, 0
    for width, degree in zip(hidden, degrees.hidden, strict=True):
        degree = np.asarray(degree)
        total += int(np.sum(degree[None, :] >= previous[:, None])) + width
        previous = degree
    out = np.repeat(inputs, params_per_entry)
    total += int(np.sum(out[None, :] > previous[:, None])) + out.size
    return total * layers


def param_counts(model: str, event_size: int, args, init: Callable) -> dict:
    state = jax.eval_shape(init, jax.random.PRNGKey(0))
    counts = {"stored": count_params(state[0])}
    family, _, kind = model.partition("_")
    if family in ("maf", "iaf"):
        per_entry = make_transformer(kind, args).params_per_entry
        counts["effective"] = effective_made_params(event_size, per_entry, args.hidden, args.layers)
    return counts


# ------------------------------------------------------------------------------------------------
# Statistics
# ------------------------------------------------------------------------------------------------


def mean_and_se(values) -> tuple[float, float]:
    """Sample mean and its standard error (sample s.d. / sqrt(n)); s.e. is nan for one value."""
    values = [float(v) for v in values]
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def paired(a, b) -> tuple[float, float]:
    return mean_and_se([x - y for x, y in zip(a, b, strict=True)])


def seed_keys(num_seeds: int) -> jax.Array:
    return jnp.stack([jax.random.PRNGKey(seed) for seed in range(num_seeds)])


def block(tree):
    return jax.tree_util.tree_map(lambda a: a.block_until_ready(), tree)


# ------------------------------------------------------------------------------------------------
# Task 1: toy 2-D sets
# ------------------------------------------------------------------------------------------------


def plot_grid(resolution: int) -> tuple[np.ndarray, np.ndarray, jax.Array]:
    axis = np.linspace(-PLOT_LIMIT, PLOT_LIMIT, resolution)
    xx, yy = np.meshgrid(axis, axis)
    return xx, yy, jnp.asarray(np.stack([xx.ravel(), yy.ravel()], axis=1), jnp.float32)


def toy_sampler(datasets, index, key, n: int) -> jax.Array:
    """``n`` points of ``datasets[index]`` with a traced ``index`` (one compile for all sets)."""
    branches = [lambda k, name=name: sample_toy(name, k, n) for name in datasets]
    return jax.lax.switch(index, branches, key)


def toy_one_run(setup: Setup, datasets, num_steps: int, batch: int, grid, index, key):
    """Train one (dataset, seed); return (test LL, grid log-density). The same key gives every
    model the same training stream and test points (init draws differ by architecture)."""
    init, step, log_prob = setup
    init_key, data_key, test_key = jax.random.split(key, 3)
    state = init(init_key)

    def body(state, i):
        return step(state, toy_sampler(datasets, index, jax.random.fold_in(data_key, i), batch))

    state, _ = jax.lax.scan(body, state, jnp.arange(num_steps))
    # Test points and the plot grid in one call: one traced copy of the density, not two.
    test_x = toy_sampler(datasets, index, test_key, TEST_POINTS)
    log_p = log_prob(state, jnp.concatenate([test_x, grid]))
    return jnp.mean(log_p[:TEST_POINTS]), log_p[TEST_POINTS:]


def run_toy(args) -> tuple[dict, dict]:
    """Every model trained on every (dataset, seed) pair in one vmapped program per model."""
    models = [m for m in (*OURS, FLOWJAX) if m in (QUICK_TOY if args.quick else args.models)]
    datasets = tuple(args.datasets)
    _, _, grid = plot_grid(args.resolution)
    keys = jnp.tile(seed_keys(args.seeds), (len(datasets), 1))
    indices = jnp.repeat(jnp.arange(len(datasets)), args.seeds)
    results = {dataset: {} for dataset in datasets}
    grids = {dataset: {} for dataset in datasets}
    for model in models:
        setup = toy_setup(model, args, args.toy_steps)

        def one_run(index, key, setup=setup):
            return toy_one_run(setup, datasets, args.toy_steps, args.batch, grid, index, key)

        start = time.perf_counter()
        test_ll, grid_log_p = block(jax.jit(jax.vmap(one_run))(indices, keys))
        wall = time.perf_counter() - start
        test_ll = np.asarray(test_ll).reshape(len(datasets), args.seeds)
        grid_log_p = np.asarray(grid_log_p).reshape(len(datasets), args.seeds, -1)
        for d, dataset in enumerate(datasets):
            per_seed = [float(v) for v in test_ll[d]]
            results[dataset][model] = {
                "per_seed": per_seed,
                "mean_se": mean_and_se(per_seed),
                "finite": bool(np.all(np.isfinite(per_seed))),
            }
            grids[dataset][model] = grid_log_p[d, 0]
            mean, se = results[dataset][model]["mean_se"]
            print(f"toy {dataset:>16} {model:>15}: {mean:8.3f} ± {se:.3f}", flush=True)
        print(f"toy {model}: {len(datasets)} datasets x {args.seeds} seeds in {wall:.1f} s",
              flush=True)  # fmt: skip
        for dataset in datasets:
            results[dataset][model]["wall_s_all_datasets"] = wall
    params = {}
    for model in models:
        params[model] = param_counts(model, 2, args, toy_setup(model, args, 1)[0])
    return {"results": results, "params": params}, grids


def comparisons(by_model: dict) -> dict:
    """Paired per-seed differences: spline − affine per family; our spline coupling − flowjax."""
    seeds = {model: r["per_seed"] for model, r in by_model.items()}
    pairs = [(f"{f}_spline", f"{f}_affine", f"{f}: spline − affine") for f in FAMILIES]
    pairs.append(("realnvp_spline", FLOWJAX, "realnvp_spline − flowjax_spline"))
    return {name: paired(seeds[a], seeds[b]) for a, b, name in pairs if a in seeds and b in seeds}


def toy_comparisons(toy: dict) -> dict:
    return {dataset: comparisons(by_model) for dataset, by_model in toy["results"].items()}


def plot_densities(grids: dict, args, path: Path) -> None:
    models = [m for m in (*OURS, FLOWJAX) if m in next(iter(grids.values()))]
    xx, yy, _ = plot_grid(args.resolution)
    rows, cols = len(grids), len(models) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 1.9 * rows), squeeze=False)
    lim = [[-PLOT_LIMIT, PLOT_LIMIT]] * 2
    for row, (dataset, by_model) in enumerate(grids.items()):
        data = np.asarray(sample_toy(dataset, jax.random.PRNGKey(123), 50_000))
        axes[row, 0].hist2d(data[:, 0], data[:, 1], bins=args.resolution, range=lim, cmap="magma")
        axes[row, 0].set_ylabel(dataset, fontsize=8)
        for col, model in enumerate(models, start=1):
            density = np.exp(by_model[model]).reshape(xx.shape)
            density = np.where(np.isfinite(density), density, 0.0)
            axes[row, col].pcolormesh(xx, yy, density, cmap="magma", shading="auto")
    for col, title in enumerate(["data", *(LABELS[m] for m in models)]):
        axes[0, col].set_title(title, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal")
    fig.suptitle(f"learnt densities, seed 0 ({args.layers} layers, {args.toy_steps} steps)")
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# Task 2: dequantized digits (64 dims)
# ------------------------------------------------------------------------------------------------


def digits_split() -> tuple[np.ndarray, np.ndarray]:
    """(train, test) flattened uint8 (N, 64): the 1500 / 297 split of experiments/images.py."""
    images = load_digits().images
    order = np.random.default_rng(0).permutation(len(images))
    flat = images.reshape(len(images), -1)
    return flat[order[:1500]], flat[order[1500:]]


def digits_one_seed(flow, optimizer, train, test, num_steps: int, args, key):
    """Train on random minibatches of freshly dequantized images; return (test bpd, train bpd of
    the last 50 steps)."""
    num_bits = DIGITS_BITS
    init_key, data_key, test_key = jax.random.split(key, 3)

    def loss_fn(params, pixels):
        return jnp.mean(bits_per_dim(flows.log_prob(flow, params, pixels), DIGITS_SHAPE, num_bits))

    init, step, _ = ours_setup(
        flow, uniform_dequantize(init_key, train[: args.digits_batch], num_bits), loss_fn, optimizer
    )
    state = init(init_key)

    def body(state, i):
        index_key, noise_key = jax.random.split(jax.random.fold_in(data_key, i))
        index = jax.random.randint(index_key, (args.digits_batch,), 0, train.shape[0])
        return step(state, uniform_dequantize(noise_key, train[index], num_bits))

    state, losses = jax.lax.scan(body, state, jnp.arange(num_steps))
    repeated = jnp.tile(test, (args.test_dequant, 1))
    pixels = uniform_dequantize(test_key, repeated, num_bits)
    test_bpd = jnp.mean(
        bits_per_dim(flows.log_prob(flow, state[0], pixels), DIGITS_SHAPE, num_bits)
    )
    return test_bpd, jnp.mean(losses[-50:])


def digits_steps(model: str, args) -> int:
    if model == "iaf_spline" and args.iaf_spline_digits_steps is not None:
        return args.iaf_spline_digits_steps
    return args.iaf_digits_steps if model.startswith("iaf") else args.digits_steps


def run_digits(args) -> dict:
    args = argparse.Namespace(**{**vars(args), "hidden": args.digits_hidden,
                                 "seeds": args.digits_seeds})  # fmt: skip
    train, test = digits_split()
    baseline = pixel_histogram_bits_per_dim(train, test, DIGITS_NUM_LEVELS)
    print(f"digits: per-pixel histogram baseline {baseline:.3f} bits/dim", flush=True)
    train_j, test_j = jnp.asarray(train), jnp.asarray(test)
    keys = seed_keys(args.seeds)
    results, params = {}, {}
    skipped = {}
    for model in [m for m in OURS if m in (QUICK_DIGITS if args.quick else args.models)]:
        num_steps = digits_steps(model, args)
        if num_steps == 0:
            skipped[model] = "0 steps requested (too slow for the budget; see the module docstring)"
            print(f"digits {model:>15}: skipped", flush=True)
            continue
        flow = digits_flow(model, args)
        optimizer = make_optimizer(args, num_steps)

        def one_seed(key, flow=flow, optimizer=optimizer, num_steps=num_steps):
            return digits_one_seed(flow, optimizer, train_j, test_j, num_steps, args, key)

        start = time.perf_counter()
        test_bpd, train_bpd = block(jax.jit(jax.vmap(one_seed))(keys))
        wall = time.perf_counter() - start
        per_seed = [float(v) for v in test_bpd]
        results[model] = {
            "per_seed": per_seed,
            "mean_se": mean_and_se(per_seed),
            "train_bpd_last50_per_seed": [float(v) for v in train_bpd],
            "steps": num_steps,
            "wall_s": wall,
            "finite": bool(np.all(np.isfinite(per_seed))),
        }
        init = ours_setup(flow, jnp.zeros((1, DIGITS_SHAPE)), None, optimizer)[0]
        params[model] = param_counts(model, DIGITS_SHAPE, args, init)
        mean, se = results[model]["mean_se"]
        print(f"digits {model:>15}: {mean:.3f} ± {se:.3f} bits/dim, {num_steps} steps "
              f"({wall:5.1f} s)", flush=True)  # fmt: skip
    diffs = comparisons(results)
    return {
        "results": results,
        "params": params,
        "paired": diffs,
        "skipped": skipped,
        "per_pixel_histogram_bpd": baseline,
        "train_size": len(train),
        "test_size": len(test),
    }


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------


def plot_summary(metrics: dict, path: Path) -> None:
    panels = []
    if "toy" in metrics:
        for dataset, by_model in metrics["toy"]["results"].items():
            panels.append((dataset, "test log-likelihood (nats, higher is better)", by_model))
    if "digits" in metrics:
        panels.append(("digits (64 dims)", "test bits/dim (lower is better)",
                       metrics["digits"]["results"]))  # fmt: skip
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.6), squeeze=False)
    colors = {"maf": "C0", "iaf": "C1", "realnvp": "C2", "flowjax": "C3"}
    for ax, (title, ylabel, by_model) in zip(axes[0], panels, strict=True):
        names = [m for m in (*OURS, FLOWJAX) if m in by_model]
        for i, model in enumerate(names):
            mean, se = by_model[model]["mean_se"]
            family, kind = model.split("_")
            ax.errorbar(i, mean, yerr=0.0 if math.isnan(se) else se, fmt="o" if kind == "affine"
                        else "s", color=colors[family], capsize=3)  # fmt: skip
            ax.plot(np.full(len(by_model[model]["per_seed"]), i), by_model[model]["per_seed"],
                    ".", color=colors[family], alpha=0.3)  # fmt: skip
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([LABELS[m] for m in names], rotation=60, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("mean ± s.e. over seeds (faint dots: single seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_paired(metrics: dict, path: Path) -> None:
    """The paired per-seed differences (mean ± s.e.), one panel per task."""
    panels = []
    if "toy" in metrics:
        panels.append(("toy 2-D: paired Δ test LL (nats)", metrics["toy"]["paired"]))
    if "digits" in metrics:
        panels.append(("digits: paired Δ test bits/dim", {"digits": metrics["digits"]["paired"]}))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.6), squeeze=False)
    for ax, (title, by_set) in zip(axes[0], panels, strict=True):
        names = sorted({name for diffs in by_set.values() for name in diffs})
        width = 0.8 / max(len(names), 1)
        for j, name in enumerate(names):
            xs, means, ses = [], [], []
            for i, diffs in enumerate(by_set.values()):
                if name in diffs:
                    xs.append(i + (j - (len(names) - 1) / 2) * width)
                    means.append(diffs[name][0])
                    ses.append(0.0 if math.isnan(diffs[name][1]) else diffs[name][1])
            ax.errorbar(xs, means, yerr=ses, fmt="o", capsize=3, label=name)
        ax.axhline(0.0, color="gray", lw=0.8)
        ax.set_xticks(range(len(by_set)))
        ax.set_xlim(-0.6, len(by_set) - 0.4)
        ax.set_xticklabels(list(by_set), fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def fmt(mean_se, signed: bool = False, digits: int = 3) -> str:
    mean, se = mean_se
    sign = "+" if signed else ""
    return f"{mean:{sign}.{digits}f} ± {se:.{digits}f}"


def print_tables(metrics: dict) -> None:
    if "toy" in metrics:
        toy = metrics["toy"]
        cfg = toy["config"]
        models = [m for m in (*OURS, FLOWJAX) if m in next(iter(toy["results"].values()))]
        print(f"\nToy 2-D: test log-likelihood (nats), K={cfg['layers']}, {cfg['steps']} steps, "
              f"batch {cfg['batch']}, mean ± s.e. over {cfg['seeds']} seeds")  # fmt: skip
        print("| dataset | " + " | ".join(LABELS[m] for m in models) + " |")
        print("|---|" + "---:|" * len(models))
        for dataset, by_model in toy["results"].items():
            cells = [fmt(by_model[m]["mean_se"]) for m in models]
            print(f"| {dataset} | " + " | ".join(cells) + " |")
        names = list(next(iter(toy["paired"].values())))
        print("\nPaired per-seed differences (nats)")
        print("| dataset | " + " | ".join(names) + " |")
        print("|---|" + "---:|" * len(names))
        for dataset, diffs in toy["paired"].items():
            print(f"| {dataset} | " + " | ".join(fmt(diffs[n], True) for n in names) + " |")
        print("\n| model | params (stored) | params (effective) | wall s (all sets and seeds) |")
        print("|---|---:|---:|---:|")
        first = next(iter(toy["results"].values()))
        for m in models:
            p = toy["params"][m]
            print(
                f"| {LABELS[m]} | {p['stored']:,} | {p.get('effective', p['stored']):,} | "
                f"{first[m]['wall_s_all_datasets']:.0f} |"
            )
    if "digits" in metrics:
        dig = metrics["digits"]
        cfg = dig["config"]
        print(f"\nDigits (64 dims): test bits/dim, K={cfg['layers']}, hidden {cfg['hidden']}, "
              f"batch {cfg['batch']}, mean ± s.e. over {cfg['seeds']} seeds; per-pixel histogram "
              f"{dig['per_pixel_histogram_bpd']:.3f}")  # fmt: skip
        print("| model | params (stored) | params (effective) | steps | test bits/dim | "
              "train bits/dim (last 50 steps) | wall s |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|")
        for m, r in dig["results"].items():
            p = dig["params"][m]
            print(
                f"| {LABELS[m]} | {p['stored']:,} | {p.get('effective', p['stored']):,} | "
                f"{r['steps']} | {fmt(r['mean_se'])} | "
                f"{fmt(mean_and_se(r['train_bpd_last50_per_seed']))} | {r['wall_s']:.0f} |"
            )
        for name, diff in dig["paired"].items():
            print(f"paired {name}: {fmt(diff, True)} bits/dim")
        for name, why in dig.get("skipped", {}).items():
            print(f"{LABELS[name]}: not trained, {why}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=["toy", "digits"], default=["toy", "digits"])
    parser.add_argument("--datasets", nargs="+", default=list(TOY_DATASETS))
    parser.add_argument("--models", nargs="+", choices=[*OURS, FLOWJAX], default=[*OURS, FLOWJAX])
    parser.add_argument("--seeds", type=int, default=5, help="toy seeds")
    parser.add_argument("--digits-seeds", type=int, default=3)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 64], help="toy conditioners")
    parser.add_argument("--digits-hidden", type=int, nargs="+", default=[128, 128])
    parser.add_argument("--bins", type=int, default=8)
    parser.add_argument("--bound", type=float, default=4.0)
    parser.add_argument("--batch", type=int, default=256, help="toy batch")
    parser.add_argument("--digits-batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--toy-steps", type=int, default=1000)
    parser.add_argument("--digits-steps", type=int, default=1000)
    parser.add_argument("--iaf-digits-steps", type=int, default=200)
    parser.add_argument(
        "--iaf-spline-digits-steps",
        type=int,
        default=0,
        help="IAF spline steps on digits; 0 skips it (default: too slow)",
    )
    parser.add_argument(
        "--test-dequant", type=int, default=4, help="dequantizations per test image"
    )
    parser.add_argument("--resolution", type=int, default=120)
    parser.add_argument("--quick", action="store_true", help="smoke run (< 1 min)")
    parser.add_argument("--replot", action="store_true", help="redraw figures from metrics.json")
    parser.add_argument("--out", default="runs/maf")
    args = parser.parse_args(argv)
    if args.quick:  # a subset of the models that still runs every layer kind once
        args.datasets, args.seeds, args.layers, args.toy_steps = args.datasets[:1], 2, 2, 20
        args.digits_seeds = 2
        args.digits_steps, args.iaf_digits_steps, args.resolution = 20, 4, 40
        args.hidden, args.digits_hidden, args.test_dequant = [16, 16], [16, 16], 1
        args.models = [*QUICK_TOY, *QUICK_DIGITS]
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    if args.replot:  # redraw the summary figures from metrics.json, no training
        plot_summary(metrics, out / "summary.png")
        plot_paired(metrics, out / "paired.png")
        print_tables(metrics)
        return metrics
    metrics["meta"] = {
        "jax": jax.__version__,
        "device": jax.devices()[0].device_kind,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    common = {k: getattr(args, k) for k in ("seeds", "layers", "hidden", "bins", "bound", "lr")}
    if "toy" in args.tasks:
        start = time.perf_counter()
        toy, grids = run_toy(args)
        toy["paired"] = toy_comparisons(toy)
        toy["config"] = {**common, "steps": args.toy_steps, "batch": args.batch,
                         "datasets": args.datasets, "test_points": TEST_POINTS}  # fmt: skip
        toy["wall_s"] = time.perf_counter() - start
        metrics["toy"] = toy
        plot_densities(grids, args, out / "densities.png")
    if "digits" in args.tasks:
        start = time.perf_counter()
        digits = run_digits(args)
        digits["config"] = {**common, "hidden": args.digits_hidden, "seeds": args.digits_seeds,
                            "batch": args.digits_batch, "steps": args.digits_steps,
                            "iaf_steps": args.iaf_digits_steps,
                            "iaf_spline_steps": args.iaf_spline_digits_steps,
                            "num_bits": DIGITS_BITS,
                            "test_dequantizations": args.test_dequant,
                            "logit_alpha": 0.05}  # fmt: skip
        digits["wall_s"] = time.perf_counter() - start
        metrics["digits"] = digits
    metrics_path.write_text(json.dumps(metrics, indent=2))
    plot_summary(metrics, out / "summary.png")
    plot_paired(metrics, out / "paired.png")
    print_tables(metrics)
    print(f"wrote {metrics_path}, {out / 'summary.png'}, {out / 'paired.png'}" + (
        f", {out / 'densities.png'}" if "toy" in args.tasks else ""))  # fmt: skip
    return metrics


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()

"""Maximum-likelihood fits of RealNVP, NICE and planar flows to the toy 2-D datasets.

For each dataset and flow the script trains on fresh samples each step, reports the test
log-likelihood on held-out samples, and draws the learnt density and samples:

    runs/toy2d/densities.png   rows: datasets; columns: data histogram, then each flow's density
    runs/toy2d/samples.png     rows: datasets; columns: data, then each flow's samples
    runs/toy2d/metrics.json    test log-likelihood (nats per point) per dataset and flow

The quick mode (``make demo``) fits one well-trained RealNVP (16 affine couplings, 6000 steps)
per dataset on four datasets and draws one figure, ``demo.png``: a column per dataset, rows
data / learnt density / samples.

    python experiments/toy2d.py --out runs/toy2d            # full run
    python experiments/toy2d.py --quick --out runs/demo     # `make demo`: 70 s on 2 idle cores

Progress: a tqdm bar per fit when stderr is a terminal; otherwise (logs, CI) one line per fit.
At the end a table of test log-likelihoods is printed.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
import time
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
from nflows_jax.bijectors import Bijector, chain, repeat, reverse_permutation
from nflows_jax.bijectors.coupling import additive_coupling, affine_coupling
from nflows_jax.bijectors.elementwise import elementwise_affine
from nflows_jax.bijectors.planar import planar
from nflows_jax.data import TOY_DATASETS, eight_gaussians
from nflows_jax.train import fit

PLOT_LIMIT = 4.5
QUICK_DATASETS = ("two_moons", "eight_gaussians", "pinwheel", "checkerboard")
QUICK_STEPS = 6000
QUICK_LAYERS = 16


def make_bijector(kind: str, num_layers: int, hidden: tuple[int, ...] = (64, 64)) -> Bijector:
    """The three flow families compared here, each a single ``repeat`` (one lax.scan)."""
    if kind == "realnvp":
        coupling = affine_coupling(2, hidden=hidden)
        return repeat(chain(coupling, reverse_permutation()), num_layers)
    if kind == "nice":
        # NICE is volume preserving; its final diagonal scaling layer carries all the volume change.
        layer = chain(additive_coupling(2, hidden=hidden), reverse_permutation())
        return chain(repeat(layer, num_layers), elementwise_affine())
    if kind == "planar":
        return repeat(planar(2), 4 * num_layers)
    raise ValueError(f"unknown flow kind {kind!r}; expected realnvp, nice or planar")


class Model(NamedTuple):
    """One flow family with its loss and optimizer, built once so every dataset reuses the
    compiled train step (``fit`` caches it by the identity of ``loss_fn`` and ``optimizer``)."""

    kind: str
    flow: flows.Flow
    loss_fn: Callable
    optimizer: optax.GradientTransformation
    log_prob: Callable  # jitted (params, x) -> (N,)


def make_model(kind: str, args) -> Model:
    flow = flows.Flow(
        flows.standard_normal(2), make_bijector(kind, args.layers, tuple(args.hidden))
    )

    def loss_fn(params, batch, key):
        del key
        return -jnp.mean(flows.log_prob(flow, params, batch))

    schedule = optax.cosine_decay_schedule(args.learning_rate, args.steps, alpha=0.05)
    optimizer = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(schedule))
    log_prob = jax.jit(lambda params, x: flows.log_prob(flow, params, x))
    return Model(kind, flow, loss_fn, optimizer, log_prob)


def fit_flow(model: Model, dataset: str, args, key: jax.Array) -> tuple[object, float]:
    """Train on fresh samples every step; return the params and the test log-likelihood."""
    sample_data = TOY_DATASETS[dataset]
    init_key, data_key, test_key = jax.random.split(key, 3)
    params = flows.init(model.flow, init_key, jnp.zeros((args.batch_size, 2)))
    # One jitted dispatch per batch (fold_in and sampling fused), not a dozen eager ops.
    batch_fn = jax.jit(
        lambda step: sample_data(jax.random.fold_in(data_key, step), args.batch_size)
    )
    result = fit(
        model.loss_fn,
        params,
        model.optimizer,
        batch_fn,
        args.steps,
        key=key,
        progress=show_progress_bar(args),
        description=f"{dataset}/{model.kind}",
    )
    test_x = sample_data(test_key, 20_000)
    test_ll = float(jnp.mean(model.log_prob(result.params, test_x)))
    return result.params, test_ll


def show_progress_bar(args) -> bool:
    """A tqdm bar only on a terminal; in logs the one line per fit from ``main`` is the progress."""
    return not args.no_progress and sys.stderr.isatty()


def grid(resolution: int) -> tuple[np.ndarray, np.ndarray, jax.Array]:
    axis = np.linspace(-PLOT_LIMIT, PLOT_LIMIT, resolution)
    xx, yy = np.meshgrid(axis, axis)
    return xx, yy, jnp.asarray(np.stack([xx.ravel(), yy.ravel()], axis=1), jnp.float32)


def plot(results, models: dict[str, Model], datasets, args, out: Path) -> None:
    kinds = list(models)
    xx, yy, points = grid(args.resolution)
    columns = ["data", *kinds]
    size = 2.2
    figures = {
        name: plt.subplots(
            len(datasets),
            len(columns),
            figsize=(size * len(columns), size * len(datasets)),
            squeeze=False,
        )
        for name in ("densities", "samples")
    }
    for row, dataset in enumerate(datasets):
        data = np.asarray(TOY_DATASETS[dataset](jax.random.PRNGKey(123), 20_000))
        lim = [[-PLOT_LIMIT, PLOT_LIMIT]] * 2
        figures["densities"][1][row, 0].hist2d(
            data[:, 0], data[:, 1], bins=120, range=lim, cmap="magma"
        )
        figures["samples"][1][row, 0].scatter(data[:2000, 0], data[:2000, 1], s=1, c="k")
        for col, kind in enumerate(kinds, start=1):
            params, test_ll = results[dataset][kind]
            density = np.exp(np.asarray(models[kind].log_prob(params, points)))
            ax = figures["densities"][1][row, col]
            ax.pcolormesh(xx, yy, density.reshape(xx.shape), cmap="magma", shading="auto")
            ax.set_title(f"{kind}: {test_ll:.2f}", fontsize=8)
            samples = np.asarray(
                flows.sample(models[kind].flow, params, jax.random.PRNGKey(5), 2000)
            )
            figures["samples"][1][row, col].scatter(samples[:, 0], samples[:, 1], s=1, c="C0")
            figures["samples"][1][row, col].set_title(kind, fontsize=8)
        figures["densities"][1][row, 0].set_ylabel(dataset, fontsize=8)
        figures["samples"][1][row, 0].set_ylabel(dataset, fontsize=8)
    for name, (fig, axes) in figures.items():
        _square_panels(axes)
        fig.suptitle(f"toy 2-D {name} (titles: test log-likelihood, nats)", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)


def _square_panels(axes) -> None:
    """Every panel shows the same square [-PLOT_LIMIT, PLOT_LIMIT]², without ticks."""
    for ax in axes.ravel():
        ax.set_xlim(-PLOT_LIMIT, PLOT_LIMIT)
        ax.set_ylim(-PLOT_LIMIT, PLOT_LIMIT)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal")


def plot_demo(results, model: Model, datasets, args, out: Path) -> Path:
    """One figure: a column per dataset; rows: data histogram, learnt density, flow samples."""
    xx, yy, points = grid(args.resolution)
    lim = [[-PLOT_LIMIT, PLOT_LIMIT]] * 2
    size = 2.6
    fig, axes = plt.subplots(
        3, len(datasets), figsize=(size * len(datasets), size * 3 + 0.4), squeeze=False
    )
    for col, dataset in enumerate(datasets):
        params, test_ll = results[dataset][model.kind]
        data = np.asarray(TOY_DATASETS[dataset](jax.random.PRNGKey(123), 50_000))
        axes[0, col].hist2d(data[:, 0], data[:, 1], bins=args.resolution, range=lim, cmap="magma")
        axes[0, col].set_title(dataset.replace("_", " "), fontsize=11)
        density = np.exp(np.asarray(model.log_prob(params, points))).reshape(xx.shape)
        # Colour scale clipped at the 99.7th percentile of the grid, so that a few thin bright
        # filaments (where the flow squeezes mass between modes) do not wash out the modes.
        vmax = float(np.quantile(density, 0.997))
        axes[1, col].pcolormesh(xx, yy, density, cmap="magma", shading="auto", vmax=vmax)
        ceiling = best_possible(dataset)
        title = f"test LL {test_ll:.2f} nats"
        if ceiling is not None:
            title += f" (optimum {ceiling:.2f})"
        axes[1, col].set_title(title, fontsize=9)
        samples = np.asarray(flows.sample(model.flow, params, jax.random.PRNGKey(5), 50_000))
        axes[2, col].hist2d(
            samples[:, 0], samples[:, 1], bins=args.resolution, range=lim, cmap="magma"
        )
    for row, label in enumerate(["data", "learnt density", "flow samples"]):
        axes[row, 0].set_ylabel(label, fontsize=11)
    _square_panels(axes)
    fig.suptitle(
        f"RealNVP ({args.layers} affine couplings, {args.steps} Adam steps) fitted by maximum "
        "likelihood",
        fontsize=11,
    )
    fig.text(
        0.5,
        0.005,
        "optimum: the data's own expected log-density, where it is known in closed form",
        ha="center",
        fontsize=8,
    )
    fig.tight_layout(rect=(0, 0.015, 1, 1))
    path = out / "demo.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def eight_gaussians_log_density(x: jax.Array) -> jax.Array:
    """Exact log-density (N,) of ``data.eight_gaussians`` at its default radius and std."""
    defaults = inspect.signature(eight_gaussians).parameters
    radius, std = defaults["radius"].default, defaults["std"].default
    angles = 2.0 * jnp.pi * jnp.arange(8) / 8.0
    centres = radius * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=-1)  # (8, 2)
    sq = jnp.sum((x[:, None, :] - centres[None]) ** 2, axis=-1)  # (N, 8)
    log_components = -0.5 * sq / std**2 - jnp.log(2.0 * jnp.pi * std**2)
    return jax.nn.logsumexp(log_components, axis=1) - jnp.log(8.0)


def best_possible(dataset: str) -> float | None:
    """The data's own expected log-density (minus its entropy), where it is known in closed form:
    the ceiling of any model's test log-likelihood, up to the Monte-Carlo error of the test set."""
    if dataset == "checkerboard":
        return -math.log(32.0)  # uniform on 8 squares of area 4
    if dataset == "eight_gaussians":
        x = eight_gaussians(jax.random.PRNGKey(321), 20_000)
        return float(jnp.mean(eight_gaussians_log_density(x)))
    return None


def print_table(results, kinds) -> None:
    """Markdown table of test log-likelihoods (nats per point, higher is better)."""
    print("\ntest log-likelihood (nats per point, 20,000 held-out samples; higher is better)")
    print("| dataset | " + " | ".join(kinds) + " | data's own density |")
    print("|---|" + "---:|" * (len(kinds) + 1))
    for dataset, by_kind in results.items():
        ceiling = best_possible(dataset)
        cells = [f"{by_kind[k][1]:.3f}" for k in kinds]
        cells.append("—" if ceiling is None else f"{ceiling:.3f}")
        print(f"| {dataset} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/toy2d")
    parser.add_argument("--datasets", nargs="+", default=None, help="default: all (quick: 4)")
    parser.add_argument("--flows", nargs="+", default=None, help="default: all (quick: realnvp)")
    parser.add_argument(
        "--layers", type=int, default=None, help="coupling layers, planar 4x (default 8, quick 12)"
    )
    parser.add_argument("--steps", type=int, default=None, help="default 5000 (quick: QUICK)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 64], help="MLP widths")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--resolution", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="the short `make demo` run")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    if args.datasets is None:
        args.datasets = list(QUICK_DATASETS if args.quick else TOY_DATASETS)
    if args.flows is None:
        args.flows = ["realnvp"] if args.quick else ["realnvp", "nice", "planar"]
    if args.steps is None:
        args.steps = QUICK_STEPS if args.quick else 5000
    if args.layers is None:
        args.layers = QUICK_LAYERS if args.quick else 8

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    models = {kind: make_model(kind, args) for kind in args.flows}
    results: dict[str, dict] = {}
    key = jax.random.PRNGKey(args.seed)
    for i, dataset in enumerate(args.datasets):
        results[dataset] = {}
        for j, kind in enumerate(args.flows):
            run_key = jax.random.fold_in(jax.random.fold_in(key, i), j)
            fit_start = time.perf_counter()
            results[dataset][kind] = fit_flow(models[kind], dataset, args, run_key)
            print(
                f"{dataset:>16} {kind:>8}: {args.steps} steps in "
                f"{time.perf_counter() - fit_start:5.1f} s, test log-likelihood "
                f"{results[dataset][kind][1]:.3f}",
                flush=True,
            )
    if args.quick and args.flows == ["realnvp"]:
        figures = [plot_demo(results, models["realnvp"], args.datasets, args, out)]
    else:
        plot(results, models, args.datasets, args, out)
        figures = [out / "densities.png", out / "samples.png"]
    wall_time = time.perf_counter() - start
    metrics = {
        "test_log_likelihood": {d: {k: r[1] for k, r in rs.items()} for d, rs in results.items()},
        "data_log_density": {d: best_possible(d) for d in results},
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "wall_time_s": wall_time,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print_table(results, args.flows)
    print(
        f"\n{wall_time:.0f} s in all; wrote "
        + ", ".join(map(str, figures))
        + f", {out}/metrics.json"
    )


if __name__ == "__main__":
    main()

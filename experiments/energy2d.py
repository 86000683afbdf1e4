"""Reverse-KL fits of planar flows (K = 2, 8, 32) to Rezende & Mohamed's energies U1–U4.

The flow q is trained by minimising KL(q ‖ p) = E_q[log q(x) + U(x)] + log Z from its own samples
(reparameterised through ``sample_and_log_prob``), with the target annealed from β = 0.01 to 1 as
in the planar-flow paper (``nflows_jax.flow_mcmc.fit_reverse_kl``). Afterwards each fit reports

  * the variational free energy F = E_q[log q + U] (a Monte-Carlo mean over fresh samples),
  * log Z by importance sampling with q as the proposal (log-mean-exp of −U − log q),
  * log Z by quadrature on a grid (the reference) and so KL(q‖p) = F + log Z_grid ≥ 0.

    runs/energy2d/planar_energies.png   rows U1–U4; columns: exp(−U), then q for each K
    runs/energy2d/metrics.json

    python experiments/energy2d.py --out runs/energy2d
    python experiments/energy2d.py --quick --out runs/energy2d_quick
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from nflows_jax import flows
from nflows_jax.bijectors import repeat
from nflows_jax.bijectors.planar import planar
from nflows_jax.flow_mcmc import fit_reverse_kl, flow_importance_sampling
from nflows_jax.targets.energies import (
    REZENDE_BOX,
    REZENDE_ENERGIES,
    confined_logdensity,
    grid_reference,
)

LIMIT = REZENDE_BOX
WALL_WIDTH = 0.1


def grid(resolution: int, half_width: float = LIMIT):
    axis = np.linspace(-half_width, half_width, resolution)
    xx, yy = np.meshgrid(axis, axis)
    points = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], axis=1), jnp.float32)
    cell_area = (axis[1] - axis[0]) ** 2
    return xx, yy, points, cell_area


def grid_log_normaliser(logdensity, resolution: int = 1000) -> float:
    """log ∫ exp(logdensity) over the box plus a margin of 10 wall widths, beyond which the
    confined targets hold no measurable mass."""
    return grid_reference(logdensity, LIMIT + 10 * WALL_WIDTH, resolution).log_normaliser


def fit_planar(logdensity, num_layers: int, args, key: jax.Array):
    flow = flows.Flow(flows.standard_normal(2), repeat(planar(2), num_layers))
    init_key, fit_key = jax.random.split(key)
    params = flows.init(flow, init_key, jnp.zeros((args.batch_size, 2)))
    optimizer = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(args.learning_rate))
    result = fit_reverse_kl(
        flow,
        params,
        logdensity,
        optimizer,
        args.steps,
        key=fit_key,
        num_samples=args.batch_size,
        anneal_steps=int(args.anneal_fraction * args.steps),
        initial_beta=0.01,
        progress=False if args.no_progress else None,
        description=f"planar K={num_layers}",
    )
    return flow, result.params


def evaluate(flow, params, logdensity, log_z_grid: float, key, num_samples: int) -> dict:
    estimate = flow_importance_sampling(key, flow, params, logdensity, num_samples)
    free_energy = -float(estimate.elbo)
    return {
        "free_energy": free_energy,
        "log_z_importance": float(estimate.log_z),
        "log_z_importance_se": float(estimate.log_z_se),
        "log_z_grid": log_z_grid,
        "kl_estimate": free_energy + log_z_grid,
        "importance_ess_fraction": float(estimate.ess) / num_samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/energy2d")
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--anneal-fraction", type=float, default=0.5)
    parser.add_argument("--eval-samples", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.eval_samples = 500, 20_000

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    names = list(REZENDE_ENERGIES)
    xx, yy, points, _ = grid(200)
    fig, axes = plt.subplots(
        len(names),
        1 + len(args.layers),
        figsize=(2.2 * (1 + len(args.layers)), 2.2 * len(names)),
        squeeze=False,
    )
    metrics: dict[str, dict] = {}
    key = jax.random.PRNGKey(args.seed)
    for row, name in enumerate(names):
        logdensity = confined_logdensity(REZENDE_ENERGIES[name], LIMIT, WALL_WIDTH)
        log_z_grid = grid_log_normaliser(logdensity)
        axes[row, 0].pcolormesh(
            xx,
            yy,
            np.exp(np.asarray(logdensity(points))).reshape(xx.shape),
            cmap="magma",
            shading="auto",
        )
        axes[row, 0].set_ylabel(name)
        axes[row, 0].set_title(f"exp(-U), log Z = {log_z_grid:.3f}", fontsize=8)
        metrics[name] = {}
        for col, num_layers in enumerate(args.layers, start=1):
            run_key, eval_key = jax.random.split(
                jax.random.fold_in(jax.random.fold_in(key, row), num_layers)
            )
            flow, params = fit_planar(logdensity, num_layers, args, run_key)
            result = evaluate(flow, params, logdensity, log_z_grid, eval_key, args.eval_samples)
            metrics[name][f"K={num_layers}"] = result
            print(
                f"{name} K={num_layers:>2}: KL {result['kl_estimate']:.4f}  "
                f"log Z (IS) {result['log_z_importance']:.4f} vs grid {log_z_grid:.4f}"
            )
            density = np.exp(np.asarray(flows.log_prob(flow, params, points)))
            axes[row, col].pcolormesh(
                xx, yy, density.reshape(xx.shape), cmap="magma", shading="auto"
            )
            axes[row, col].set_title(f"K={num_layers}: KL {result['kl_estimate']:.3f}", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal")
    fig.suptitle("planar flows fitted by reverse KL to U1–U4", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "planar_energies.png", dpi=110)
    metrics_out = {
        "results": metrics,
        "config": {k: v for k, v in vars(args).items()},
        "wall_time_s": time.perf_counter() - start,
    }
    (out / "metrics.json").write_text(json.dumps(metrics_out, indent=2))
    print(f"wrote {out}/planar_energies.png and {out}/metrics.json")


if __name__ == "__main__":
    main()

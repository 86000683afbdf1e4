"""Importance sampling under proposal mismatch: ESS, log-evidence and moment errors.

The target is an unnormalised 2-D Gaussian mixture p̃ = Z · p with known log Z, mean and second
moments. Three families of proposals move away from the moment-matched Gaussian q₀ = N(m, C):

* Gaussian, shifted:   N(m + Δ·sd₁·e₁, C)          Δ = 0 … 3 (in target standard deviations)
* Gaussian, scaled:    N(m, c² C)                   c = 0.5 … 4
* Student-t (ν = 3):   t₃(m, c² C)                  c = 0.5 … 4 (heavy tails)

Mismatch is measured for every proposal on one axis, KL(p ‖ q), estimated with exact draws from
the mixture. Each proposal is run over several seeds; the script writes

    <out>/importance_mismatch.png   target and proposals; ESS/n, |log Ẑ - log Z| and moment
                                    errors against KL(p ‖ q)
    <out>/metrics.json              every number plotted, per family and parameter

    python experiments/importance.py --out runs/importance            # full run
    python experiments/importance.py --quick --out runs/importance    # < 1 min on a laptop CPU
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import distrax
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib import ticker

from nflows_jax.sampling import importance as imp
from nflows_jax.sampling.exact import sample_categorical
from nflows_jax.targets.energies import (
    gaussian_mixture_logdensity,
    gaussian_mixture_moments,
)

LOG_Z = 1.5  # the target is exp(LOG_Z) times a normalised mixture
WEIGHTS = np.array([0.3, 0.7])
MEANS = np.array([[-2.0, 0.0], [1.5, 1.0]])
SCALES = np.array([[0.6, 0.6], [1.0, 0.5]])
STUDENT_DOF = 3.0
SHIFTS = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
SCALE_FACTORS = [0.5, 0.7, 1.0, 1.4, 2.0, 3.0, 4.0]
FAMILY_STYLE = {
    "gaussian_shift": ("Gaussian, shifted by Δ sd", "tab:blue", "o"),
    "gaussian_scale": ("Gaussian, scaled by c", "tab:orange", "s"),
    "student_t_scale": ("Student-t ν=3, scaled by c", "tab:green", "^"),
}


def sample_target(key: jax.Array, num: int) -> jax.Array:
    """Exact draws from the normalised mixture: a component by inverse CDF, then its Gaussian."""
    component_key, normal_key = jax.random.split(key)
    component = sample_categorical(component_key, num, probs=jnp.asarray(WEIGHTS, jnp.float32))
    noise = jax.random.normal(normal_key, (num, 2))
    return (
        jnp.asarray(MEANS, jnp.float32)[component]
        + jnp.asarray(SCALES, jnp.float32)[component] * noise
    )


def gaussian_proposal(loc: jax.Array, scale_tril: jax.Array) -> distrax.Distribution:
    return distrax.MultivariateNormalTri(loc, scale_tril)


def student_t_proposal(loc: jax.Array, scale_tril: jax.Array, dof: float = STUDENT_DOF):
    """A multivariate Student-t as a (sample_fn, log_prob_fn) pair (the pair form of a proposal).

    x = loc + L z · sqrt(ν / g) with z ~ N(0, I), g ~ χ²_ν.
    """
    dim = loc.shape[0]
    log_det = jnp.sum(jnp.log(jnp.abs(jnp.diag(scale_tril))))
    log_norm = (
        jax.scipy.special.gammaln((dof + dim) / 2)
        - jax.scipy.special.gammaln(dof / 2)
        - 0.5 * dim * math.log(dof * math.pi)
        - log_det
    )

    def sample_fn(key, num):
        normal_key, chi2_key = jax.random.split(key)
        z = jax.random.normal(normal_key, (num, dim))
        chi2 = 2.0 * jax.random.gamma(chi2_key, dof / 2, (num,))
        return loc + (z @ scale_tril.T) * jnp.sqrt(dof / chi2)[:, None]

    def log_prob_fn(x):
        y = jax.scipy.linalg.solve_triangular(scale_tril, (x - loc).T, lower=True).T
        return log_norm - 0.5 * (dof + dim) * jnp.log1p(jnp.sum(y**2, axis=-1) / dof)

    return sample_fn, log_prob_fn


def proposal_params(family: str, value: float, mean: np.ndarray, chol: np.ndarray):
    """(loc, scale_tril) of a family member; the moment-matched N(mean, C) is the reference."""
    if family == "gaussian_shift":
        loc = mean + np.array([value * chol[0, 0], 0.0])  # chol[0, 0] = sd of x₁
        return loc, chol
    return mean, value * chol


def run(num_samples: int, num_seeds: int, num_kl: int, seed: int) -> dict:
    log_p = gaussian_mixture_logdensity(WEIGHTS, MEANS, SCALES)
    log_target = lambda x: log_p(x) + LOG_Z
    mean, cov = (
        np.asarray(a, np.float64) for a in gaussian_mixture_moments(WEIGHTS, MEANS, SCALES)
    )
    second_moment = np.diag(cov) + mean**2
    chol = np.linalg.cholesky(cov)

    key_kl, key_runs = jax.random.split(jax.random.PRNGKey(seed))
    target_draws = sample_target(key_kl, num_kl)
    target_log_p = log_p(target_draws)

    def make_proposal(family, loc, tril):
        if family == "student_t_scale":
            return student_t_proposal(loc, tril)
        return gaussian_proposal(loc, tril)

    def log_q_fn(proposal):
        return proposal[1] if isinstance(proposal, tuple) else proposal.log_prob

    def one_family(family):
        # One compiled function per family, vmapped over seeds, reused for every parameter.
        @jax.jit
        def estimates(keys, loc, tril):
            proposal = make_proposal(family, loc, tril)

            def one_seed(key):
                draws = imp.importance_sample(key, proposal, log_target, num_samples)
                lw, x = draws.log_weights, draws.samples
                return (
                    imp.effective_sample_size(lw) / num_samples,
                    imp.log_evidence(lw),
                    imp.log_evidence_standard_error(lw),
                    imp.self_normalised_expectation(lw, x),
                    imp.self_normalised_expectation(lw, x**2),
                )

            kl = jnp.mean(target_log_p - log_q_fn(proposal)(target_draws))
            return kl, jax.vmap(one_seed)(keys)

        return estimates

    keys = jax.random.split(key_runs, num_seeds)
    results = {}
    for family in FAMILY_STYLE:
        estimates = one_family(family)
        values = SHIFTS if family == "gaussian_shift" else SCALE_FACTORS
        rows = []
        for value in values:
            loc, tril = proposal_params(family, value, mean, chol)
            kl, (ess, log_z, log_z_se, first, second) = estimates(
                keys, jnp.asarray(loc, jnp.float32), jnp.asarray(tril, jnp.float32)
            )
            log_z_error = np.asarray(log_z, np.float64) - LOG_Z
            first_error = np.linalg.norm(np.asarray(first) - mean, axis=1)
            second_error = np.linalg.norm(np.asarray(second) - second_moment, axis=1)
            rows.append(
                {
                    "parameter": value,
                    "kl_target_to_proposal": float(kl),
                    "ess_fraction_mean": float(np.mean(ess)),
                    "ess_fraction_std": float(np.std(ess)),
                    "log_z_bias": float(np.mean(log_z_error)),
                    "log_z_rmse": float(np.sqrt(np.mean(log_z_error**2))),
                    "log_z_predicted_se_mean": float(np.mean(log_z_se)),
                    "mean_error_rmse": float(np.sqrt(np.mean(first_error**2))),
                    "second_moment_error_rmse": float(np.sqrt(np.mean(second_error**2))),
                }
            )
        results[family] = rows
    return {
        "target": {
            "log_z": LOG_Z,
            "weights": WEIGHTS.tolist(),
            "means": MEANS.tolist(),
            "scales": SCALES.tolist(),
            "mean": mean.tolist(),
            "second_moment": second_moment.tolist(),
        },
        "families": results,
        "_plot": {"target_draws": np.asarray(target_draws[:2000]), "mean": mean, "chol": chol},
    }


def _ellipse(loc, tril, radius=2.0, num=200):
    angle = np.linspace(0, 2 * np.pi, num)
    circle = radius * np.stack([np.cos(angle), np.sin(angle)])
    return (np.asarray(loc)[:, None] + np.asarray(tril) @ circle).T


def plot(metrics: dict, path: Path, num_samples: int, num_seeds: int) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(11, 9), constrained_layout=True)
    ax = axes[0, 0]
    draws = metrics["_plot"]["target_draws"]
    mean, chol = metrics["_plot"]["mean"], metrics["_plot"]["chol"]
    xx, yy = np.meshgrid(np.linspace(-5, 6, 220), np.linspace(-4, 4, 160))
    log_p = gaussian_mixture_logdensity(WEIGHTS, MEANS, SCALES)
    density = np.exp(np.asarray(log_p(jnp.asarray(np.stack([xx, yy], -1), jnp.float32))))
    ax.contourf(xx, yy, density, levels=12, cmap="Greys")
    ax.scatter(draws[:500, 0], draws[:500, 1], s=2, c="k", alpha=0.3, label="target draws")
    examples = [
        ("gaussian_shift", 0.0, "q₀ = moment-matched Gaussian", "k", "-"),
        ("gaussian_shift", 2.0, "Gaussian, Δ = 2", "tab:blue", "--"),
        ("gaussian_scale", 0.5, "Gaussian, c = 0.5", "tab:orange", "--"),
        ("student_t_scale", 1.0, "Student-t, c = 1", "tab:green", ":"),
    ]
    for family, value, label, color, style in examples:
        loc, tril = proposal_params(family, value, mean, chol)
        outline = _ellipse(loc, tril)
        ax.plot(outline[:, 0], outline[:, 1], style, color=color, lw=1.8, label=label)
    ax.set(xlim=(-5, 6), ylim=(-4, 4), aspect="equal", xlabel="x₁", ylabel="x₂")
    ax.set_title("Target mixture and proposals (2-sd ellipses)")
    ax.legend(loc="lower right", fontsize=8)

    panels = [
        (axes[0, 1], "ess_fraction_mean", "ESS / n", "Effective sample size fraction (± sd)"),
        (
            axes[1, 0],
            "log_z_rmse",
            "RMSE of log Ẑ",
            "Log-evidence error (dotted: mean reported SE)",
        ),
        (
            axes[1, 1],
            "mean_error_rmse",
            "RMSE",
            "Moment errors (solid: ‖Ê[x] − E[x]‖, dashed: E[x²])",
        ),
    ]
    for ax, key, ylabel, title in panels:
        for family, rows in metrics["families"].items():
            label, color, marker = FAMILY_STYLE[family]
            # Points joined in parameter order: the scaled families trace a V in KL, a narrow
            # branch (c < 1, open markers) and a wide branch, which differ at equal KL.
            kl = np.array([r["kl_target_to_proposal"] for r in rows])
            value = np.array([r[key] for r in rows])
            narrow = np.array([family != "gaussian_shift" and r["parameter"] < 1 for r in rows])
            ax.plot(kl, value, color=color, label=label)
            ax.plot(kl[~narrow], value[~narrow], marker, color=color)
            ax.plot(kl[narrow], value[narrow], marker, color=color, mfc="white")
            if key == "ess_fraction_mean":
                spread = np.array([r["ess_fraction_std"] for r in rows])
                ax.errorbar(kl, value, yerr=spread, fmt="none", ecolor=color, alpha=0.5)
            if key == "log_z_rmse":
                predicted = np.array([r["log_z_predicted_se_mean"] for r in rows])
                ax.plot(kl, predicted, ls=":", color=color, lw=1.2)
            if key == "mean_error_rmse":
                second = np.array([r["second_moment_error_rmse"] for r in rows])
                ax.plot(kl, second, ls="--", color=color, lw=1.2)
        ax.set(xscale="log", yscale="log", xlabel="KL(p ‖ q)  (nats)", ylabel=ylabel)
        ax.set_title(title, fontsize=10)
        ax.xaxis.set_major_locator(ticker.FixedLocator([0.2, 0.5, 1, 2, 5, 10]))
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
    axes[0, 1].plot([], [], "o", color="grey", mfc="white", label="open marker: c < 1 (narrow)")
    axes[0, 1].legend(fontsize=8)
    fig.suptitle(
        f"Importance sampling under proposal mismatch (n = {num_samples} per estimate, "
        f"{num_seeds} seeds)"
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/importance"))
    parser.add_argument("--quick", action="store_true", help="small run (< 1 min on CPU)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    jax.config.update("jax_default_matmul_precision", "highest")

    num_samples, num_seeds, num_kl = (2000, 10, 20_000) if args.quick else (20_000, 50, 200_000)
    start = time.perf_counter()
    metrics = run(num_samples, num_seeds, num_kl, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    figure = args.out / "importance_mismatch.png"
    plot(metrics, figure, num_samples, num_seeds)
    del metrics["_plot"]
    metrics["config"] = {
        "quick": args.quick,
        "num_samples": num_samples,
        "num_seeds": num_seeds,
        "num_kl_draws": num_kl,
        "seed": args.seed,
        "wall_seconds": time.perf_counter() - start,
        "backend": jax.default_backend(),
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    for family, rows in metrics["families"].items():
        print(family)
        for r in rows:
            print(
                f"  param {r['parameter']:4.1f}  KL {r['kl_target_to_proposal']:7.3f}  "
                f"ESS/n {r['ess_fraction_mean']:.3f}  logZ rmse {r['log_z_rmse']:.4f} "
                f"(pred SE {r['log_z_predicted_se_mean']:.4f})  "
                f"mean rmse {r['mean_error_rmse']:.4f}"
            )
    print(
        f"wrote {figure} and {args.out / 'metrics.json'} "
        f"in {metrics['config']['wall_seconds']:.1f} s"
    )


if __name__ == "__main__":
    main()

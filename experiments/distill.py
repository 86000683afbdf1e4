"""Probability density distillation (Parallel WaveNet): a MAF teacher into an IAF student.

Two settings, each over several seeds (every seed retrains teacher and students):

* ``moons``: two moons in 2-D. The teacher is a MAF of rational-quadratic spline layers with
  reverse permutations (an affine 2-D MAF with few layers cannot bend the moons), fitted by
  maximum likelihood on 100,000 samples; the student an IAF of the same shape, trained by
  minimising the Monte-Carlo reverse KL ``KL(p_S || p_T)`` (``distillation_loss``).
* ``digits``: sklearn's 8x8 digits (1500 / 297 split as in ``experiments/images.py``, 17 levels
  stored with num_bits = 5), uniformly dequantized and modelled in logit space
  (``logit_preprocess``). Teacher and students are Gaussian autoregressive stacks in one order
  (``gaussian_autoregressive_stack``), so a second student is trained with ClariNet's
  closed-form per-dimension Gaussian KL (``closed_form_distillation_loss``) beside the
  Monte-Carlo one, from the same init and keys. Distillation runs in logit space: the KL is
  invariant under the shared logit map, and the teacher's log-likelihoods are reported in pixel
  space (the density on [0, 1)^64 whose bits/dim are quoted), adding the map's log-Jacobian,
  and in logit space (``logit_space`` in metrics.json). The relative-gap target depends on that
  choice of space (a log-density is not invariant under a change of variables; the KL is).

Reported per setting and seed (``metrics.json``): the teacher's mean log-likelihood of its own
samples and of the student's (with standard errors, their ratio and relative gap; target: within
2 %), the final KL(p_S || p_T) and the forward KL(p_T || p_S) on large fresh sample sets, the KL
curve, for digits the two estimators' per-batch spread and gradient variance, and the jitted
sampling time of N samples (median of repeats after a warm-up): teacher MAF sampling is D
sequential MADE passes per layer, the student IAF one pass per layer. Figures under ``--out``:
``moons_kl.png``, ``moons_samples.png``, ``digits_kl.png``, ``digits_samples.png``.

    python experiments/distill.py --out runs/distill                  # 3 seeds, both settings
    python experiments/distill.py --quick --out runs/distill_quick    # smoke run: ~50 s of CPU

A finished (setting, seed) is kept in ``--out/<setting>_seed<S>.pkl``; a rerun with the same
``--out`` and training config reuses it (a coarse resume), so seeds can be added later; the
evaluation (sample counts, timing) is always redone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import sys
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
from nflows_jax.bijectors import (
    chain,
    inverse_autoregressive,
    masked_autoregressive,
    rational_quadratic_spline,
    repeat,
    reverse_permutation,
)
from nflows_jax.data import DIGITS_NUM_LEVELS, batches, load_digits, sample_toy
from nflows_jax.dequantize import bits_per_dim, logit_preprocess, uniform_dequantize
from nflows_jax.distill import (
    closed_form_distillation_loss,
    distillation_loss,
    frozen_log_prob,
    gaussian_autoregressive_stack,
)
from nflows_jax.image_flows import pixel_histogram_bits_per_dim
from nflows_jax.train import fit

DIGITS_BITS = 5  # 17 levels stored in 32 bins, as experiments/images.py
DIGITS_DIMS = 64
TARGET = 0.02


# ------------------------------------------------------------------------------------------------
# Shared helpers
# ------------------------------------------------------------------------------------------------


def mean_se(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


def optimizer(lr: float, steps: int) -> optax.GradientTransformation:
    schedule = optax.cosine_decay_schedule(lr, steps, alpha=0.05)
    return optax.chain(optax.clip_by_global_norm(10.0), optax.adam(schedule))


def progress(args) -> bool | None:
    return None if sys.stderr.isatty() else False


def sampling_time(sample_fn, params, key, repeats: int) -> float:
    """Median wall seconds of a jitted ``sample_fn(params, key)`` after one warm-up call."""
    jax.block_until_ready(sample_fn(params, key))
    times = []
    for r in range(repeats):
        k = jax.random.fold_in(key, r + 1)
        start = time.perf_counter()
        jax.block_until_ready(sample_fn(params, k))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def ll_comparison(teacher_ll_own: np.ndarray, teacher_ll_student: np.ndarray) -> dict:
    """Mean teacher log-likelihood of its own vs the student's samples, ratio and relative gap."""
    own, own_se = mean_se(teacher_ll_own)
    stu, stu_se = mean_se(teacher_ll_student)
    ratio = stu / own
    ratio_se = abs(ratio) * math.hypot(stu_se / stu, own_se / own)
    gap = (stu - own) / abs(own)
    return {
        "teacher_ll_own_samples": own,
        "teacher_ll_own_samples_se": own_se,
        "teacher_ll_student_samples": stu,
        "teacher_ll_student_samples_se": stu_se,
        "ratio": ratio,
        "ratio_se": ratio_se,
        "relative_gap": gap,
        "relative_gap_se": math.hypot(stu_se, own_se) / abs(own),
        "within_target": bool(abs(gap) <= TARGET),
    }


def curve_of(history: dict) -> list[tuple[int, float]]:
    return list(zip(history["log_steps"], history["loss"], strict=True))


def eval_curve(history: dict, name: str) -> list[tuple[int, float]]:
    return [(e["step"], e[name]) for e in history["eval"]]


def cache_path(out: Path, setting: str, seed: int) -> Path:
    return out / f"{setting}_seed{seed}.pkl"


def load_cached(out: Path, setting: str, seed: int, config: dict):
    path = cache_path(out, setting, seed)
    if not path.exists():
        return None
    with path.open("rb") as f:
        cached = pickle.load(f)
    return cached if cached.get("config") == config else None


def save_cached(out: Path, setting: str, seed: int, payload: dict) -> None:
    with cache_path(out, setting, seed).open("wb") as f:
        pickle.dump(jax.device_get(payload), f)


# ------------------------------------------------------------------------------------------------
# Compiled functions, built once per setting so that every seed reuses them (``fit`` caches its
# step by the identity of loss_fn and optimizer; the teacher's params reach the distillation loss
# as its "batch", so they are an argument, not a constant baked into each seed's program).
# ------------------------------------------------------------------------------------------------


class Compiled:
    """Jitted functions of (params, ...) shared by the seeds of one setting."""

    def __init__(self, teacher: flows.Flow, student: flows.Flow, args, n_eval: int, post=None):
        n_time = args.time_samples
        post = post or (lambda x: x)
        self.teacher_sample = jax.jit(lambda p, k: flows.sample_and_log_prob(teacher, p, k, n_eval))
        self.student_sample = jax.jit(lambda p, k: flows.sample_and_log_prob(student, p, k, n_eval))
        self.teacher_lp = jax.jit(lambda p, x: flows.log_prob(teacher, p, x))
        self.student_lp = jax.jit(lambda p, x: flows.log_prob(student, p, x))  # IAF: sequential
        self.teacher_time = jax.jit(lambda p, k: post(flows.sample(teacher, p, k, n_time)))
        self.student_time = jax.jit(lambda p, k: post(flows.sample(student, p, k, n_time)))

        def mc(p, teacher_params, k):
            teacher_lp = frozen_log_prob(teacher, teacher_params)
            return distillation_loss(student, teacher_lp, args.num_samples)(p, k)

        def mc_curve(p, teacher_params, k):
            teacher_lp = frozen_log_prob(teacher, teacher_params)
            return distillation_loss(student, teacher_lp, args.curve_samples)(p, k)

        self.mc_loss = mc
        self.mc_curve = jax.jit(mc_curve)

    def timings(self, t_params, s_params, key, repeats: int, n: int) -> dict:
        t_time = sampling_time(self.teacher_time, t_params, key, repeats)
        s_time = sampling_time(self.student_time, s_params, key, repeats)
        return {
            "time_samples": n,
            "teacher_sampling_s": t_time,
            "student_sampling_s": s_time,
            "sampling_speedup": t_time / s_time,
        }


def distill_fit(loss, params, teacher_params, opt, args, steps, key, eval_fn, description):
    """Minimise ``loss(params, teacher_params, key)`` with ``fit``; the batch is the teacher."""
    return fit(
        loss,
        params,
        opt,
        lambda step: teacher_params,
        steps,
        key=key,
        eval_fn=eval_fn,
        eval_every=max(1, steps // args.curve_points),
        progress=progress(args),
        description=description,
        log_every=max(1, min(100, steps // args.curve_points)),
    )


# ------------------------------------------------------------------------------------------------
# Setting 1: two moons, spline MAF teacher -> spline IAF student
# ------------------------------------------------------------------------------------------------


class Moons:
    def __init__(self, args):
        spline = rational_quadratic_spline(args.moons_bins, bound=4.0)
        hidden = tuple(args.moons_hidden)
        maf = masked_autoregressive(2, spline, hidden)
        iaf = inverse_autoregressive(2, spline, hidden)
        layers = args.moons_layers
        self.teacher = teacher = flows.Flow(
            flows.standard_normal(2), repeat(chain(maf, reverse_permutation()), layers)
        )
        self.student = flows.Flow(
            flows.standard_normal(2), repeat(chain(iaf, reverse_permutation()), layers)
        )

        def nll(p, batch, k):
            del k
            return -jnp.mean(flows.log_prob(teacher, p, batch))

        self.nll = nll
        self.teacher_opt = optimizer(args.teacher_lr, args.moons_teacher_steps)
        self.student_opt = optimizer(args.student_lr, args.moons_student_steps)
        self.compiled = Compiled(self.teacher, self.student, args, args.eval_samples)


def run_moons_seed(args, setup: Moons, seed: int) -> dict:
    teacher, student, c = setup.teacher, setup.student, setup.compiled
    key = jax.random.PRNGKey(seed)
    k_data, k_test, k_tinit, k_ttrain, k_sinit, k_strain, k_eval = jax.random.split(key, 7)
    data = np.asarray(sample_toy("two_moons", k_data, 100_000))
    test = sample_toy("two_moons", k_test, 20_000)
    t0 = time.perf_counter()
    t_result = fit(
        setup.nll,
        flows.init(teacher, k_tinit, jnp.zeros((4, 2))),
        setup.teacher_opt,
        batches(data, args.batch_size, seed=seed),
        args.moons_teacher_steps,
        key=k_ttrain,
        progress=progress(args),
        description=f"moons teacher seed {seed}",
    )
    t_params = t_result.params
    teacher_time = time.perf_counter() - t0
    teacher_test_ll = mean_se(c.teacher_lp(t_params, test))
    t0 = time.perf_counter()
    s_result = distill_fit(
        c.mc_loss,
        flows.init(student, k_sinit, jnp.zeros((4, 2))),
        t_params,
        setup.student_opt,
        args,
        args.moons_student_steps,
        k_strain,
        lambda p: {"kl": float(c.mc_curve(p, t_params, k_eval))},
        f"moons student seed {seed}",
    )
    return {
        "teacher_params": t_params,
        "student_params": s_result.params,
        "teacher_test_ll": teacher_test_ll,
        "teacher_train_s": teacher_time,
        "student_train_s": time.perf_counter() - t0,
        "loss_curve": curve_of(s_result.history),
        "kl_curve": eval_curve(s_result.history, "kl"),
        "teacher_loss_curve": curve_of(t_result.history),
        "teacher_steps_per_s": t_result.history["steps_per_second_after_compile"],
        "student_steps_per_s": s_result.history["steps_per_second_after_compile"],
    }


def evaluate_moons(args, setup: Moons, seed: int, res: dict):
    c = setup.compiled
    t_params, s_params = res["teacher_params"], res["student_params"]
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 1000)
    k_t, k_s, k_time = jax.random.split(key, 3)
    x_t, lp_t_own = c.teacher_sample(t_params, k_t)
    x_s, lp_s_own = c.student_sample(s_params, k_s)
    lp_t_student = np.asarray(c.teacher_lp(t_params, x_s))
    m = args.forward_kl_samples
    lp_s_teacher = np.asarray(c.student_lp(s_params, x_t[:m]))
    metrics = ll_comparison(np.asarray(lp_t_own), lp_t_student)
    kl = mean_se(np.asarray(lp_s_own) - lp_t_student)
    forward_kl = mean_se(np.asarray(lp_t_own[:m]) - lp_s_teacher)
    times = c.timings(t_params, s_params, k_time, args.time_repeats, args.time_samples)
    metrics.update(
        {
            "seed": seed,
            "teacher_test_ll": res["teacher_test_ll"][0],
            "teacher_test_ll_se": res["teacher_test_ll"][1],
            "kl_student_teacher_final": kl[0],
            "kl_student_teacher_final_se": kl[1],
            "forward_kl_teacher_student": forward_kl[0],
            "forward_kl_teacher_student_se": forward_kl[1],
            "teacher_train_s": res["teacher_train_s"],
            "student_train_s": res["student_train_s"],
            "teacher_steps_per_s": res["teacher_steps_per_s"],
            "student_steps_per_s": res["student_steps_per_s"],
            **times,
        }
    )
    return metrics, np.asarray(x_t), np.asarray(x_s)


# ------------------------------------------------------------------------------------------------
# Setting 2: dequantized digits, Gaussian MAF stack -> Gaussian IAF stack (MC and closed form)
# ------------------------------------------------------------------------------------------------


def load_digits_split() -> tuple[np.ndarray, np.ndarray]:
    images = load_digits().images
    order = np.random.default_rng(0).permutation(len(images))
    return images[order[:1500]], images[order[1500:]]


class Digits:
    def __init__(self, args):
        hidden, layers, alpha = tuple(args.digits_hidden), args.digits_layers, args.alpha
        self.teacher = teacher = gaussian_autoregressive_stack(DIGITS_DIMS, layers, "maf", hidden)
        self.student = student = gaussian_autoregressive_stack(DIGITS_DIMS, layers, "iaf", hidden)
        logit = logit_preprocess(alpha)
        self.train, self.test = load_digits_split()

        def pixel_ll(p, images, k):
            y = uniform_dequantize(k, images, DIGITS_BITS).reshape(images.shape[0], DIGITS_DIMS)
            z, log_jac = logit.inverse((), y)  # z, log|dz/dy|
            return flows.log_prob(teacher.flow, p, z) + log_jac

        def bpd_loss(p, images, k):
            return jnp.mean(bits_per_dim(pixel_ll(p, images, k), DIGITS_DIMS, DIGITS_BITS))

        def closed_with(n):
            def loss(p, teacher_params, k):
                return closed_form_distillation_loss(student, teacher, teacher_params, n)(p, k)

            return loss

        self.bpd_loss = bpd_loss
        self.test_bpd = jax.jit(bpd_loss)
        self.teacher_opt = optimizer(args.teacher_lr, args.digits_teacher_steps)
        self.student_opt = optimizer(args.student_lr, args.digits_student_steps)
        self.closed_loss = closed_with(args.num_samples)
        self.closed_curve = jax.jit(closed_with(args.curve_samples))
        self.closed_eval = jax.jit(closed_with(args.digits_eval_samples))
        # log|dy/dz| of the logit map's forward direction z -> pixels y: (B, D) -> (B,)
        self.pixel_jac = jax.jit(lambda z: logit.forward((), z)[1])
        self.to_pixels = lambda z: logit.forward((), z)[0]
        self.compiled = Compiled(
            teacher.flow, student.flow, args, args.digits_eval_samples, self.to_pixels
        )
        self.value_and_grad = {
            "mc": jax.jit(jax.value_and_grad(self.compiled.mc_loss)),
            "closed": jax.jit(jax.value_and_grad(self.closed_loss)),
        }


def run_digits_seed(args, setup: Digits, seed: int) -> dict:
    teacher, student, c = setup.teacher, setup.student, setup.compiled
    key = jax.random.PRNGKey(seed)
    k_tinit, k_ttrain, k_test, k_sinit, k_strain, k_eval = jax.random.split(key, 6)
    test = jnp.asarray(setup.test)
    t0 = time.perf_counter()
    t_result = fit(
        setup.bpd_loss,
        flows.init(teacher.flow, k_tinit, jnp.zeros((4, DIGITS_DIMS))),
        setup.teacher_opt,
        batches(setup.train, args.digits_batch_size, seed=seed),
        args.digits_teacher_steps,
        key=k_ttrain,
        eval_fn=lambda p: {"test_bpd": float(setup.test_bpd(p, test, k_test))},
        eval_every=max(1, args.digits_teacher_steps // 10),
        progress=progress(args),
        description=f"digits teacher seed {seed}",
    )
    teacher_time = time.perf_counter() - t0
    t_params = t_result.params
    s_init = flows.init(student.flow, k_sinit, jnp.zeros((4, DIGITS_DIMS)))
    out = {
        "teacher_params": t_params,
        "teacher_train_s": teacher_time,
        "teacher_test_bpd": float(setup.test_bpd(t_params, test, k_test)),
        "teacher_eval": t_result.history["eval"],
        "teacher_steps_per_s": t_result.history["steps_per_second_after_compile"],
        "student_init": s_init,
    }
    for name, loss in (("mc", c.mc_loss), ("closed", setup.closed_loss)):
        t0 = time.perf_counter()
        result = distill_fit(
            loss,
            s_init,
            t_params,
            setup.student_opt,
            args,
            args.digits_student_steps,
            k_strain,
            # one low-variance yardstick for both students' curves: the closed form
            lambda p: {"kl": float(setup.closed_curve(p, t_params, k_eval))},
            f"digits {name} student seed {seed}",
        )
        out[f"{name}_train_s"] = time.perf_counter() - t0
        out[f"{name}_params"] = result.params
        out[f"{name}_loss_curve"] = curve_of(result.history)
        out[f"{name}_kl_curve"] = eval_curve(result.history, "kl")
        out[f"{name}_steps_per_s"] = result.history["steps_per_second_after_compile"]
    return out


def estimator_spread(args, setup: Digits, t_params, s_params, key) -> dict:
    """Per-batch std and gradient variance (trace of the covariance) of both estimators."""
    keys = jax.random.split(key, args.spread_repeats)
    result = {"batch_size": args.num_samples, "repeats": args.spread_repeats}
    for name, value_and_grad in setup.value_and_grad.items():
        values, grads = [], []
        for k in keys:  # a loop, not a vmap: r copies of the grads stay small
            v, g = value_and_grad(s_params, t_params, k)
            values.append(float(v))
            grads.append(np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(g)]))
        grads = np.stack(grads).astype(np.float64)
        result[f"{name}_mean"] = float(np.mean(values))
        result[f"{name}_std"] = float(np.std(values, ddof=1))
        result[f"{name}_grad_variance"] = float(np.sum(np.var(grads, axis=0, ddof=1)))
        result[f"{name}_grad_mean_sq_norm"] = float(np.sum(np.mean(grads, axis=0) ** 2))
    return result


def evaluate_digits(args, setup: Digits, seed: int, res: dict):
    c = setup.compiled
    t_params = res["teacher_params"]
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 1000)
    k_t, k_s, k_time, k_spread = jax.random.split(key, 4)
    m = args.forward_kl_samples
    z_t, lp_t_own = c.teacher_sample(t_params, k_t)
    lp_t_own_pixel = np.asarray(lp_t_own - setup.pixel_jac(z_t))
    metrics = {
        "seed": seed,
        "teacher_test_bpd": res["teacher_test_bpd"],
        "teacher_eval": res["teacher_eval"],
        "teacher_train_s": res["teacher_train_s"],
        "teacher_steps_per_s": res["teacher_steps_per_s"],
        # the teacher's own samples in bits/dim (its differential entropy in pixel space)
        "teacher_own_samples_bpd": float(
            bits_per_dim(np.mean(lp_t_own_pixel), DIGITS_DIMS, DIGITS_BITS)
        ),
    }
    samples = {"teacher": np.asarray(z_t[:64])}
    for name in ("mc", "closed"):
        s_params = res[f"{name}_params"]
        z_s, lp_s_own = c.student_sample(s_params, k_s)
        lp_t_student = np.asarray(c.teacher_lp(t_params, z_s))
        lp_t_student_pixel = lp_t_student - np.asarray(setup.pixel_jac(z_s))
        # the IAF's density takes D sequential passes per layer, so on a subset
        lp_s_teacher = np.asarray(c.student_lp(s_params, z_t[:m]))
        entry = ll_comparison(lp_t_own_pixel, lp_t_student_pixel)
        entry["logit_space"] = ll_comparison(np.asarray(lp_t_own), lp_t_student)
        kl = mean_se(np.asarray(lp_s_own) - lp_t_student)  # the same number in either space
        forward_kl = mean_se(np.asarray(lp_t_own[:m]) - lp_s_teacher)
        entry.update(
            {
                "student_samples_teacher_bpd": float(
                    bits_per_dim(np.mean(lp_t_student_pixel), DIGITS_DIMS, DIGITS_BITS)
                ),
                "kl_student_teacher_final": kl[0],
                "kl_student_teacher_final_se": kl[1],
                "kl_closed_form_final": float(setup.closed_eval(s_params, t_params, k_s)),
                "forward_kl_teacher_student": forward_kl[0],
                "forward_kl_teacher_student_se": forward_kl[1],
                "train_s": res[f"{name}_train_s"],
                "steps_per_s": res[f"{name}_steps_per_s"],
            }
        )
        metrics[name] = entry
        samples[name] = np.asarray(z_s[:64])
    metrics["estimator_spread_final_mc_student"] = estimator_spread(
        args, setup, t_params, res["mc_params"], k_spread
    )
    metrics["estimator_spread_init_student"] = estimator_spread(
        args, setup, t_params, res["student_init"], k_spread
    )
    metrics.update(
        c.timings(t_params, res["mc_params"], k_time, args.time_repeats, args.time_samples)
    )
    top = DIGITS_NUM_LEVELS - 1
    images = {
        name: np.clip(np.floor(np.asarray(setup.to_pixels(z)) * 2**DIGITS_BITS), 0, top)
        for name, z in samples.items()
    }
    return metrics, images


# ------------------------------------------------------------------------------------------------
# Figures and summary
# ------------------------------------------------------------------------------------------------


def plot_kl(curves: dict[str, list], raw: dict[str, list], path: Path, title: str) -> None:
    """``curves``/``raw``: label -> list over seeds of [(step, kl), ...]; raw drawn dashed.

    ``curves`` are the KL on ``--curve-samples`` fresh draws at each evaluation; ``raw`` the
    training loss (the estimator the student was trained with, averaged over the steps since
    the previous log point).
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = ["C0", "C1", "C2", "C3"]
    for (label, per_seed), color in zip(curves.items(), colors, strict=False):
        for i, curve in enumerate(per_seed):
            steps, values = zip(*curve, strict=True)
            ax.plot(steps, values, "o-", ms=3, color=color, label=label if i == 0 else None)
    for (label, per_seed), color in zip(raw.items(), colors, strict=False):
        for i, curve in enumerate(per_seed):
            steps, values = zip(*curve, strict=True)
            values = np.where(np.asarray(values) > 0, values, np.nan)  # log axis
            ax.plot(steps, values, "--", lw=0.8, alpha=0.6, color=color,
                    label=label if i == 0 else None)  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("student step")
    ax.set_ylabel("KL(p_S || p_T) (nats)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_moons_samples(x_t: np.ndarray, x_s: np.ndarray, data: np.ndarray, path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.6))
    lim = [[-3.5, 3.5], [-2.5, 2.5]]
    for ax, pts, title in zip(
        axes, (data, x_t, x_s), ("data", "teacher MAF samples", "student IAF samples"), strict=True
    ):
        ax.hist2d(pts[:, 0], pts[:, 1], bins=100, range=lim, cmap="viridis")
        ax.set_title(title)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def image_grid(images: np.ndarray) -> np.ndarray:
    rows = int(math.sqrt(len(images)))
    grid = images[: rows * rows].reshape(rows, rows, 8, 8)
    return grid.transpose(0, 2, 1, 3).reshape(rows * 8, rows * 8)


def plot_digit_samples(images: dict[str, np.ndarray], path: Path) -> None:
    titles = {
        "data": "test data",
        "teacher": "teacher MAF",
        "mc": "student IAF (MC KL)",
        "closed": "student IAF (closed-form KL)",
    }
    fig, axes = plt.subplots(1, len(images), figsize=(3.2 * len(images), 3.4))
    for ax, (name, imgs) in zip(axes, images.items(), strict=True):
        ax.imshow(image_grid(imgs), cmap="gray", vmin=0, vmax=DIGITS_NUM_LEVELS - 1)
        ax.set_title(titles[name])
        ax.axis("off")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def summarise(per_seed: list[dict], key: str) -> dict:
    values = [m[key] for m in per_seed]
    mean, se = mean_se(values) if len(values) > 1 else (values[0], float("nan"))
    return {"mean": mean, "se": se, "values": values}


def headline(per_seed: list[dict]) -> dict:
    keys = (
        "teacher_ll_own_samples",
        "teacher_ll_student_samples",
        "ratio",
        "relative_gap",
        "kl_student_teacher_final",
        "forward_kl_teacher_student",
    )
    summary = {k: summarise(per_seed, k) for k in keys}
    summary["seeds_within_target"] = sum(m["within_target"] for m in per_seed)
    summary["num_seeds"] = len(per_seed)
    return summary


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


def config_of(args, setting: str) -> dict:
    shared = ("num_samples", "student_lr", "teacher_lr", "curve_points", "curve_samples")
    own = [k for k in vars(args) if k.startswith(setting)]
    extra = ["batch_size"] if setting == "moons" else ["alpha"]
    return {k: getattr(args, k) for k in (*shared, *own, *extra)}


def run(args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict = {"config": {k: v for k, v in vars(args).items() if k != "out"}}
    started = time.perf_counter()
    if "moons" in args.settings:
        config = config_of(args, "moons")
        setup = Moons(args)
        per_seed, curves = [], []
        for seed in args.seeds:
            t0 = time.perf_counter()
            res = load_cached(out, "moons", seed, config)
            if res is None:
                res = run_moons_seed(args, setup, seed)
                save_cached(out, "moons", seed, {**res, "config": config})
            m, x_t, x_s = evaluate_moons(args, setup, seed, res)
            m["curve"] = res["kl_curve"]
            m["train_loss_curve"] = res["loss_curve"]
            m["wall_s"] = time.perf_counter() - t0
            per_seed.append(m)
            curves.append(res["kl_curve"])
            print(
                f"moons seed {seed}: teacher LL own {m['teacher_ll_own_samples']:.4f} ± "
                f"{m['teacher_ll_own_samples_se']:.4f}, of student samples "
                f"{m['teacher_ll_student_samples']:.4f} ± {m['teacher_ll_student_samples_se']:.4f}"
                f" (gap {100 * m['relative_gap']:+.2f} %), KL {m['kl_student_teacher_final']:.4f}"
                f", sampling {m['teacher_sampling_s'] * 1e3:.2f} vs "
                f"{m['student_sampling_s'] * 1e3:.2f} ms ({m['wall_s']:.0f} s)",
                flush=True,
            )
            if seed == args.seeds[0]:
                data = np.asarray(sample_toy("two_moons", jax.random.PRNGKey(99), len(x_t)))
                plot_moons_samples(x_t, x_s, data, out / "moons_samples.png")
        title = f"two moons: spline MAF teacher -> spline IAF student ({len(curves)} seeds)"
        plot_kl(
            {"KL on fresh draws": curves},
            {"training loss (MC estimator)": [m["train_loss_curve"] for m in per_seed]},
            out / "moons_kl.png",
            title,
        )
        metrics["moons"] = {"per_seed": per_seed, "summary": headline(per_seed)}
    if "digits" in args.settings:
        config = config_of(args, "digits")
        setup = Digits(args)
        train, test = setup.train, setup.test
        per_seed = []
        curves = {"MC-trained student": [], "closed-form-trained student": []}
        raw = {"training loss, MC estimator": [], "training loss, closed form": []}
        for seed in args.seeds:
            t0 = time.perf_counter()
            res = load_cached(out, "digits", seed, config)
            if res is None:
                res = run_digits_seed(args, setup, seed)
                save_cached(out, "digits", seed, {**res, "config": config})
            m, images = evaluate_digits(args, setup, seed, res)
            m["mc"]["curve"] = res["mc_kl_curve"]
            m["closed"]["curve"] = res["closed_kl_curve"]
            m["mc"]["train_loss_curve"] = res["mc_loss_curve"]
            m["closed"]["train_loss_curve"] = res["closed_loss_curve"]
            m["wall_s"] = time.perf_counter() - t0
            per_seed.append(m)
            curves["MC-trained student"].append(res["mc_kl_curve"])
            curves["closed-form-trained student"].append(res["closed_kl_curve"])
            raw["training loss, MC estimator"].append(res["mc_loss_curve"])
            raw["training loss, closed form"].append(res["closed_loss_curve"])
            mc, sp = m["mc"], m["estimator_spread_final_mc_student"]
            print(
                f"digits seed {seed}: teacher test {m['teacher_test_bpd']:.3f} bits/dim; pixel LL "
                f"own {mc['teacher_ll_own_samples']:.2f} ± {mc['teacher_ll_own_samples_se']:.2f}, "
                f"of MC-student samples {mc['teacher_ll_student_samples']:.2f} ± "
                f"{mc['teacher_ll_student_samples_se']:.2f} (gap {100 * mc['relative_gap']:+.2f} %"
                f"; closed-form student {100 * m['closed']['relative_gap']:+.2f} %), KL "
                f"{mc['kl_student_teacher_final']:.3f} (MC student) / "
                f"{m['closed']['kl_student_teacher_final']:.3f} (closed-form student)"
                f", batch std MC {sp['mc_std']:.3f} vs closed {sp['closed_std']:.3f}, sampling "
                f"{m['teacher_sampling_s'] * 1e3:.1f} vs {m['student_sampling_s'] * 1e3:.2f} ms "
                f"({m['wall_s']:.0f} s)",
                flush=True,
            )
            if seed == args.seeds[0]:
                pick = np.random.default_rng(0).permutation(len(test))[:64]
                shown = {"data": test[pick, ..., 0]}
                shown.update({k: v.reshape(-1, 8, 8) for k, v in images.items()})
                plot_digit_samples(shown, out / "digits_samples.png")
        title = (
            f"digits: Gaussian MAF teacher -> Gaussian IAF students, {len(per_seed)} seeds\n"
            "solid: closed-form KL on fresh draws (same yardstick for both)"
        )
        plot_kl(curves, raw, out / "digits_kl.png", title)
        summary = {name: headline([m[name] for m in per_seed]) for name in ("mc", "closed")}
        summary["teacher_test_bpd"] = summarise(per_seed, "teacher_test_bpd")
        summary["per_pixel_histogram_test_bpd"] = pixel_histogram_bits_per_dim(
            train, test, DIGITS_NUM_LEVELS
        )
        for k in ("mc_std", "closed_std", "mc_grad_variance", "closed_grad_variance"):
            summary[f"spread_{k}"] = summarise(
                [m["estimator_spread_final_mc_student"] for m in per_seed], k
            )
        for k in ("teacher_sampling_s", "student_sampling_s", "sampling_speedup"):
            summary[k] = summarise(per_seed, k)
        metrics["digits"] = {"per_seed": per_seed, "summary": summary}
    for k in ("teacher_sampling_s", "student_sampling_s", "sampling_speedup"):
        if "moons" in metrics:
            metrics["moons"]["summary"][k] = summarise(metrics["moons"]["per_seed"], k)
    metrics["wall_s"] = time.perf_counter() - started
    metrics["backend"] = jax.default_backend()
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"done in {metrics['wall_s']:.0f} s; {out}/metrics.json", flush=True)
    return metrics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    settings = ["moons", "digits"]
    p.add_argument("--settings", nargs="+", choices=settings, default=settings)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--num-samples", type=int, default=256, help="student draws per KL step")
    p.add_argument("--eval-samples", type=int, default=10_000, help="moons final evaluation")
    p.add_argument("--student-lr", type=float, default=1e-3)
    p.add_argument("--teacher-lr", type=float, default=1e-3)
    p.add_argument("--curve-points", type=int, default=20)
    p.add_argument("--curve-samples", type=int, default=2000, help="draws per KL-curve point")
    p.add_argument("--batch-size", type=int, default=512, help="moons teacher batch")
    p.add_argument("--moons-layers", type=int, default=4)
    p.add_argument("--moons-hidden", type=int, nargs="+", default=[64, 64])
    p.add_argument("--moons-bins", type=int, default=8)
    p.add_argument("--moons-teacher-steps", type=int, default=4000)
    p.add_argument("--moons-student-steps", type=int, default=6000)
    p.add_argument("--digits-layers", type=int, default=4)
    p.add_argument("--digits-hidden", type=int, nargs="+", default=[256, 256])
    p.add_argument("--digits-batch-size", type=int, default=128)
    p.add_argument("--digits-teacher-steps", type=int, default=1500)
    p.add_argument("--digits-student-steps", type=int, default=2000)
    p.add_argument("--digits-eval-samples", type=int, default=5000)
    p.add_argument("--alpha", type=float, default=0.05, help="logit pre-processing")
    p.add_argument("--forward-kl-samples", type=int, default=2000)
    p.add_argument("--spread-repeats", type=int, default=32)
    p.add_argument("--time-samples", type=int, default=1000)
    p.add_argument("--time-repeats", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="1 seed, tiny budgets (< 1 min)")
    p.add_argument("--out", default="runs/distill")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds = [0]
        args.moons_teacher_steps = args.moons_student_steps = 200
        args.digits_teacher_steps = args.digits_student_steps = 100
        args.moons_hidden, args.digits_hidden = [32, 32], [64, 64]
        args.moons_layers, args.digits_layers = 2, 2
        args.eval_samples, args.time_samples, args.time_repeats = 2000, 200, 3
        args.digits_eval_samples = 2000
        args.forward_kl_samples = 500
        args.spread_repeats, args.num_samples, args.curve_points = 8, 128, 5
        args.curve_samples = 500
    return args


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run(parse_args())

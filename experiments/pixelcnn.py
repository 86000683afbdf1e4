"""PixelCNN vs Gated PixelCNN on binarized MNIST: test NLL in nats, samples, receptive fields.

    python experiments/pixelcnn.py --model gated --minutes 120 --out runs/pixelcnn_gated_2h
    python experiments/pixelcnn.py --model pixelcnn --minutes 8 --seeds 0 1 2 \\
        --out runs/pixelcnn_compare/pixelcnn          # one cell of the equal-budget comparison
    python experiments/pixelcnn.py --summarise runs/pixelcnn_compare/pixelcnn \\
        runs/pixelcnn_compare/gated --out docs/pixelcnn   # the comparison table and figure
    python experiments/pixelcnn.py --quick --out runs/pixelcnn_quick   # < 2 minutes

Both models are ``nflows_jax.models.image_autoregressive`` with a Bernoulli likelihood on the
statically binarized MNIST of Larochelle & Murray (50000 train / 10000 valid / 10000 test):

* ``--model pixelcnn``: ``PixelCNNNet`` (a 7×7 mask-A layer, residual 3×3 mask-B layers, 1×1
  mask-B head). Its stacked masked kernels leave a blind spot up and to the right.
* ``--model gated``: ``GatedPixelCNNNet`` (vertical + horizontal stacks, tanh·sigmoid gates), no
  blind spot.

Training is ``nflows_jax.train.fit_epochs``: Adam with a cosine decay over ``--epochs``,
``--minutes`` of wall time in all (resumes included: rerun with the same ``--out`` to continue),
the validation NLL on ``--valid-images`` images after every ``--epoch-images`` training images,
and the best-validation params evaluated at the end on the whole test set (mean NLL in nats and
its standard error over the test images). One run per ``--seeds`` entry, each under
``<out>/seed<k>``; with several seeds ``<out>/summary.json`` has the mean over seeds and its
standard error. Each seed writes ``metrics.json``, ``curve.png``, ``samples.png`` (drawn with
the cached ``sample_fast``) and ``receptive_field.png`` (by gradients, of the trained net at a
centre and an edge pixel). ``--summarise DIR DIR ...`` reads finished runs and writes the
comparison (``comparison.json``, ``comparison.png``) plus a receptive-field figure of both
architectures side by side.
"""

from __future__ import annotations

import argparse
import json
import math
import os
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

from nflows_jax.data import batches, load_dataset
from nflows_jax.models.likelihoods import bernoulli
from nflows_jax.models.pixelcnn import (
    GatedPixelCNNNet,
    PixelCNNNet,
    image_autoregressive,
    receptive_field,
    scale_levels,
)
from nflows_jax.train import fit_epochs

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TARGET_NATS = 86.0  # issue 9: Gated PixelCNN, at most 2 hours on the 2-core CPU
SHAPE = (28, 28, 1)


def load(data_dir: str | None) -> dict[str, np.ndarray]:
    """{split: (N, 28, 28, 1) int32 of 0/1} for train, valid, test."""
    dirs = [data_dir] if data_dir else [SHARED_DATA]
    return {
        split: load_dataset("binarized_mnist", split, dirs)
        .images.reshape(-1, *SHAPE)
        .astype(np.int32)
        for split in ("train", "valid", "test")
    }


def build_network(model: str, features: int, layers: int, kernel: int):
    if model == "pixelcnn":
        return PixelCNNNet(features=features, num_layers=layers)
    if model == "gated":
        return GatedPixelCNNNet(features=features, num_layers=layers, kernel=kernel)
    raise ValueError(f"unknown model {model!r}")


def count_params(params) -> int:
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


def mean_and_se(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    se = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan
    return float(np.mean(values)), se


def save_grid(images: np.ndarray, path: Path, title: str) -> None:
    rows = int(math.sqrt(len(images)))
    grid = images[: rows * rows, :, :, 0].reshape(rows, rows, 28, 28).transpose(0, 2, 1, 3)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(grid.reshape(rows * 28, rows * 28), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def save_curve(epochs: list[dict], test_nll: float, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    minutes = [e["elapsed_s"] / 60 for e in epochs]
    ax.plot(minutes, [e["train_loss"] for e in epochs], ".-", label="train minibatches")
    ax.plot(minutes, [e["valid_nll"] for e in epochs], "s-", ms=3, label="valid subset")
    ax.axhline(test_nll, color="C3", linestyle="--", label=f"test (best valid): {test_nll:.2f}")
    ax.axhline(TARGET_NATS, color="gray", linestyle=":", label=f"target {TARGET_NATS:.0f}")
    low = min([test_nll, *[e["valid_nll"] for e in epochs]])
    ax.set_ylim(low - 3, low + 25)
    ax.set_xlabel("training wall time (minutes)")
    ax.set_ylabel("NLL (nats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def field_panels(axes, fields: list[tuple[np.ndarray, tuple[int, int]]], name: str) -> None:
    """Draw receptive fields (H, W) bool with their output pixel marked."""
    for ax, (field, (i, j)) in zip(axes, fields, strict=True):
        ax.imshow(field, cmap="Blues", vmin=0, vmax=1.4)
        ax.plot(j, i, "s", color="C3", ms=4)
        ax.set_title(f"{name}: inputs reaching ({i}, {j})", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])


def network_fields(network, params, x: np.ndarray, positions) -> list:
    def network_fn(v):
        return network.apply({"params": params}, v)

    inputs = scale_levels(jnp.asarray(x), 2)
    return [(receptive_field(network_fn, inputs, pos)[..., 0], pos) for pos in positions]


FIELD_POSITIONS = ((14, 14), (14, 26))


def run_seed(args: argparse.Namespace, data: dict, seed: int, out: Path) -> dict:
    network = build_network(args.model, args.features, args.layers, args.kernel)
    model = image_autoregressive(network, bernoulli(), SHAPE)
    init_key, train_key, sample_key = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = model.init(init_key, data["train"][:1])
    base_batches = batches(data["train"], args.batch_size, seed=seed)
    steps_per_epoch = max(args.epoch_images // args.batch_size, 1)
    schedule = optax.cosine_decay_schedule(args.lr, args.epochs * steps_per_epoch, alpha=0.05)
    optimizer = optax.adam(schedule)
    if args.clip > 0:
        optimizer = optax.chain(optax.clip_by_global_norm(args.clip), optimizer)

    def loss_fn(params, batch, key):
        return -jnp.mean(model.log_prob(params, batch))

    nll_chunk = jax.jit(lambda p, x: -model.log_prob(p, x))

    def nll(params, x: np.ndarray) -> np.ndarray:
        chunks = range(0, len(x), args.eval_batch)
        return np.concatenate(
            [np.asarray(nll_chunk(params, x[i : i + args.eval_batch])) for i in chunks]
        )

    valid = data["valid"][: args.valid_images]
    print(
        f"{args.model} seed {seed}: {count_params(params):,} params, {steps_per_epoch} steps per "
        f"epoch of {steps_per_epoch * args.batch_size} images",
        flush=True,
    )
    result = fit_epochs(
        loss_fn,
        params,
        optimizer,
        base_batches,
        steps_per_epoch,
        args.epochs,
        key=train_key,
        out_dir=out,
        evaluate=lambda p: {"valid_nll": float(np.mean(nll(p, valid)))},
        select="valid_nll",
        minutes=args.minutes,
        description=f"{args.model} seed {seed} epoch",
    )
    best = result.params
    start = time.perf_counter()
    test_values = nll(best, data["test"])
    test_s = time.perf_counter() - start
    test_nll, test_se = mean_and_se(test_values)
    best_row = next(e for e in result.epochs if e["epoch"] == result.best_epoch)
    print(
        f"{args.model} seed {seed}: stopped ({result.stopped}) after {len(result.epochs)} epochs, "
        f"{result.epochs[-1]['elapsed_s'] / 60:.1f} min; best valid {best_row['valid_nll']:.2f} "
        f"(epoch {result.best_epoch}); test NLL {test_nll:.2f} ± {test_se:.2f} nats",
        flush=True,
    )
    start = time.perf_counter()
    sample = jax.jit(model.sample_fast, static_argnums=2)
    samples = np.asarray(sample(best, sample_key, args.num_samples))
    sample_s = time.perf_counter() - start
    title = f"{args.model} ({count_params(best):,} params), test {test_nll:.2f} nats"
    save_grid(samples, out / "samples.png", f"{title}: samples")
    save_curve(result.epochs, test_nll, out / "curve.png", title)
    fields = network_fields(network, best, data["test"][:1], FIELD_POSITIONS)
    fig, axes = plt.subplots(1, len(fields), figsize=(3.2 * len(fields), 3.4))
    field_panels(axes, fields, args.model)
    fig.savefig(out / "receptive_field.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    metrics = {
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "seeds", "summarise")},
        "seed": seed,
        "num_params": count_params(best),
        "steps_per_epoch": steps_per_epoch,
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "training_minutes": result.epochs[-1]["elapsed_s"] / 60,
        "test_nll": test_nll,
        "test_nll_se": test_se,
        "test_num_images": len(test_values),
        "test_eval_s": test_s,
        "sample_fast_s": sample_s,
        "num_samples": args.num_samples,
        "backend": jax.default_backend(),
    }
    if args.model == "gated":
        metrics["target_at_most_86_nats"] = bool(test_nll <= TARGET_NATS)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def summarise(dirs: list[str], out: Path) -> dict:
    """The equal-budget comparison over seeds of finished runs (one directory per model)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for directory in dirs:
        runs = [
            json.loads(p.read_text()) for p in sorted(Path(directory).glob("seed*/metrics.json"))
        ]
        if not runs:
            raise SystemExit(f"no finished seed*/metrics.json under {directory}")
        model = runs[0]["config"]["model"]
        nll, se = mean_and_se([r["test_nll"] for r in runs])
        rows[model] = {
            "seeds": [r["seed"] for r in runs],
            "test_nll_per_seed": [r["test_nll"] for r in runs],
            "test_nll_mean": nll,
            "test_nll_se_over_seeds": se,
            "num_params": runs[0]["num_params"],
            "training_minutes": [r["training_minutes"] for r in runs],
            "epochs": [len(r["epochs"]) for r in runs],
            "config": runs[0]["config"],
            "directory": str(directory),
        }
        print(
            f"{model}: {nll:.2f} ± {se:.2f} nats over seeds {rows[model]['seeds']} "
            f"({runs[0]['num_params']:,} params, "
            f"{np.mean(rows[model]['training_minutes']):.1f} min)",
            flush=True,
        )
    if {"pixelcnn", "gated"} <= rows.keys():
        shared = sorted(set(rows["pixelcnn"]["seeds"]) & set(rows["gated"]["seeds"]))
        by_seed = {
            m: dict(zip(rows[m]["seeds"], rows[m]["test_nll_per_seed"], strict=True)) for m in rows
        }
        gains = [by_seed["pixelcnn"][s] - by_seed["gated"][s] for s in shared]
        gain, gain_se = mean_and_se(gains)
        rows["gated_gain_over_pixelcnn"] = {"seeds": shared, "mean": gain, "se": gain_se}
        print(
            f"gated gain over pixelcnn (paired by seed): {gain:.2f} ± {gain_se:.2f} nats",
            flush=True,
        )
    (out / "comparison.json").write_text(json.dumps(rows, indent=2))

    models = [m for m in ("pixelcnn", "gated") if m in rows]
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    for k, m in enumerate(models):
        values = rows[m]["test_nll_per_seed"]
        ax.plot([k] * len(values), values, "o", alpha=0.5, color=f"C{k}")
        ax.errorbar(k + 0.15, rows[m]["test_nll_mean"], yerr=rows[m]["test_nll_se_over_seeds"],
                    fmt="s", color=f"C{k}", capsize=4)  # fmt: skip
    ax.set_xticks(range(len(models)), [f"{m}\n({rows[m]['num_params']:,} params)" for m in models])
    minutes = np.mean([np.mean(rows[m]["training_minutes"]) for m in models])
    ax.set_ylabel("test NLL (nats)")
    ax.set_title(f"binarized MNIST, {minutes:.0f} min each, mean ± SE over seeds", fontsize=9)
    ax.grid(alpha=0.3)
    fig.savefig(out / "comparison.png", dpi=100, bbox_inches="tight")
    plt.close(fig)

    # Both architectures' receptive fields at fresh initialisation: where the blind spot is.
    fig, axes = plt.subplots(len(models), len(FIELD_POSITIONS), figsize=(6.4, 3.4 * len(models)))
    x = np.zeros((1, *SHAPE), np.int32)
    for row, m in zip(np.atleast_2d(axes), models, strict=True):
        config = rows[m]["config"]
        network = build_network(m, config["features"], config["layers"], config["kernel"])
        params = network.init(jax.random.PRNGKey(0), scale_levels(jnp.asarray(x), 2))["params"]
        field_panels(row, network_fields(network, params, x, FIELD_POSITIONS), m)
    fig.savefig(out / "receptive_fields.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--model", choices=["pixelcnn", "gated"], default="gated")
    parser.add_argument("--features", type=int, default=32, help="hidden channels")
    parser.add_argument("--layers", type=int, default=None,
                        help="residual (pixelcnn) / gated layers; default 6 / 8")  # fmt: skip
    parser.add_argument("--kernel", type=int, default=5, help="gated: kernel width")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak of the cosine decay")
    parser.add_argument("--clip", type=float, default=100.0, help="global-norm clip (0: off)")
    parser.add_argument("--epochs", type=int, default=20, help="also the cosine horizon")
    parser.add_argument("--epoch-images", type=int, default=25000,
                        help="training images between validations")  # fmt: skip
    parser.add_argument("--minutes", type=float, default=math.inf, help="training time budget")
    parser.add_argument("--valid-images", type=int, default=2000)
    parser.add_argument("--eval-batch", type=int, default=500)
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--train-images", type=int, default=None, help="use the first N only")
    parser.add_argument("--quick", action="store_true", help="tiny nets on 2000 images")
    parser.add_argument("--summarise", nargs="+", default=None, metavar="DIR")
    parser.add_argument("--out", default="runs/pixelcnn")
    args = parser.parse_args(argv)
    if args.layers is None:
        args.layers = 6 if args.model == "pixelcnn" else 8
    if args.quick:
        args.features, args.layers, args.epochs, args.epoch_images = 8, 2, 2, 1000
        args.train_images, args.valid_images, args.num_samples = 2000, 200, 16
    if args.minutes <= 0 or args.epochs < 1 or args.batch_size < 1:
        parser.error("--minutes, --epochs and --batch-size must be positive")
    return args


def main(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    if args.summarise:
        return summarise(args.summarise, out)
    data = load(args.data_dir)
    if args.train_images:
        data["train"] = data["train"][: args.train_images]
    if args.quick:
        data["test"] = data["test"][:500]
    runs = [run_seed(args, data, seed, out / f"seed{seed}") for seed in args.seeds]
    if len(runs) > 1:
        nll, se = mean_and_se([r["test_nll"] for r in runs])
        summary = {"model": args.model, "seeds": args.seeds, "test_nll_mean": nll, "se": se}
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(f"{args.model}: {nll:.2f} ± {se:.2f} nats over {len(runs)} seeds", flush=True)
    return {"runs": runs}


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(None if main(parse_args()) else 1)

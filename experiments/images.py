"""Image flows on real data: Glow or multi-scale RealNVP, test bits/dim every epoch, samples.

    python experiments/images.py --model glow --dataset digits --out runs/images_digits
    python experiments/images.py --model glow --dataset fashion_mnist --minutes 60 \\
        --out runs/images_fashion          # stop after the epoch that passes 60 minutes
    python experiments/images.py --quick --out runs/images_quick

Training is ``nflows_jax.train.fit`` called once per epoch on one checkpoint directory, so the
run checkpoints every epoch and a rerun with the same ``--out`` resumes where it stopped (the step
compiles once across the calls). After each epoch the whole test set is evaluated in bits/dim
(one uniform dequantization per image: an upper bound on the discrete model's bits/dim). Written
under ``--out``: ``metrics.json`` (config, parameter count, per-epoch train/test bits/dim, wall
times, the baselines), ``curve.png`` and sample grids at temperatures 1 and 0.7.

Baselines on the same test set: the independent per-pixel categorical histogram (exact), and
``--model realnvp_single``, a single-scale RealNVP of checkerboard couplings, run as its own
experiment with the same budget.
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
import matplotlib
import numpy as np
import optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from nflows_jax.bijectors import chain, glow, image_affine_coupling, invert, realnvp_multiscale
from nflows_jax.bijectors import repeat as repeat_layers
from nflows_jax.data import DIGITS_NUM_LEVELS, batches, load_dataset, load_digits
from nflows_jax.image_flows import (
    bits_per_dim_loss,
    evaluate_bits_per_dim,
    image_flow,
    init_image_flow,
    pixel_histogram_bits_per_dim,
    sample_images,
)
from nflows_jax.train import fit

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NUM_BITS = {"digits": 5, "mnist": 8, "fashion_mnist": 8, "cifar10": 8}
NUM_LEVELS = {"digits": DIGITS_NUM_LEVELS, "mnist": 256, "fashion_mnist": 256, "cifar10": 256}


def load(dataset: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) uint8 NHWC. Digits: a fixed 1500 / 297 split of sklearn's 1797 images."""
    if dataset == "digits":
        images = load_digits().images
        order = np.random.default_rng(0).permutation(len(images))
        return images[order[:1500]], images[order[1500:]]
    dirs = [data_dir] if data_dir else [SHARED_DATA / dataset, SHARED_DATA]
    return tuple(load_dataset(dataset, split, dirs).images for split in ("train", "test"))


def build_core(args: argparse.Namespace, shape: tuple[int, int, int]):
    if args.model == "glow":
        return glow(shape, args.levels, args.steps, args.hidden, args.blocks)
    if args.model == "realnvp":
        return realnvp_multiscale(shape, args.levels, args.steps, args.hidden, args.blocks)
    if args.model == "realnvp_single":  # the single-scale baseline: checkerboard couplings only
        pair = chain(
            *(
                image_affine_coupling(
                    shape[-1], args.hidden, args.blocks, mask="checkerboard", parity=parity
                )
                for parity in (0, 1)
            )
        )
        # Unrolled on CPU, as the multi-scale architectures are (see nflows_jax.bijectors.repeat).
        return invert(repeat_layers(pair, args.steps, unroll=jax.default_backend() == "cpu"))
    raise ValueError(f"unknown model {args.model!r}")


def latest_checkpoint_step(directory: Path) -> int:
    """The newest step saved under ``directory`` (orbax names step folders by number), or 0."""
    steps = [int(p.name) for p in directory.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(steps, default=0)


def count_params(params) -> int:
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


def save_grid(images: np.ndarray, num_levels: int, path: Path, title: str) -> None:
    rows = int(math.sqrt(len(images)))
    grid = images[: rows * rows, ..., 0].reshape(rows, rows, *images.shape[1:3])
    grid = grid.transpose(0, 2, 1, 3).reshape(rows * images.shape[1], rows * images.shape[2])
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=num_levels - 1)
    ax.set_title(title)
    ax.axis("off")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def save_curve(epochs: list[dict], baseline: float, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    minutes = [e["elapsed_s"] / 60 for e in epochs]
    ax.plot(minutes, [e["train_bpd"] for e in epochs], "o-", label="train (last logged)")
    ax.plot(minutes, [e["test_bpd"] for e in epochs], "s-", label="test")
    ax.axhline(baseline, color="gray", linestyle="--", label="per-pixel histogram (test)")
    ax.set_xlabel("training wall time (minutes)")
    ax.set_ylabel("bits/dim")
    ax.set_title(title)
    ax.legend()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def run(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, test = load(args.dataset, args.data_dir)
    shape, num_bits = tuple(train.shape[1:]), NUM_BITS[args.dataset]
    num_levels = NUM_LEVELS[args.dataset]
    flow = image_flow(build_core(args, shape), shape)
    key = jax.random.PRNGKey(args.seed)
    init_key, train_key, eval_key, sample_key = jax.random.split(key, 4)
    params = init_image_flow(flow, init_key, train[: args.init_batch], num_bits)
    batch_fn = batches(train, args.batch_size, seed=args.seed)
    steps_per_epoch = batch_fn.steps_per_epoch
    optimizer = optax.adam(optax.linear_schedule(0.0, args.lr, args.warmup))
    loss_fn = bits_per_dim_loss(flow, num_bits)
    checkpoints = out / "checkpoints"
    metrics_path = out / "metrics.json"
    previous = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    epochs = previous.get("epochs", [])
    done = latest_checkpoint_step(checkpoints) // steps_per_epoch
    epochs = [e for e in epochs if e["epoch"] <= done]
    baseline = pixel_histogram_bits_per_dim(train, test, num_levels)
    config = {k: v for k, v in vars(args).items() if k != "out"}
    elapsed = epochs[-1]["elapsed_s"] if epochs else 0.0
    print(
        f"{args.model} on {args.dataset} {shape}: {count_params(params):,} params, "
        f"{steps_per_epoch} steps/epoch, per-pixel baseline {baseline:.3f} bits/dim"
        + (f"; resuming after epoch {done}" if done else ""),
        flush=True,
    )
    for epoch in range(done + 1, args.epochs + 1):
        if elapsed >= args.minutes * 60:
            break
        start = time.perf_counter()
        result = fit(
            loss_fn,
            params,
            optimizer,
            batch_fn,
            epoch * steps_per_epoch,
            key=train_key,
            checkpoint_dir=checkpoints,
            checkpoint_every=steps_per_epoch,
            max_checkpoints_to_keep=2,
            progress=False if not sys.stderr.isatty() else None,
            description=f"epoch {epoch}",
            log_every=min(100, steps_per_epoch),
        )
        params = result.params
        test_bpd = evaluate_bits_per_dim(flow, params, test, num_bits, eval_key)
        elapsed += time.perf_counter() - start
        train_bpd = float(result.history["loss"][-1]) if result.history["loss"] else math.nan
        epochs.append(
            {
                "epoch": epoch,
                "step": epoch * steps_per_epoch,
                "train_bpd": train_bpd,
                "test_bpd": test_bpd,
                "elapsed_s": elapsed,
            }
        )
        print(
            f"epoch {epoch}: train {train_bpd:.3f}, test {test_bpd:.3f} bits/dim "
            f"({elapsed / 60:.1f} min)",
            flush=True,
        )
        metrics = {
            "config": config,
            "image_shape": shape,
            "num_params": count_params(params),
            "per_pixel_baseline_test_bpd": baseline,
            "epochs": epochs,
        }
        metrics_path.write_text(json.dumps(metrics, indent=2))
    for temperature in (1.0, 0.7):
        samples = sample_images(
            flow, params, sample_key, 64, num_bits, temperature, num_levels=num_levels
        )
        save_grid(samples, num_levels, out / f"samples_T{temperature}.png",
                  f"{args.model} samples, T = {temperature}")  # fmt: skip
    if epochs:
        title = f"{args.model} on {args.dataset}"
        save_curve(epochs, baseline, out / "curve.png", title)
    return {"epochs": epochs, "baseline": baseline}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["glow", "realnvp", "realnvp_single"], default="glow")
    parser.add_argument("--dataset", choices=sorted(NUM_BITS), default="digits")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--levels", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="flow steps (or pairs) per level")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--init-batch", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=math.inf, help="stop after this epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="digits, 12 small epochs (< 1 min)")
    parser.add_argument("--out", default="runs/images")
    args = parser.parse_args(argv)
    if args.quick:
        args.dataset, args.epochs, args.steps, args.hidden = "digits", 12, 2, 16
        args.warmup = 20
    return args


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run(parse_args())

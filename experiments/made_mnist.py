"""MADE on binarized MNIST: test NLL in nats with one mask and with mask ensembles, samples.

    python experiments/made_mnist.py --hidden 500 --out runs/made_mnist_1x500   # fixed order
    python experiments/made_mnist.py --hidden 2000 2000 --order random --masks 32 \\
        --minutes 60 --out runs/made_mnist_agnostic   # cycles through 32 fixed connectivities
    python experiments/made_mnist.py --quick --out runs/made_mnist_quick        # < 1 minute

A Bernoulli MADE (``nflows_jax.models.bernoulli_made``, Germain et al. 2015) on the statically
binarized MNIST of Larochelle & Murray (50000 train / 10000 valid / 10000 test images). The
connectivity (input order and hidden degrees) is an argument of the network, so:

* ``--masks 1`` trains one fixed connectivity (``--order natural`` with ``--hidden-degrees equal``
  is the plain single-mask MADE);
* ``--masks M`` (M > 1) is connectivity-agnostic training cycling through M fixed connectivities,
  one per step (the paper's scheme, M = 32), and ``--masks 0`` draws a fresh one every step. What
  is resampled is set by ``--order random`` (the order) and ``--hidden-degrees random`` (the
  hidden connectivity).

Training is ``nflows_jax.train.fit_epochs``, so a rerun with the same ``--out`` resumes after the
last finished epoch; ``--minutes`` is a budget on the total training wall time across resumes (an
epoch is not started when the previous epoch's time says it would overrun). After every epoch the
validation NLL (mask 0, or a ``--valid-masks`` ensemble) is computed; the best-validation params
are kept (``best_params.msgpack``) and are the ones evaluated at the end. ``--patience`` stops
early after that many epochs without improvement.

Final evaluation, with the best-validation params: the test NLL in nats (mean over the test
images, with its standard error) with mask 0 alone and with ensembles of the first M connectivities
for each ``--ensemble`` M (the log of the mean probability over M masks; the test set goes through
in ``--eval-batch`` chunks, one network at a time, so memory stays that of one batch). When the
connectivity is deterministic (natural or reversed order with equal hidden degrees) every mask is
the same network and only the single-mask number is reported. Written under ``--out``:
``metrics.json`` (config, parameter count, per-epoch train/valid NLL and wall time, the best
epoch, the test numbers), ``curve.png`` (NLL against epoch and wall minutes) and ``samples.png``.
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
from nflows_jax.models.made import bernoulli_made, ensemble_log_prob
from nflows_jax.train import fit_epochs

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TARGETS = {"single mask": 88.0, "mask ensemble": 86.6}  # issue 8 (MADE paper: 88.40, 86.64)
ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "elu": jax.nn.elu, "gelu": jax.nn.gelu}


def load(data_dir: str | None) -> dict[str, np.ndarray]:
    """{split: (N, 784) uint8 of 0/1} for train, valid, test."""
    dirs = [data_dir] if data_dir else [SHARED_DATA]
    splits = {}
    for split in ("train", "valid", "test"):
        images = load_dataset("binarized_mnist", split, dirs).images
        splits[split] = images.reshape(len(images), -1).astype(np.uint8)
    return splits


def count_params(params) -> int:
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


def make_schedule(args: argparse.Namespace, steps_per_epoch: int) -> optax.Schedule:
    warmup = max(args.warmup, 0)
    if args.schedule == "constant":
        main = optax.constant_schedule(args.lr)
    elif args.schedule == "cosine":
        decay_steps = max(args.epochs * steps_per_epoch - warmup, 1)
        main = optax.cosine_decay_schedule(args.lr, decay_steps, alpha=args.final_lr_fraction)
    elif args.schedule == "exponential":  # lr * decay ** epochs, smoothly per step
        main = optax.exponential_decay(args.lr, steps_per_epoch, args.decay)
    else:
        raise ValueError(f"unknown schedule {args.schedule!r}")
    if warmup == 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, args.lr, warmup), main], [warmup])


def save_grid(images: np.ndarray, path: Path, title: str) -> None:
    rows = int(math.sqrt(len(images)))
    grid = images[: rows * rows].reshape(rows, rows, 28, 28).transpose(0, 2, 1, 3)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(grid.reshape(rows * 28, rows * 28), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title)
    ax.axis("off")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def save_curve(epochs: list[dict], best_epoch: int, test: dict, path: Path, title: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, xkey, xlabel in zip(
        axes, ("epoch", "minutes"), ("epoch", "training wall time (minutes)"), strict=True
    ):
        xs = [e["epoch"] if xkey == "epoch" else e["elapsed_s"] / 60 for e in epochs]
        ax.plot(
            xs, [e["train_loss"] for e in epochs], ".-", alpha=0.6, label="train minibatch loss"
        )
        ax.plot(xs, [e["train_nll"] for e in epochs], "o-", ms=3, label="train (10k, mask 0)")
        ax.plot(xs, [e["valid_nll"] for e in epochs], "s-", ms=3, label="valid")
        best = next(e for e in epochs if e["epoch"] == best_epoch) if best_epoch else None
        if best is not None:
            bx = best["epoch"] if xkey == "epoch" else best["elapsed_s"] / 60
            ax.axvline(bx, color="gray", linestyle=":", label=f"best valid (epoch {best_epoch})")
        for name, value in test.items():
            label = f"test, {name} mask{'s' if name != '1' else ''}: {value:.2f}"
            color = "C3" if name == "1" else "C4"
            ax.axhline(value, linestyle="--", linewidth=1, color=color, label=label)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("NLL (nats)")
    values = [e["valid_nll"] for e in epochs] + [e["train_nll"] for e in epochs]
    low = min(values + list(test.values()))
    axes[0].set_ylim(low - 3, min(max(values), low + 25))
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def run(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load(args.data_dir)
    if args.quick:
        data = {"train": data["train"][:2000], "valid": data["valid"][:500], "test": data["test"]}
        data["test"] = data["test"][:1000]
    model = bernoulli_made(
        784,
        tuple(args.hidden),
        args.order,
        args.hidden_degrees,
        seed=args.seed,
        residual=args.residual,
        direct=not args.no_direct,
        activation=ACTIVATIONS[args.activation],
    )
    deterministic = args.order != "random" and args.hidden_degrees != "random"
    ensembles = [1] if deterministic else sorted(set([1, *args.ensemble]))
    num_keys = max(args.masks, *ensembles, args.valid_masks)
    # Connectivity m is model.random_degrees(mask_keys[m]); mask 0 is "the" single mask, the
    # training cycle (--masks M) and every ensemble of M use masks 0..M-1.
    mask_keys = jax.random.split(jax.random.PRNGKey(args.seed + 1), num_keys)
    key = jax.random.PRNGKey(args.seed)
    init_key, train_key, sample_key = jax.random.split(key, 3)
    params = model.init(init_key, data["train"][:1])
    if not args.no_marginal_init:  # start every logit at the pixel's training-set log-odds
        marginal = np.clip(data["train"].mean(axis=0), 1e-3, 1 - 1e-3)
        bias = jnp.asarray(np.log(marginal / (1 - marginal)), params["output"]["bias"].dtype)
        params = {**params, "output": {**params["output"], "bias": bias}}

    base_batches = batches(data["train"], args.batch_size, seed=args.seed)
    steps_per_epoch = base_batches.steps_per_epoch
    cycle = max(args.masks, 1)

    def batch_fn(step: int) -> dict:  # a pure function of the step (exact resumption)
        return {"x": base_batches(step), "mask": np.int32(step % cycle)}

    def loss_fn(params, batch, key):
        if args.masks == 0:  # a fresh connectivity every step
            degrees = model.random_degrees(key)
        else:
            degrees = model.random_degrees(mask_keys[batch["mask"]])
        return -jnp.mean(model.log_prob(params, batch["x"], degrees=degrees))

    schedule = make_schedule(args, steps_per_epoch)
    optimizer = optax.adamw(schedule, weight_decay=args.weight_decay)
    if args.clip > 0:
        optimizer = optax.chain(optax.clip_by_global_norm(args.clip), optimizer)

    @jax.jit
    def chunk_nll(params, x, keys):
        return -ensemble_log_prob(model, params, x, keys)

    def nll(params, x: np.ndarray, num_masks: int) -> np.ndarray:
        """(N,) NLL in nats under the ensemble of masks 0..num_masks-1, in eval-batch chunks."""
        keys = mask_keys[:num_masks]
        parts = [
            np.asarray(chunk_nll(params, x[i : i + args.eval_batch], keys))
            for i in range(0, len(x), args.eval_batch)
        ]
        return np.concatenate(parts)

    train_subset = data["train"][:10000]
    print(
        f"MADE {tuple(args.hidden)} order={args.order} hidden_degrees={args.hidden_degrees} "
        f"masks={args.masks or 'fresh'} residual={args.residual} direct={not args.no_direct}: "
        f"{count_params(params):,} params, {steps_per_epoch} steps/epoch",
        flush=True,
    )
    result = fit_epochs(
        loss_fn,
        params,
        optimizer,
        batch_fn,
        steps_per_epoch,
        args.epochs,
        key=train_key,
        out_dir=out,
        evaluate=lambda p: {
            "train_nll": float(np.mean(nll(p, train_subset, 1))),
            "valid_nll": float(np.mean(nll(p, data["valid"], args.valid_masks))),
        },
        select="valid_nll",
        minutes=args.minutes,
        patience=args.patience,
    )
    best_params, epochs, stopped = result.params, result.epochs, result.stopped
    best = next(e for e in epochs if e["epoch"] == result.best_epoch)
    elapsed = epochs[-1]["elapsed_s"]
    config = {k: v for k, v in vars(args).items() if k != "out"}
    metrics_path = out / "metrics.json"
    print(
        f"stopped ({stopped}) after epoch {len(epochs)}; evaluating the best-validation params "
        f"(epoch {best['epoch']}, valid {best['valid_nll']:.2f}) on the test set",
        flush=True,
    )
    eval_start = time.perf_counter()
    test = {}
    single_values = None
    for num_masks in ensembles:
        values = nll(best_params, data["test"], num_masks)
        if num_masks == 1:
            single_values = values
        entry = {
            "nll": float(np.mean(values)),
            "se": float(np.std(values, ddof=1) / math.sqrt(len(values))),
        }
        if num_masks > 1:  # the paired gain over mask 0 alone, and its standard error
            gain = single_values - values
            entry["gain_vs_1"] = float(np.mean(gain))
            entry["gain_vs_1_se"] = float(np.std(gain, ddof=1) / math.sqrt(len(gain)))
        test[str(num_masks)] = entry
        print(
            f"test NLL, {num_masks} mask{'s' if num_masks > 1 else ''}: "
            f"{entry['nll']:.2f} ± {entry['se']:.2f} nats",
            flush=True,
        )
    eval_s = time.perf_counter() - eval_start
    sample_fn = jax.jit(lambda p, k, d: model.sample(p, k, args.num_samples, degrees=d))
    samples = np.asarray(sample_fn(best_params, sample_key, model.random_degrees(mask_keys[0])))
    save_grid(samples, out / "samples.png", f"MADE samples (mask 0, epoch {best['epoch']})")
    single, ensemble_best = test["1"]["nll"], min(v["nll"] for v in test.values())
    results = {
        "config": config,
        "num_params": count_params(best_params),
        "steps_per_epoch": steps_per_epoch,
        "epochs": epochs,
        "best_epoch": best["epoch"],
        "best_valid_nll": best["valid_nll"],
        "training_minutes": elapsed / 60,
        "stopped": stopped,
        "test_eval_s": eval_s,
        "test_num_images": len(data["test"]),
        "test_nll": test,
        "targets": {
            "single mask <= 88.0": single <= TARGETS["single mask"],
            "mask ensemble <= 86.6": ensemble_best <= TARGETS["mask ensemble"],
        },
        "backend": jax.default_backend(),
    }
    metrics_path.write_text(json.dumps(results, indent=2))
    title = (
        f"MADE {'x'.join(map(str, args.hidden))}, order {args.order}, "
        f"masks {args.masks or 'fresh'}, binarized MNIST"
    )
    save_curve(epochs, best["epoch"], {k: v["nll"] for k, v in test.items()}, out / "curve.png",
               title)  # fmt: skip
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--hidden", type=int, nargs="+", default=[500], help="hidden widths")
    parser.add_argument("--residual", action="store_true", help="residual hidden layers")
    parser.add_argument("--no-direct", action="store_true", help="no input-to-output connections")
    parser.add_argument("--activation", choices=sorted(ACTIVATIONS), default="relu")
    parser.add_argument("--no-marginal-init", action="store_true",
                        help="keep the default output bias (else: the pixel log-odds)")  # fmt: skip
    parser.add_argument("--order", choices=["natural", "reversed", "random"], default="natural")
    parser.add_argument("--hidden-degrees", choices=["equal", "random"], default="equal")
    parser.add_argument(
        "--masks", type=int, default=1,
        help="connectivities trained: 1 = one fixed, M > 1 = cycle through M, 0 = fresh each step",
    )  # fmt: skip
    parser.add_argument("--ensemble", type=int, nargs="+", default=[8, 32], help="test ensembles")
    parser.add_argument("--valid-masks", type=int, default=1, help="masks for the valid NLL")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--eval-batch", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--schedule", choices=["constant", "cosine", "exponential"],
                        default="constant")  # fmt: skip
    parser.add_argument("--decay", type=float, default=0.95, help="exponential: lr x per epoch")
    parser.add_argument("--final-lr-fraction", type=float, default=0.01, help="cosine: end lr")
    parser.add_argument("--warmup", type=int, default=0, help="linear warm-up steps")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="adamw decoupled decay")
    parser.add_argument("--clip", type=float, default=0.0, help="global-norm clipping (0: off)")
    parser.add_argument("--epochs", type=int, default=100, help="also the cosine horizon")
    parser.add_argument("--minutes", type=float, default=math.inf, help="training time budget")
    parser.add_argument("--patience", type=int, default=10_000, help="early-stopping epochs")
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2000 images, 3 epochs (< 1 min)")
    parser.add_argument("--out", default="runs/made_mnist")
    args = parser.parse_args(argv)
    if args.quick:
        args.hidden, args.epochs, args.ensemble, args.num_samples = [64], 3, [4], 16
        args.order, args.masks, args.eval_batch = "random", 4, 500
    if args.masks < 0 or args.valid_masks < 1 or min(args.ensemble) < 1:
        parser.error("--masks must be >= 0, --valid-masks and --ensemble sizes >= 1")
    return args


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(None if run(parse_args()) else 1)

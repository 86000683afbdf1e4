"""WaveNet on synthetic audio: train, then generate naive vs fast, write WAV files and plots.

    python experiments/wavenet.py --out runs/wavenet             # a few minutes on 2 CPU cores
    python experiments/wavenet.py --quick --out runs/wavenet_quick

Data: ``nflows_jax.audio.synthetic_audio`` clips (sines, a chirp and noise) at ``--sample-rate``,
μ-law quantised to 256 levels; a fixed train/test split of clips. The model is
``wavenet(categorical(256), wavenet_dilations(stacks, layers))`` trained by maximum likelihood
with ``nflows_jax.train.fit`` on random crops. Reported in ``metrics.json``: test NLL in nats and
bits per sample (mean ± s.e. over test crops), the receptive field, the generation times of the
naive loop (a short prefix: it is O(T²)) and of the queue-cached loop, and whether the two give
the same samples on that prefix. Written: ``real.wav``, ``sample_*.wav``, ``waveforms.png``
(waveforms and spectrograms of a real clip and of samples), ``curve.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from nflows_jax.audio import mu_law_decode, mu_law_encode, synthetic_audio, write_wav
from nflows_jax.models.likelihoods import categorical
from nflows_jax.models.wavenet import wavenet, wavenet_dilations
from nflows_jax.train import fit


def make_data(args) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) μ-law levels, (clips, samples) int32."""
    clips = synthetic_audio(
        jax.random.PRNGKey(args.seed), args.num_clips, args.clip_length, args.sample_rate
    )
    levels = np.asarray(mu_law_encode(clips, 256))
    num_test = max(1, args.num_clips // 8)
    return levels[num_test:], levels[:num_test]


def crops(data: np.ndarray, length: int, batch: int, seed: int):
    """``batch_fn(step)``: a deterministic batch of random crops of ``length`` steps."""

    def batch_fn(step: int):
        rng = np.random.default_rng([seed, step])
        rows = rng.integers(0, data.shape[0], batch)
        starts = rng.integers(0, data.shape[1] - length + 1, batch)
        return jnp.asarray(
            np.stack([data[r, s : s + length] for r, s in zip(rows, starts, strict=True)])
        )

    return batch_fn


def test_nll(model, params, test: np.ndarray, length: int) -> tuple[float, float]:
    """Mean ± s.e. of the NLL per sample (nats) over non-overlapping test crops."""
    usable = test.shape[1] // length * length
    pieces = test[:, :usable].reshape(-1, length)
    per_crop = np.asarray(jax.jit(model.log_prob)(params, jnp.asarray(pieces))) / length
    return float(-per_crop.mean()), float(per_crop.std(ddof=1) / math.sqrt(len(per_crop)))


def timed(fn, *args):
    jax.block_until_ready(fn(*args))  # compile
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample-rate", type=int, default=8000)
    parser.add_argument("--num-clips", type=int, default=64)
    parser.add_argument("--clip-length", type=int, default=8000)
    parser.add_argument("--crop", type=int, default=1024, help="training crop length")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--stacks", type=int, default=2)
    parser.add_argument("--layers", type=int, default=8, help="dilations 1..2^(layers-1)")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--skip-channels", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--generate-seconds", type=float, default=1.0)
    parser.add_argument("--naive-steps", type=int, default=400, help="prefix for the naive loop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny run (well under a minute)")
    parser.add_argument("--out", default="runs/wavenet")
    args = parser.parse_args()
    if args.quick:
        args.num_clips, args.clip_length, args.crop, args.steps = 16, 2000, 256, 60
        args.layers, args.channels, args.skip_channels = 5, 8, 16
        args.generate_seconds, args.naive_steps = 0.1, 50
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    train, test = make_data(args)
    model = wavenet(
        categorical(256),
        wavenet_dilations(args.stacks, args.layers),
        args.channels,
        args.skip_channels,
    )
    params = model.init(jax.random.PRNGKey(args.seed + 1))
    print(
        f"wavenet: receptive field {model.receptive_field} steps "
        f"({1000 * model.receptive_field / args.sample_rate:.0f} ms), "
        f"{sum(p.size for p in jax.tree_util.tree_leaves(params)):,} params",
        flush=True,
    )

    def loss(params, batch, key):
        del key
        return -jnp.mean(model.log_prob(params, batch)) / batch.shape[1]

    schedule = optax.cosine_decay_schedule(args.lr, args.steps, alpha=0.05)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    start = time.perf_counter()
    result = fit(
        loss,
        params,
        optimizer,
        crops(train, args.crop, args.batch_size, args.seed),
        args.steps,
        key=jax.random.PRNGKey(args.seed + 2),
        checkpoint_dir=out / "checkpoints",
        checkpoint_every=max(args.steps // 4, 1),
        description="wavenet",
    )
    train_s = time.perf_counter() - start
    params = result.params
    nll, nll_se = test_nll(model, params, test, args.crop)
    print(f"test NLL {nll:.4f} ± {nll_se:.4f} nats/sample ({nll / math.log(2):.3f} bits)")

    length = int(args.generate_seconds * args.sample_rate)
    key = jax.random.PRNGKey(args.seed + 3)
    fast_fn = jax.jit(model.sample_fast, static_argnums=(2, 3))
    samples, fast_s = timed(fast_fn, params, key, 4, length)
    naive_fn = jax.jit(model.sample_naive, static_argnums=(2, 3))
    naive, naive_s = timed(naive_fn, params, key, 4, args.naive_steps)
    prefix, _ = timed(fast_fn, params, key, 4, args.naive_steps)
    same = bool(np.array_equal(np.asarray(naive), np.asarray(prefix)))
    print(
        f"generation: fast {length} steps in {fast_s:.2f} s; naive {args.naive_steps} steps in "
        f"{naive_s:.2f} s; same samples on the prefix: {same}",
        flush=True,
    )

    real = np.asarray(mu_law_decode(jnp.asarray(test[0]), 256))
    waves = np.asarray(mu_law_decode(samples, 256))
    write_wav(out / "real.wav", real, args.sample_rate)
    for i, wave in enumerate(waves):
        write_wav(out / f"sample_{i}.wav", wave, args.sample_rate)

    fig, axes = plt.subplots(3, 2, figsize=(10, 7))
    for row, (name, wave) in enumerate(
        [("real", real), ("sample 0", waves[0]), ("sample 1", waves[1])]
    ):
        shown = wave[: min(len(wave), args.sample_rate // 10)]
        axes[row, 0].plot(np.arange(len(shown)) / args.sample_rate * 1000, shown, lw=0.7)
        axes[row, 0].set_title(f"{name}: first {1000 * len(shown) / args.sample_rate:.0f} ms")
        axes[row, 1].specgram(wave, Fs=args.sample_rate, NFFT=256, noverlap=128)
        axes[row, 1].set_title(f"{name}: spectrogram")
    axes[-1, 0].set_xlabel("ms")
    axes[-1, 1].set_xlabel("s")
    fig.tight_layout()
    fig.savefig(out / "waveforms.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(result.history["log_steps"], result.history["loss"])  # mean loss per log period
    ax.axhline(nll, color="k", ls="--", label="test NLL (end)")
    ax.set_xlabel("step")
    ax.set_ylabel("train NLL (nats / sample)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=110)
    plt.close(fig)

    metrics = {
        "config": vars(args),
        "receptive_field": model.receptive_field,
        "test_nll_nats_per_sample": nll,
        "test_nll_se": nll_se,
        "test_bits_per_sample": nll / math.log(2),
        "uniform_bits_per_sample": 8.0,
        "train_seconds": train_s,
        "fast_generation_s": fast_s,
        "fast_generation_steps": length,
        "naive_generation_s": naive_s,
        "naive_generation_steps": args.naive_steps,
        "fast_equals_naive_on_prefix": same,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"wrote {out}/metrics.json, waveforms.png, curve.png and WAV files")


if __name__ == "__main__":
    main()

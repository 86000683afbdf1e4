"""Generation speed of autoregressive models: naive loops against cached / windowed ones.

Rows (all jitted, in one process; compile timed separately from the steady state):

  wavenet   a WaveNet with dilations 1..512 repeated twice (receptive field 2,047 >= 1,024),
            32 residual and 64 skip channels, a 256-way μ-law softmax; ``--batch`` sequences.
            fast: ``sample_fast`` (per-layer queues) generating T = ``--length`` steps, timed
            whole. naive: ``sample_naive`` recomputes the whole length-T network at every step,
            so each step costs the same; it is timed over its first ``--naive-steps`` steps of
            the length-T loop and reported as steps/s (its full T-step time is T times that).
  pixelcnn  a PixelCNN (64 features, 6 residual layers, 7×7 mask A, Bernoulli), a batch of
            ``--batch`` 28×28 binary images. naive: ``sample`` (a full pass per pixel); fast:
            ``sample_fast`` (each pixel from the window of inputs that reaches it). Both whole.
  gated     the same for a Gated PixelCNN (64 features, 8 layers, kernel 5).
  parallel  a Parallel-WaveNet student (4 IAF flows, each a WaveNet stack with dilations 1..512
            once, 32 channels) drawing T = ``--length`` steps in 4 parallel passes, against a
            Gaussian teacher WaveNet of the wavenet row's size generating with its queues.

Reported: seconds, samples (steps × batch) per second, and fast / naive speed-up.

    python benchmarks/generation.py            # the table
    python benchmarks/generation.py --quick    # smoke run
    python benchmarks/generation.py --rows gated --out benchmarks/results/generation_gated.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from nflows_jax.models.likelihoods import bernoulli, categorical, gaussian
from nflows_jax.models.parallel_wavenet import parallel_wavenet
from nflows_jax.models.pixelcnn import GatedPixelCNNNet, PixelCNNNet, image_autoregressive
from nflows_jax.models.wavenet import wavenet, wavenet_dilations
from nflows_jax.testing import perturb


def timed(fn, *args) -> tuple[float, float]:
    """(compile + first call seconds, second call seconds)."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return first, time.perf_counter() - start


def wavenet_rows(args) -> list[dict]:
    layers = 4 if args.quick else 10
    model = wavenet(categorical(256), wavenet_dilations(2, layers), channels=32, skip_channels=64)
    params = perturb(model.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.05)
    key = jax.random.PRNGKey(2)
    length, batch = args.length, args.batch

    fast = jax.jit(model.sample_fast, static_argnums=(2, 3))
    compile_fast, fast_s = timed(fast, params, key, batch, length)

    def naive_prefix(params, key):
        # The naive loop's first steps on a length-T buffer: each step is a full pass over T.
        def step(t, x):
            out = model.outputs(params, x)[:, t]
            return x.at[:, t].set(model.likelihood.sample(jax.random.fold_in(key, t), out))

        x = jnp.zeros((batch, length), jnp.int32)
        return jax.lax.fori_loop(0, args.naive_steps, step, x)

    compile_naive, naive_s = timed(jax.jit(naive_prefix), params, key)
    naive_rate = args.naive_steps * batch / naive_s
    fast_rate = length * batch / fast_s
    print(
        f"wavenet RF {model.receptive_field}, T={length}, batch {batch}: fast {fast_s:.2f} s "
        f"({fast_rate:,.0f} samples/s), naive {naive_rate:,.1f} samples/s "
        f"-> {fast_rate / naive_rate:,.0f}x",
        flush=True,
    )
    return [
        {
            "model": "wavenet",
            "receptive_field": model.receptive_field,
            "length": length,
            "batch": batch,
            "fast_s": fast_s,
            "fast_compile_s": compile_fast,
            "fast_samples_per_s": fast_rate,
            "naive_steps_timed": args.naive_steps,
            "naive_s": naive_s,
            "naive_compile_s": compile_naive,
            "naive_samples_per_s": naive_rate,
            "naive_full_length_s_extrapolated": length / args.naive_steps * naive_s,
            "speedup": fast_rate / naive_rate,
        }
    ]


def pixelcnn_rows(args, gated: bool = False) -> list[dict]:
    size = 8 if args.quick else 28
    if gated:
        net = GatedPixelCNNNet(features=16 if args.quick else 64, num_layers=2 if args.quick else 8)
    else:
        net = PixelCNNNet(features=16 if args.quick else 64, num_layers=2 if args.quick else 6)
    name = "gated_pixelcnn" if gated else "pixelcnn"
    model = image_autoregressive(net, bernoulli(), (size, size, 1))
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 1), jnp.int32))
    key = jax.random.PRNGKey(3)
    rows = {}
    for sampler, fn in (("naive", model.sample), ("fast", model.sample_fast)):
        compile_s, run_s = timed(jax.jit(fn, static_argnums=2), params, key, args.batch)
        rows[sampler] = (compile_s, run_s)
    speedup = rows["naive"][1] / rows["fast"][1]
    print(
        f"{name} {size}x{size}, batch {args.batch}: naive {rows['naive'][1]:.2f} s, "
        f"fast {rows['fast'][1]:.2f} s -> {speedup:.1f}x",
        flush=True,
    )
    return [
        {
            "model": name,
            "image": [size, size, 1],
            "batch": args.batch,
            "naive_s": rows["naive"][1],
            "naive_compile_s": rows["naive"][0],
            "fast_s": rows["fast"][1],
            "fast_compile_s": rows["fast"][0],
            "speedup": speedup,
        }
    ]


def parallel_rows(args) -> list[dict]:
    layers = 4 if args.quick else 10
    teacher = wavenet(gaussian(), wavenet_dilations(2, layers), channels=32, skip_channels=64)
    teacher_params = teacher.init(jax.random.PRNGKey(0))
    student = parallel_wavenet(4, wavenet_dilations(1, layers), channels=32, skip_channels=32)
    student_params = student.init(jax.random.PRNGKey(1))
    key = jax.random.PRNGKey(2)
    length, batch = args.length, args.batch
    teacher_fast = jax.jit(teacher.sample_fast, static_argnums=(2, 3))
    compile_teacher, teacher_s = timed(teacher_fast, teacher_params, key, batch, length)
    student_sample = jax.jit(student.sample, static_argnums=(2, 3))
    compile_student, student_s = timed(student_sample, student_params, key, batch, length)
    print(
        f"parallel wavenet T={length}, batch {batch}: teacher (fast) {teacher_s:.2f} s, "
        f"student {student_s:.3f} s -> {teacher_s / student_s:,.0f}x",
        flush=True,
    )
    return [
        {
            "model": "parallel_wavenet",
            "length": length,
            "batch": batch,
            "teacher_fast_s": teacher_s,
            "teacher_compile_s": compile_teacher,
            "student_s": student_s,
            "student_compile_s": compile_student,
            "speedup": teacher_s / student_s,
        }
    ]


ROWS = {
    "wavenet": wavenet_rows,
    "pixelcnn": pixelcnn_rows,
    "gated": lambda args: pixelcnn_rows(args, gated=True),
    "parallel": parallel_rows,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=16_000)
    parser.add_argument("--naive-steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--out", default="benchmarks/results/generation.json")
    args = parser.parse_args()
    if args.quick:
        args.length, args.naive_steps, args.batch = 256, 4, 2
    load_start = os.getloadavg()
    rows = [row for name in args.rows for row in ROWS[name](args)]
    result = {
        "rows": rows,
        "platform": platform.platform(),
        "processor": platform.processor(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

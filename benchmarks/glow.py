"""Glow on 28×28×1: train steps/s, compile time and peak memory of scan, unrolled and a floor.

The model is ``nflows_jax.bijectors.glow((28, 28, 1), levels=2, steps_per_level=K, hidden=64,
num_blocks=1)``: 28×28×1 -> squeeze 14×14×4 -> K steps -> split prior -> 14×14×2 -> squeeze
7×7×8 -> K steps, each step actnorm, LU 1×1 conv and an affine coupling with a one-block
ConvResNet conditioner of 64 channels. Four variants of the same train step (loss = mean
negative ``flows.log_prob`` of a standard-normal ``flows.Flow`` on a batch of 64, Adam via optax,
``jax.jit`` with the params and optimiser state donated):

  scan      ``glow(..., unroll=False)``: the K steps of a level are one ``repeat`` (one
            lax.scan).
  default   ``glow(...)`` as users get it (``unroll=None``): the same scan, unrolled by XLA on
            the CPU backend (a convolution's gradient is ~30x slower inside a loop body there).
  unrolled  the same layers with each level's ``repeat(step, K)`` replaced by
            ``chain(*[step] * K)`` (a Python loop XLA sees unrolled). Its params are the scan
            model's, unstacked into K-tuples, so both start from the same values; the first-step
            losses of the two are compared (``loss_diff_vs_scan`` in the JSON).
  floor     the same convolutions' forward and backward alone: for each coupling (K per level)
            and for the split prior, one ConvResNet(64, 2C, num_blocks=1) apply on that
            coupling's input shape ((64, 14, 14, 4) at level 1, (64, 7, 7, 8) at level 2), each
            step preceded by its 1×1 conv as a plain (C, C) einsum. The steps are chained
            (h <- einsum(h, W); o = net(h); h <- h + o[..., :C]) so the data dependence is the
            flow's, the two squeezes (reshape/transpose) and the channel slice of the split are
            kept, and the scalar loss is mean over the batch of sum(h²) + the sum of every
            o[..., C:]. Same Adam update. Not included: actnorm, masking, the tanh bound,
            exp-scale and shift, log-dets, the LU assembly, the base log-density, scan
            bookkeeping. The floor is unrolled in Python.

Measured per row, in one process:
  compile: wall time of lower + compile + the first call (block_until_ready);
  steps/s: steady state over N steps after one warm-up step, N chosen so the timed part takes
           about ``--target-s`` seconds (at least 2 steps: the scan rows are slow on CPU);
  peak MB: XLA's ``compiled.memory_analysis()`` of the train step, temp + argument + output -
           alias (CPU's ``peak_memory_in_bytes`` is about the argument size only; it is kept in
           the JSON as ``xla_reported_peak_memory_mb``), and, beside it,
           the growth of the process's max resident set (``resource.getrusage``) over the row.

Then a diagnosis of the scan rows' speed on CPU (``conv_in_loop``): the gradient of four
ConvResNet-shaped blocks as a Python loop and under ``lax.scan``, with lax's convolution and with a
custom-VJP convolution whose backward is an ordinary conv plus nine shifted matmuls.

    python benchmarks/glow.py             # K = 4, 8, 16 (about 5.5 minutes on 2 CPU cores)
    python benchmarks/glow.py --quick     # smoke run: K = 1, 2, about 1 s per row
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from train_step import adam_step  # benchmarks/ is on sys.path when run as a script

from nflows_jax import flows
from nflows_jax.bijectors import architectures
from nflows_jax.bijectors.base import Bijector, chain, invert
from nflows_jax.bijectors.glow import actnorm, invertible_conv1x1_lu
from nflows_jax.bijectors.image_coupling import image_affine_coupling
from nflows_jax.nets.resnet import ConvResNet

IMAGE = (28, 28, 1)
LEVELS = 2
HIDDEN = 64
NUM_BLOCKS = 1
BATCH = 64
LEARNING_RATE = 1e-3
SEED = 0


# ------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------


def glow_unrolled(steps_per_level: int) -> Bijector:
    """``architectures.glow`` with each level's ``repeat(step, K)`` as ``chain(*[step] * K)``.

    Uses the same private multi-scale builder as ``glow`` so the two differ only in how the K
    steps of a level are composed.
    """

    def steps(num_channels: int) -> Bijector:
        step = chain(
            actnorm(),
            invertible_conv1x1_lu(num_channels, seed=SEED),
            image_affine_coupling(num_channels, hidden=HIDDEN, num_blocks=NUM_BLOCKS),
        )
        return chain(*[step] * steps_per_level)

    split_prior = architectures._split_prior(HIDDEN, NUM_BLOCKS)
    return invert(architectures._multiscale(LEVELS, IMAGE[-1], steps, split_prior))


def unstack_levels(params, steps_per_level: int, levels: int = LEVELS):
    """Scan-model params -> unrolled-model params (the stacked steps become K-tuples).

    A level's chain params are (squeeze, steps, [split prior, inner level,] unsqueeze).
    """
    params = list(params)
    stacked = params[1]
    params[1] = tuple(
        jax.tree_util.tree_map(lambda a, i=i: a[i], stacked) for i in range(steps_per_level)
    )
    if levels > 1:
        params[3] = unstack_levels(params[3], steps_per_level, levels - 1)
    return tuple(params)


def flow_step(bijector: Bijector) -> Callable:
    flow = flows.Flow(flows.standard_normal(IMAGE), bijector)

    def loss_fn(params, x):
        return -jnp.mean(flows.log_prob(flow, params, x))

    return adam_step(loss_fn, optax.adam(LEARNING_RATE))


def _squeeze(x):
    b, h, w, c = x.shape
    x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // 2, w // 2, 4 * c)


def floor_setup(steps_per_level: int, key: jax.Array, batch: jax.Array):
    """The convolutions alone (see the module docstring): (step, state)."""
    shapes = []  # (level, channels, spatial) for the K steps of each level
    c, s = IMAGE[-1], IMAGE[0]
    for _ in range(LEVELS):
        c, s = 4 * c, s // 2
        shapes.append((c, s))
        c = c // 2
    nets = {c: ConvResNet(HIDDEN, 2 * c, NUM_BLOCKS) for c, _ in shapes}
    params = []
    for level, (c, s) in enumerate(shapes):
        level_params = []
        for _ in range(steps_per_level):
            key, k = jax.random.split(key)
            net_params = nets[c].init(k, jnp.zeros((1, s, s, c)))["params"]
            level_params.append(
                {"w": jnp.eye(c) + 0.01 * jax.random.normal(k, (c, c)), "net": net_params}
            )
        prior = None
        if level < LEVELS - 1:
            key, k = jax.random.split(key)
            prior = nets[c].init(k, jnp.zeros((1, s, s, c)))["params"]
        params.append({"steps": level_params, "prior": prior})

    def loss_fn(params, x):
        h, extra = x, 0.0
        for level, (c, _) in enumerate(shapes):
            h = _squeeze(h)
            for p in params[level]["steps"]:
                h = jnp.einsum("bhwc,dc->bhwd", h, p["w"])
                o = nets[c].apply({"params": p["net"]}, h)
                h = h + o[..., :c]
                extra = extra + jnp.sum(o[..., c:])
            if params[level]["prior"] is not None:
                o = nets[c].apply({"params": params[level]["prior"]}, h)
                extra = extra + jnp.sum(o)
                h = h[..., : c // 2]
        return (jnp.sum(jnp.square(h)) + extra) / x.shape[0]

    optimizer = optax.adam(LEARNING_RATE)
    del batch
    return adam_step(loss_fn, optimizer), (params, optimizer.init(params))


# ------------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------------


def block(tree):
    return jax.tree_util.tree_map(lambda a: a.block_until_ready(), tree)


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def memory_mb(compiled) -> dict:
    try:
        stats = compiled.memory_analysis()
    except Exception as error:
        return {"xla_peak_mb": None, "xla_memory_note": f"unavailable: {error}"}
    if stats is None:
        return {"xla_peak_mb": None, "xla_memory_note": "memory_analysis() returned None"}
    sizes = {
        name: getattr(stats, f"{name}_size_in_bytes") / 2**20
        for name in ("temp", "argument", "output", "alias")
    }
    peak = getattr(stats, "peak_memory_in_bytes", 0) / 2**20
    total = sizes["temp"] + sizes["argument"] + sizes["output"] - sizes["alias"]
    return {
        # On CPU peak_memory_in_bytes reports about the argument size only (3 MB with 50 MB of
        # temporaries), so the peak is taken as temp + argument + output - alias.
        "xla_peak_mb": total,
        "xla_peak_source": "temp+argument+output-alias",
        "xla_reported_peak_memory_mb": peak,
        "xla_temp_mb": sizes["temp"],
        "xla_argument_mb": sizes["argument"],
        "xla_output_mb": sizes["output"],
        "xla_alias_mb": sizes["alias"],
        "xla_temp_arg_out_minus_alias_mb": total,
    }


def time_row(step, state, batches, target_s: float) -> dict:
    rss_before = max_rss_mb()
    start = time.perf_counter()
    lowered = jax.jit(step, donate_argnums=0).lower(state, batches[0])
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    compiled_at = time.perf_counter()
    state, first_loss = block(compiled(state, batches[0]))
    compile_s = time.perf_counter() - start
    result = {
        "compile_s": compile_s,
        "lower_s": lowered_at - start,
        "xla_compile_s": compiled_at - lowered_at,
    }
    start = time.perf_counter()
    state, loss = block(compiled(state, batches[1 % len(batches)]))  # one warm-up step
    estimate = time.perf_counter() - start
    num_timed = max(2, min(500, round(target_s / max(estimate, 1e-6))))
    start = time.perf_counter()
    for i in range(num_timed):
        state, loss = compiled(state, batches[i % len(batches)])
    block((state, loss))
    elapsed = time.perf_counter() - start
    return {
        **result,
        "steps_per_s": num_timed / elapsed,
        "timed_steps": num_timed,
        "first_loss": float(first_loss),
        "final_loss": float(loss),
        "rss_growth_mb": max_rss_mb() - rss_before,
        **memory_mb(compiled),
    }


# ------------------------------------------------------------------------------------------------
# Diagnosis: a convolution's gradient inside a loop body (XLA:CPU)
# ------------------------------------------------------------------------------------------------

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def _lax_conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_DIMENSIONS)


@jax.custom_vjp
def _shifted_matmul_conv(x, w):
    """A 3×3 SAME conv whose backward avoids lax's kernel-gradient convolution."""
    return _lax_conv(x, w)


def _shifted_matmul_conv_fwd(x, w):
    return _lax_conv(x, w), (x, w)


def _shifted_matmul_conv_bwd(residuals, g):
    x, w = residuals
    # Input gradient: an ordinary NHWC conv of g with the flipped, in/out-swapped kernel.
    gx = _lax_conv(g, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2))
    # Kernel gradient: nine matmuls of shifted inputs with g.
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    height, width = x.shape[1:3]
    gw = jnp.stack(
        [
            jnp.stack(
                [
                    jnp.einsum("bhwc,bhwf->cf", padded[:, i : i + height, j : j + width], g)
                    for j in range(3)
                ]
            )
            for i in range(3)
        ]
    )
    return gx, gw


_shifted_matmul_conv.defvjp(_shifted_matmul_conv_fwd, _shifted_matmul_conv_bwd)


def conv_in_loop(num_layers: int = 4, repeats: int = 2) -> dict:
    """Gradient of ``num_layers`` ConvResNet-shaped blocks, Python loop against ``lax.scan``.

    Each block: 3×3 convs 4→64, 64→64, 64→64 (residual), 64→8 on (64, 14, 14, 4), ReLUs, no
    biases; x <- x + block(x)[..., :4]; loss sum(x²). Convolutions: ``lax`` (what flax's
    ``nn.Conv`` and so ConvResNet use) or the custom-VJP ``shifted_matmul`` above.
    """
    channels, hidden = 4, HIDDEN
    shapes = [(channels, hidden), (hidden, hidden), (hidden, hidden), (hidden, 2 * channels)]
    keys = jax.random.split(jax.random.PRNGKey(0), len(shapes) + 1)
    weights = [
        0.05 * jax.random.normal(k, (num_layers, 3, 3, a, b))
        for k, (a, b) in zip(keys[1:], shapes, strict=True)
    ]
    x = jax.random.normal(keys[0], (BATCH, 14, 14, channels))

    def resnet_block(conv, w, x):
        h = conv(x, w[0])
        r = conv(jax.nn.relu(conv(jax.nn.relu(h), w[1])), w[2])
        return conv(jax.nn.relu(h + r), w[3])

    def loss(conv, scanned):
        def fn(weights, x):
            if scanned:

                def body(x, w):
                    return x + resnet_block(conv, w, x)[..., :channels], None

                x, _ = jax.lax.scan(body, x, weights)
            else:
                for i in range(num_layers):
                    x = x + resnet_block(conv, [w[i] for w in weights], x)[..., :channels]
            return jnp.sum(jnp.square(x))

        return fn

    results = {}
    reference = jax.jit(jax.grad(loss(_lax_conv, False)))(weights, x)
    for conv_name, conv in (("lax", _lax_conv), ("shifted_matmul", _shifted_matmul_conv)):
        for scanned in (False, True):
            grad = jax.jit(jax.grad(loss(conv, scanned)))
            out = block(grad(weights, x))
            start = time.perf_counter()
            for _ in range(repeats):
                out = grad(weights, x)
            block(out)
            name = f"{conv_name}_{'scan' if scanned else 'loop'}_grad_s"
            results[name] = (time.perf_counter() - start) / repeats
            error = max(
                float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))
                for a, b in zip(reference, out, strict=True)
            )
            results[name.replace("_grad_s", "_max_rel_error")] = error
            print(f"conv in loop: {name} = {results[name]:.3f} s (rel. error {error:.1e})")
    return results


def make_batches(num: int) -> jax.Array:
    """Uniformly dequantised random uint8 images in [0, 1): (num, BATCH, 28, 28, 1)."""
    rng = np.random.default_rng(123)
    pixels = rng.integers(0, 256, size=(num, BATCH, *IMAGE))
    noise = rng.uniform(size=pixels.shape)
    return jnp.asarray((pixels + noise) / 256.0, jnp.float32)


def run_k(steps_per_level: int, batches, args) -> list[dict]:
    key = jax.random.PRNGKey(1)

    def library_glow(unroll):
        return architectures.glow(
            IMAGE,
            levels=LEVELS,
            steps_per_level=steps_per_level,
            hidden=HIDDEN,
            num_blocks=NUM_BLOCKS,
            seed=SEED,
            unroll=unroll,
        )

    scan_bijector = library_glow(False)  # the scan itself: on CPU the default unrolls
    default_bijector = library_glow(None)  # the library's default: unrolled on CPU only
    flow = flows.Flow(flows.standard_normal(IMAGE), scan_bijector)
    scan_params = block(flows.init(flow, key, batches[0]))
    default_params = block(jax.tree_util.tree_map(jnp.copy, scan_params))
    # Fresh buffers: the scan row donates its params, and the unstacking keeps unstacked leaves.
    unrolled_params = block(
        jax.tree_util.tree_map(jnp.copy, unstack_levels(scan_params, steps_per_level))
    )
    optimizer = optax.adam(LEARNING_RATE)
    setups = {
        "scan": (flow_step(scan_bijector), (scan_params, optimizer.init(scan_params))),
        "default": (
            flow_step(default_bijector),
            (default_params, optimizer.init(default_params)),
        ),
        "unrolled": (
            flow_step(glow_unrolled(steps_per_level)),
            (unrolled_params, optimizer.init(unrolled_params)),
        ),
        "floor": floor_setup(steps_per_level, jax.random.PRNGKey(2), batches[0]),
    }
    rows = []
    for variant in args.variants:
        step, state = setups.pop(variant)
        result = time_row(step, state, batches, args.target_s)
        row = {"K": steps_per_level, "variant": variant, **result}
        rows.append(row)
        print(
            f"K={steps_per_level:<3} {variant:>8}: compile {row['compile_s']:6.2f} s "
            f"(lower {row['lower_s']:.2f}, XLA {row['xla_compile_s']:.2f})  "
            f"{row['steps_per_s']:7.3f} steps/s ({row['timed_steps']} steps)  "
            f"XLA peak {row['xla_peak_mb'] or float('nan'):7.1f} MB  "
            f"RSS +{row['rss_growth_mb']:.0f} MB  loss {row['first_loss']:.4f}",
            flush=True,
        )
    by_variant = {r["variant"]: r for r in rows}
    if "scan" in by_variant and "unrolled" in by_variant:
        diff = by_variant["unrolled"]["first_loss"] - by_variant["scan"]["first_loss"]
        by_variant["unrolled"]["loss_diff_vs_scan"] = diff
    if "floor" in by_variant:
        floor = by_variant["floor"]["steps_per_s"]
        for r in rows:
            r["floor_over_variant_time"] = floor / r["steps_per_s"]  # step time / floor's
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps-per-level", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--variants", nargs="+", default=["scan", "default", "unrolled", "floor"])
    parser.add_argument("--target-s", type=float, default=8.0, help="timed seconds per row")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument(
        "--skip-conv-loop", action="store_true", help="skip the conv-in-a-loop diagnosis"
    )
    parser.add_argument("--out", default="benchmarks/results/glow.json")
    args = parser.parse_args()
    if args.quick:
        args.steps_per_level, args.target_s = [1, 2], 1.0
    warnings.filterwarnings("ignore", message="Some donated buffers were not usable")

    load_before = os.getloadavg()
    batches = make_batches(4)
    started = time.perf_counter()
    rows = []
    for k in args.steps_per_level:
        rows += run_k(k, batches, args)
    total_s = time.perf_counter() - started
    conv_loop = {} if args.skip_conv_loop else conv_in_loop(num_layers=4)
    load_after = os.getloadavg()

    print("\n| K | variant | compile (s) | steps/s | step time / floor's | XLA peak (MB) |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        peak = "n/a" if r["xla_peak_mb"] is None else f"{r['xla_peak_mb']:.0f}"
        ratio = r.get("floor_over_variant_time")
        ratio = "n/a" if ratio is None else f"{ratio:.2f}"
        print(
            f"| {r['K']} | {r['variant']} | {r['compile_s']:.2f} | {r['steps_per_s']:.3f} | "
            f"{ratio} | {peak} |"
        )
    for variant in args.variants:
        by_k = {r["K"]: r for r in rows if r["variant"] == variant}
        lo, hi = min(by_k), max(by_k)
        print(
            f"{variant}: compile K={hi} / K={lo} = "
            f"{by_k[hi]['compile_s'] / by_k[lo]['compile_s']:.2f}x"
        )
    print(f"total {total_s:.0f} s; load average before {load_before}, after {load_after}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "jax": jax.__version__,
        "device": jax.devices()[0].device_kind,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "total_s": total_s,
    }
    config = {
        "image": IMAGE,
        "levels": LEVELS,
        "hidden": HIDDEN,
        "num_blocks": NUM_BLOCKS,
        "batch": BATCH,
        "target_s": args.target_s,
    }
    out.write_text(
        json.dumps(
            {"meta": meta, "config": config, "rows": rows, "conv_in_loop": conv_loop}, indent=2
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

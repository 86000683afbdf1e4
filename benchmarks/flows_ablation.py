"""Ablation of RealNVP design choices on toy 2-D data: which one costs test log-likelihood?

Every variant is a K-layer affine-coupling flow (MLP conditioner 2x64, ReLU, a reversal between
layers) trained exactly as in ``benchmarks/flows_2d.py``: Adam(1e-3), batch 512 of fresh samples
per step. Seeds (init and data) are vmapped, so one compile trains all of them. Printed: mean test
log-likelihood ± standard error over seeds (20,000 test points per seed).

Axes of the ablation:
  scale:   how the conditioner's raw output r becomes the scale a of ``y_b = a * x_b + t``
           exp_tanh5: a = exp(5 tanh(r / 5))   (the library before issue 6)
           softplus:  a = softplus(r + c) + 1e-2, c so that a = 1 at r = 0 (flowjax's default)
           softplus_tanh5: log a = 5 tanh(log(softplus(r + c) + 1e-2) / 5), the same bounded
  order:   "scale_first" evaluates densities as x_b = (y_b - t) / a (the library's inverse);
           "density_affine" evaluates them as z_b = a * y_b + t (flowjax's ``invert=True``)
  hidden:  "lecun_zero_bias" (flax Dense default), "uniform" (kernel and bias
           U(-1/sqrt(fan_in), 1/sqrt(fan_in)), equinox's and PyTorch's default),
           "lecun_uniform_bias" (only the bias random) or "uniform_zero_bias" (only the kernel)
  output:  "zero" (exact identity at init) or "uniform" as above

"base" is the library before issue 6; "uniform_hidden" is the library after it
(``affine_coupling`` with ``nflows_jax.nets.MLP``'s default ``hidden_init="uniform"``).
Seeds are ``--seed-offset`` .. ``--seed-offset + --seeds - 1`` (each split into init, data and
test keys as in ``benchmarks/flows_2d.py``, so offset 0 reproduces that benchmark's seeds).

    python benchmarks/flows_ablation.py --variants base uniform_hidden softplus ...  # VARIANTS
    python benchmarks/flows_ablation.py --datasets pinwheel --seed-offset 0 --seeds 10 ...
    python benchmarks/flows_ablation.py --quick    # smoke run: 2 seeds, 20 steps, 2 layers

Writes ``--out`` (default benchmarks/results/flows_ablation.json): one row per (dataset, variant)
with the per-seed test log-likelihoods, their mean and standard error.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from nflows_jax import flows
from nflows_jax.bijectors import Bijector, chain, repeat, reverse_permutation
from nflows_jax.data import sample_toy


class Variant(NamedTuple):
    scale: str = "exp_tanh5"
    order: str = "scale_first"
    hidden: str = "lecun_zero_bias"
    output: str = "zero"


VARIANTS = {
    "base": Variant(),
    "softplus": Variant(scale="softplus"),
    "density_affine": Variant(order="density_affine"),
    "uniform_hidden": Variant(hidden="uniform"),
    "uniform_output": Variant(output="uniform"),
    "softplus+density_affine": Variant(scale="softplus", order="density_affine"),
    "uniform_hidden+softplus": Variant(scale="softplus", hidden="uniform"),
    "flowjax_like": Variant("softplus", "density_affine", "uniform", "uniform"),
    "uniform_hidden+density_affine": Variant(order="density_affine", hidden="uniform"),
    "bias_only": Variant(hidden="lecun_uniform_bias"),
    "kernel_only": Variant(hidden="uniform_zero_bias"),
    "bias_only+density_affine": Variant(order="density_affine", hidden="lecun_uniform_bias"),
    "bias_only+softplus": Variant(scale="softplus", hidden="lecun_uniform_bias"),
    "uniform_hidden+softplus+density_affine": Variant("softplus", "density_affine", "uniform"),
    "uniform_hidden+softplus_tanh5+density_affine": Variant(
        "softplus_tanh5", "density_affine", "uniform"
    ),
}


def fan_in_uniform(key, shape, dtype=jnp.float32):
    bound = 1.0 / math.sqrt(shape[0])
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def bias_uniform(fan_in):
    def init(key, shape, dtype=jnp.float32):
        bound = 1.0 / math.sqrt(fan_in)
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class AblationMLP(nn.Module):
    hidden: tuple[int, ...]
    out_features: int
    variant: Variant

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            if self.variant.hidden == "uniform":
                dense = nn.Dense(
                    width, kernel_init=fan_in_uniform, bias_init=bias_uniform(x.shape[-1])
                )
            elif self.variant.hidden == "lecun_uniform_bias":
                dense = nn.Dense(width, bias_init=bias_uniform(x.shape[-1]))
            elif self.variant.hidden == "uniform_zero_bias":
                dense = nn.Dense(width, kernel_init=fan_in_uniform)
            else:
                dense = nn.Dense(width)
            x = nn.relu(dense(x))
        if self.variant.output == "uniform":
            out = nn.Dense(
                self.out_features, kernel_init=fan_in_uniform, bias_init=bias_uniform(x.shape[-1])
            )
        else:
            out = nn.Dense(self.out_features, kernel_init=nn.initializers.zeros)
        return out(x)


SOFTPLUS_MIN = 1e-2
SOFTPLUS_OFFSET = math.log(math.expm1(1.0 - SOFTPLUS_MIN))  # softplus(offset) + min = 1


def log_scale_of(raw, scale):
    if scale == "exp_tanh5":
        return 5.0 * jnp.tanh(raw / 5.0)
    if scale == "softplus":
        return jnp.log(jax.nn.softplus(raw + SOFTPLUS_OFFSET) + SOFTPLUS_MIN)
    if scale == "softplus_tanh5":  # the softplus log-scale, soft-clamped to |s| < 5
        return 5.0 * jnp.tanh(jnp.log(jax.nn.softplus(raw + SOFTPLUS_OFFSET) + SOFTPLUS_MIN) / 5.0)
    raise ValueError(scale)


def ablation_coupling(variant: Variant, hidden=(64, 64)) -> Bijector:
    """2-D affine coupling: keeps x[:, :1], changes x[:, 1:]."""
    net = AblationMLP(hidden, 2, variant)

    def init(key, x, context=None):
        return net.init(key, x[:1, :1])["params"]

    def params_of(params, kept):
        out = net.apply({"params": params}, kept)
        return out[:, :1], log_scale_of(out[:, 1:], variant.scale)

    def scale_first_fwd(params, x, context=None):
        t, s = params_of(params, x[:, :1])
        return jnp.concatenate([x[:, :1], x[:, 1:] * jnp.exp(s) + t], 1), jnp.sum(s, 1)

    def scale_first_inv(params, y, context=None):
        t, s = params_of(params, y[:, :1])
        return jnp.concatenate([y[:, :1], (y[:, 1:] - t) * jnp.exp(-s)], 1), -jnp.sum(s, 1)

    if variant.order == "scale_first":
        return Bijector(init, scale_first_fwd, scale_first_inv)
    # density_affine: the inverse (density) direction is the affine map z = a y + t.
    return Bijector(init, scale_first_inv, scale_first_fwd)


def run_variant(
    variant: Variant,
    dataset: str,
    seeds: int,
    steps: int,
    layers: int,
    batch: int,
    seed_offset: int = 1000,
):
    flow = flows.Flow(
        flows.standard_normal(2),
        repeat(chain(ablation_coupling(variant), reverse_permutation()), layers),
    )
    optimizer = optax.adam(1e-3)

    def loss_fn(params, x):
        return -jnp.mean(flows.log_prob(flow, params, x))

    def train_one(seed_key):
        init_key, data_key, test_key = jax.random.split(seed_key, 3)
        params = flows.init(flow, init_key, jnp.zeros((batch, 2)))

        def step(state, i):
            params, opt_state = state
            x = sample_toy(dataset, jax.random.fold_in(data_key, i), batch)
            loss, grads = jax.value_and_grad(loss_fn)(params, x)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), jnp.arange(steps))
        test_x = sample_toy(dataset, test_key, 20_000)
        return jnp.mean(flows.log_prob(flow, params, test_x))

    keys = jax.vmap(lambda s: jax.random.PRNGKey(seed_offset + s))(jnp.arange(seeds))
    lls = jax.jit(jax.vmap(train_one))(keys)
    return jax.device_get(lls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["base"], choices=list(VARIANTS))
    parser.add_argument("--datasets", nargs="+", default=["two_moons"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--seed-offset", type=int, default=1000, help="seeds offset.. offset+n-1")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, 20 steps")
    parser.add_argument("--out", default="benchmarks/results/flows_ablation.json")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.steps, args.layers = 2, 20, 2
    started = time.perf_counter()
    rows = []
    for dataset in args.datasets:
        for name in args.variants:
            start = time.perf_counter()
            lls = run_variant(
                VARIANTS[name],
                dataset,
                args.seeds,
                args.steps,
                args.layers,
                args.batch,
                args.seed_offset,
            )
            per_seed = [float(v) for v in lls]
            mean = sum(per_seed) / len(per_seed)
            se = float(lls.std(ddof=1) / math.sqrt(len(lls)))
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "dataset": dataset,
                    "variant": name,
                    "settings": VARIANTS[name]._asdict(),
                    "seeds": list(range(args.seed_offset, args.seed_offset + args.seeds)),
                    "per_seed": per_seed,
                    "mean": mean,
                    "se": se,
                    "seconds": seconds,
                }
            )
            print(
                f"{dataset:>15} {name:>30}: {mean:.4f} ± {se:.4f}  "
                f"[{' '.join(f'{v:.3f}' for v in per_seed)}]  ({seconds:.0f} s)",
                flush=True,
            )
    meta = {
        "jax": jax.__version__,
        "device": jax.devices()[0].device_kind,
        "machine": platform.machine(),
        "command": " ".join(sys.argv),
        "quick": args.quick,
        "seeds": args.seeds,
        "seed_offset": args.seed_offset,
        "steps": args.steps,
        "layers": args.layers,
        "batch": args.batch,
        "total_seconds": time.perf_counter() - started,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Compile time and training speed of a K-layer RealNVP on 2-D data, beside distrax and flowjax.

All three flows have the same architecture: K affine coupling layers on 2-D data, each with an
MLP conditioner of two hidden layers of 64 units, a reversal between layers, trained with Adam on
batches of 512. nflows_jax chains the layers with one ``lax.scan`` (``repeat``); distrax chains
K ``MaskedCoupling`` layers in Python (``distrax.Chain``) with the same flax MLP, but with flax's
default init (LeCun-normal kernels, zero biases: distrax leaves the conditioner to its user, and
that is what a user gets) where ours draws hidden kernels and biases from U(±1/sqrt(fan_in));
flowjax builds its ``coupling_flow`` (equinox,
scanned layers).

Measured in one process, one library after the other, on the same batches:
  compile: wall time of the first call of the jitted train step (trace + compile + one step);
  steps/s: steady-state train steps per second over ``--steps`` steps after a warm-up.

A second part measures quality: for each toy dataset and each seed s = 0..``--seeds``-1, every
library's K=8 flow is initialised from key(s) and trained for ``--fit-steps`` Adam steps on the
same stream of fresh batches (data key from s), then scored on the same 20,000 held-out points.
Reported: mean test log-likelihood ± standard error over seeds, and our paired difference to each
peer (same seeds, so the s.e. of the difference is that of the per-seed differences). The seeds
are ``jax.vmap``-ed, so each library and dataset compiles once.

    python benchmarks/flows_2d.py            # full tables (about 15 minutes on 2 CPU cores)
    python benchmarks/flows_2d.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path

import distrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import paramax
from flowjax.bijections import Affine as FlowjaxAffine
from flowjax.distributions import StandardNormal
from flowjax.flows import coupling_flow
from train_step import adam_step  # benchmarks/ is on sys.path when run as a script

from nflows_jax import flows
from nflows_jax.bijectors import chain, repeat, reverse_permutation
from nflows_jax.bijectors.coupling import affine_coupling
from nflows_jax.data import sample_toy, two_moons
from nflows_jax.nets.mlp import MLP

HIDDEN = (64, 64)
BATCH = 512
LEARNING_RATE = 1e-3
TEST_POINTS = 20_000
QUALITY_DATASETS = ("two_moons", "eight_gaussians", "checkerboard", "pinwheel")


# A train step is (state, batch) -> (state, loss) where state is whatever the library needs.
Setup = tuple[Callable, object]


def nflows_setup(num_layers: int, key: jax.Array) -> Setup:
    layer = chain(affine_coupling(2, hidden=HIDDEN), reverse_permutation())
    flow = flows.Flow(flows.standard_normal(2), repeat(layer, num_layers))
    params = flows.init(flow, key, jnp.zeros((BATCH, 2)))
    optimizer = optax.adam(LEARNING_RATE)

    def loss_fn(params, x):
        return -jnp.mean(flows.log_prob(flow, params, x))

    step = adam_step(loss_fn, optimizer)

    def log_prob(state, x):
        return flows.log_prob(flow, state[0], x)

    return step, (params, optimizer.init(params)), log_prob


def distrax_setup(num_layers: int, key: jax.Array) -> Setup:
    # distrax leaves the conditioner to the user; this one has flax's default init (LeCun-normal
    # kernels, zero biases, as in distrax's own haiku examples) and a zero output layer.
    conditioner = MLP(hidden=HIDDEN, out_features=4, hidden_init="flax")
    masks = [jnp.arange(2) == (i % 2) for i in range(num_layers)]
    keys = jax.random.split(key, num_layers)
    params = [conditioner.init(k, jnp.zeros((1, 2))) for k in keys]
    base = distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))

    def affine(raw):
        shift, raw_log_scale = jnp.split(raw, 2, axis=-1)
        return distrax.ScalarAffine(shift=shift, log_scale=3.0 * jnp.tanh(raw_log_scale / 3.0))

    def make_flow(params):
        layers = [
            distrax.MaskedCoupling(mask, lambda x, p=p: conditioner.apply(p, x), affine)
            for mask, p in zip(masks, params, strict=True)
        ]
        return distrax.Transformed(base, distrax.Chain(layers))

    optimizer = optax.adam(LEARNING_RATE)

    def loss_fn(params, x):
        return -jnp.mean(make_flow(params).log_prob(x))

    step = adam_step(loss_fn, optimizer)

    def log_prob(state, x):
        return make_flow(state[0]).log_prob(x)

    return step, (params, optimizer.init(params)), log_prob


def flowjax_setup(num_layers: int, key: jax.Array) -> Setup:
    flow = coupling_flow(
        key,
        base_dist=StandardNormal((2,)),
        transformer=FlowjaxAffine(),
        flow_layers=num_layers,
        nn_width=HIDDEN[0],
        nn_depth=len(HIDDEN),
    )
    params, static = eqx.partition(flow, eqx.is_inexact_array)
    optimizer = optax.adam(LEARNING_RATE)

    def loss_fn(params, x):
        dist = paramax.unwrap(eqx.combine(params, static))
        return -jnp.mean(dist.log_prob(x))

    step = adam_step(loss_fn, optimizer)

    def log_prob(state, x):
        return paramax.unwrap(eqx.combine(state[0], static)).log_prob(x)

    return step, (params, optimizer.init(params)), log_prob


LIBRARIES = {"nflows_jax": nflows_setup, "distrax": distrax_setup, "flowjax": flowjax_setup}


def block(tree):
    return jax.tree_util.tree_map(lambda a: a.block_until_ready(), tree)


def time_training(setup_fn, num_layers: int, batches: jax.Array, num_timed: int) -> dict:
    step, state, _ = setup_fn(num_layers, jax.random.PRNGKey(1))
    step = jax.jit(step)
    start = time.perf_counter()
    state, loss = block(step(state, batches[0]))
    compile_s = time.perf_counter() - start
    for i in range(1, 6):  # warm-up
        state, loss = step(state, batches[i % len(batches)])
    block(state)
    start = time.perf_counter()
    for i in range(num_timed):
        state, loss = step(state, batches[i % len(batches)])
    block((state, loss))
    elapsed = time.perf_counter() - start
    return {"compile_s": compile_s, "steps_per_s": num_timed / elapsed}


def train_and_evaluate(setup_fn, num_layers, num_steps, dataset, seed_key) -> jax.Array:
    """Train one seed's flow on fresh batches of ``dataset``; return its mean test log-likelihood.

    ``seed_key`` fixes the init (shared by name, not by value: each library draws its own
    params from it), the training stream and the 20,000 test points, which are the same for
    every library. Traceable, so seeds can be vmapped.
    """
    init_key, data_key, test_key = jax.random.split(seed_key, 3)
    step, state, log_prob = setup_fn(num_layers, init_key)

    def body(state, i):
        batch = sample_toy(dataset, jax.random.fold_in(data_key, i), BATCH)
        return step(state, batch)

    state, _ = jax.lax.scan(body, state, jnp.arange(num_steps))
    return jnp.mean(log_prob(state, sample_toy(dataset, test_key, TEST_POINTS)))


def quality(num_layers, num_steps, dataset, num_seeds) -> dict[str, list[float]]:
    """Per-seed test log-likelihoods of every library, {library: [ll for seed 0.., ...]}."""
    keys = jnp.stack([jax.random.PRNGKey(seed) for seed in range(num_seeds)])
    per_library = {}
    for name, setup_fn in LIBRARIES.items():

        def one_seed(key, setup_fn=setup_fn):
            return train_and_evaluate(setup_fn, num_layers, num_steps, dataset, key)

        per_library[name] = [float(v) for v in jax.jit(jax.vmap(one_seed))(keys)]
    return per_library


def mean_and_se(values) -> tuple[float, float]:
    """Sample mean and its standard error (sample s.d. / sqrt(n))."""
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def speed_table(args) -> list[dict]:
    batches = jnp.stack([two_moons(jax.random.PRNGKey(100 + i), BATCH) for i in range(8)])
    rows = []
    for num_layers in args.layers:
        for name, setup_fn in LIBRARIES.items():
            result = time_training(setup_fn, num_layers, batches, args.steps)
            rows.append({"library": name, "layers": num_layers, **result})
            print(
                f"{name:>10} K={num_layers:<3} compile {result['compile_s']:6.2f} s   "
                f"{result['steps_per_s']:8.1f} steps/s",
                flush=True,
            )
    print("\n| library | K | compile (s) | steps/s | steps/s ratio (ours / lib) |")
    print("|---|---|---|---|---|")
    ours = {r["layers"]: r for r in rows if r["library"] == "nflows_jax"}
    for r in rows:
        ratio = ours[r["layers"]]["steps_per_s"] / r["steps_per_s"]
        print(
            f"| {r['library']} | {r['layers']} | {r['compile_s']:.2f} | "
            f"{r['steps_per_s']:.1f} | {ratio:.2f} |"
        )
    for name in LIBRARIES:
        by_k = {r["layers"]: r["compile_s"] for r in rows if r["library"] == name}
        lo, hi = min(by_k), max(by_k)
        print(f"{name}: compile K={hi} / K={lo} = {by_k[hi] / by_k[lo]:.2f}x")
    return rows


def quality_table(args) -> dict:
    """Train every library on every dataset over ``args.seeds`` seeds; print the tables."""
    fits = {}
    for dataset in args.datasets:
        start = time.perf_counter()
        per_library = quality(8, args.fit_steps, dataset, args.seeds)
        fits[dataset] = {"per_seed": per_library}
        print(
            f"{dataset}: trained {len(LIBRARIES)} x {args.seeds} flows in "
            f"{time.perf_counter() - start:.0f} s",
            flush=True,
        )
    print(
        f"\nTest log-likelihood (nats), K=8, {args.fit_steps} steps, mean ± s.e. over "
        f"{args.seeds} seeds; 'ours − lib' is the paired per-seed difference"
    )
    peers = [name for name in LIBRARIES if name != "nflows_jax"]
    print(
        "| dataset | "
        + " | ".join(LIBRARIES)
        + " | "
        + " | ".join(f"ours − {p}" for p in peers)
        + " |"
    )
    print("|---|" + "---:|" * (len(LIBRARIES) + len(peers)))
    for dataset, fit in fits.items():
        per_library = fit["per_seed"]
        summary = {name: mean_and_se(lls) for name, lls in per_library.items()}
        ours = per_library["nflows_jax"]
        diffs = {
            peer: mean_and_se([a - b for a, b in zip(ours, per_library[peer], strict=True)])
            for peer in peers
        }
        fit["mean_se"] = summary
        fit["ours_minus_peer_mean_se"] = diffs
        cells = [f"{m:.3f} ± {e:.3f}" for m, e in summary.values()]
        cells += [f"{m:+.3f} ± {e:.3f}" for m, e in diffs.values()]
        print(f"| {dataset} | " + " | ".join(cells) + " |")
    return fits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--steps", type=int, default=200, help="timed steps per measurement")
    parser.add_argument("--fit-steps", type=int, default=2000, help="steps for the test-LL part")
    parser.add_argument("--seeds", type=int, default=10, help="seeds for the test-LL part")
    parser.add_argument("--datasets", nargs="+", default=list(QUALITY_DATASETS))
    parser.add_argument("--skip-timings", action="store_true", help="only the quality part")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--out", default="benchmarks/results/flows_2d.json")
    args = parser.parse_args()
    if args.quick:
        args.layers, args.steps, args.fit_steps, args.seeds = [2, 4], 10, 20, 2
        args.datasets = args.datasets[:1]

    rows = [] if args.skip_timings else speed_table(args)
    fits = quality_table(args)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "jax": jax.__version__,
        "device": jax.devices()[0].device_kind,
        "machine": platform.machine(),
        "cpus": __import__("os").cpu_count(),
    }
    config = {"fit_steps": args.fit_steps, "seeds": args.seeds, "layers_for_quality": 8}
    payload = {"meta": meta, "config": config, "timings": rows, "test_ll": fits}
    out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

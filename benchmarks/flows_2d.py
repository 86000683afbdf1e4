"""Compile time and training speed of a K-layer RealNVP on 2-D data, beside distrax and flowjax.

All three flows have the same architecture: K affine coupling layers on 2-D data, each with an
MLP conditioner of two hidden layers of 64 units, a reversal between layers, trained with Adam on
batches of 512 from two moons. nflows_jax chains the layers with one ``lax.scan``
(``repeat``); distrax chains K ``MaskedCoupling`` layers in Python (``distrax.Chain``) with the same
flax conditioner; flowjax builds its ``coupling_flow`` (equinox, scanned layers).

Measured in one process, one library after the other, on the same batches:
  compile: wall time of the first call of the jitted train step (trace + compile + one step);
  steps/s: steady-state train steps per second over ``--steps`` steps after a warm-up.
A second part trains each library's K=8 flow for the same number of steps on two moons and
reports the test log-likelihood.

    python benchmarks/flows_2d.py            # full table (a few minutes on 2 CPU cores)
    python benchmarks/flows_2d.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
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

from nflows_jax import flows
from nflows_jax.bijectors import chain, repeat, reverse_permutation
from nflows_jax.bijectors.coupling import affine_coupling
from nflows_jax.data import two_moons
from nflows_jax.nets.mlp import MLP

HIDDEN = (64, 64)
BATCH = 512
LEARNING_RATE = 1e-3


# A train step is (state, batch) -> (state, loss) where state is whatever the library needs.
Setup = tuple[Callable, object]


def adam_step(loss_fn: Callable, optimizer: optax.GradientTransformation) -> Callable:
    """The train step every library shares: (params, opt_state), x -> new state, loss."""

    def step(state, x):
        params, opt_state = state
        loss, grads = jax.value_and_grad(loss_fn)(params, x)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return step


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
    conditioner = MLP(hidden=HIDDEN, out_features=4)
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


def train_and_evaluate(setup_fn, num_layers, num_steps, train_key, test_x) -> float:
    step, state, log_prob = setup_fn(num_layers, jax.random.PRNGKey(2))
    step = jax.jit(step)
    for i in range(num_steps):
        batch = two_moons(jax.random.fold_in(train_key, i), BATCH)
        state, _ = step(state, batch)
    return float(jnp.mean(jax.jit(log_prob)(state, test_x)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--steps", type=int, default=200, help="timed steps per measurement")
    parser.add_argument("--fit-steps", type=int, default=2000, help="steps for the test-LL part")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--out", default="benchmarks/results/flows_2d.json")
    args = parser.parse_args()
    if args.quick:
        args.layers, args.steps, args.fit_steps = [2, 4], 10, 20

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

    test_x = two_moons(jax.random.PRNGKey(999), 20_000)
    fits = {
        name: train_and_evaluate(setup_fn, 8, args.fit_steps, jax.random.PRNGKey(7), test_x)
        for name, setup_fn in LIBRARIES.items()
    }
    for name, ll in fits.items():
        print(f"{name:>10} K=8 {args.fit_steps} steps: test log-likelihood {ll:.4f} nats")

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

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "jax": jax.__version__,
        "device": jax.devices()[0].device_kind,
        "machine": platform.machine(),
        "cpus": __import__("os").cpu_count(),
    }
    out.write_text(json.dumps({"meta": meta, "timings": rows, "test_ll": fits}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

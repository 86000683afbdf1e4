"""A helper process for tests/test_train_parallel.py (not collected: no ``test_`` prefix).

``python _parallel_fit_worker.py OUT.npz mesh`` (run under
``XLA_FLAGS=--xla_force_host_platform_device_count=4``): trains the small flow with ``fit`` data-
parallel over a mesh of all local devices, and again without a mesh on one device; saves both.

``python _parallel_fit_worker.py OUT.npz distributed PORT NUM_PROCESSES PROCESS_ID``: joins a
``jax.distributed`` job on 127.0.0.1:PORT (CPU collectives: gloo), trains data-parallel over the
mesh of all processes' devices with ``batch_fn`` returning this process's share of each batch,
and saves the result; process 0 also saves the unsharded single-device run on the full batches.

Both run in float64 (x64 on before JAX starts) so the sharded and unsharded trajectories differ
only by float64 rounding of the reduction order; the test's tolerance is derived from that.
On a platform without gloo the distributed mode exits with code 3 and the reason on stderr.
"""

from __future__ import annotations

import sys

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_platforms", "cpu")

NUM_STEPS = 50
BATCH = 256
DATA = 1024
LOG_EVERY = 5


def problem() -> tuple:
    """(loss_fn, params, optimizer, batch_fn): the flow, its loss and the batches, in float64."""
    import jax.numpy as jnp
    import optax

    from nflows_jax import flows
    from nflows_jax.bijectors.base import chain, repeat, reverse_permutation
    from nflows_jax.bijectors.coupling import affine_coupling
    from nflows_jax.data import batches, two_moons

    flow = flows.Flow(
        flows.standard_normal(2),
        repeat(chain(affine_coupling(2, (16, 16)), reverse_permutation()), 2),
    )
    data = two_moons(jax.random.PRNGKey(0), DATA).astype(jnp.float64)
    params = flows.init(flow, jax.random.PRNGKey(1), data[:8])
    params = jax.tree.map(lambda leaf: jnp.asarray(leaf, jnp.float64), params)

    def loss_fn(p, batch, key):
        return -jnp.mean(flows.log_prob(flow, p, batch))

    return loss_fn, params, optax.adam(1e-2), batches(data, BATCH, seed=0)


def run(loss_fn, params, optimizer, batch_fn, mesh=None, num_steps=NUM_STEPS, **kwargs) -> dict:
    """``fit``'s loss history and final params (and their sharding) as numpy arrays."""
    import numpy as np

    from nflows_jax.train import fit

    result = fit(loss_fn, params, optimizer, batch_fn, num_steps, key=jax.random.PRNGKey(2),
                 progress=False, log_every=LOG_EVERY, mesh=mesh, **kwargs)  # fmt: skip
    leaves = jax.tree.leaves(result.params)
    out = {
        "loss": np.asarray(result.history["loss"], np.float64),
        "start_step": np.asarray(result.history["start_step"]),
    }
    for i, leaf in enumerate(leaves):
        # Replicated: every process can read its own copy.
        out[f"param{i}"] = np.asarray(leaf.addressable_shards[0].data)
    if mesh is not None:
        out["replicated"] = np.asarray(all(leaf.sharding.is_fully_replicated for leaf in leaves))
        out["num_devices"] = np.asarray(len(leaves[0].sharding.device_set))
    return out


def main(argv: list[str]) -> int:
    import numpy as np

    out_path, mode = argv[0], argv[1]
    if mode == "distributed":
        port, num_processes, process_id = (int(a) for a in argv[2:5])
        try:
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        except Exception as error:  # this jax has no gloo CPU collectives
            print(f"gloo CPU collectives unavailable: {error}", file=sys.stderr)
            return 3
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{port}",
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=120,
        )
    loss_fn, params, optimizer, batch_fn = problem()
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    results = {}
    if mode == "mesh":
        problem_args = (loss_fn, params, optimizer)

        def record(prefix: str, *args, **kwargs) -> None:
            results.update({f"{prefix}_{k}": v for k, v in run(*args, **kwargs).items()})

        record("sharded", *problem_args, batch_fn, mesh)
        record("single", *problem_args, batch_fn)
        # A named wrong answer: each step sees only the first device's quarter of the batch.
        record("quarter", *problem_args, lambda step: batch_fn(step)[: BATCH // 4])
        # Checkpoints with a mesh: stop after 30 steps, resume to 50.
        checkpoint_dir = out_path + ".ckpt"
        run(*problem_args, batch_fn, mesh, 30, checkpoint_dir=checkpoint_dir, checkpoint_every=10)
        record("resumed", *problem_args, batch_fn, mesh, checkpoint_dir=checkpoint_dir)
        # The sharded, checkpointed and resumed runs all used one compilation of the step.
        from nflows_jax import train

        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        step = train._train_step_for(loss_fn, optimizer, replicated)
        results["mesh_compilations"] = np.asarray(step._cache_size())
        # A batch of 6 rows cannot be split over 4 devices.
        try:
            run(*problem_args, lambda step: batch_fn(step)[:6], mesh)
        except ValueError as error:
            results["indivisible_error"] = np.asarray(str(error))
    else:
        me, n = jax.process_index(), jax.process_count()
        share = BATCH // n

        def local_batch_fn(step: int):
            return batch_fn(step)[me * share : (me + 1) * share]

        sharded = run(loss_fn, params, optimizer, local_batch_fn, mesh)
        results.update({f"sharded_{k}": v for k, v in sharded.items()})
        results["process_count"] = np.asarray(n)
        results["local_devices"] = np.asarray(jax.local_device_count())
        if me == 0:  # the reference: one device of this process, full batches, no collectives
            single = run(loss_fn, params, optimizer, batch_fn)
            results.update({f"single_{k}": v for k, v in single.items()})
        jax.distributed.shutdown()
    np.savez(out_path, **results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

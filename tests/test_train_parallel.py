"""Data-parallel ``fit`` (issue 7, item 6): a batch sharded over a mesh, params replicated.

Two subprocesses run ``tests/_parallel_fit_worker.py`` (XLA flags and ``jax.distributed`` must be
set before JAX starts): one with 4 forced host devices in one process, and a 2-process
``jax.distributed`` job on 127.0.0.1 with gloo CPU collectives (2 devices each). Both train a
RealNVP-style flow on two-moons for 50 Adam steps, in float64, and compare with the unsharded
single-device run.

Tolerance. Sharding changes only the order in which the batch mean (and its gradient) is summed:
each device sums B/4 terms and the all-reduce adds 4 partial sums. For B = 256 terms the
worst-case relative rounding of a float64 sum is γ_B ≈ B·u = 256·eps64/2 ≈ 2.8e-14 per step
(Higham §4.2), which Adam carries through 50 steps. We allow sqrt(eps64) ≈ 1.5e-8 relative to
each leaf's scale: a factor 5e5 above one step's worst case for the growth over the trajectory,
and still 1e-5 of the 0.1..1 relative difference that the named wrong answer (each step seeing
only one device's quarter of the batch, i.e. a missing all-reduce) makes, which is checked too.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nflows_jax.train import fit

WORKER = Path(__file__).with_name("_parallel_fit_worker.py")
NUM_PARAM_LEAVES = 6  # the flow's params: 2 repeated layers of a 2-layer MLP, stacked
TOLERANCE = float(np.sqrt(np.finfo(np.float64).eps))  # see the module docstring


def worker_env(num_devices: int) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={num_devices}"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    return env


def params_of(results: dict, prefix: str) -> list[np.ndarray]:
    return [results[f"{prefix}_param{i}"] for i in range(NUM_PARAM_LEAVES)]


def assert_close_trajectories(results: dict, prefix: str, reference: dict) -> None:
    """Loss history and params of run ``prefix`` equal the reference run's to TOLERANCE."""
    np.testing.assert_allclose(
        results[f"{prefix}_loss"], reference["single_loss"], rtol=TOLERANCE, atol=0
    )
    for got, want in zip(params_of(results, prefix), params_of(reference, "single"), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE * np.max(np.abs(want)))


def max_relative_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(x - y)) / np.max(np.abs(y))) for x, y in zip(a, b, strict=True))


def test_four_host_devices_give_the_loss_and_params_of_one(tmp_path):
    out = tmp_path / "mesh.npz"
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(out), "mesh"],
        env=worker_env(4),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = dict(np.load(out))
    # The trained params are replicated over the 4 devices.
    assert bool(results["sharded_replicated"])
    assert int(results["sharded_num_devices"]) == 4
    assert len(results["single_loss"]) == 10  # 50 steps, a log point every 5
    assert_close_trajectories(results, "sharded", results)

    # Power: a missing all-reduce (each step on one device's quarter of the batch) is far off.
    wrong = max_relative_difference(params_of(results, "quarter"), params_of(results, "single"))
    assert wrong > 1e3 * TOLERANCE, wrong

    # Checkpoints with a mesh: 30 steps, then resumed to 50, bitwise the uninterrupted run.
    assert int(results["resumed_start_step"]) == 30
    assert int(results["resumed_num_devices"]) == 4
    np.testing.assert_array_equal(results["resumed_loss"], results["sharded_loss"])
    for got, want in zip(params_of(results, "resumed"), params_of(results, "sharded"), strict=True):
        np.testing.assert_array_equal(got, want)

    assert int(results["mesh_compilations"]) == 1, "fresh and resumed runs share one compilation"

    # A batch that does not split over the devices is refused with the numbers in the message.
    message = str(results["indivisible_error"])
    assert "must divide into 4 equal parts" in message and "(6, 2)" in message, message


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_with_jax_distributed_give_the_loss_and_params_of_one(tmp_path):
    """Each process feeds its half of each batch; the 4-device global mesh trains like 1 device."""
    num_processes = 2
    port = free_loopback_port()
    outs = [tmp_path / f"process{i}.npz" for i in range(num_processes)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(out), "distributed", str(port), "2", str(i)],
            env=worker_env(2),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, out in enumerate(outs)
    ]
    logs = []
    try:
        for proc in procs:
            _, stderr = proc.communicate(timeout=300)
            logs.append(stderr)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if any(proc.returncode == 3 for proc in procs):  # the worker's "no gloo" exit
        pytest.skip("this jax/platform has no gloo CPU collectives: " + logs[0][-500:])
    for i, proc in enumerate(procs):
        assert proc.returncode == 0, f"process {i}:\n{logs[i][-3000:]}"
    results = [dict(np.load(out)) for out in outs]
    for result in results:
        assert int(result["process_count"]) == 2 and int(result["local_devices"]) == 2
        assert int(result["sharded_num_devices"]) == 4 and bool(result["sharded_replicated"])
    reference = results[0]  # process 0 also trained unsharded on the full batches
    for result in results:
        assert_close_trajectories(result, "sharded", reference)
    # Replicated means identical: both processes apply the same update to the same all-reduced
    # gradient, so their copies agree bitwise, and so do their logged losses.
    np.testing.assert_array_equal(results[0]["sharded_loss"], results[1]["sharded_loss"])
    for a, b in zip(
        params_of(results[0], "sharded"), params_of(results[1], "sharded"), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def quadratic_loss(params, batch, key):
    return jnp.mean((batch - params["w"]) ** 2)


ADAM = optax.adam(0.1)


def fit_on(mesh, **kwargs):
    def batch_fn(step):
        return jnp.ones((4, 3)) * step

    return fit(quadratic_loss, {"w": jnp.zeros(3)}, ADAM, batch_fn, 6, key=jax.random.PRNGKey(0),
               progress=False, log_every=3, mesh=mesh, **kwargs)  # fmt: skip


def test_a_one_device_mesh_runs_in_process_like_no_mesh():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    sharded, plain = fit_on(mesh), fit_on(None)
    # One device: the same program on the same data, bitwise.
    np.testing.assert_array_equal(sharded.params["w"], plain.params["w"])
    assert sharded.history["loss"] == plain.history["loss"]
    assert isinstance(sharded.params["w"].sharding, jax.sharding.NamedSharding)


def test_bad_mesh_arguments_are_refused():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    with pytest.raises(ValueError, match=r"batch_axis 'batch' is not an axis of the mesh.*'data'"):
        fit_on(mesh, batch_axis="batch")
    with pytest.raises(TypeError, match=r"mesh must be a jax\.sharding\.Mesh or None; got list"):
        fit_on(list(jax.devices()))

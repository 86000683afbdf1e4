"""The training loop: it learns, the NaN guard, exact resumption from checkpoints, metrics."""

import contextlib
import json
import logging
import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nflows_jax import flows, train
from nflows_jax.bijectors.base import Bijector, check_batched
from nflows_jax.data import batches, two_moons
from nflows_jax.train import CheckpointMismatchError, NonFiniteLossError, TrainResult, fit


def elementwise_affine() -> Bijector:
    """y = x * exp(log_scale) + shift, per coordinate; a minimal trainable bijector."""

    def init(key, x, context=None):
        check_batched(x)
        return {"shift": jnp.zeros(x.shape[1:]), "log_scale": jnp.zeros(x.shape[1:])}

    def forward(params, x, context=None):
        log_det = jnp.broadcast_to(jnp.sum(params["log_scale"]), x.shape[:1])
        return x * jnp.exp(params["log_scale"]) + params["shift"], log_det

    def inverse(params, y, context=None):
        log_det = jnp.broadcast_to(-jnp.sum(params["log_scale"]), y.shape[:1])
        return (y - params["shift"]) * jnp.exp(-params["log_scale"]), log_det

    return Bijector(init, forward, inverse)


def test_loss_falls_to_the_gaussian_optimum_on_two_moons():
    data = np.asarray(two_moons(jax.random.PRNGKey(0), 2048))
    flow = flows.Flow(flows.standard_normal(2), elementwise_affine())
    params = flows.init(flow, jax.random.PRNGKey(1), data[:8])
    loss_fn = lambda p, batch, key: -jnp.mean(flows.log_prob(flow, p, batch))
    data_nll = jax.jit(lambda p: loss_fn(p, data, None))
    # Full batches (each epoch one reshuffled batch of all N points), so the optimiser converges
    # to the optimum itself rather than to a minibatch-noise ball around it.
    n = len(data)
    result = fit(
        loss_fn,
        params,
        optax.adam(0.05),
        batches(data, n, seed=0),
        300,
        key=jax.random.PRNGKey(2),
        eval_fn=lambda p: {"nll": data_nll(p)},
        eval_every=100,
        progress=False,
        log_every=50,
    )
    assert isinstance(result, TrainResult)
    # An affine flow on a standard normal is a diagonal Gaussian, whose best NLL on the data is
    # ½ Σ_i log(2πe σ_i²) with the data's own variances (float64 here): no params do better.
    variances = data.astype(np.float64).var(axis=0)
    optimum = 0.5 * np.sum(np.log(2 * np.pi * np.e * variances))
    # Tolerance: float32 rounding of the mean of n per-point NLLs is at most γ_n·mean|nll_i| with
    # γ_n ≈ n·u (u = eps/2, Higham §4.2); n·eps·mean|nll_i| bounds the computed value's distance
    # from the exact one on either side, with the per-point NLLs at the optimum in float64.
    centred = (data - data.mean(axis=0)) ** 2 / variances
    per_point = 0.5 * np.sum(np.log(2 * np.pi * variances) + centred, axis=1)
    tolerance = n * np.finfo(np.float32).eps * np.mean(np.abs(per_point))
    initial = float(data_nll(params))
    final = result.history["eval"][-1]["nll"]
    assert initial - optimum > 100 * tolerance, "the start must be far from the optimum"
    assert final == pytest.approx(optimum, abs=tolerance)
    assert result.history["loss"][0] > result.history["loss"][-1]
    assert [e["step"] for e in result.history["eval"]] == [100, 200, 300]
    assert result.history["log_steps"] == [50, 100, 150, 200, 250, 300]


# A quadratic problem with a key-dependent term: fast, and the per-step key matters.
TARGET = jnp.array([1.0, -2.0, 0.5])


def quadratic_loss(params, batch, key):
    noise = jax.random.normal(key, (3,))
    return jnp.sum((params["w"] - batch) ** 2) + 0.1 * jnp.dot(noise, params["w"])


# One optimizer object for all quadratic runs: fit reuses the compiled step across calls.
ADAM = optax.adam(0.1)


def clean_batch(step):
    return TARGET + 0.01 * step


def initial_params():
    return {"w": jnp.zeros(3), "b": jnp.ones(())}


def fit_quadratic(num_steps, batch_fn=clean_batch, **kwargs):
    kwargs = {"progress": False, "log_every": 5, **kwargs}
    return fit(
        quadratic_loss,
        initial_params(),
        ADAM,
        batch_fn,
        num_steps,
        key=jax.random.PRNGKey(0),
        **kwargs,
    )


def assert_trees_equal(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize("poison", [math.nan, math.inf])
def test_nan_guard_names_step_and_keeps_last_finite_params(poison):
    bad_step = 7

    def poisoned(step):
        return clean_batch(step) * (poison if step == bad_step else 1.0)

    # log_every=5: the flag is only read after step 10, so steps 8 and 9 run (frozen) in between.
    with pytest.raises(NonFiniteLossError, match=f"step {bad_step}") as info:
        fit_quadratic(20, poisoned)
    error = info.value
    assert isinstance(error, FloatingPointError)
    assert error.step == bad_step
    reference = fit_quadratic(bad_step)  # the params after steps 0..6
    assert_trees_equal(error.params, reference.params)
    assert_trees_equal(error.opt_state, reference.opt_state)


def test_nan_guard_catches_a_non_finite_gradient_with_a_finite_loss():
    # d/dw sqrt(w²) = w / |w| is 0/0 at w = 0: the loss is finite, its gradient is not.
    def loss_fn(params, batch, key):
        return jnp.sum(jnp.sqrt((params["w"] - batch) ** 2))

    batch_fn = lambda step: jnp.zeros(3) if step == 3 else jnp.full(3, 5.0)
    params = {"w": jnp.zeros(3)}
    with pytest.raises(NonFiniteLossError, match="step 3") as info:
        fit(loss_fn, params, optax.sgd(0.0), batch_fn, 10, key=jax.random.PRNGKey(0),
            progress=False)  # fmt: skip
    assert np.isfinite(info.value.loss) and not np.isfinite(info.value.grad_norm)


def test_resume_after_interruption_is_exact(tmp_path):
    uninterrupted = fit_quadratic(10)
    checkpoint_dir = tmp_path / "ckpt"

    def crashes_at_step_7(step):
        if step == 7:
            raise KeyboardInterrupt("simulated crash at step 7")
        return clean_batch(step)

    with pytest.raises(KeyboardInterrupt, match="simulated crash"):
        fit_quadratic(10, crashes_at_step_7, checkpoint_dir=checkpoint_dir, checkpoint_every=5)
    assert sorted(p.name for p in checkpoint_dir.iterdir() if p.name.isdigit()) == ["5"]

    resumed = fit_quadratic(10, checkpoint_dir=checkpoint_dir, checkpoint_every=5)
    assert resumed.history["start_step"] == 5 and resumed.history["steps_run"] == 5
    assert_trees_equal(resumed.params, uninterrupted.params)
    assert_trees_equal(resumed.opt_state, uninterrupted.opt_state)
    # The history restored from the checkpoint continues seamlessly. Exactly equal: the same
    # float32 computations on the same CPU, and JSON round-trips Python floats exactly.
    assert resumed.history["log_steps"] == [5, 10]
    assert resumed.history["loss"] == uninterrupted.history["loss"]

    # A finished run resumes to itself without taking a step.
    again = fit_quadratic(10, checkpoint_dir=checkpoint_dir)
    assert again.history["steps_run"] == 0
    assert_trees_equal(again.params, uninterrupted.params)


def test_metrics_json_and_quiet_run(tmp_path, capfd):
    metrics_path = tmp_path / "run" / "metrics.json"
    params = initial_params()
    result = fit_quadratic(
        12,
        metrics_path=metrics_path,
        eval_fn=lambda p: {"distance": jnp.linalg.norm(p["w"] - TARGET)},
        eval_every=6,
        checkpoint_dir=tmp_path / "ckpt",
        checkpoint_every=6,
    )
    written = json.loads(metrics_path.read_text())
    assert written == json.loads(json.dumps(result.history))
    assert written["log_steps"] == [5, 10, 12] and len(written["loss"]) == 3
    assert [e["step"] for e in written["eval"]] == [6, 12]
    assert all(isinstance(e["distance"], float) for e in written["eval"])
    assert written["wall_time_s"] > 0 and written["steps_per_second"] > 0
    assert written["num_steps"] == 12 and written["start_step"] == 0
    out, err = capfd.readouterr()
    assert out == "" and err == "", "progress=False with checkpoints must print nothing"
    # The caller's params were copied before the step donated its buffers.
    np.testing.assert_array_equal(params["w"], jnp.zeros(3))


def test_progress_bar_shows_loss(capfd):
    fit_quadratic(5, progress=True)
    assert "loss=" in capfd.readouterr().err


def test_bad_arguments():
    with pytest.raises(ValueError, match="log_every"):
        fit_quadratic(5, log_every=0)
    with pytest.raises(ValueError, match="scalar"):
        fit(lambda p, b, k: p["w"] * b, initial_params(), optax.sgd(0.1), clean_batch, 2,
            key=jax.random.PRNGKey(0), progress=False)  # fmt: skip


def compilations_of_the_train_step(caplog) -> int:
    """How many times ``jax.log_compiles`` reported compiling the train step (caplog records)."""
    messages = [record.getMessage() for record in caplog.records]
    return sum(message.startswith("Compiling jit(train_step)") for message in messages)


def test_a_resumed_run_reuses_the_compiled_step(tmp_path, caplog):
    """Fresh run, then a resume from its checkpoint: one compilation of the step in all.

    Restored arrays used to carry another placement (committed to a device) than a fresh run's,
    and a weakly typed initial leaf became strongly typed after one update: each change of the
    step's cache key compiled it again (three compilations for one fresh run plus one resume).
    """
    # A private optimizer object: the step cache is keyed on it, so earlier tests compiled
    # nothing this test would reuse.
    optimizer = optax.adam(0.1)
    params = {"w": jnp.zeros(3), "b": jnp.asarray(1.0)}  # "b" is weakly typed
    assert params["b"].weak_type

    def run(num_steps):
        return fit(quadratic_loss, params, optimizer, clean_batch, num_steps,
                   key=jax.random.PRNGKey(0), checkpoint_dir=tmp_path / "ckpt",
                   checkpoint_every=5, log_every=5, progress=False)  # fmt: skip

    caplog.set_level(logging.WARNING, logger="jax")
    with jax.log_compiles():
        run(10)
        assert compilations_of_the_train_step(caplog) == 1  # also proves the count works
        resumed = run(20)
    assert resumed.history["start_step"] == 10
    assert compilations_of_the_train_step(caplog) == 1


def test_a_checkpoint_past_num_steps_is_refused(tmp_path):
    checkpoint_dir = tmp_path / "ckpt"
    fit_quadratic(10, checkpoint_dir=checkpoint_dir)
    with pytest.raises(CheckpointMismatchError, match=r"step 10, past num_steps=5") as info:
        fit_quadratic(5, checkpoint_dir=checkpoint_dir)
    message = str(info.value)
    assert str(checkpoint_dir) in message and "new checkpoint_dir" in message
    assert "num_steps >= 10" in message
    assert isinstance(info.value, ValueError)


def test_a_checkpoint_of_another_model_or_optimizer_is_refused(tmp_path):
    checkpoint_dir = tmp_path / "ckpt"
    fit_quadratic(5, checkpoint_dir=checkpoint_dir)
    wider = {"w": jnp.zeros(4), "b": jnp.ones(())}
    with pytest.raises(
        CheckpointMismatchError, match=r"another model.*\['params'\]\['w'\]"
    ) as info:
        fit(quadratic_loss, wider, ADAM, lambda s: jnp.zeros(4), 10, key=jax.random.PRNGKey(0),
            checkpoint_dir=checkpoint_dir, progress=False)  # fmt: skip
    assert str(checkpoint_dir) in str(info.value) and "float32[3] there, float32[4] here" in str(
        info.value
    )
    with pytest.raises(CheckpointMismatchError, match="another model"):
        fit(quadratic_loss, initial_params(), optax.sgd(0.1, momentum=0.9), clean_batch, 10,
            key=jax.random.PRNGKey(0), checkpoint_dir=checkpoint_dir, progress=False)  # fmt: skip

    # A checkpoint written before signatures existed is checked against orbax's metadata.
    shutil.rmtree(checkpoint_dir / "5" / "signature")
    with pytest.raises(CheckpointMismatchError, match=r"float32\[3\] there, float32\[4\] here"):
        fit(quadratic_loss, wider, ADAM, lambda s: jnp.zeros(4), 10, key=jax.random.PRNGKey(0),
            checkpoint_dir=checkpoint_dir, progress=False)  # fmt: skip
    # ... while this model's own unsigned checkpoint still resumes.
    assert fit_quadratic(10, checkpoint_dir=checkpoint_dir).history["start_step"] == 5


def test_a_non_finite_loss_leaves_the_metrics_on_disk(tmp_path):
    metrics_path = tmp_path / "metrics.json"

    def poisoned(step):
        return clean_batch(step) * (math.nan if step == 7 else 1.0)

    with pytest.raises(NonFiniteLossError, match="step 7"):
        fit_quadratic(20, poisoned, metrics_path=metrics_path)
    written = json.loads(metrics_path.read_text())
    assert "step 7" in written["error"]
    # The log point after step 5 was recorded; the one after step 10 found the flag and raised.
    assert written["log_steps"] == [5] and len(written["loss"]) == 1
    assert written["steps_run"] == 10


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    checkpoint_dir = tmp_path / "ckpt"
    fit_quadratic(10, checkpoint_dir=checkpoint_dir, checkpoint_every=2, max_checkpoints_to_keep=2)
    steps = sorted(int(p.name) for p in checkpoint_dir.iterdir() if p.name.isdigit())
    assert steps == [8, 10]


def test_the_loop_reads_from_the_device_only_at_log_eval_and_checkpoint_points(
    tmp_path, monkeypatch
):
    """Every device->host read of the loop is inside ``_sync_point``; count where they happen.

    With 20 steps, ``log_every=5`` and evaluations/checkpoints every 10 steps, reads may happen
    only after steps 5, 10, 15 and 20, never in between. The run is also under
    ``jax.transfer_guard_device_to_host("disallow")``, which fails any read outside a sync point
    on accelerators (on CPU arrays are read without a transfer and the guard is silent, hence
    the count).
    """
    dispatched = []  # steps whose batch the loop asked for, in order
    syncs = []  # (reason, steps dispatched so far)
    real_sync_point = train._sync_point

    @contextlib.contextmanager
    def counting_sync_point(reason):
        syncs.append((reason, len(dispatched)))
        with real_sync_point(reason):
            yield

    def recording_batch(step):
        dispatched.append(step)
        return clean_batch(step)

    monkeypatch.setattr(train, "_sync_point", counting_sync_point)
    with jax.transfer_guard_device_to_host("disallow"):
        fit_quadratic(
            20,
            recording_batch,
            eval_fn=lambda p: {"distance": jnp.linalg.norm(p["w"] - TARGET)},
            eval_every=10,
            checkpoint_dir=tmp_path / "ckpt",
            checkpoint_every=10,
        )
    assert dispatched == list(range(20))
    assert {steps for _, steps in syncs} == {5, 10, 15, 20}
    assert [steps for reason, steps in syncs if reason == "log"] == [5, 10, 15, 20]


def test_progress_off_a_terminal_is_a_few_plain_lines(capfd):
    # Under capfd stderr is a pipe, not a terminal: progress=None (the default) prints whole
    # lines at 25/50/75/100 % of the run, not a bar redrawn with carriage returns.
    fit_quadratic(20, progress=None, log_every=1, description="quadratic")
    out, err = capfd.readouterr()
    assert out == "" and "\r" not in err
    lines = err.splitlines()
    assert [line.split(",")[0] for line in lines] == [
        f"quadratic: step {step}/20 ({percent}%)"
        for step, percent in [(5, 25), (10, 50), (15, 75), (20, 100)]
    ]
    assert all(" loss " in line and "steps/s" in line for line in lines)
    # Log points that skip past a quarter mark still print it once, at the next log point.
    fit_quadratic(20, progress=None, log_every=7)
    assert [line.split(",")[0] for line in capfd.readouterr().err.splitlines()] == [
        "fit: step 7/20 (35%)", "fit: step 14/20 (70%)", "fit: step 20/20 (100%)"
    ]  # fmt: skip


def scripted_metric(values):
    """An ``evaluate`` that returns ``values`` in turn, so the best epoch is known in advance."""
    calls = iter(values)
    return lambda params: {"valid": next(calls)}


def fit_quadratic_epochs(out_dir, num_epochs, values, **kwargs):
    return train.fit_epochs(
        quadratic_loss,
        initial_params(),
        ADAM,
        clean_batch,
        5,
        num_epochs,
        key=jax.random.PRNGKey(0),
        out_dir=out_dir,
        evaluate=scripted_metric(values),
        select="valid",
        log_every=5,
        **kwargs,
    )


def test_fit_epochs_keeps_the_best_epoch_and_resumes(tmp_path, capfd):
    result = fit_quadratic_epochs(tmp_path, 4, [3.0, 1.0, 2.0, 4.0])
    assert result.best_epoch == 2 and result.stopped == "epochs"
    assert [row["epoch"] for row in result.epochs] == [1, 2, 3, 4]
    assert [row["valid"] for row in result.epochs] == [3.0, 1.0, 2.0, 4.0]
    # The best params are exactly those of an uninterrupted 10-step run (epoch 2 = 10 steps).
    assert_trees_equal(result.params, fit_quadratic(10).params)
    elapsed = [row["elapsed_s"] for row in result.epochs]
    assert elapsed == sorted(elapsed) and all(row["epoch_s"] > 0 for row in result.epochs)
    assert "(best)" in capfd.readouterr().out

    # A rerun with a larger horizon trains only epoch 5; a new best replaces the stored one.
    resumed = fit_quadratic_epochs(tmp_path, 5, [0.5])
    assert [row["epoch"] for row in resumed.epochs] == [1, 2, 3, 4, 5]
    assert resumed.best_epoch == 5
    assert resumed.epochs[-1]["elapsed_s"] > elapsed[-1]
    assert_trees_equal(resumed.params, fit_quadratic(25).params)
    # Finished: nothing runs, and the best params come back from disk.
    again = fit_quadratic_epochs(tmp_path, 5, [])
    assert again.best_epoch == 5
    assert_trees_equal(again.params, resumed.params)


def test_fit_epochs_stops_on_patience_and_budget(tmp_path):
    patient = fit_quadratic_epochs(tmp_path / "p", 10, [1.0, 2.0, 3.0, 4.0], patience=2)
    assert patient.stopped == "patience" and len(patient.epochs) == 3 and patient.best_epoch == 1
    with pytest.raises(ValueError, match="no epoch finished"):
        fit_quadratic_epochs(tmp_path / "b", 3, [1.0], minutes=-1.0)
    with pytest.raises(KeyError, match="select='valid'"):
        train.fit_epochs(
            quadratic_loss, initial_params(), ADAM, clean_batch, 5, 1, key=jax.random.PRNGKey(0),
            out_dir=tmp_path / "k", evaluate=lambda p: {"nll": 1.0}, select="valid",
        )  # fmt: skip

"""The training loop: it learns, the NaN guard, exact resumption from checkpoints, metrics."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nflows_jax import flows
from nflows_jax.bijectors.base import Bijector, check_batched
from nflows_jax.data import batches, two_moons
from nflows_jax.train import NonFiniteLossError, TrainResult, fit


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
    result = fit(
        loss_fn,
        params,
        optax.adam(0.05),
        batches(data, 256, seed=0),
        300,
        key=jax.random.PRNGKey(2),
        eval_fn=lambda p: {"nll": data_nll(p)},
        eval_every=100,
        progress=False,
        log_every=50,
    )
    assert isinstance(result, TrainResult)
    # An affine flow on a standard normal is a diagonal Gaussian, whose best NLL on the data is
    # ½ Σ_i log(2πe σ_i²) with the data's own variances: training must get there from well above.
    optimum = 0.5 * np.sum(np.log(2 * np.pi * np.e * data.var(axis=0)))
    initial = float(data_nll(params))
    final = result.history["eval"][-1]["nll"]
    assert initial > optimum + 0.3
    assert final == pytest.approx(optimum, abs=0.01)
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
            raise KeyboardInterrupt
        return clean_batch(step)

    with pytest.raises(KeyboardInterrupt):
        fit_quadratic(10, crashes_at_step_7, checkpoint_dir=checkpoint_dir, checkpoint_every=5)
    assert sorted(p.name for p in checkpoint_dir.iterdir() if p.name.isdigit()) == ["5"]

    resumed = fit_quadratic(10, checkpoint_dir=checkpoint_dir, checkpoint_every=5)
    assert resumed.history["start_step"] == 5 and resumed.history["steps_run"] == 5
    assert_trees_equal(resumed.params, uninterrupted.params)
    assert_trees_equal(resumed.opt_state, uninterrupted.opt_state)
    # The history restored from the checkpoint continues seamlessly.
    assert resumed.history["log_steps"] == [5, 10]
    np.testing.assert_allclose(resumed.history["loss"], uninterrupted.history["loss"], rtol=1e-6)

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

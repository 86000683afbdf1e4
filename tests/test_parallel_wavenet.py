"""Parallel WaveNet: a causal IAF over time, its Gaussian conditionals, and the distillation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nflows_jax.models.likelihoods import gaussian
from nflows_jax.models.parallel_wavenet import parallel_wavenet, parallel_wavenet_loss
from nflows_jax.models.wavenet import wavenet
from nflows_jax.testing import perturb
from nflows_jax.train import fit
from tests.power import num_standard_errors

DILATIONS = (1, 2, 4)


def _student(seed=0, scale=0.3, dtype=jnp.float32):
    student = parallel_wavenet(2, DILATIONS, channels=4, skip_channels=4)
    params = student.init(jax.random.PRNGKey(seed), dtype)
    return student, perturb(params, jax.random.PRNGKey(seed + 10), scale)


def _teacher(seed=1, scale=0.3, dtype=jnp.float32):
    teacher = wavenet(gaussian(), DILATIONS, channels=4, skip_channels=4)
    params = teacher.init(jax.random.PRNGKey(seed), dtype)
    return teacher, perturb(params, jax.random.PRNGKey(seed + 10), scale)


def test_student_is_causal_with_its_gaussian_conditionals_on_the_diagonal():
    with jax.enable_x64(True):
        student, params = _student(dtype=jnp.float64)
        z = jax.random.normal(jax.random.PRNGKey(2), (1, 12), jnp.float64)
        jacobian = jax.jacfwd(lambda v: student.conditionals(params, v[None])[0][0])(z[0])
        _, _, log_std = student.conditionals(params, z)
        jacobian = np.asarray(jacobian)
        assert not np.triu(jacobian, 1).any()  # x_t depends on z_<=t only
        assert np.tril(jacobian, -1).any()  # and really on the past
        # dx_t/dz_t = exp(log_std_t): the conditional's scale (float64, a few hundred ops)
        np.testing.assert_allclose(np.diag(jacobian), np.exp(log_std[0]), rtol=1e-12)
        # log p_S(x) from the conditionals equals the base density minus the log-det
        x, log_p = student.log_prob_of_noise(params, z)
        _, mean, log_std = student.conditionals(params, z)
        chain_rule = jnp.sum(
            -0.5 * ((x - mean) * jnp.exp(-log_std)) ** 2 - log_std - 0.5 * jnp.log(2 * jnp.pi)
        )
        np.testing.assert_allclose(float(log_p[0]), float(chain_rule), rtol=1e-12)


def test_closed_form_kl_agrees_with_the_monte_carlo_log_ratio():
    student, student_params = _student(scale=0.1)
    teacher, teacher_params = _teacher(scale=0.1)
    length = 16
    closed = parallel_wavenet_loss(student, teacher, teacher_params, 1, length)

    def log_ratio(key):
        z = jax.random.normal(key, (1, length))
        x, log_p_student = student.log_prob_of_noise(student_params, z)
        return log_p_student[0] - teacher.log_prob(teacher_params, x)[0]

    keys = jax.random.split(jax.random.PRNGKey(3), 20_000)
    per_draw_closed = jax.jit(jax.vmap(lambda k: closed(student_params, k)))(keys)
    per_draw_sampled = jax.jit(jax.vmap(log_ratio))(keys)
    difference = np.asarray(per_draw_sampled - per_draw_closed, np.float64)  # paired draws
    standard_error = difference.std(ddof=1) / np.sqrt(difference.size)
    assert abs(difference.mean()) < num_standard_errors(1e-4) * standard_error
    # A real gap between the two models, many standard errors of the closed form's mean above 0,
    # so that the agreement above is not two estimates of zero.
    closed_mean = np.asarray(per_draw_closed, np.float64)
    assert closed_mean.mean() > 10 * closed_mean.std(ddof=1) / np.sqrt(closed_mean.size)
    assert standard_error < 0.5 * closed_mean.mean()


def test_distillation_loss_falls_and_the_teacher_is_untouched():
    student, _ = _student(scale=0.0)
    student_params = student.init(jax.random.PRNGKey(0))
    teacher, teacher_params = _teacher(scale=0.5)
    before = jax.tree_util.tree_map(np.array, teacher_params)
    loss_fn = parallel_wavenet_loss(student, teacher, teacher_params, 16, 32)
    key = jax.random.PRNGKey(4)

    @jax.jit
    def mean_loss(params):
        return jnp.mean(jax.vmap(lambda k: loss_fn(params, k))(jax.random.split(key, 20)))

    initial = float(mean_loss(student_params))
    result = fit(
        lambda p, batch, k: loss_fn(p, k),
        student_params,
        optax.adam(3e-3),
        lambda step: None,
        300,
        key=key,
        progress=False,
    )
    assert float(mean_loss(result.params)) < 0.5 * initial
    jax.tree_util.tree_map(np.testing.assert_array_equal, before, teacher_params)


def test_gaussian_teacher_fast_generation_matches_naive():
    with jax.enable_x64(True):
        teacher, params = _teacher(dtype=jnp.float64)
        key = jax.random.PRNGKey(5)
        naive = jax.jit(teacher.sample_naive, static_argnums=(2, 3))(params, key, 3, 20)
        fast = jax.jit(teacher.sample_fast, static_argnums=(2, 3))(params, key, 3, 20)
        # real values: equal up to float64 rounding of the two orders of summation
        np.testing.assert_allclose(np.asarray(fast), np.asarray(naive), rtol=1e-10, atol=1e-12)
        assert np.asarray(naive).dtype == np.float64

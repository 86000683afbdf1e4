"""Parallel WaveNet (van den Oord et al. 2018): an IAF over time distilled from a WaveNet.

The student maps white noise z (B, T) to a waveform through K flows, each an affine IAF whose
shift and log-scale at step t come from a WaveNet stack run on the previous flow's output (so
they depend on steps < t only)::

    x_0 = z,    x_k = x_{k-1} · exp(s_k(x_{k-1, <t})) + m_k(x_{k-1, <t}),    x = x_K

Every flow is one parallel pass over the whole sequence, so sampling costs K passes however long
T is (the teacher's generation is sequential in T). Given z_<t (equivalently x_<t), x_t is affine
in z_t, so the student's conditional is Gaussian, ``x_t ~ N(mean_t, exp(log_std_t)²)`` with
``log_std_t = sum_k s_k`` and ``mean_t = x_t - z_t · exp(log_std_t)``; the ``conditionals``
function of :class:`ParallelWaveNet` gives them from the same pass that draws x.

With a Gaussian teacher (``wavenet(gaussian(), ...)``) the reverse KL splits into per-step
Gaussian KLs evaluated at the student's own samples (Parallel WaveNet's cross-entropy minus
entropy; ClariNet's closed form): :func:`parallel_wavenet_loss`, with an optional power-spectrum
loss that matches the student's average spectrum to real audio.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from nflows_jax.bijectors.transformers import bounded_log_scale
from nflows_jax.distill import gaussian_kl
from nflows_jax.formatting import show
from nflows_jax.models.likelihoods import Likelihood, gaussian_mean_and_log_std
from nflows_jax.models.wavenet import WaveNet, wavenet

Array = jax.Array


class ParallelWaveNet(NamedTuple):
    """An IAF student over time (build with :func:`parallel_wavenet`).

    Attributes:
      init: ``init(key) -> params`` (a tuple, one WaveNet stack per flow).
      conditionals: ``conditionals(params, z, context=None) -> (x, mean, log_std)``, each
        (B, T): the sample x = f(z) and its per-step Gaussian conditionals, one pass per flow.
      sample: ``sample(params, key, num_samples, length, context=None) -> (N, T)``.
      log_prob_of_noise: ``log_prob_of_noise(params, z, context=None) -> (x, log p_S(x))``: the
        sample and its exact log-density (base density minus the log-det, sum of log-scales).
    """

    init: Callable
    conditionals: Callable
    sample: Callable
    log_prob_of_noise: Callable


def _shift_and_log_scale_likelihood() -> Likelihood:
    # The student's stacks output (shift, raw log-scale) per step: a K = 2 "likelihood" whose
    # functions are never used; only its width matters to the WaveNet builder.
    return Likelihood(2, None, lambda outputs, x: x, lambda key, outputs: outputs[..., 0], "iaf")


def parallel_wavenet(
    num_flows: int = 4,
    dilations: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128),
    channels: int = 32,
    skip_channels: int = 32,
    context_size: int = 0,
    max_log_scale: float = 3.0,
) -> ParallelWaveNet:
    """``num_flows`` affine IAF flows over time, each conditioned by its own WaveNet stack.

    Each stack's last layer starts at zero, so every flow starts as the identity (x = z).
    ``max_log_scale`` bounds each flow's ``|log-scale|``
    (:func:`~nflows_jax.bijectors.transformers.bounded_log_scale`).
    """
    if isinstance(num_flows, bool) or not isinstance(num_flows, int) or num_flows < 1:
        raise ValueError(f"parallel_wavenet: num_flows must be an int >= 1; got {show(num_flows)}")
    stack: WaveNet = wavenet(
        _shift_and_log_scale_likelihood(), dilations, channels, skip_channels, context_size
    )

    def init(key: jax.Array, dtype=jnp.float32):
        return tuple(stack.init(k, dtype) for k in jax.random.split(key, num_flows))

    def conditionals(params, z: Array, context: Array | None = None):
        if jnp.ndim(z) != 2:
            raise ValueError(f"parallel_wavenet: z must have shape (B, T); got {jnp.shape(z)}")
        x, total_log_scale = z, jnp.zeros_like(z)
        for flow_params in params:
            out = stack.network(flow_params, x[..., None], context)
            log_scale = bounded_log_scale(out[..., 1], max_log_scale)
            x = x * jnp.exp(log_scale) + out[..., 0]
            total_log_scale = total_log_scale + log_scale
        return x, x - z * jnp.exp(total_log_scale), total_log_scale

    def sample(params, key, num_samples: int, length: int, context=None) -> Array:
        dtype = params[0]["input"]["kernel"].dtype
        z = jax.random.normal(key, (num_samples, length), dtype)
        return conditionals(params, z, context)[0]

    def log_prob_of_noise(params, z: Array, context: Array | None = None):
        x, _, log_std = conditionals(params, z, context)
        base = -0.5 * z**2 - 0.5 * jnp.log(2 * jnp.pi)
        return x, jnp.sum(base - log_std, axis=1)

    return ParallelWaveNet(init, conditionals, sample, log_prob_of_noise)


def power_spectrum_loss(x: Array, reference: Array, frame: int = 256) -> Array:
    """Squared distance of the average power spectra of ``x`` and ``reference`` (B, T) clips.

    Both are cut into non-overlapping frames of ``frame`` steps; the power is ``|rfft|²``
    averaged over frames and batch, one ``(frame // 2 + 1,)`` spectrum per argument; the result
    is the mean squared difference of the two, a scalar. ``x`` and ``reference`` may have
    different B and T (a trailing partial frame is dropped). Parallel WaveNet adds this to keep
    the student from whispering.
    """

    def average_power(clips):
        usable = clips.shape[1] // frame * frame
        frames = clips[:, :usable].reshape(-1, frame)
        return jnp.mean(jnp.abs(jnp.fft.rfft(frames, axis=-1)) ** 2, axis=0)

    return jnp.mean((average_power(x) - average_power(reference)) ** 2)


def parallel_wavenet_loss(
    student: ParallelWaveNet,
    teacher: WaveNet,
    teacher_params,
    num_samples: int,
    length: int,
    power_weight: float = 0.0,
    reference: Array | None = None,
) -> Callable[[object, jax.Array], Array]:
    """``loss(student_params, key)``: mean over N student clips of sum_t KL(p_S,t || p_T,t).

    The teacher must be a Gaussian WaveNet (``wavenet(gaussian(), ...)``); its params are frozen
    (``stop_gradient``). With ``power_weight > 0`` the power-spectrum loss against ``reference``
    clips (B, T) is added with that weight. The KL part is in nats per clip.
    """
    if teacher.likelihood.name != "gaussian":
        raise ValueError(
            "parallel_wavenet_loss needs a Gaussian teacher (wavenet(gaussian(), ...)) for the "
            f"closed-form KL; got a {teacher.likelihood.name} teacher"
        )
    if power_weight and reference is None:
        raise ValueError("parallel_wavenet_loss: power_weight > 0 needs reference clips")
    frozen = jax.tree_util.tree_map(jax.lax.stop_gradient, teacher_params)

    def loss(student_params, key: jax.Array) -> Array:
        dtype = student_params[0]["input"]["kernel"].dtype
        z = jax.random.normal(key, (num_samples, length), dtype)
        x, mean_s, log_std_s = student.conditionals(student_params, z)
        mean_t, log_std_t = gaussian_mean_and_log_std(teacher.outputs(frozen, x))
        kl = jnp.mean(jnp.sum(gaussian_kl(mean_s, log_std_s, mean_t, log_std_t), axis=1))
        if power_weight:
            kl = kl + power_weight * power_spectrum_loss(x, reference)
        return kl

    return loss


__all__ = [
    "ParallelWaveNet",
    "parallel_wavenet",
    "parallel_wavenet_loss",
    "power_spectrum_loss",
]

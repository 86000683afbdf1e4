"""Audio-like data made in the project: sines, chirps and noise; μ-law quantisation; WAV files.

Nothing is downloaded. :func:`synthetic_audio` draws clips that have what makes audio hard for an
autoregressive model (several periodicities at once, a sweeping pitch, a noise floor) at any
sample rate, reproducibly from a key. :func:`mu_law_encode` / :func:`mu_law_decode` are the
companding of WaveNet's 256-way softmax (ITU-T G.711's μ-law with μ = L - 1).

Waveforms are floats in [-1, 1]: :func:`synthetic_audio` gives clips (N, T) in JAX's default
float, :func:`read_wav` a (T,) float64 NumPy array. μ-law levels are int32 in 0..L-1 with the
waveform's shape, decoded back to float32.
"""

from __future__ import annotations

import math
import os
import wave

import jax
import jax.numpy as jnp
import numpy as np

from nflows_jax.formatting import show

Array = jax.Array


def _check_levels(num_levels: int) -> None:
    if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 2:
        raise ValueError(f"num_levels must be an int >= 2; got {show(num_levels)}")


def mu_law_encode(x: Array, num_levels: int = 256) -> Array:
    """Waveform in [-1, 1] -> integer levels 0..L-1 (values outside are clipped first).

    ``F(x) = sign(x) · log(1 + μ|x|) / log(1 + μ)`` with ``μ = L - 1``, then
    ``round((F + 1) / 2 · μ)``: fine steps near 0, where speech and music spend their time.
    Elementwise, any shape; returns int32.
    """
    _check_levels(num_levels)
    mu = num_levels - 1
    x = jnp.clip(x, -1.0, 1.0)
    companded = jnp.sign(x) * jnp.log1p(mu * jnp.abs(x)) / math.log1p(mu)
    return jnp.round((companded + 1.0) * 0.5 * mu).astype(jnp.int32)


def mu_law_decode(levels: Array, num_levels: int = 256) -> Array:
    """Integer levels 0..L-1 -> waveform in [-1, 1], the inverse of the companding.

    Elementwise, any shape; returns float32.
    """
    _check_levels(num_levels)
    mu = num_levels - 1
    companded = 2.0 * levels.astype(jnp.float32) / mu - 1.0
    return jnp.sign(companded) * jnp.expm1(jnp.abs(companded) * math.log1p(mu)) / mu


def synthetic_audio(
    key: jax.Array, num_clips: int, length: int, sample_rate: int = 16_000, noise: float = 0.02
) -> Array:
    """Clips (num_clips, length) in [-1, 1], JAX's default float: 2–4 sines, a chirp and noise.

    Frequencies are drawn log-uniformly in [110, 0.2·sample_rate] Hz, each sine with a random
    phase and amplitude; the chirp sweeps linearly between two such frequencies over the clip;
    ``noise`` is the noise's standard deviation. Each clip is scaled to a peak of 0.9.
    """
    for name, value in (("num_clips", num_clips), ("length", length), ("sample_rate", sample_rate)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"synthetic_audio: {name} must be an int >= 1; got {show(value)}")
    t = jnp.arange(length) / sample_rate
    low, high = math.log(110.0), math.log(0.2 * sample_rate)

    def clip(key):
        keys = jax.random.split(key, 7)
        freqs = jnp.exp(jax.random.uniform(keys[0], (4,), minval=low, maxval=high))
        phases = jax.random.uniform(keys[1], (4,), maxval=2 * math.pi)
        amplitudes = jax.random.uniform(keys[2], (4,), minval=0.2, maxval=1.0)
        used = jnp.arange(4) < jax.random.randint(keys[3], (), 2, 5)  # 2 to 4 sines
        sines = jnp.sum(
            jnp.where(used[:, None], amplitudes[:, None], 0.0)
            * jnp.sin(2 * math.pi * freqs[:, None] * t[None] + phases[:, None]),
            axis=0,
        )
        start, end = jnp.exp(jax.random.uniform(keys[4], (2,), minval=low, maxval=high))
        duration = length / sample_rate
        # instantaneous frequency start + (end - start) t / duration, integrated for the phase
        chirp_phase = 2 * math.pi * (start * t + 0.5 * (end - start) * t**2 / duration)
        chirp = 0.5 * jnp.sin(chirp_phase)
        signal = sines + chirp + noise * jax.random.normal(keys[5], (length,))
        return 0.9 * signal / jnp.max(jnp.abs(signal))

    return jax.vmap(clip)(jax.random.split(key, num_clips))


def write_wav(path: str | os.PathLike, waveform, sample_rate: int = 16_000) -> None:
    """Write a mono waveform in [-1, 1] (T,) as 16-bit PCM."""
    samples = np.asarray(waveform, np.float64)
    if samples.ndim != 1:
        raise ValueError(f"write_wav needs a mono waveform of shape (T,); got {samples.shape}")
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(os.fspath(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(sample_rate)
        handle.writeframes(pcm.tobytes())


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a mono 16-bit PCM WAV: (waveform (T,) in [-1, 1], sample rate)."""
    with wave.open(os.fspath(path), "rb") as handle:
        if handle.getnchannels() != 1 or handle.getsampwidth() != 2:
            raise ValueError(f"{path}: read_wav reads mono 16-bit PCM only")
        frames = handle.readframes(handle.getnframes())
        return np.frombuffer(frames, "<i2").astype(np.float64) / 32767, handle.getframerate()


__all__ = ["mu_law_decode", "mu_law_encode", "read_wav", "synthetic_audio", "write_wav"]

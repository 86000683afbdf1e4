"""Synthetic audio, μ-law companding and WAV files."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nflows_jax.audio import mu_law_decode, mu_law_encode, read_wav, synthetic_audio, write_wav


def test_mu_law_round_trip_error_is_within_half_a_step():
    levels = 256
    mu = levels - 1
    x = jnp.linspace(-1.0, 1.0, 10_001)
    decoded = np.asarray(mu_law_decode(mu_law_encode(x, levels), levels), np.float64)
    # A level spans 2/mu in companded units, so |F(x) - F(decoded)| <= 1/mu; the decoder's
    # slope d x / d F = log(1 + mu) (1 + mu |x|) / mu grows with |x|, so by the mean value
    # theorem the error is at most the slope at the larger of |x|, |decoded| times 1/mu (plus
    # float32 rounding of the decoder, 8 eps).
    larger = np.maximum(np.abs(np.asarray(x)), np.abs(decoded))
    slope = math.log1p(mu) * (1 + mu * larger) / mu
    bound = slope / mu * 1.0001 + 8 * np.finfo(np.float32).eps
    assert (np.abs(decoded - np.asarray(x)) <= bound).all()


def test_mu_law_levels_cover_the_range_and_are_monotone():
    codes = np.asarray(mu_law_encode(jnp.linspace(-1.2, 1.2, 50_001)))
    assert codes.min() == 0 and codes.max() == 255
    assert (np.diff(codes) >= 0).all() and len(np.unique(codes)) == 256
    np.testing.assert_array_equal(
        np.asarray(mu_law_encode(mu_law_decode(jnp.arange(256)))), np.arange(256)
    )


def test_synthetic_audio_is_reproducible_bounded_and_not_trivial():
    clips = synthetic_audio(jax.random.PRNGKey(0), 3, 4000, sample_rate=8000)
    again = synthetic_audio(jax.random.PRNGKey(0), 3, 4000, sample_rate=8000)
    np.testing.assert_array_equal(clips, again)
    assert clips.shape == (3, 4000)
    np.testing.assert_allclose(np.max(np.abs(np.asarray(clips)), axis=1), 0.9, rtol=1e-6)
    assert float(jnp.std(clips[0] - clips[1])) > 0.1  # clips differ
    # many distinct μ-law levels are used (the data is not a few tones on a grid)
    assert len(np.unique(np.asarray(mu_law_encode(clips)))) > 100
    with pytest.raises(ValueError, match="length"):
        synthetic_audio(jax.random.PRNGKey(0), 1, 0)


def test_wav_round_trip(tmp_path):
    waveform = np.asarray(synthetic_audio(jax.random.PRNGKey(1), 1, 800)[0])
    write_wav(tmp_path / "clip.wav", waveform, 8000)
    back, rate = read_wav(tmp_path / "clip.wav")
    assert rate == 8000 and back.shape == waveform.shape
    assert np.max(np.abs(back - waveform)) <= 0.5 / 32767 + 1e-12  # 16-bit rounding

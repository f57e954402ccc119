"""AudioConverter: 48 kHz stereo s16 frames as aiortc delivers them → 16 kHz mono float32."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest

from stream.audio import AudioConverter

pytestmark = pytest.mark.unit


def _frames(left: np.ndarray, right: np.ndarray, size: int = 960) -> list[av.AudioFrame]:
    """Interleaved s16 stereo frames of `size` samples, like aiortc's Opus decoder output."""
    out = []
    for start in range(0, left.size, size):
        lr = np.stack([left[start : start + size], right[start : start + size]], axis=1)
        pcm = np.round(lr * 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="stereo")
        frame.sample_rate = 48000
        frame.pts = start
        frame.time_base = fractions.Fraction(1, 48000)
        out.append(frame)
    return out


def _sine(seconds: float, amplitude: float, freq: float = 440.0) -> np.ndarray:
    n = np.arange(int(seconds * 48000))
    return amplitude * np.sin(2 * np.pi * freq * n / 48000)


def _convert(frames: list[av.AudioFrame]) -> tuple[list[np.ndarray], np.ndarray]:
    conv = AudioConverter()
    chunks = [conv.convert(f) for f in frames]
    return chunks, np.concatenate(chunks + [conv.flush()])


def test_level_and_length_of_a_browser_like_stream() -> None:
    x = _sine(2.0, 0.5)
    chunks, y = _convert(_frames(x, x))
    assert all(c.dtype == np.float32 and c.ndim == 1 for c in chunks)
    assert y.size == pytest.approx(2.0 * 16000, abs=2)
    rms = float(np.sqrt(np.mean(y[800:-800] ** 2)))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.01)  # L = R: full level, not √2 louder
    assert np.abs(y).max() <= 0.51


def test_downmix_is_the_channel_mean() -> None:
    x = _sine(1.0, 0.5)
    _, y = _convert(_frames(x, np.zeros_like(x)))
    rms = float(np.sqrt(np.mean(y[800:-800] ** 2)))
    assert rms == pytest.approx(0.25 / np.sqrt(2), rel=0.01)


def test_resampler_state_carries_across_frames() -> None:
    """Per-frame resampling without state would click every 20 ms: streaming 20 ms frames must
    give what one call on the whole signal gives."""
    rng = np.random.default_rng(0)
    x = _sine(1.0, 0.3, 300.0) + _sine(1.0, 0.2, 2500.0) + 0.01 * rng.standard_normal(48000)
    _, streamed = _convert(_frames(x, x))
    _, whole = _convert(_frames(x, x, size=x.size))
    assert streamed.size == whole.size
    assert np.abs(streamed - whole).max() < 1e-4
    # A fresh resampler per frame (the bug this guards against) is far off.
    fresh = np.concatenate([_convert([f])[1] for f in _frames(x, x)])
    n = min(fresh.size, whole.size)
    assert np.abs(fresh[:n] - whole[:n]).max() > 1e-2


def test_planar_float_and_other_rates() -> None:
    x = _sine(1.0, 0.4).astype(np.float32)
    frame = av.AudioFrame.from_ndarray(np.stack([x, x]), format="fltp", layout="stereo")
    frame.sample_rate = 48000
    conv = AudioConverter()
    y = np.concatenate([conv.convert(frame), conv.flush()])
    assert y.size == pytest.approx(16000, abs=2)
    assert float(np.sqrt(np.mean(y[800:-800] ** 2))) == pytest.approx(0.4 / np.sqrt(2), rel=0.01)

    mono16k = av.AudioFrame.from_ndarray(
        (x[:16000, None].T * 32767).astype(np.int16), format="s16", layout="mono"
    )
    mono16k.sample_rate = 16000
    z = AudioConverter().convert(mono16k)
    assert z.size == 16000 and np.allclose(z, x[:16000], atol=1e-4)

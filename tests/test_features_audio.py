"""Log-mel audio features and the silence gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from media import read_wav_16k

from workers.features.audio_features import (
    AUDIO_FEATURE_DIM,
    is_silent,
    log_mel_features,
    speech_ratio,
)

pytestmark = pytest.mark.unit


def _tone(freq: float, seconds: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_shape_is_100ms_rows_of_64(speech_path: Path) -> None:
    speech = read_wav_16k(speech_path)
    feats = log_mel_features(speech)
    assert feats is not None and feats.dtype == np.float32
    # 25 ms windows every 10 ms, pooled by 10 → one row per full 100 ms.
    assert feats.shape == (int((len(speech) - 400) // 160 + 1) // 10, AUDIO_FEATURE_DIM)
    assert np.isfinite(feats).all()
    four = log_mel_features(_tone(440, 4.0))
    assert four is not None and four.shape == (39, 64)  # 391 hops → 39 rows


def test_silence_has_no_features() -> None:
    assert log_mel_features(None) is None
    assert log_mel_features(np.zeros(64000, np.float32)) is None
    quiet = np.random.default_rng(0).normal(0, 0.0005, 64000).astype(np.float32)  # -66 dBFS
    assert is_silent(quiet) and log_mel_features(quiet) is None
    assert log_mel_features(_tone(440, 0.05)) is None  # shorter than one 100 ms row


def test_a_tone_lights_up_its_band_and_level_is_kept() -> None:
    low, high = log_mel_features(_tone(300, 1.0)), log_mel_features(_tone(3000, 1.0))
    assert low is not None and high is not None
    peak_low, peak_high = int(low.mean(0).argmax()), int(high.mean(0).argmax())
    assert peak_low < peak_high
    assert 0 < peak_low < 32 < peak_high < 63
    loud, soft = log_mel_features(_tone(1000, 1.0, 0.5)), log_mel_features(_tone(1000, 1.0, 0.05))
    assert loud is not None and soft is not None
    assert loud.max() - soft.max() > 0.4  # 20 dB = 2 decades = 0.5 after the /4 scaling


def test_speech_ratio_separates_speech_from_noise(speech_path: Path) -> None:
    assert speech_ratio(read_wav_16k(speech_path)) > 0.5
    noise = np.random.default_rng(1).normal(0, 0.03, 64000).astype(np.float32)  # loud, steady
    assert speech_ratio(noise) < 0.1
    assert speech_ratio(np.zeros(64000, np.float32)) == 0.0
    assert speech_ratio(None) == 0.0

"""Audio features of a window (log-mel frames) and the energy gate that decides "silence".

Feature recipe (the live feature space's audio modality, AUDIO_FEATURE_DIM = 64):
- 16 kHz mono float32 in [-1, 1]; 25 ms Hann window (400 samples, zero-padded to a 512-point FFT),
  10 ms hop (160 samples), power spectrum, 64 triangular Slaney-style mel bands on 20 Hz..8 kHz.
- Log compression as in Whisper: log10(max(mel, 1e-10)), floored at 8 decades (80 dB) below the
  window's maximum, then (x + 4) / 4. This keeps absolute level (a loud and a quiet voice differ)
  instead of standardising each window, which would blow up near-silent windows and erase level,
  and it needs no dataset statistics, so live and offline features are identical by construction.
- Mean-pooled over 10 consecutive hops → one row per 100 ms: (T_a, 64), T_a = floor(hops / 10)
  (the ragged tail shorter than 100 ms is dropped; a 4 s window gives 40 rows).

Silence gate (shared with ASR): the window is cut into 30 ms frames; a frame is *active* when its
RMS level is above SILENCE_DBFS (-50 dBFS: a quiet room through a browser microphone with noise
suppression sits around -60..-70 dBFS, speech at -30..-10) AND at least RELATIVE_DB (10 dB) above
the window's noise floor (10th percentile of frame levels), so steady fan/hum noise is not counted
as speech. `speech_ratio` is the fraction of active frames. A window is *silent* when no frame is
above SILENCE_DBFS; silent windows have no audio features (None).
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np

from merclip.feature_spaces import LIVE_AUDIO_DIM as AUDIO_FEATURE_DIM

__all__ = [
    "AUDIO_FEATURE_DIM",
    "RELATIVE_DB",
    "SAMPLE_RATE",
    "SILENCE_DBFS",
    "is_silent",
    "log_mel_features",
    "speech_ratio",
]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
SILENCE_DBFS = -50.0
RELATIVE_DB = 10.0

_WIN = 400  # 25 ms
_HOP = 160  # 10 ms
_NFFT = 512
_POOL = 10  # hops per output row (100 ms)
_GATE_FRAME = 480  # 30 ms
_FMIN, _FMAX = 20.0, 8000.0


def _frame_dbfs(audio: np.ndarray) -> np.ndarray:
    """RMS level of each full 30 ms frame in dBFS (-100 for digital zeros)."""
    n = len(audio) // _GATE_FRAME
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    frames = audio[: n * _GATE_FRAME].astype(np.float64).reshape(n, _GATE_FRAME)
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    return 20.0 * np.log10(np.maximum(rms, 1e-5))


def speech_ratio(audio: np.ndarray | None) -> float:
    """Fraction of 30 ms frames that look like speech activity (see module docstring)."""
    if audio is None:
        return 0.0
    db = _frame_dbfs(np.asarray(audio, dtype=np.float32))
    if db.size == 0:
        return 0.0
    floor = float(np.percentile(db, 10))
    active = (db > SILENCE_DBFS) & (db > floor + RELATIVE_DB)
    return float(active.mean())


def is_silent(audio: np.ndarray | None) -> bool:
    """True when there is no audio, it is shorter than 30 ms, or no frame exceeds SILENCE_DBFS."""
    if audio is None:
        return True
    db = _frame_dbfs(np.asarray(audio, dtype=np.float32))
    return db.size == 0 or float(db.max()) <= SILENCE_DBFS


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    # Slaney: linear below 1 kHz, logarithmic above (what librosa and Whisper use).
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log_part, lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    lin = m * (200.0 / 3)
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m >= 15.0, log_part, lin)


@lru_cache(maxsize=1)
def _mel_filterbank() -> np.ndarray:
    """(64, 257) Slaney-normalised triangular filters."""
    fft_freqs = np.linspace(0.0, SAMPLE_RATE / 2, _NFFT // 2 + 1)
    edges = _mel_to_hz(
        np.linspace(_hz_to_mel(np.array(_FMIN)), _hz_to_mel(np.array(_FMAX)), AUDIO_FEATURE_DIM + 2)
    )
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (fft_freqs[None, :] - lower) / (center - lower)
    down = (upper - fft_freqs[None, :]) / (upper - center)
    weights = np.maximum(0.0, np.minimum(up, down))
    weights *= 2.0 / (upper - lower)  # equal area per band
    out = weights.astype(np.float32)
    out.flags.writeable = False  # cached and shared between threads
    return out


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    w = np.hanning(_WIN + 1)[:-1].astype(np.float32)  # periodic Hann
    w.flags.writeable = False
    return w


def log_mel_features(audio: np.ndarray | None) -> np.ndarray | None:
    """(T_a, 64) float32 log-mel rows at 100 ms, or None when silent or shorter than 100 ms."""
    if audio is None or is_silent(audio):
        return None
    x = np.asarray(audio, dtype=np.float32)
    n_hops = 1 + (len(x) - _WIN) // _HOP if len(x) >= _WIN else 0
    rows = n_hops // _POOL
    if rows == 0:
        return None
    n_hops = rows * _POOL
    # (n_hops, 400) strided view of the frames, no copy until the window multiply.
    frames = np.lib.stride_tricks.sliding_window_view(x, _WIN)[::_HOP][:n_hops]
    spec = np.fft.rfft(frames * _window(), n=_NFFT, axis=1)
    power = (spec.real**2 + spec.imag**2).astype(np.float32)  # (n_hops, 257)
    mel = power @ _mel_filterbank().T  # (n_hops, 64)
    logmel = np.log10(np.maximum(mel, 1e-10))
    logmel = np.maximum(logmel, logmel.max() - 8.0)
    logmel = (logmel + 4.0) / 4.0
    return logmel.reshape(rows, _POOL, AUDIO_FEATURE_DIM).mean(axis=1).astype(np.float32)

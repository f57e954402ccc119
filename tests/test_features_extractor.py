"""WindowExtractor on real models: bundled tiny.en + merclip-tiny-clip, Haar, log-mel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from media import face_frame, read_wav_16k

from merclip.batch import collate
from merclip.clip_backbone import ClipBackbone
from workers.app.settings import Settings
from workers.features.asr import Transcriber
from workers.features.extractor import WindowExtractor, select_frames
from workers.schemas import EXTRACTION_STAGES as STAGES
from workers.schemas import FeatureWindow, decode, encode
from workers.windowing import RawWindow, SessionWindower

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def extractor(tiny_clip: ClipBackbone, bundled_whisper: Transcriber) -> WindowExtractor:
    settings = Settings().replace("ingest", max_faces_per_window=4)
    return WindowExtractor(settings, tiny_clip, bundled_whisper)


def _speech_window(speech_path: Path, face: bool) -> RawWindow:
    """A 4 s window through the real SessionWindower: speech audio + 2 fps camera frames."""
    w = SessionWindower(4.0, 2.0, video_fps=2.0)
    speech = read_wav_16k(speech_path)[: 4 * 16000]
    audio = np.zeros(4 * 16000, np.float32)
    audio[: len(speech)] = speech
    for i in range(0, len(audio), 320):
        w.push_audio(audio[i : i + 320], (i + 320) / 16000)
        t = i / 16000
        if w.offer_frame(t):
            w.push_frame(face_frame(int(t * 15), size=(320, 240), face=face), t)
    (window,) = w.pop_ready(wall_clock_of_media_zero=1_700_000_000.0)
    return window


def test_speech_and_face_window(extractor: WindowExtractor, speech_path: Path) -> None:
    raw = _speech_window(speech_path, face=True)
    assert len(raw.frames) == 8
    fw = extractor.extract(raw, "sess-1")
    assert isinstance(fw, FeatureWindow)
    assert (fw.session_id, fw.seq, fw.media_start, fw.media_end) == ("sess-1", 0, 0.0, 4.0)
    assert fw.wall_end == 1_700_000_004.0
    assert "hello" in fw.transcript.lower() and fw.speech_present
    assert fw.language is not None and fw.language.dtype == np.float16
    n_tokens = len(extractor.clip.tokenize([fw.transcript])[0].nonzero())
    assert fw.language.shape == (n_tokens, 64)  # SOT..EOT of the transcript
    assert fw.face_present and fw.visual is not None
    assert fw.visual.shape == (4, 64) and fw.visual.dtype == np.float16  # max_faces_per_window
    assert fw.audio is not None and fw.audio.shape == (39, 64) and fw.audio.dtype == np.float16
    assert set(fw.stage_ms) == set(STAGES) and all(v >= 0 for v in fw.stage_ms.values())
    assert fw.clip_model == "merclip-tiny-clip" and fw.clip_pretrained == ""
    assert fw.features_ready_wall > raw.wall_end - 1e9
    # The pooled EOT row equals CLIP's own text embedding of the transcript.
    eot = extractor.clip.encode_texts([fw.transcript], normalize=False)[0].numpy()
    np.testing.assert_allclose(fw.language[-1].astype(np.float32), eot, rtol=2e-2, atol=2e-2)

    back = decode(encode(fw))
    assert isinstance(back, FeatureWindow)
    for name in ("language", "visual", "audio"):
        np.testing.assert_array_equal(getattr(back, name), getattr(fw, name))
    assert back.transcript == fw.transcript and back.stage_ms == fw.stage_ms
    # Every word of the window, on the media clock (ingest keeps those the window owns).
    assert " ".join(w.text for w in fw.words) == fw.transcript and back.words == fw.words
    assert all(0.0 <= w.media_start <= w.media_end <= 4.0 for w in fw.words)

    sample = back.to_sample()
    assert sample.id == "sess-1:0"
    assert sample.language is not None and sample.language.dtype == np.float32
    batch = collate([sample], {"language": 64, "visual": 64, "audio": 64})
    assert batch.present().tolist() == [[True, True, True]]


def test_silent_window_without_face(extractor: WindowExtractor) -> None:
    frames = [(t / 2, face_frame(int(t * 7.5), face=False)) for t in range(8)]
    raw = RawWindow(1, 2.0, 6.0, 2.0, 6.0, np.zeros(64000, np.float32), frames)
    fw = extractor.extract(raw, "sess-2")
    assert fw.transcript == "" and fw.language is None and not fw.speech_present
    assert fw.visual is None and not fw.face_present
    assert fw.audio is None
    sample = decode(encode(fw)).to_sample()  # type: ignore[union-attr]
    assert sample.language is None and sample.visual is None and sample.audio is None
    batch = collate([sample], {"language": 64, "visual": 64, "audio": 64})
    assert batch.present().tolist() == [[False, False, False]]


def test_window_without_audio_track_has_faces_only(extractor: WindowExtractor) -> None:
    frames = [(0.5 * i, face_frame(i)) for i in range(2)]
    fw = extractor.extract(RawWindow(0, 0.0, 4.0, 0.0, 4.0, None, frames), "s")
    assert fw.visual is not None and fw.visual.shape == (2, 64)
    assert fw.audio is None and fw.language is None and not fw.speech_present


def test_select_frames_spreads_evenly() -> None:
    frames = [(float(i), np.zeros((1, 1, 3), np.uint8)) for i in range(16)]
    assert [t for t, _ in select_frames(frames, 4)] == [0.0, 5.0, 10.0, 15.0]
    assert len(select_frames(frames[:3], 8)) == 3

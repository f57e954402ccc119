"""The ingest pipeline between the WebRTC readers and Redis, driven through its MediaSink the way
stream/peer.py drives it: real windowing, real faster-whisper, real (test-size) CLIP."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
from media import CONTINUOUS_SPEECH, SPEECH_TEXT, face_frame, read_wav_16k, speech_wav
from service_helpers import tiny_settings

from merclip.clip_backbone import ClipBackbone
from stream.sink import SessionInfo
from workers.app.settings import Settings
from workers.bus import Bus
from workers.features.asr import Transcriber
from workers.features.extractor import WindowExtractor
from workers.ingest import IngestPipeline
from workers.schemas import EmotionEvent, FeatureWindow, decode, encode
from workers.transcript import GUARD_SECONDS, normalise

pytestmark = pytest.mark.slow


def _settings(**ingest: object) -> Settings:
    base = {"window_seconds": 2.0, "hop_seconds": 1.0, "video_fps": 2.0}
    return Settings().replace("ingest", **{**base, **ingest})


async def _feed(sink, audio: np.ndarray, seconds: float, fps: int = 10, pace: bool = True) -> None:  # type: ignore[no-untyped-def]
    """Push 20 ms audio chunks and `fps` video frames, paced in real time like a live peer."""
    chunk = 320
    t = 0.0
    frame_i = 0
    next_frame = 0.0
    while t < seconds:
        i = int(t * 16000)
        sink.on_audio(audio[i : i + chunk], t + chunk / 16000)
        if t >= next_frame:
            if sink.wants_frame(t):
                sink.on_frame(face_frame(frame_i, fps, (320, 240), True), t)
            frame_i += 1
            next_frame += 1 / fps
        t += chunk / 16000
        await asyncio.sleep(chunk / 16000 if pace else 0)


def _info(session: str) -> SessionInfo:
    return SessionInfo(session, time.time(), time.monotonic())


async def test_windows_carry_speech_faces_and_reuse_frame_features(
    media_dir: Path, tiny_clip: ClipBackbone, bundled_whisper: Transcriber
) -> None:
    speech = read_wav_16k(speech_wav(media_dir, SPEECH_TEXT))
    audio = np.concatenate([speech, np.zeros(16000, np.float32)])
    seconds = audio.size / 16000
    settings = _settings(window_seconds=3.0, hop_seconds=1.5)
    extractor = WindowExtractor(settings, tiny_clip, bundled_whisper)
    published: list[FeatureWindow] = []

    async def publish(fw: FeatureWindow) -> None:
        published.append(decode(encode(fw)))  # what really crosses Redis

    async with IngestPipeline(settings, extractor, publish) as pipeline:
        sink = pipeline.sink_factory(_info("ingest-1"))
        await _feed(sink, audio, seconds)
        sink.on_close()
        await sink.wait_done()

    assert [fw.seq for fw in published] == list(range(len(published)))
    assert len(published) >= 2
    words = " ".join(fw.transcript for fw in published).lower()
    assert "hello" in words and "test" in words
    assert all(fw.face_present for fw in published)
    for fw in published:
        assert fw.visual is not None and fw.visual.shape[1] == tiny_clip.embed_dim
        assert fw.wall_end - fw.wall_start == pytest.approx(fw.media_end - fw.media_start, abs=0.3)
    # Frames were encoded as they arrived and reused, not encoded again per window.
    assert pipeline.counters.frames_extracted_ahead > 0
    assert any("frames_ahead" in fw.stage_ms for fw in published)
    assert pipeline.counters.windows_published == len(published)


async def test_frame_features_computed_ahead_equal_window_extraction(
    tiny_clip: ClipBackbone,
) -> None:
    from workers.windowing import RawWindow

    settings = _settings()
    extractor = WindowExtractor(settings, tiny_clip, None)
    frames = [(0.5 * i, face_frame(i, 2, (320, 240), True)) for i in range(4)]
    raw = RawWindow(0, 0.0, 2.0, 0.0, 2.0, None, frames)
    direct = extractor.extract(raw, "s")
    ahead = {ts: extractor.frame_feature(rgb) for ts, rgb in frames}
    reused = extractor.extract(raw, "s", ahead)
    assert direct.visual is not None and reused.visual is not None
    np.testing.assert_allclose(
        reused.visual.astype(np.float32), direct.visual.astype(np.float32), atol=2e-2
    )
    assert reused.stage_ms["faces"] < direct.stage_ms["faces"]


async def test_slow_extraction_drops_oldest_windows_and_counts_them(
    tiny_clip: ClipBackbone,
) -> None:
    settings = _settings(max_pending_windows=1, window_seconds=1.0, hop_seconds=0.5)
    extractor = WindowExtractor(settings, tiny_clip, None)
    gate = asyncio.Event()
    published: list[FeatureWindow] = []

    async def slow_publish(fw: FeatureWindow) -> None:
        await gate.wait()  # Redis (or the extractor) far behind the stream
        published.append(fw)

    noise = (0.05 * np.random.default_rng(0).standard_normal(16000 * 6)).astype(np.float32)
    async with IngestPipeline(settings, extractor, slow_publish) as pipeline:
        sink = pipeline.sink_factory(_info("ingest-slow"))
        await _feed(sink, noise, 6.0)
        await asyncio.sleep(0.5)
        cut = pipeline.counters.windows_cut
        dropped = pipeline.counters.windows_dropped_backlog
        gate.set()
        sink.on_close()
        await sink.wait_done()

    assert cut >= 10
    # Bounded: at most one window in extraction and one pending; the rest were dropped, oldest
    # first, and counted.
    assert dropped >= cut - 3
    seqs = [fw.seq for fw in published]
    assert seqs == sorted(seqs)
    assert seqs[-1] == pipeline.counters.windows_cut - 1  # the newest window survives


async def test_a_session_that_never_sent_media_publishes_no_window(
    tiny_clip: ClipBackbone,
) -> None:
    """Security review L1: a session closed without one byte of media (an offer that never
    connected) used to be cut by the session clock into empty windows, published as made-up
    events with a place in the live list."""
    settings = _settings()
    published: list[FeatureWindow] = []

    async def publish(fw: FeatureWindow) -> None:
        published.append(fw)

    async with IngestPipeline(settings, WindowExtractor(settings, tiny_clip, None), publish) as p:
        # Ten seconds since the offer, nothing received.
        info = SessionInfo("ingest-nomedia", time.time() - 10, time.monotonic() - 10)
        sink = p.sink_factory(info)
        sink.on_close()
        await sink.wait_done()
    assert p.counters.windows_cut == 0
    assert published == []


async def test_frames_behind_at_window_end_are_shed_not_queued(tiny_clip: ClipBackbone) -> None:
    """Media arriving faster than one frame thread can encode: windows do not wait for the
    backlog; frames whose job had not started are cancelled and counted."""
    # Overlapping windows: a frame shed by one window is seen again by the next.
    settings = _settings(window_seconds=2.0, hop_seconds=1.0, video_fps=8.0, extract_threads=1)
    extractor = WindowExtractor(settings, tiny_clip, None)
    published: list[FeatureWindow] = []

    async def publish(fw: FeatureWindow) -> None:
        published.append(fw)

    noise = (0.05 * np.random.default_rng(1).standard_normal(16000 * 6)).astype(np.float32)
    async with IngestPipeline(settings, extractor, publish) as pipeline:
        sink = pipeline.sink_factory(_info("ingest-shed"))
        await _feed(sink, noise, 6.0, fps=16, pace=False)
        sink.on_close()
        await sink.wait_done()
    counters = pipeline.counters
    assert counters.frames_dropped_late + counters.frames_deferred > 0
    assert counters.windows_published == len(published) >= 2
    # Every window cut was published or dropped (counted): the session's extraction never died.
    assert counters.windows_published + counters.windows_dropped_backlog == counters.windows_cut
    offered = counters.frames_extracted_ahead + counters.frames_deferred
    assert sum(0 if fw.visual is None else fw.visual.shape[0] for fw in published) < offered


async def test_a_frame_shed_by_an_earlier_window_does_not_kill_the_session(
    tiny_clip: ClipBackbone,
) -> None:
    """Overlapping windows share frames: a frame job cancelled (shed) while extracting window k
    is met again by window k+1, which must skip it, not die on its cancellation."""
    from concurrent.futures import Future

    from workers.windowing import RawWindow

    settings = _settings()
    extractor = WindowExtractor(settings, tiny_clip, None)
    published: list[FeatureWindow] = []

    async def publish(fw: FeatureWindow) -> None:
        published.append(fw)

    async with IngestPipeline(settings, extractor, publish) as pipeline:
        sink = pipeline.sink_factory(_info("ingest-cancelled"))
        frame = face_frame(0, 2, (320, 240), True)
        shed: Future = Future()
        shed.cancel()  # what window k left behind
        sink._frame_jobs[1.5] = shed
        raw = RawWindow(1, 1.0, 3.0, 0.0, 2.0, None, [(1.5, frame)])
        assert await sink._frame_features(raw) == {}
        sink.on_close()
        await sink.wait_done()


async def test_a_reconnect_keeps_both_connections_and_names_their_windows(
    tiny_clip: ClipBackbone,
) -> None:
    """A reconnect under the same session id while the old connection's last windows are still
    being extracted (the server closes the old peer, then opens the new one). The old session's
    end used to forget the NEW one (sessions_active 0 while it streamed, and aclose no longer
    waited for it); both connections number windows from 0, told apart by connection_id."""
    settings = _settings()
    extractor = WindowExtractor(settings, tiny_clip, None)
    published: list[FeatureWindow] = []

    async def publish(fw: FeatureWindow) -> None:
        published.append(decode(encode(fw)))

    noise = (0.05 * np.random.default_rng(2).standard_normal(16000 * 3)).astype(np.float32)
    async with IngestPipeline(settings, extractor, publish) as pipeline:
        first_info = _info("re-1")
        first = pipeline.sink_factory(first_info)
        await _feed(first, noise, 2.5, pace=False)
        first.on_close()  # its last windows are still to be extracted ...
        second_info = _info("re-1")  # ... when the same client comes back
        second = pipeline.sink_factory(second_info)
        assert pipeline.counters.sessions_active == 2
        await first.wait_done()
        assert pipeline.counters.sessions_active == 1
        assert pipeline.sessions == {"re-1": second}
        await _feed(second, noise, 2.5, pace=False)
        second.on_close()
        await second.wait_done()
        assert pipeline.counters.sessions_active == 0

    by_connection: dict[str, list[int]] = {}
    for fw in published:
        by_connection.setdefault(fw.connection_id, []).append(fw.seq)
    assert first_info.connection_id != second_info.connection_id
    assert set(by_connection) == {first_info.connection_id, second_info.connection_id}
    for seqs in by_connection.values():
        assert seqs[0] == 0 and seqs == sorted(seqs)


async def test_windows_with_nan_features_are_dropped_at_ingest(tiny_clip: ClipBackbone) -> None:
    """Review M5(c): NaN media gives NaN features, which inference turned into NaN events (not
    JSON) and a NaN moving average. Ingest drops such windows, counted, and goes on."""
    settings = _settings(max_pending_windows=16)  # fed at once: no window dropped as backlog
    extractor = WindowExtractor(settings, tiny_clip, None)
    published: list[FeatureWindow] = []

    async def publish(fw: FeatureWindow) -> None:
        published.append(decode(encode(fw)))

    noise = (0.05 * np.random.default_rng(3).standard_normal(16000 * 6)).astype(np.float32)
    noise[: 16000 * 3] = np.nan  # the first 3 s: windows [0, 2) and [1, 3) are all NaN
    async with IngestPipeline(settings, extractor, publish) as pipeline:
        sink = pipeline.sink_factory(_info("nan-1"))
        await _feed(sink, noise, 6.0, pace=False)
        sink.on_close()
        await sink.wait_done()
    counters = pipeline.counters
    assert counters.windows_dropped_backlog == 0
    assert counters.windows_dropped_bad_features >= 2
    kept = counters.windows_published + counters.windows_dropped_bad_features
    assert kept == counters.windows_cut
    assert len(published) >= 2 and published[0].seq >= 2
    for fw in published:
        assert fw.audio is not None and np.isfinite(fw.audio).all()


@pytest.mark.parametrize("lead", [0.35, 0.75])
async def test_each_spoken_word_is_in_the_session_transcript_once_in_order(
    media_dir: Path, tiny_clip: ClipBackbone, bus: Bus, lead: float
) -> None:
    """15 s of continuous speech through the whole pipeline as served: the service's windows
    (4 s, 2 s hop: every word is heard by two windows), the short-context Whisper, ownership in
    the session's ingest, Redis, the inference worker. The session's transcript, its events'
    new_text in order, holds each spoken word exactly once, in order, each word timed inside its
    event's window; the events' transcripts, whole windows, repeat half of what they say."""
    from merclip.predictor import Predictor
    from workers.inference import InferenceWorker

    settings = tiny_settings().replace("inference", deadline_seconds=600.0)
    # Fed faster than real time: nothing may be dropped as backlog for this count to hold.
    settings = settings.replace(
        "ingest", window_seconds=4.0, hop_seconds=2.0, max_pending_windows=16
    )
    speech = read_wav_16k(speech_wav(media_dir, CONTINUOUS_SPEECH))
    silence = np.zeros(16000, np.float32)
    audio = np.concatenate([silence[: int(lead * 16000)], speech, silence])
    extractor = WindowExtractor(settings, tiny_clip, Transcriber.from_settings(settings.asr))
    assert extractor.asr is not None and extractor.asr.context_seconds == 10.0
    session = f"words-{lead}"
    windows: list[FeatureWindow] = []

    async def publish(fw: FeatureWindow) -> None:
        windows.append(fw)
        await bus.add_window(fw)

    predictor = Predictor.from_settings(settings)
    async with InferenceWorker(settings, bus, predictor, consumer="words") as worker:
        async with IngestPipeline(settings, extractor, publish) as pipeline:
            sink = pipeline.sink_factory(_info(session))
            await _feed(sink, audio, audio.size / 16000, pace=False)
            sink.on_close()
            await sink.wait_done()
        deadline = time.monotonic() + 60
        while worker.counters.processed < len(windows) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    events: list[EmotionEvent] = await bus.events(session, 100)

    assert pipeline.counters.windows_dropped_backlog == 0
    assert [ev.seq for ev in events] == list(range(len(windows))) and len(events) >= 7
    spoken = [normalise(w) for w in CONTINUOUS_SPEECH.split()]
    running = " ".join(ev.new_text for ev in events if ev.new_text)
    assert [normalise(w) for w in running.split()] == spoken, running
    for ev in events:
        assert ev.new_text == " ".join(w.text for w in ev.words)
        for w in ev.words:  # owned by the window whose last hop holds its end
            assert ev.media_start <= w.media_start <= w.media_end <= ev.media_end
            assert w.media_end < ev.media_end - GUARD_SECONDS or ev.seq == len(events) - 1
    ends = [w.media_end for ev in events for w in ev.words]
    assert ends == sorted(ends)
    assert events[0].words[0].media_start == pytest.approx(lead, abs=0.3)
    heard_twice = sum(len(ev.transcript.split()) for ev in events)
    assert heard_twice > 1.5 * len(spoken)  # what the page showed before: fragments, repeated

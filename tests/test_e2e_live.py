"""End to end in one process: an aiortc client streams a face video with espeak-ng speech to the
live service (embedded Redis, real faster-whisper tiny.en, test-size CLIP and MER-CLIP), and the
session's events arrive on the live channel and in the session's event stream."""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from media import CONTINUOUS_SPEECH, SPEECH_TEXT, face_video
from service_helpers import tiny_settings
from stream_helpers import SineTrack

from stream.app import REGISTRY
from stream.clients.file import stream_file
from stream.clients.peer_client import connect_peer
from workers.app.service import LiveService
from workers.bus import Bus
from workers.schemas import EmotionEvent
from workers.subscriber import subscribe
from workers.transcript import normalise

pytestmark = pytest.mark.slow

EVENT_TIMEOUT = 60.0


@pytest.fixture
async def service() -> AsyncIterator[LiveService]:
    async with LiveService(tiny_settings()) as svc:
        yield svc


async def _collect(url: str, session: str, prefix: str, out: list[EmotionEvent]) -> None:
    async for ev in subscribe(url, session=session, prefix=prefix):
        out.append(ev)


async def test_face_and_speech_reach_events_on_channel_and_stream(
    service: LiveService, media_dir: Path
) -> None:
    video = face_video(media_dir, SPEECH_TEXT, seconds=7.0)
    session = "e2e-one"
    live: list[EmotionEvent] = []
    listener = asyncio.create_task(
        _collect(service.redis_url, session, service.settings.redis.prefix, live)
    )
    await asyncio.sleep(0.3)  # subscribed before the first event can be published
    try:
        await stream_file(service.url, video, session_id=session)
        deadline = asyncio.get_running_loop().time() + EVENT_TIMEOUT
        while asyncio.get_running_loop().time() < deadline:
            words = " ".join(ev.transcript for ev in live).lower()
            if "hello" in words and "test" in words and any(ev.face_present for ev in live):
                break
            await asyncio.sleep(0.5)
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener

    assert live, "no event arrived on the live channel"
    words = " ".join(ev.transcript for ev in live).lower()
    assert "hello" in words and "test" in words, words
    assert any(ev.face_present for ev in live)
    assert any(ev.speech_present for ev in live)
    for ev in live:
        assert ev.session_id == session
        assert len(ev.emotion_probs) == 6 and all(0.0 <= p <= 1.0 for p in ev.emotion_probs)
        assert ev.emotion_labels == ["happy", "sad", "anger", "surprise", "disgust", "fear"]
        # Sentiment is read from words: a window with no transcript (the clip's silent tail)
        # has none, rather than a guess from the face.
        assert ev.sentiment in (("negative", "positive") if ev.transcript else (None,)), ev
        assert abs(sum(ev.sentiment_probs) - 1.0) < 1e-3
        assert ev.pretrained is False and ev.zero_shot is True
        lat = ev.latency
        assert 0 <= lat.features_ready_ms <= lat.inference_done_ms <= lat.published_ms
    seqs = [ev.seq for ev in live]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

    async with Bus.connect(service.redis_url, service.settings.redis) as bus:
        stored = await bus.events(session, count=100)
    assert [e.event_id for e in stored][: len(live)] == [e.event_id for e in live]


async def test_a_live_session_transcript_says_each_word_once(media_dir: Path) -> None:
    """15 s of speech streamed over WebRTC in real time, so that the window borders fall where
    the connection's arrival clock puts them, through the service's 4 s / 2 s windows: the
    running transcript (the events' new_text, in order) repeats nothing and holds the spoken
    words in order, short of what the ASR gets wrong (test_ingest_pipeline.py pins the exact
    transcript at fixed lead-ins). The windows' own transcripts overlap: the page used to list
    those, every word twice."""
    settings = tiny_settings().replace("ingest", window_seconds=4.0, hop_seconds=2.0)
    video = face_video(media_dir, CONTINUOUS_SPEECH, seconds=16.5)
    session = "e2e-words"
    async with LiveService(settings) as svc:
        async with Bus.connect(svc.redis_url, svc.settings.redis) as bus:
            await stream_file(svc.url, video, session_id=session)
            events = await _events_once_settled(bus, session, at_least=7)
    spoken = [normalise(w) for w in CONTINUOUS_SPEECH.split()]
    said = [normalise(w) for ev in events for w in ev.new_text.split()]
    assert [ev.seq for ev in events] == list(range(len(events)))
    # A word published twice shows as a word pair said more often than spoken ("new job new
    # job"), or a word said twice in a row ("job job").
    spoken_pairs = Counter(zip(spoken, spoken[1:], strict=False))
    said_pairs = Counter(zip(said, said[1:], strict=False))
    repeats = [
        p
        for p, n in said_pairs.items()
        if n > max(1, spoken_pairs[p]) or (p[0] == p[1] and not spoken_pairs[p])
    ]
    assert not repeats, " ".join(said)
    match = difflib.SequenceMatcher(a=spoken, b=said, autojunk=False)
    assert match.ratio() >= 0.9, " ".join(said)
    assert sum(len(ev.transcript.split()) for ev in events) > 1.5 * len(spoken)


async def test_concurrent_sessions_never_see_each_others_events(
    service: LiveService, media_dir: Path
) -> None:
    video = face_video(media_dir, SPEECH_TEXT, seconds=4.0)
    got: dict[str, list[EmotionEvent]] = {"iso-a": [], "iso-b": []}
    prefix = service.settings.redis.prefix
    listeners = [
        asyncio.create_task(_collect(service.redis_url, sid, prefix, evs))
        for sid, evs in got.items()
    ]
    await asyncio.sleep(0.3)
    try:
        await asyncio.gather(*(stream_file(service.url, video, session_id=sid) for sid in got))
        deadline = asyncio.get_running_loop().time() + EVENT_TIMEOUT
        while any(not evs for evs in got.values()):
            assert asyncio.get_running_loop().time() < deadline, "a session got no events"
            await asyncio.sleep(0.5)
        await asyncio.sleep(2.0)  # let any misrouted event show up
    finally:
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
    for sid, evs in got.items():
        assert {ev.session_id for ev in evs} == {sid}
    async with Bus.connect(service.redis_url, service.settings.redis) as bus:
        for sid in got:
            assert {e.session_id for e in await bus.events(sid, count=100)} == {sid}


async def _stream_tone(url: str, session: str, amplitude: float, seconds: float) -> float:
    """One WebRTC connection that sends a tone (or silence) to its end; returns its start."""
    track = SineTrack(amplitude=amplitude, seconds=seconds)
    started = time.time()
    pc, _ = await connect_peer(url, [track], session_id=session)
    try:
        deadline = time.monotonic() + seconds + 15
        while track.readyState != "ended":
            assert time.monotonic() < deadline, f"connection {pc.connectionState}"
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # the last packets are still in flight
    finally:
        await pc.close()
    return started


async def _events_once_settled(bus: Bus, session: str, at_least: int) -> list[EmotionEvent]:
    """The session's events once at least `at_least` are stored and no more arrived for 2 s."""
    deadline = asyncio.get_running_loop().time() + EVENT_TIMEOUT
    stored = await bus.events(session, count=100)
    while True:
        await asyncio.sleep(2.0)
        again = await bus.events(session, count=100)
        if len(again) >= at_least and len(again) == len(stored):
            return again
        assert asyncio.get_running_loop().time() < deadline, (
            f"{len(again)} events stored, expected at least {at_least}"
        )
        stored = again


async def test_a_reconnect_under_the_same_session_id_gets_its_own_events(
    service: LiveService, media_dir: Path
) -> None:
    """Security review H1: a client that leaves and joins again under the same id (the page's
    Leave then Join, a named session) starts its windows at seq 0 again; with event ids made of
    session and seq only, every one of them was dropped as a duplicate of the first
    connection's. The second connection's smoothing must also start afresh."""
    session = "e2e-again"
    video = face_video(media_dir, SPEECH_TEXT, seconds=4.0)
    async with Bus.connect(service.redis_url, service.settings.redis) as bus:
        await stream_file(service.url, video, session_id=session)  # a face and words
        first = await _events_once_settled(bus, session, at_least=2)
        second_started = await _stream_tone(service.url, session, amplitude=0.0, seconds=5.0)
        stored = await _events_once_settled(bus, session, at_least=len(first) + 2)

    second = [ev for ev in stored if ev.wall_start >= second_started]
    assert [ev.event_id for ev in stored[: len(first)]] == [ev.event_id for ev in first]
    assert len(second) >= 2, f"the second connection got {len(second)} events"
    assert len(stored) == len(first) + len(second)
    assert [ev.seq for ev in second] == list(range(len(second)))  # its own seq, from 0
    assert {ev.event_id for ev in first}.isdisjoint(ev.event_id for ev in second)
    assert service.worker.counters.duplicates == 0
    # Smoothing restarted: the first window of the new connection (silence) is its own
    # average, not a blend with the old connection's (a face and words: other probabilities).
    assert second[0].emotion_probs != first[-1].emotion_probs
    assert second[0].emotion_smoothed == second[0].emotion_probs
    assert service.app is not None and service.app[REGISTRY].count == 0


async def test_a_trained_checkpoint_serves_both_tasks(media_dir: Path, tmp_path: Path) -> None:
    """train --task both on live-space data, then serve it: events are no longer zero-shot."""
    from training_helpers import quick_options

    from merclip.training.train import train

    result = await asyncio.to_thread(
        train,
        quick_options(tmp_path / "run", data="synthetic", epochs=1, batch_size=64),
    )
    checkpoint = tmp_path / "run" / "best.pt"
    assert checkpoint.exists(), result
    settings = tiny_settings().replace("model", checkpoint=str(checkpoint))
    video = face_video(media_dir, SPEECH_TEXT, seconds=4.0)
    async with LiveService(settings) as svc:
        got: list[EmotionEvent] = []
        listener = asyncio.create_task(
            _collect(svc.redis_url, "trained-1", svc.settings.redis.prefix, got)
        )
        await asyncio.sleep(0.3)
        try:
            await stream_file(svc.url, video, session_id="trained-1")
            deadline = asyncio.get_running_loop().time() + EVENT_TIMEOUT
            while not got:
                assert asyncio.get_running_loop().time() < deadline, "no event"
                await asyncio.sleep(0.5)
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
    ev = got[0]
    assert ev.zero_shot is False
    assert ev.model_version != "" and not ev.model_version.startswith("zero-shot")
    assert len(ev.emotion_probs) == 6
    assert ev.sentiment in (("negative", "positive") if ev.transcript else (None,)), ev

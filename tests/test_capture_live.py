"""`capture()` end to end: array-fed camera and microphone sources through the capture tracks,
real aiortc peers on loopback, the real LiveService (embedded Redis, faster-whisper tiny.en,
test-size CLIP and MER-CLIP), and the session's events read back over GET /events (SSE)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from media import SPEECH_TEXT, face_frame, read_wav_16k, speech_wav
from service_helpers import tiny_settings
from test_capture import ArrayFrames, FedAudio

from stream.clients.capture import capture
from stream.clients.peer_client import read_events
from stream.errors import CaptureError
from workers.app.service import LiveService

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

EVENT_TIMEOUT = 60.0
FPS = 15
SIZE = (320, 240)


async def test_fed_camera_and_microphone_stream_and_events_come_back(media_dir: Path) -> None:
    speech = read_wav_16k(speech_wav(media_dir, SPEECH_TEXT))  # 16 kHz: resampled by the track
    lead = np.zeros(int(0.3 * 16000), np.float32)
    tail = np.zeros(int(2.0 * 16000), np.float32)
    audio = np.concatenate([lead, speech, tail])
    seconds = audio.size / 16000
    camera = ArrayFrames(lambda i: face_frame(i, FPS, SIZE), count=int(seconds * FPS))
    mic = FedAudio(16000, max_blocks=500)  # 5 s: room for a slow connect on a busy machine

    sessions: list[str] = []
    events: list[dict[str, Any]] = []
    async with LiveService(tiny_settings()) as svc:
        mic.feed(audio, block=160)  # 10 ms blocks in real time, as sounddevice's callback
        task = asyncio.create_task(
            capture(
                svc.url,
                camera,
                mic,
                session_id="cap-e2e",
                fps=FPS,
                on_session=sessions.append,
                on_event=events.append,
                linger=EVENT_TIMEOUT,
            )
        )
        deadline = time.monotonic() + seconds + EVENT_TIMEOUT
        try:
            while time.monotonic() < deadline and not task.done():
                words = " ".join(ev["transcript"] for ev in events).lower()
                if "hello" in words and "test" in words and any(e["face_present"] for e in events):
                    break
                await asyncio.sleep(0.5)
            assert not task.done() or task.exception() is None, task.exception()
        finally:
            task.cancel()  # what Ctrl-C does: tracks stopped, peer closed, SSE reader ended
            with contextlib.suppress(asyncio.CancelledError):
                await task

    assert sessions == ["cap-e2e"]
    assert events, "no event came back over GET /events"
    words = " ".join(ev["transcript"] for ev in events).lower()
    assert "hello" in words and "test" in words, words
    assert any(ev["face_present"] for ev in events)
    assert any(ev["speech_present"] for ev in events)
    assert {ev["session_id"] for ev in events} == {"cap-e2e"}
    seqs = [ev["seq"] for ev in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert camera.reads >= FPS * 2 and camera.closed == 1
    assert mic.dropped_blocks == 0


async def test_capture_reports_a_server_without_events_and_returns_its_result(
    media_dir: Path,
) -> None:
    # --seconds stops early, and an SSE route that refuses is a clear error, not a hang.
    from stream_helpers import make_settings, running_server

    async with running_server(make_settings()) as (url, app, sinks):
        result = await capture(
            url, ArrayFrames(lambda i: face_frame(i, FPS, SIZE), count=1000), None, seconds=1.0
        )
        assert 0.9 <= result.seconds <= 2.0
        # Not more than --seconds worth (fewer when the encoder is slow on a busy machine).
        assert 1 <= result.video_frames <= FPS * 1.5
        with pytest.raises(CaptureError, match="HTTP 404"):
            await read_events(url, result.session_id, lambda ev: None)
    (sink,) = sinks
    assert sink.frames and sink.frames[0][0].shape == (SIZE[1], SIZE[0], 3)


async def test_capture_says_when_the_server_cannot_be_reached() -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    camera = ArrayFrames(lambda i: face_frame(i, FPS, SIZE), count=10)
    with pytest.raises(CaptureError, match="cannot reach the server"):
        await capture(f"http://127.0.0.1:{port}/", camera, None)
    await asyncio.sleep(0.05)
    assert camera.closed == 1  # the device is released


async def test_microphone_speech_reaches_the_server_at_its_level(media_dir: Path) -> None:
    from stream_helpers import make_settings, running_server

    speech = read_wav_16k(speech_wav(media_dir, SPEECH_TEXT))
    mic = FedAudio(16000, max_blocks=500)
    async with running_server(make_settings()) as (url, app, sinks):
        mic.feed(speech, block=160)
        result = await capture(url, None, mic, session_id="cap-level")
    (sink,) = sinks
    got = sink.samples
    assert result.audio_seconds == pytest.approx(speech.size / 16000, abs=0.1)
    assert got.size == pytest.approx(speech.size, rel=0.1)
    rms_sent = float(np.sqrt(np.mean(speech**2)))
    rms_got = float(np.sqrt(np.mean(got**2)))
    # 16 kHz -> 48 kHz stereo -> Opus -> the server's 16 kHz mono: the level survives.
    assert rms_got == pytest.approx(rms_sent, rel=0.15), (rms_got, rms_sent)
    print(f"speech rms sent {rms_sent:.4f} received {rms_got:.4f}")


async def test_read_events_passes_partials_apart_from_events() -> None:
    # The server's SSE route interleaves `event: partial` messages (no scores, no transcript
    # key of an event) with events; a reader that took them for events broke every consumer.
    from aiohttp import web

    from stream.sse import sse_message

    stream = [
        {"type": "emotion", "event_id": "a1", "transcript": "hello"},
        {"type": "partial_transcript", "partial": True, "text": "there"},
        {"type": "emotion", "event_id": "a2", "transcript": "again"},
    ]

    async def events(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for message in stream:
            await resp.write(sse_message(message))
        return resp

    app = web.Application()
    app.router.add_get("/events/{sid}", events)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        got: list[dict[str, Any]] = []
        partials: list[dict[str, Any]] = []
        await read_events(f"http://127.0.0.1:{port}", "s", got.append, partials.append)
        assert [ev["transcript"] for ev in got] == ["hello", "again"]
        assert [p["text"] for p in partials] == ["there"]
        only_events: list[dict[str, Any]] = []
        await read_events(f"http://127.0.0.1:{port}", "s", only_events.append)
        assert only_events == got
    finally:
        await runner.cleanup()

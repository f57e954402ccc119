"""Test support for stream/: generated media tracks, a recording sink, a live server.

The tracks are real aiortc MediaStreamTracks (paced in real time like a microphone or camera);
the sink records what the server delivers so tests can check level, length, rate and timing.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiohttp.test_utils import TestServer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from stream.app import EventsFactory, create_app, runner_options
from stream.sink import SessionInfo
from workers.app.settings import Settings, load_settings

__all__ = [
    "RecordingSink",
    "SilentPausedTrack",
    "SineTrack",
    "PatternVideoTrack",
    "running_server",
    "make_settings",
    "wait_for",
]


class SineTrack(MediaStreamTrack):
    """48 kHz s16 sine (same in both channels), 20 ms frames in real time, for `seconds`."""

    kind = "audio"

    def __init__(self, amplitude: float = 0.25, freq: float = 440.0, seconds: float = 3.0):
        super().__init__()
        self.amplitude = amplitude
        self.freq = freq
        self.total = int(seconds * 48000)
        self.sent = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.sent >= self.total:
            self.stop()
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self.sent / 48000 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        n = np.arange(self.sent, self.sent + 960)
        pcm = self.amplitude * 32767 * np.sin(2 * np.pi * self.freq * n / 48000)
        # Stereo with L = R: aiortc's sender would up-mix mono at 0.707 per channel
        # (libswresample), so a mono source would arrive 3 dB quieter than it was made.
        pcm16 = pcm.astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.stack([pcm16, pcm16], axis=1).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = 48000
        frame.pts = self.sent
        frame.time_base = fractions.Fraction(1, 48000)
        self.sent += 960
        return frame


class PatternVideoTrack(MediaStreamTrack):
    """A moving-bar test pattern at `fps`, paced in real time; stops after `seconds`."""

    kind = "video"

    def __init__(self, width: int = 320, height: int = 240, fps: int = 15, seconds: float = 3.0):
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self.total = int(seconds * fps)
        self.sent = 0
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self.sent >= self.total:
            self.stop()
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self.sent / self.fps - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        img = np.full((self.height, self.width, 3), 40, np.uint8)
        x = (self.sent * 8) % self.width
        img[:, x : x + 16] = (230, 60, 60)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = self.sent * (90000 // self.fps)
        frame.time_base = fractions.Fraction(1, 90000)
        self.sent += 1
        return frame


class SilentPausedTrack(MediaStreamTrack):
    """An audio track that never produces a frame (a muted/stalled microphone)."""

    kind = "audio"

    async def recv(self) -> av.AudioFrame:
        await asyncio.Event().wait()
        raise MediaStreamError


@dataclass
class RecordingSink:
    """A MediaSink that records everything; wants one frame every `frame_interval` seconds."""

    info: SessionInfo
    frame_interval: float = 0.5
    audio: list[tuple[np.ndarray, float]] = field(default_factory=list)
    frames: list[tuple[np.ndarray, float]] = field(default_factory=list)
    frames_offered: int = 0
    closed: int = 0
    _next_due: float = 0.0

    def on_audio(self, samples: np.ndarray, media_time_end: float) -> None:
        assert not self.closed, "on_audio after on_close"
        self.audio.append((samples, media_time_end))

    def wants_frame(self, media_time: float) -> bool:
        self.frames_offered += 1
        if media_time >= self._next_due:
            self._next_due = media_time + self.frame_interval
            return True
        return False

    def on_frame(self, rgb: np.ndarray, media_time: float) -> None:
        assert not self.closed, "on_frame after on_close"
        self.frames.append((rgb, media_time))

    def on_close(self) -> None:
        self.closed += 1

    @property
    def samples(self) -> np.ndarray:
        if not self.audio:
            return np.zeros(0, np.float32)
        return np.concatenate([a for a, _ in self.audio])


def make_settings(**server: Any) -> Settings:
    settings = load_settings(None, env={})
    return settings.replace("server", **server) if server else settings


@asynccontextmanager
async def running_server(
    settings: Settings,
    events_factory: EventsFactory | None = None,
    sink_factory: Callable[[SessionInfo], Any] | None = None,
    host: str = "127.0.0.1",
) -> AsyncIterator[tuple[str, Any, list[RecordingSink]]]:
    """Start the app on a free port; yields (base_url, app, sinks created so far)."""
    sinks: list[RecordingSink] = []

    def make_sink(info: SessionInfo) -> RecordingSink:
        sink = RecordingSink(info)
        sinks.append(sink)
        return sink

    app = create_app(settings, sink_factory or make_sink, events_factory, loopback=True)
    server = TestServer(app, host=host)
    await server.start_server(**runner_options(settings))
    try:
        yield f"http://{host}:{server.port}", app, sinks
    finally:
        await server.close()


async def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()

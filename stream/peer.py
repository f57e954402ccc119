"""One WebRTC session: an RTCPeerConnection, one reader task per track, and the sink they feed.

The sink (`MediaSink`, in stream/sink.py) is the contract with ingest: stream/ turns WebRTC media
into 16 kHz mono float32 audio and RGB frames stamped with media time, and knows nothing about
windows or Redis.

Media time is seconds since the session started, on `time.monotonic()`, taken when a frame
ARRIVES: aiortc's RTP timestamps restart at 0 per track and cannot be compared across tracks.

Every accepted track gets a reader task that starts waiting for the first frame as soon as the
track is announced and loops on `recv()` until `MediaStreamError`, so aiortc's (unbounded)
decoded-frame queue never grows unread. Video frames the sink does not want are dropped as soon
as they are read; the ones it wants are converted to RGB in a worker thread (a 640×480 frame
costs a few ms, too much for a loop that carries every peer's RTP). A frame whose long side is
over MAX_FRAME_SIDE (1280 px) is scaled down in that same conversion, before the sink keeps it:
faces are detected at 320 px anyway, and one 4K session held ~250 MB of full-size RGB in the
windower and the frame jobs (review M10).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from prometheus_client import Counter

from stream.audio import AudioConverter
from stream.errors import BadOfferError
from stream.sink import CloseReason, MediaSink, SessionInfo

__all__ = ["MAX_FRAME_SIDE", "PeerSession", "SessionStats"]

log = logging.getLogger(__name__)

MAX_FRAME_SIDE = 1280
"""Longest side, in pixels, of the RGB frames given to the sink (larger ones are scaled down)."""

AUDIO_SECONDS = Counter(
    "merclip_stream_audio_seconds", "Seconds of 16 kHz audio delivered to sinks"
)
VIDEO_FRAMES = Counter(
    "merclip_stream_video_frames",
    "Video frames received, by outcome (delivered to the sink, or dropped: not wanted)",
    ["outcome"],
)
SESSIONS_CLOSED = Counter(
    "merclip_stream_sessions_closed",
    "Sessions closed, by reason (connection_closed, connection_failed, inactivity, "
    "sink_error, replaced, offer_failed, shutdown, connect_timeout)",
    ["reason"],
)


@dataclass
class SessionStats:
    audio_frames: int = 0
    audio_samples: int = 0
    """16 kHz samples delivered to the sink."""
    video_frames: int = 0
    """Video frames received."""
    video_frames_delivered: int = 0
    video_frames_dropped: int = 0
    """Frames the sink did not want (latest-frame sampling)."""
    extra_tracks: int = 0
    """Tracks beyond the first audio and first video track, consumed and discarded."""


class PeerSession:
    """One client: its RTCPeerConnection, reader tasks, inactivity watchdog, and sink."""

    def __init__(
        self,
        info: SessionInfo,
        sink: MediaSink,
        configuration: RTCConfiguration,
        inactivity_timeout: float,
        on_closed: Callable[[PeerSession], None] | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        self.info = info
        self.sink = sink
        self.stats = SessionStats()
        self.close_reason: CloseReason | None = None
        self._log_extra = {"session_id": info.session_id, "stage": "peer"}
        """`extra=` of every log line about this session (for a JSON log's fields)."""
        self._pc = RTCPeerConnection(configuration)
        self._inactivity_timeout = inactivity_timeout
        # Never longer than the inactivity timeout: not connected means no media either.
        self._connect_timeout = min(inactivity_timeout, connect_timeout or inactivity_timeout)
        self._connected = False
        self._on_closed = on_closed
        self._last_media = time.monotonic()
        self._tasks: set[asyncio.Task[None]] = set()
        self._readers: set[asyncio.Task[None]] = set()
        self._kinds_taken: set[str] = set()
        self._closing = False
        self._closed = asyncio.Event()
        self._pc.on("track", self._on_track)
        self._pc.on("connectionstatechange", self._on_connection_state)

    @property
    def session_id(self) -> str:
        return self.info.session_id

    @property
    def connection_state(self) -> str:
        return str(self._pc.connectionState)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def media_time(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.info.started_monotonic

    async def answer(self, sdp: str) -> RTCSessionDescription:
        """Apply the client's offer and return our answer (ICE candidates included, no trickle)."""
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except Exception as exc:  # aiortc raises ValueError, KeyError, ... on odd SDP
            raise BadOfferError(
                f"the SDP offer was rejected: {type(exc).__name__}: {exc}", code="bad_sdp"
            ) from exc
        await self._pc.setLocalDescription(await self._pc.createAnswer())
        self._spawn(self._watchdog(), "watchdog")
        return self._pc.localDescription

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def aclose(self, reason: CloseReason = "closed") -> None:
        """Close the peer, stop the readers, tell the sink. Safe to call more than once and from
        inside the session's own tasks. `reason` is a short code (a metric label)."""
        if self._closing:
            if asyncio.current_task() not in self._tasks | self._readers:
                await self._closed.wait()
            return
        self._closing = True
        self.close_reason = reason
        SESSIONS_CLOSED.labels(reason).inc()
        log.info("session %s closing: %s", self.session_id, reason, extra=self._log_extra)
        try:
            await self._pc.close()
            # Frames still queued after the close are of no use: cancel rather than drain.
            await _cancel_and_wait(self._readers | self._tasks)
        finally:
            try:
                self.sink.on_close()
            except Exception:
                log.exception(
                    "session %s: sink.on_close failed", self.session_id, extra=self._log_extra
                )
            self._closed.set()
            if self._on_closed is not None:
                self._on_closed(self)

    # -- internals --------------------------------------------------------------------------

    def _spawn(self, coro: Any, name: str, reader: bool = False) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.session_id}:{name}")
        group = self._readers if reader else self._tasks
        group.add(task)
        task.add_done_callback(group.discard)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind in self._kinds_taken or track.kind not in ("audio", "video"):
            self.stats.extra_tracks += 1
            if self.stats.extra_tracks == 1:  # once per session, not once per track (L8)
                log.info(
                    "session %s: extra %s track discarded (further ones are only counted)",
                    self.session_id,
                    track.kind,
                    extra=self._log_extra,
                )
            self._spawn(self._read_discard(track), f"discard-{track.kind}", reader=True)
            return
        self._kinds_taken.add(track.kind)
        reader = self._read_audio(track) if track.kind == "audio" else self._read_video(track)
        self._spawn(reader, f"read-{track.kind}", reader=True)

    def _on_connection_state(self) -> None:
        state = self._pc.connectionState
        log.debug("session %s: connection %s", self.session_id, state, extra=self._log_extra)
        if state == "connected":
            self._connected = True
        if state in ("failed", "closed") and not self._closing:
            reason: CloseReason = "connection_failed" if state == "failed" else "connection_closed"
            self._spawn(self.aclose(reason), "close")

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        converter = AudioConverter()
        started = self.info.started_monotonic
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = time.monotonic()
                self._last_media = now
                assert isinstance(frame, av.AudioFrame)
                samples = converter.convert(frame)
                self.stats.audio_frames += 1
                if samples.size and not self._closing:
                    self.stats.audio_samples += samples.size
                    AUDIO_SECONDS.inc(samples.size / converter.rate)
                    if not self._call_sink(self.sink.on_audio, samples, now - started):
                        return

    async def _read_video(self, track: MediaStreamTrack) -> None:
        started = self.info.started_monotonic
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = time.monotonic()
                self._last_media = now
                self.stats.video_frames += 1
                media_time = now - started
                wanted = self._call_sink(self.sink.wants_frame, media_time)
                if wanted is None:
                    return
                if not wanted:
                    self.stats.video_frames_dropped += 1
                    VIDEO_FRAMES.labels("dropped").inc()
                    continue
                assert isinstance(frame, av.VideoFrame)
                rgb = await asyncio.to_thread(_to_rgb, frame)
                if self._closing:
                    return
                self.stats.video_frames_delivered += 1
                VIDEO_FRAMES.labels("delivered").inc()
                if self._call_sink(self.sink.on_frame, rgb, media_time) is None:
                    return

    async def _read_discard(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
                self._last_media = time.monotonic()

    def _call_sink(self, method: Callable[..., Any], *args: Any) -> Any:
        """Call a sink method; a sink that raises ends the session (returns None)."""
        try:
            result = method(*args)
        except Exception:
            log.exception(
                "session %s: sink.%s failed",
                self.session_id,
                method.__name__,
                extra=self._log_extra,
            )
            self._spawn(self.aclose("sink_error"), "close")
            return None
        return True if result is None else result

    async def _watchdog(self) -> None:
        # Two deadlines: reaching "connected" (short: an offer whose client never does ICE held
        # a slot for the whole inactivity timeout, so 8 POSTs in 30 ms filled the server for
        # 20 s, review L1), then media arriving (the inactivity timeout).
        timeout = self._inactivity_timeout
        period = min(1.0, self._connect_timeout / 4)
        while True:
            await asyncio.sleep(period)
            if not self._connected:
                waited = time.monotonic() - self.info.started_monotonic
                if waited >= self._connect_timeout:
                    log.info(
                        "session %s: not connected after %.1f s",
                        self.session_id,
                        waited,
                        extra=self._log_extra,
                    )
                    self._spawn(self.aclose("connect_timeout"), "close")
                    return
                continue
            idle = time.monotonic() - self._last_media
            if idle >= timeout:
                log.info(
                    "session %s: no media for %.1f s", self.session_id, idle, extra=self._log_extra
                )
                self._spawn(self.aclose("inactivity"), "close")
                return


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """(H, W, 3) uint8 RGB, the long side at most MAX_FRAME_SIDE (aspect ratio kept)."""
    side = max(frame.width, frame.height)
    if side <= MAX_FRAME_SIDE:
        return frame.to_ndarray(format="rgb24")
    scale = MAX_FRAME_SIDE / side
    width = max(2, round(frame.width * scale / 2) * 2)  # even sizes: what codecs use
    height = max(2, round(frame.height * scale / 2) * 2)
    return frame.reformat(width=width, height=height, format="rgb24").to_ndarray()


async def _cancel_and_wait(tasks: set[asyncio.Task[None]]) -> None:
    """Cancel tasks and wait until they are done; never cancel or wait on the calling task."""
    current = asyncio.current_task()
    pending = {t for t in tasks if t is not current and not t.done()}
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)

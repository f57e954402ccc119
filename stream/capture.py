"""`merclip capture`: send the local camera and microphone to a server as WebRTC tracks.

    merclip capture --url http://localhost:8080/ --events
    merclip capture --list-devices

The device is the only thing behind a small interface, so the track code a camera or microphone
uses is the code tests run with arrays:

- `FrameSource.read() -> RGB ndarray | None` (None: the source ended). `OpenCVCamera` is one: a
  grabber thread keeps only the newest frame (a webcam runs at its own rate; queued frames would
  only add latency). `CameraTrack(source, fps)` paces reads at `fps` with 90 kHz pts, the way
  aiortc's VideoStreamTrack does, and skips ticks instead of drifting when a read was slow.
- `AudioSource.read(timeout) -> (N, C) float32 block | None` at `sample_rate`.
  `QueuedAudioSource` is a source fed by another thread through a bounded `BlockQueue` (drop
  oldest, count drops); `SoundDeviceMic` feeds it from sounddevice's InputStream callback.
  `MicrophoneTrack(source)` turns blocks into 20 ms 48 kHz s16 stereo frames (L = R at the
  source's level: letting libswresample up-mix would put 0.707 in each channel, and its down-mix
  of stereo sums channels, so channels are averaged and duplicated here in numpy). The device is
  the clock: the track sends a frame as soon as 960 samples are there.

Each track reads, resamples and converts in its own one-thread executor: the event loop carries
RTP for the whole connection and must not block on a device.

Events come back over the server's `GET /events/{session}` (server-sent events), so the client
needs no Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import contextlib
import fractions
import json
import logging
import os
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from merclip.settings import Settings
from stream.errors import CaptureError, NoDeviceError
from stream.file_client import PeerWatch, connect_peer, first_of

__all__ = [
    "AUDIO_RATE",
    "AudioSource",
    "BlockQueue",
    "CameraTrack",
    "CaptureError",
    "CaptureResult",
    "FrameSource",
    "MicrophoneTrack",
    "NoDeviceError",
    "OpenCVCamera",
    "QueuedAudioSource",
    "SoundDeviceMic",
    "VIDEO_CLOCK_RATE",
    "add_arguments",
    "capture",
    "list_devices",
    "microphones",
    "probe_cameras",
    "read_events",
    "run",
]

log = logging.getLogger(__name__)

VIDEO_CLOCK_RATE = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_RATE = 48000
AUDIO_FRAME_SAMPLES = 960  # 20 ms, what Opus sends per packet
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)
CAMERA_PROBE_INDICES = 10
READ_TIMEOUT_SECONDS = 0.25
"""How long a track's read blocks before it checks whether it was stopped."""
CAMERA_STALL_SECONDS = 5.0
"""A camera that delivers no frame for this long is treated as gone."""
EVENTS_LINGER_SECONDS = 5.0
"""With --events: keep printing after the media stops, for the last windows' events."""


# -- video ----------------------------------------------------------------------------------


class FrameSource(ABC):
    """Where a CameraTrack's pictures come from. Methods are called from a worker thread."""

    @abstractmethod
    def read(self) -> np.ndarray | None:
        """The next (H, W, 3) uint8 RGB frame, or None when the source has ended."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the device. Called once when the track stops."""


class OpenCVCamera(FrameSource):
    """A webcam through cv2.VideoCapture, resized to `size` (width, height) when it differs.

    `device` is an OpenCV camera index, or anything else cv2.VideoCapture opens: a device path
    (/dev/video2), a stream URL (rtsp://...), a video file.

    A grabber thread reads at the camera's own rate and keeps the newest frame only; `read`
    returns a frame newer than the previous one (waiting for it), so a 30 fps camera read at
    15 fps sends fresh pictures, never a backlog.
    """

    def __init__(
        self, device: int | str, size: tuple[int, int] = (640, 480), fps: float = 15
    ) -> None:
        import cv2

        _quiet_opencv()
        self.device = device
        self.size = size
        self._cv2 = cv2
        self._cap = cv2.VideoCapture(device)
        ok = self._cap.isOpened()
        frame = self._cap.read()[1] if ok else None
        if frame is None:
            self._cap.release()
            what = f"index {device}" if isinstance(device, int) else repr(device)
            raise NoDeviceError(f"no camera at {what}")
        self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
        self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
        self._cap.set(cv2.CAP_PROP_FPS, fps)
        self._cond = threading.Condition()
        self._latest: np.ndarray | None = frame
        self._serial = 1
        self._returned = 0
        self._ended = False
        self._thread = threading.Thread(target=self._grab, name=f"camera-{device}", daemon=True)
        self._thread.start()

    def _grab(self) -> None:
        while True:
            ok, bgr = self._cap.read()
            with self._cond:
                if self._ended:
                    return
                if not ok or bgr is None:
                    log.info("camera %s: no more frames (ended or gone)", self.device)
                    self._ended = True
                    self._cond.notify_all()
                    return
                self._latest = bgr
                self._serial += 1
                self._cond.notify_all()

    def read(self) -> np.ndarray | None:
        with self._cond:
            fresh = self._cond.wait_for(
                lambda: self._ended or self._serial > self._returned, CAMERA_STALL_SECONDS
            )
            if self._ended or not fresh or self._latest is None:
                if not fresh:
                    log.warning("camera %s: no frame for %.0f s", self.device, CAMERA_STALL_SECONDS)
                return None
            bgr, self._returned = self._latest, self._serial
        if (bgr.shape[1], bgr.shape[0]) != self.size:
            bgr = self._cv2.resize(bgr, self.size, interpolation=self._cv2.INTER_AREA)
        return np.ascontiguousarray(bgr[:, :, ::-1])

    def close(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()
        self._thread.join(timeout=2.0)
        self._cap.release()


class CameraTrack(MediaStreamTrack):
    """A video track reading `source` at `fps`: pts on the 90 kHz clock, paced in real time.

    Tick n is due at start + n / fps with pts round(n * 90000 / fps). When a read ran late by
    more than a frame, the track jumps to the current tick rather than sending a burst, so pts
    keeps following the wall clock and stays strictly increasing.
    """

    kind = "video"

    def __init__(self, source: FrameSource, fps: float = 15.0) -> None:
        super().__init__()
        if fps <= 0:
            raise ValueError("fps must be > 0")
        self.source = source
        self.fps = fps
        self.frames_sent = 0
        self.ticks_skipped = 0
        self._tick = -1
        self._start: float | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="camera")

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start, self._tick = now, 0
        else:
            self._tick += 1
            due = self._start + self._tick / self.fps
            if now > due + 1.0 / self.fps:  # late: resume on the current tick
                current = int((now - self._start) * self.fps)
                self.ticks_skipped += current - self._tick
                self._tick = current
            else:
                await asyncio.sleep(max(0.0, due - now))
        loop = asyncio.get_running_loop()
        try:
            frame = await loop.run_in_executor(self._executor, self._read_frame)
        except RuntimeError:  # executor shut down: the track was stopped meanwhile
            raise MediaStreamError from None
        if frame is None or self.readyState != "live":
            self.stop()
            raise MediaStreamError
        frame.pts = round(self._tick * VIDEO_CLOCK_RATE / self.fps)
        frame.time_base = VIDEO_TIME_BASE
        self.frames_sent += 1
        return frame

    def _read_frame(self) -> av.VideoFrame | None:
        rgb = self.source.read()
        if rgb is None:
            return None
        return av.VideoFrame.from_ndarray(rgb, format="rgb24")

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
            self._executor.submit(self.source.close)
            self._executor.shutdown(wait=False)


# -- audio ----------------------------------------------------------------------------------


class BlockQueue:
    """A thread-safe FIFO of audio blocks holding at most `maxlen`; when full, `put` drops the
    oldest block and counts it (a slow reader loses the past, never the present)."""

    def __init__(self, maxlen: int) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be >= 1")
        self.maxlen = maxlen
        self.dropped_blocks = 0
        self.dropped_samples = 0
        self._blocks: collections.deque[np.ndarray] = collections.deque()
        self._closed = False
        self._cond = threading.Condition()

    def put(self, block: np.ndarray) -> None:
        with self._cond:
            if self._closed:
                return
            if len(self._blocks) >= self.maxlen:
                old = self._blocks.popleft()
                self.dropped_blocks += 1
                self.dropped_samples += len(old)
            self._blocks.append(block)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> np.ndarray | None:
        """The oldest block; None when the queue was closed and is empty, or after `timeout`
        with nothing queued (check `closed` to tell the two apart)."""
        with self._cond:
            self._cond.wait_for(lambda: self._blocks or self._closed, timeout)
            return self._blocks.popleft() if self._blocks else None

    def close(self) -> None:
        """No more blocks will come; readers get the rest, then None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._blocks)


class AudioSource(ABC):
    """Where a MicrophoneTrack's sound comes from: float32 blocks at `sample_rate`."""

    sample_rate: int
    channels: int

    @abstractmethod
    def read(self, timeout: float) -> np.ndarray | None:
        """The next (N, channels) float32 block in [-1, 1]; an empty block when none came within
        `timeout`; None when the source has ended."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the device. Called once when the track stops."""


class QueuedAudioSource(AudioSource):
    """An AudioSource fed by a producer thread (a device callback) through a BlockQueue."""

    def __init__(self, sample_rate: int, channels: int = 1, max_blocks: int = 50) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self.queue = BlockQueue(max_blocks)

    def push(self, block: np.ndarray) -> None:
        """Called by the producer (possibly a real-time audio thread): copy and enqueue."""
        self.queue.put(np.array(block, dtype=np.float32, copy=True).reshape(-1, self.channels))

    def end(self) -> None:
        """The producer has no more audio."""
        self.queue.close()

    def read(self, timeout: float) -> np.ndarray | None:
        block = self.queue.get(timeout)
        if block is None:
            return None if self.queue.closed else np.zeros((0, self.channels), np.float32)
        return block

    @property
    def dropped_blocks(self) -> int:
        return self.queue.dropped_blocks

    def close(self) -> None:
        self.queue.close()


class SoundDeviceMic(QueuedAudioSource):
    """A microphone through sounddevice.InputStream: 48 kHz when the device takes it, else its
    default rate; mono (the model hears one channel). The callback only copies into the queue."""

    def __init__(self, device: int | str | None = None, max_blocks: int = 50) -> None:
        sd = _import_sounddevice()
        try:
            info = sd.query_devices(device, "input")
        except (ValueError, sd.PortAudioError) as exc:
            what = "no default microphone" if device is None else f"no microphone {device!r}"
            raise NoDeviceError(f"{what} ({exc})") from exc
        self.name = str(info["name"])
        rate = AUDIO_RATE
        try:
            sd.check_input_settings(device=device, channels=1, samplerate=rate, dtype="float32")
        except (ValueError, sd.PortAudioError):
            rate = int(info["default_samplerate"])
        super().__init__(rate, channels=1, max_blocks=max_blocks)
        self._stream = sd.InputStream(
            device=device,
            channels=1,
            samplerate=rate,
            dtype="float32",
            blocksize=rate // 100,  # 10 ms
            callback=self._callback,
            finished_callback=self.end,
        )
        self._stream.start()
        log.info("microphone %r at %d Hz", self.name, rate)

    def _callback(self, indata: np.ndarray, frames: int, when: Any, status: Any) -> None:
        if status:
            log.debug("microphone status: %s", status)
        self.push(indata)

    def close(self) -> None:
        super().close()
        with contextlib.suppress(Exception):
            self._stream.stop()
            self._stream.close()


class MicrophoneTrack(MediaStreamTrack):
    """An audio track of 20 ms, 48 kHz, s16 stereo frames (L = R) made from `source` blocks.

    pts counts samples sent (time base 1/48000), so it rises by exactly 960 per frame. Blocks at
    another rate go through one stateful resampler (no clicks at block edges).
    """

    kind = "audio"

    def __init__(self, source: AudioSource) -> None:
        super().__init__()
        self.source = source
        self.samples_sent = 0
        self._pending = np.zeros(0, np.float32)  # 48 kHz mono not yet sent
        self._ended = False
        self._resampler = (
            None
            if source.sample_rate == AUDIO_RATE
            else av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        )
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="microphone")

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            try:
                frame = await loop.run_in_executor(self._executor, self._next_frame)
            except RuntimeError:  # executor shut down: stopped meanwhile
                raise MediaStreamError from None
            if frame is not None:
                return frame
            if self._ended:
                self.stop()
                raise MediaStreamError

    def _next_frame(self) -> av.AudioFrame | None:
        """A frame once 960 samples are there; None after READ_TIMEOUT_SECONDS without one (or
        at the end of the source, with `_ended` set) so recv can notice a stop."""
        deadline = time.monotonic() + READ_TIMEOUT_SECONDS
        while self._pending.size < AUDIO_FRAME_SAMPLES:
            if self._ended:
                return None
            block = self.source.read(max(0.0, deadline - time.monotonic()))
            if block is None:
                self._ended = True
                return None
            if block.size:
                self._pending = np.concatenate([self._pending, self._to_48k_mono(block)])
            elif time.monotonic() >= deadline:
                return None
        mono, self._pending = (
            self._pending[:AUDIO_FRAME_SAMPLES],
            self._pending[AUDIO_FRAME_SAMPLES:],
        )
        pcm = (np.clip(mono, -1.0, 1.0) * 32767.0).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(pcm, 2)[None, :], format="s16", layout="stereo"
        )
        frame.sample_rate = AUDIO_RATE
        frame.pts = self.samples_sent
        frame.time_base = AUDIO_TIME_BASE
        self.samples_sent += AUDIO_FRAME_SAMPLES
        return frame

    def _to_48k_mono(self, block: np.ndarray) -> np.ndarray:
        mono = np.asarray(block, np.float32)
        if mono.ndim == 2:
            mono = mono.mean(axis=1, dtype=np.float32)
        if self._resampler is None:
            return mono
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(mono)[None, :], "flt", "mono")
        frame.sample_rate = self.source.sample_rate
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
            self._executor.submit(self.source.close)
            self._executor.shutdown(wait=False)


# -- devices --------------------------------------------------------------------------------


def _quiet_opencv() -> None:
    """OpenCV logs a warning per index it cannot open; probing is expected to miss."""
    import cv2

    with contextlib.suppress(Exception):
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def _import_sounddevice() -> Any:
    try:
        import sounddevice
    except OSError as exc:  # the PortAudio library is missing
        raise NoDeviceError(
            f"sounddevice cannot load PortAudio ({exc}); install it (Debian: libportaudio2)"
        ) from exc
    return sounddevice


def probe_cameras(count: int = CAMERA_PROBE_INDICES) -> list[tuple[int, int, int]]:
    """(index, width, height) of each OpenCV camera index in 0..count-1 that gives a frame."""
    import cv2

    _quiet_opencv()
    found = []
    for index in range(count):
        cap = cv2.VideoCapture(index)
        try:
            if cap.isOpened():
                ok, frame = cap.read()
                if ok and frame is not None:
                    found.append((index, frame.shape[1], frame.shape[0]))
        finally:
            cap.release()
    return found


def microphones() -> tuple[list[tuple[int, str, int, bool]], str | None]:
    """((index, name, default rate, is default), ...) of input devices, and why there are none
    when sounddevice itself cannot run."""
    try:
        sd = _import_sounddevice()
    except NoDeviceError as exc:
        return [], str(exc)
    try:
        devices = sd.query_devices()
        default_in = sd.default.device[0]
    except sd.PortAudioError as exc:
        return [], f"PortAudio: {exc}"
    return [
        (i, str(d["name"]), int(d["default_samplerate"]), i == default_in)
        for i, d in enumerate(devices)
        if d["max_input_channels"] > 0
    ], None


def list_devices() -> str:
    """What `--list-devices` prints."""
    lines = [f"Cameras (OpenCV indices 0-{CAMERA_PROBE_INDICES - 1}, pick with --camera INDEX):"]
    cams = probe_cameras()
    lines += [f"  {i}: {w}x{h}" for i, w, h in cams] or ["  none found"]
    lines.append("Microphones (sounddevice, pick with --mic INDEX or a part of the name):")
    mics, why = microphones()
    lines += [
        f"  {i}: {name} ({rate} Hz){' [default]' if default else ''}"
        for i, name, rate, default in mics
    ] or [f"  none found{f' ({why})' if why else ''}"]
    return "\n".join(lines)


def _open_sources(
    args: argparse.Namespace,
) -> tuple[FrameSource | None, AudioSource | None]:
    """Open what was asked for. A device named explicitly must open; with defaults, one missing
    device leaves the other streaming (said on stderr); none at all is an error."""
    want_video, want_audio = not args.no_video, not args.no_audio
    if not want_video and not want_audio:
        raise CaptureError("--no-video and --no-audio leave nothing to send")
    camera: FrameSource | None = None
    mic: AudioSource | None = None
    missing: list[str] = []
    if want_video:
        try:
            camera = OpenCVCamera(args.camera, (args.width, args.height), args.fps)
        except NoDeviceError as exc:
            if args.camera_explicit:
                raise NoDeviceError(f"{exc}; run `merclip capture --list-devices`") from None
            missing.append(f"{exc} (pick one with --camera INDEX, or pass --no-video)")
    if want_audio:
        try:
            mic = SoundDeviceMic(args.mic)
        except NoDeviceError as exc:
            if args.mic is not None:
                if camera is not None:
                    camera.close()
                raise NoDeviceError(f"{exc}; run `merclip capture --list-devices`") from None
            missing.append(f"{exc} (pick one with --mic DEVICE, or pass --no-audio)")
    if camera is None and mic is None:
        raise NoDeviceError(
            "nothing to capture: "
            + "; ".join(missing)
            + ". Run `merclip capture --list-devices` to see the devices there are."
        )
    if missing:
        only = "camera" if camera is not None else "microphone"
        print(f"merclip capture: {missing[0]}: streaming the {only} only", file=sys.stderr)
    return camera, mic


# -- session --------------------------------------------------------------------------------


@dataclass
class CaptureResult:
    session_id: str
    seconds: float
    """How long media was sent."""
    video_frames: int
    audio_seconds: float
    audio_dropped_blocks: int
    events: int
    """Events received over GET /events (0 without an event handler)."""


async def read_events(
    url: str, session_id: str, on_event: Callable[[dict[str, Any]], None]
) -> None:
    """Call `on_event` with each event of the session from the server's SSE route, until
    cancelled or the server ends the stream. Raises CaptureError when the server has none."""
    events_url = f"{url.rstrip('/')}/events/{session_id}"
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.get(events_url, headers={"Accept": "text/event-stream"}) as resp:
            if resp.status != 200:
                detail = (await resp.text())[:200]
                raise CaptureError(f"GET {events_url}: HTTP {resp.status}: {detail}")
            data: list[str] = []
            async for raw in resp.content:
                line = raw.decode("utf-8").rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
                elif not line and data:  # a blank line ends one SSE message
                    on_event(json.loads("\n".join(data)))
                    data = []


async def capture(
    url: str,
    camera: FrameSource | None,
    mic: AudioSource | None,
    *,
    session_id: str | None = None,
    seconds: float | None = None,
    fps: float = 15.0,
    on_session: Callable[[str], None] | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    linger: float = EVENTS_LINGER_SECONDS,
    ice_servers: tuple[str, ...] = (),
) -> CaptureResult:
    """Stream `camera` and/or `mic` to the server at `url` until both end, `seconds` pass, or
    the task is cancelled (Ctrl-C). With `on_event`, the session's events are read back over
    SSE while streaming and for up to `linger` seconds after. Sources are closed on return."""
    video = CameraTrack(camera, fps) if camera is not None else None
    audio = MicrophoneTrack(mic) if mic is not None else None
    tracks: list[MediaStreamTrack] = [t for t in (audio, video) if t is not None]
    if not tracks:
        raise CaptureError("nothing to send: no camera and no microphone")
    events = 0

    def count_event(event: dict[str, Any]) -> None:
        nonlocal events
        events += 1
        assert on_event is not None
        on_event(event)

    try:
        pc, sid = await connect_peer(url, tracks, session_id=session_id, ice_servers=ice_servers)
    except BaseException as exc:
        for track in tracks:
            track.stop()
        if isinstance(exc, aiohttp.ClientError | OSError):
            raise CaptureError(
                f"cannot reach the server at {url} ({exc}); is `merclip serve` running there?"
            ) from exc
        raise
    if on_session is not None:
        on_session(sid)
    watch = PeerWatch(pc, tracks)

    reader = (
        asyncio.create_task(read_events(url, sid, count_event), name="capture-events")
        if on_event is not None
        else None
    )
    started = time.monotonic()
    try:
        await watch.until_connected(sid, CaptureError, "pass --ice-server")
        started = time.monotonic()
        log.info("session %s: connected, streaming %s", sid, " + ".join(t.kind for t in tracks))
        waits = [watch.ended, watch.failed] + ([_task_done(reader)] if reader is not None else [])
        await first_of(*waits, timeout=seconds)
        watch.raise_if_failed(sid, CaptureError)
        if reader is not None and reader.done():
            reader.result()  # an SSE failure surfaces here
    finally:
        sent_for = time.monotonic() - started
        for track in tracks:
            track.stop()
        await pc.close()
        if reader is not None:
            try:
                current = asyncio.current_task()
                if not reader.done() and not (current and current.cancelling()):
                    # The last windows are flushed when the session closes; events follow.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(reader), linger)
            finally:
                reader.cancel()
                await asyncio.wait([reader])  # never raises: cancelled-ness stays ours
                if not reader.cancelled() and reader.exception() is not None:
                    log.warning("session %s: events: %s", sid, reader.exception())
    dropped = mic.dropped_blocks if isinstance(mic, QueuedAudioSource) else 0
    if dropped:
        log.warning("session %s: %d microphone blocks dropped (reader too slow)", sid, dropped)
    return CaptureResult(
        session_id=sid,
        seconds=sent_for,
        video_frames=video.frames_sent if video is not None else 0,
        audio_seconds=(audio.samples_sent / AUDIO_RATE) if audio is not None else 0.0,
        audio_dropped_blocks=dropped,
        events=events,
    )


def _task_done(task: asyncio.Task[Any]) -> asyncio.Event:
    done = asyncio.Event()
    task.add_done_callback(lambda _: done.set())
    return done


# -- command --------------------------------------------------------------------------------


def _device(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", default=None, help="server base URL (default: http://server.host:server.port)"
    )
    parser.add_argument(
        "--camera",
        type=_device,
        default=None,
        help="OpenCV camera index, device path or stream URL (default: 0)",
    )
    parser.add_argument(
        "--mic",
        type=_device,
        default=None,
        help="sounddevice input: index or part of its name (default: the system default)",
    )
    parser.add_argument("--list-devices", action="store_true", help="list cameras and mics")
    parser.add_argument("--no-video", action="store_true", help="send the microphone only")
    parser.add_argument("--no-audio", action="store_true", help="send the camera only")
    parser.add_argument("--seconds", type=float, default=None, help="stop after N seconds")
    parser.add_argument("--session", default=None, help="session id (default: server assigns)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument(
        "--events", action="store_true", help="print the session's events as JSON lines"
    )
    parser.add_argument(
        "--ice-server",
        action="append",
        default=None,
        help="STUN/TURN URL (repeatable; default: server.ice_servers)",
    )


def _print_line(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.list_devices:
        _print_line(list_devices())
        return 0
    if args.width < 16 or args.height < 16 or args.width % 2 or args.height % 2:
        raise CaptureError("--width and --height must be even and at least 16")
    if args.fps <= 0:
        raise CaptureError("--fps must be > 0")
    args.camera_explicit = args.camera is not None
    if args.camera is None:
        args.camera = 0
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    url = args.url or f"http://{settings.server.host}:{settings.server.port}"
    camera, mic = _open_sources(args)
    ice = tuple(args.ice_server) if args.ice_server else settings.server.ice_servers
    result = asyncio.run(
        capture(
            url,
            camera,
            mic,
            session_id=args.session,
            seconds=args.seconds,
            fps=args.fps,
            on_session=_print_line,
            on_event=(lambda ev: _print_line(json.dumps(ev))) if args.events else None,
            ice_servers=ice,
        )
    )
    log.info(
        "session %s: sent %.1f s (%d video frames, %.1f s audio, %d mic blocks dropped)",
        result.session_id,
        result.seconds,
        result.video_frames,
        result.audio_seconds,
        result.audio_dropped_blocks,
    )
    return 0

"""`merclip capture`: send the local camera and microphone to a server as WebRTC tracks.

    merclip capture --url http://localhost:8080/ --events
    merclip capture --list-devices

`capture()` streams any FrameSource and AudioSource (stream/clients/tracks.py; the real devices
are in stream/clients/devices.py) through `connect_peer` (stream/clients/peer_client.py) and, with
`on_event`, reads the session's events back over the server's `GET /events/{session}`
(server-sent events), so the client needs no Redis. The command's `add_arguments` and `run` are
at the bottom.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from merclip.errors import ConfigError
from stream.clients.devices import OpenCVCamera, SoundDeviceMic, list_devices
from stream.clients.peer_client import PeerWatch, connect_peer, first_of, read_events
from stream.clients.tracks import (
    AUDIO_RATE,
    AudioSource,
    CameraTrack,
    FrameSource,
    MicrophoneTrack,
    QueuedAudioSource,
)
from stream.errors import CaptureError, NoDeviceError
from stream.settings import StreamSettings

__all__ = ["EVENTS_LINGER_SECONDS", "CaptureResult", "add_arguments", "capture", "run"]

log = logging.getLogger(__name__)

EVENTS_LINGER_SECONDS = 5.0
"""With --events: keep printing after the media stops, for the last windows' events."""


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
    pc, sid = await _connect(url, tracks, session_id, ice_servers)
    if on_session is not None:
        on_session(sid)
    watch = PeerWatch(pc, tracks)
    events = _EventCount(on_event)
    reader = events.start_reading(url, sid)
    started = time.monotonic()
    try:
        await watch.until_connected(sid, CaptureError, "pass --ice-server")
        started = time.monotonic()
        log.info("session %s: connected, streaming %s", sid, " + ".join(t.kind for t in tracks))
        await _stream(watch, sid, reader, seconds)
    finally:
        sent_for = time.monotonic() - started
        for track in tracks:
            track.stop()
        await pc.close()
        if reader is not None:
            await _finish_reading(reader, sid, linger)
    return _result(sid, sent_for, video, audio, mic, events.count)


async def _connect(
    url: str, tracks: Sequence[MediaStreamTrack], session_id: str | None, ice: tuple[str, ...]
) -> tuple[RTCPeerConnection, str]:
    """`connect_peer`; when it fails the tracks are stopped (the devices released), and a server
    that cannot be reached is a CaptureError that says so."""
    try:
        return await connect_peer(url, tracks, session_id=session_id, ice_servers=ice)
    except BaseException as exc:
        for track in tracks:
            track.stop()
        if isinstance(exc, aiohttp.ClientError | OSError):
            raise CaptureError(
                f"cannot reach the server at {url} ({exc}); is `merclip serve` running there?"
            ) from exc
        raise


class _EventCount:
    """Passes the session's events on to `on_event`, counting them."""

    def __init__(self, on_event: Callable[[dict[str, Any]], None] | None) -> None:
        self.on_event = on_event
        self.count = 0

    def __call__(self, event: dict[str, Any]) -> None:
        self.count += 1
        assert self.on_event is not None
        self.on_event(event)

    def start_reading(self, url: str, sid: str) -> asyncio.Task[None] | None:
        """The task reading the session's events over SSE; None without `on_event`."""
        if self.on_event is None:
            return None
        return asyncio.create_task(read_events(url, sid, self), name="capture-events")


async def _stream(
    watch: PeerWatch, sid: str, reader: asyncio.Task[None] | None, seconds: float | None
) -> None:
    """Wait until the tracks end, the connection fails, the events reader stops, or `seconds`
    pass; a lost connection or a failed reader is raised here."""
    waits = [watch.ended, watch.failed] + ([_task_done(reader)] if reader is not None else [])
    await first_of(*waits, timeout=seconds)
    watch.raise_if_failed(sid, CaptureError)
    if reader is not None and reader.done():
        reader.result()  # an SSE failure surfaces here


def _task_done(task: asyncio.Task[Any]) -> asyncio.Event:
    done = asyncio.Event()
    task.add_done_callback(lambda _: done.set())
    return done


async def _finish_reading(reader: asyncio.Task[None], sid: str, linger: float) -> None:
    """Give the events reader up to `linger` seconds more (not when we are being cancelled),
    then end it. A reader that failed meanwhile is logged, never raised."""
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


def _result(
    sid: str,
    sent_for: float,
    video: CameraTrack | None,
    audio: MicrophoneTrack | None,
    mic: AudioSource | None,
    events: int,
) -> CaptureResult:
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


# -- command --------------------------------------------------------------------------------


def _device(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _open_sources(
    args: argparse.Namespace,
) -> tuple[FrameSource | None, AudioSource | None]:
    """Open what was asked for. A device named explicitly must open; with defaults, one missing
    device leaves the other streaming (said on stderr); none at all is an error."""
    if args.no_video and args.no_audio:
        raise ConfigError("--no-video and --no-audio leave nothing to send")
    missing: list[str] = []
    camera = None if args.no_video else _open_camera(args, missing)
    try:
        mic = None if args.no_audio else _open_mic(args, missing)
    except NoDeviceError:
        if camera is not None:
            camera.close()
        raise
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


def _open_camera(args: argparse.Namespace, missing: list[str]) -> FrameSource | None:
    """The camera asked for; None (why: in `missing`) when the default one is not there."""
    try:
        return OpenCVCamera(args.camera, (args.width, args.height), args.fps)
    except NoDeviceError as exc:
        if args.camera_explicit:
            raise NoDeviceError(f"{exc}; run `merclip capture --list-devices`") from None
        missing.append(f"{exc} (pick one with --camera INDEX, or pass --no-video)")
        return None


def _open_mic(args: argparse.Namespace, missing: list[str]) -> AudioSource | None:
    """The microphone asked for; None (why: in `missing`) when the default one is not there."""
    try:
        return SoundDeviceMic(args.mic)
    except NoDeviceError as exc:
        if args.mic is not None:
            raise NoDeviceError(f"{exc}; run `merclip capture --list-devices`") from None
        missing.append(f"{exc} (pick one with --mic DEVICE, or pass --no-audio)")
        return None


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
    parser.add_argument("--width", type=int, default=640, help="camera frame width (even)")
    parser.add_argument("--height", type=int, default=480, help="camera frame height (even)")
    parser.add_argument("--fps", type=float, default=15.0, help="camera frames per second")
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


def run(args: argparse.Namespace, settings: StreamSettings) -> int:
    if args.list_devices:
        _print_line(list_devices())
        return 0
    if args.width < 16 or args.height < 16 or args.width % 2 or args.height % 2:
        raise ConfigError("--width and --height must be even and at least 16")
    if args.fps <= 0:
        raise ConfigError("--fps must be > 0")
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

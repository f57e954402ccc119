"""`merclip stream-file FILE --url URL`: stream a media file to a server as a WebRTC peer.

The file plays in real time through aiortc's MediaPlayer (a WAV gives an audio-only session, a
video file gives audio and video). `connect_peer` is the reusable part: any list of tracks, one
offer, one answer; tests and the benchmark use it with generated tracks.

Loopback: aioice leaves 127.0.0.1 out of its host candidates, so on a machine whose only
interface is `lo` a client and a server cannot connect. When the server URL is a loopback address
(or `loopback=True`), we add 127.0.0.1 to the candidates (`stream.peer.use_loopback_candidates`,
process-wide). Against a remote server nothing is changed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamTrack

from merclip.settings import Settings
from stream.errors import OfferRejectedError, StreamError
from stream.ice import ice_configuration, is_loopback_url, use_loopback_candidates

__all__ = [
    "PeerWatch",
    "first_of",
    "OfferRejectedError",
    "GainTrack",
    "add_arguments",
    "connect_peer",
    "is_loopback_url",
    "run",
    "stream_file",
]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 15.0
DRAIN_SECONDS = 0.5
"""Wait after the file ends before closing, so the receiver's jitter buffer empties."""


class GainTrack(MediaStreamTrack):
    """Passes s16 audio through, multiplied by `gain` (clipped to the s16 range).

    aiortc's MediaPlayer turns every file into 48 kHz stereo with libswresample, whose mono →
    stereo matrix puts 0.707 of the signal in each channel: a mono file would reach the server
    3 dB quieter than it is, unlike a browser's mono Opus, which decodes to L = R at full level.
    `stream_file` applies gain √2 to mono files to undo exactly that.
    """

    kind = "audio"

    def __init__(self, source: MediaStreamTrack, gain: float) -> None:
        super().__init__()
        self._source = source
        self.gain = gain
        source.on("ended", self.stop)

    async def recv(self) -> av.AudioFrame:
        frame = await self._source.recv()
        assert isinstance(frame, av.AudioFrame)
        if frame.format.name != "s16" or self.gain == 1.0:
            return frame
        pcm = frame.to_ndarray().astype(np.float32) * np.float32(self.gain)
        out = av.AudioFrame.from_ndarray(
            np.clip(pcm, -32768, 32767).astype(np.int16), format="s16", layout=frame.layout.name
        )
        out.sample_rate = frame.sample_rate
        out.pts = frame.pts
        out.time_base = frame.time_base
        return out

    def stop(self) -> None:
        super().stop()
        self._source.stop()


def _audio_channels(path: str | Path) -> int:
    """Channel count of the file's first audio stream (0 when it has none)."""
    with av.open(str(path)) as container:
        streams = container.streams.audio
        return streams[0].codec_context.layout.nb_channels if streams else 0


async def connect_peer(
    url: str,
    tracks: Iterable[MediaStreamTrack],
    session_id: str | None = None,
    options: Mapping[str, Any] | None = None,
    loopback: bool | None = None,
    ice_servers: tuple[str, ...] = (),
    token: str | None = None,
) -> tuple[RTCPeerConnection, str]:
    """Offer `tracks` to the server at `url` (its base URL) and apply its answer.

    Returns the connected-to-be peer and the session id the server chose (or confirmed). The
    caller closes the peer. Raises OfferRejectedError when the server refuses. `token`: a
    publisher access token (stream/auth.py) for servers that require one.
    """
    if loopback or (loopback is None and is_loopback_url(url)):
        use_loopback_candidates()
    pc = RTCPeerConnection(ice_configuration(ice_servers))
    try:
        for track in tracks:
            pc.addTrack(track)
        # aiortc gathers all candidates inside setLocalDescription: no trickle needed.
        await pc.setLocalDescription(await pc.createOffer())
        body: dict[str, Any] = {"sdp": pc.localDescription.sdp, "type": "offer"}
        if session_id is not None:
            body["session_id"] = session_id
        if options:
            body["options"] = dict(options)
        headers = {"Authorization": f"Bearer {token}"} if token else None
        async with aiohttp.ClientSession() as http:
            async with http.post(url.rstrip("/") + "/offer", json=body, headers=headers) as resp:
                reply = await resp.json(content_type=None)
                if resp.status != 200:
                    retry = resp.headers.get("Retry-After", "")
                    raise OfferRejectedError(
                        resp.status, reply, float(retry) if retry.isdigit() else None
                    )
        await pc.setRemoteDescription(RTCSessionDescription(sdp=reply["sdp"], type="answer"))
        return pc, str(reply["session_id"])
    except BaseException:
        await pc.close()
        raise


async def stream_file(
    url: str,
    path: str | Path,
    session_id: str | None = None,
    seconds: float | None = None,
    loopback: bool = False,
    token: str | None = None,
) -> str:
    """Stream `path` to the server in real time until it ends (or for `seconds`); returns the
    session id. Raises StreamError when the server refuses or the connection fails."""
    player = MediaPlayer(str(path))
    audio = player.audio
    if audio is not None and _audio_channels(path) == 1:
        audio = GainTrack(audio, math.sqrt(2.0))
    tracks = [t for t in (audio, player.video) if t is not None]
    if not tracks:
        raise StreamError(f"{path}: no audio or video stream to send")
    pc, sid = await connect_peer(
        url, tracks, session_id=session_id, loopback=loopback or None, token=token
    )
    watch = PeerWatch(pc, tracks)
    try:
        await watch.until_connected(sid, StreamError, "configure server.ice_servers")
        started = time.monotonic()
        await first_of(watch.ended, watch.failed, timeout=seconds)
        watch.raise_if_failed(sid, StreamError)
        if watch.ended.is_set():
            await asyncio.sleep(DRAIN_SECONDS)  # the last packets are still in flight
        log.info("session %s: streamed %.1f s of %s", sid, time.monotonic() - started, path)
        return sid
    finally:
        for track in tracks:
            track.stop()
        await pc.close()


class PeerWatch:
    """What a sending client waits on: the peer connected, failed (or closed), or every track
    ended (the file or the capture stopped)."""

    def __init__(self, pc: RTCPeerConnection, tracks: Sequence[MediaStreamTrack]) -> None:
        self.pc = pc
        self.connected = asyncio.Event()
        self.failed = asyncio.Event()
        self.ended = asyncio.Event()
        self._remaining = len(tracks)
        for track in tracks:
            track.on("ended", self._on_track_ended)
        pc.on("connectionstatechange", self._on_state)

    def _on_track_ended(self) -> None:
        self._remaining -= 1
        if self._remaining == 0:
            self.ended.set()

    def _on_state(self) -> None:
        if self.pc.connectionState == "connected":
            self.connected.set()
        elif self.pc.connectionState in ("failed", "closed"):
            self.failed.set()

    async def until_connected(self, sid: str, error: type[StreamError], hint: str) -> None:
        """Wait for the connection; `error` (with `hint` on what to check) when it fails or
        does not come within CONNECT_TIMEOUT_SECONDS."""
        if not await first_of(self.connected, self.failed, timeout=CONNECT_TIMEOUT_SECONDS):
            raise error(
                f"session {sid}: no WebRTC connection within {CONNECT_TIMEOUT_SECONDS:.0f} s "
                f"(is UDP between you and the server blocked? {hint})"
            )
        if self.failed.is_set():
            raise error(f"session {sid}: the WebRTC connection {self.pc.connectionState}")

    def raise_if_failed(self, sid: str, error: type[StreamError]) -> None:
        """After streaming: a connection lost before the tracks ended is an error."""
        if self.failed.is_set() and not self.ended.is_set():
            raise error(f"session {sid}: the WebRTC connection {self.pc.connectionState}")


async def first_of(*events: asyncio.Event, timeout: float | None) -> bool:
    """Wait until one of `events` is set or `timeout` passes; True when one was set."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
    return bool(done)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="media file (wav, mp4, webm, ...)")
    parser.add_argument(
        "--url", default=None, help="server base URL (default: http://server.host:server.port)"
    )
    parser.add_argument("--session", default=None, help="session id (default: server assigns)")
    parser.add_argument("--seconds", type=float, default=None, help="stop after N seconds")
    parser.add_argument(
        "--loopback", action="store_true", help="offer 127.0.0.1 as an ICE candidate"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    if not args.file.exists():
        raise StreamError(f"{args.file}: no such file")
    url = args.url or f"http://{settings.server.host}:{settings.server.port}"
    sid = asyncio.run(stream_file(url, args.file, args.session, args.seconds, args.loopback))
    print(sid)
    return 0

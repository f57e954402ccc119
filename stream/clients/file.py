"""`merclip stream-file FILE --url URL`: stream a media file to a server as a WebRTC peer.

The file plays in real time through aiortc's MediaPlayer (a WAV gives an audio-only session, a
video file gives audio and video), offered by `connect_peer` (stream/clients/peer_client.py).
With `passthrough` (`--passthrough`), a file already in WebRTC codecs (VP8 / Opus, e.g. a webm)
is sent as its encoded packets, not decoded and encoded again: what a browser costs the machine
it runs on stays off this one (the benchmarks' clients share the server's machine).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import time
from pathlib import Path

import av
import numpy as np
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamTrack

from stream.clients.peer_client import PeerWatch, connect_peer, first_of
from stream.errors import StreamError
from stream.settings import StreamSettings

__all__ = ["DRAIN_SECONDS", "GainTrack", "add_arguments", "run", "stream_file"]

log = logging.getLogger(__name__)

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


async def stream_file(
    url: str,
    path: str | Path,
    session_id: str | None = None,
    seconds: float | None = None,
    loopback: bool = False,
    token: str | None = None,
    passthrough: bool = False,
) -> str:
    """Stream `path` to the server in real time until it ends (or for `seconds`); returns the
    session id. Raises StreamError when the server refuses or the connection fails."""
    player = MediaPlayer(str(path), decode=not passthrough)
    audio = player.audio
    if not passthrough and audio is not None and _audio_channels(path) == 1:
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


# -- command --------------------------------------------------------------------------------


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
    parser.add_argument(
        "--passthrough",
        action="store_true",
        help="send the file's VP8/Opus packets as they are (no decoding and re-encoding)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("MERCLIP_TOKEN"),
        help="publisher access token for a server with auth on (default: $MERCLIP_TOKEN)",
    )


def run(args: argparse.Namespace, settings: StreamSettings) -> int:
    if not args.file.exists():
        raise StreamError(f"{args.file}: no such file")
    url = args.url or f"http://{settings.server.host}:{settings.server.port}"
    sid = asyncio.run(
        stream_file(
            url,
            args.file,
            args.session,
            args.seconds,
            args.loopback,
            args.token,
            passthrough=args.passthrough,
        )
    )
    print(sid)
    return 0

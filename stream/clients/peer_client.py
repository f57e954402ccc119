"""What every sending client does: offer tracks to a server, watch the peer, read events back.

`connect_peer` is the reusable part: any list of tracks, one offer, one answer; the clients
(stream/clients/capture.py, stream/clients/file.py), tests and the benchmarks use it, the latter
with generated tracks. `PeerWatch` and `first_of` are what a client waits on while it streams.

Loopback: aioice leaves 127.0.0.1 out of its host candidates, so on a machine whose only
interface is `lo` a client and a server cannot connect. When the server URL is a loopback address
(or `loopback=True`), we add 127.0.0.1 to the candidates (`stream.ice.use_loopback_candidates`,
process-wide). Against a remote server nothing is changed.

Events come back over the server's `GET /events/{session}` (server-sent events, `read_events`),
so a client needs no Redis.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from stream.errors import CaptureError, OfferRejectedError, StreamError
from stream.ice import ice_configuration, is_loopback_url, use_loopback_candidates

__all__ = [
    "CONNECT_TIMEOUT_SECONDS",
    "PeerWatch",
    "connect_peer",
    "first_of",
    "read_events",
]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 15.0


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


async def read_events(
    url: str,
    session_id: str,
    on_event: Callable[[dict[str, Any]], None],
    on_partial: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Call `on_event` with each event of the session from the server's SSE route, until
    cancelled or the server ends the stream. Partial transcripts (`event: partial`) go to
    `on_partial`, or nowhere without one: they are not events and carry no scores. Raises
    CaptureError when the server has none."""
    events_url = f"{url.rstrip('/')}/events/{session_id}"
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.get(events_url, headers={"Accept": "text/event-stream"}) as resp:
            if resp.status != 200:
                detail = (await resp.text())[:200]
                raise CaptureError(f"GET {events_url}: HTTP {resp.status}: {detail}")
            data: list[str] = []
            kind = "message"  # SSE's default event type
            async for raw in resp.content:
                line = raw.decode("utf-8").rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
                elif line.startswith("event:"):
                    kind = line[6:].strip()
                elif not line:  # a blank line ends one SSE message
                    handler = {"message": on_event, "partial": on_partial}.get(kind)
                    if data and handler is not None:
                        handler(json.loads("\n".join(data)))
                    data, kind = [], "message"

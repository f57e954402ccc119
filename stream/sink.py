"""The contract between stream/ and ingest: what one WebRTC session delivers, and to whom.

stream/ turns WebRTC media into 16 kHz mono float32 audio and RGB frames stamped with media time,
and knows nothing about windows or Redis. Ingest (workers/ingest.py) implements `MediaSink`; the
server makes one per session from a `SessionInfo` (stream/app.py, `create_app(settings,
sink_factory)`), and the session's reader tasks (stream/peer.py) feed it.

Media time is seconds since the session started (`SessionInfo.started_monotonic`, on
`time.monotonic()`), taken when a frame arrives; stream/peer.py says why not RTP time.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

__all__ = ["CloseReason", "MediaSink", "SessionInfo"]

CloseReason = Literal[
    "closed",
    "connection_closed",
    "connection_failed",
    "inactivity",
    "sink_error",
    "replaced",
    "offer_failed",
    "shutdown",
    "connect_timeout",
]
"""Why a session ended: the `reason` label of merclip_stream_sessions_closed and
`PeerSession.close_reason`. "closed" is `PeerSession.aclose()` called without a reason."""


class MediaSink(Protocol):
    """Where one session's media goes (implemented by ingest). Called on the event loop."""

    def on_audio(self, samples: np.ndarray, media_time_end: float) -> None:
        """(N,) float32 16 kHz mono samples whose last sample arrived at `media_time_end`."""

    def wants_frame(self, media_time: float) -> bool:
        """Whether to convert and deliver the video frame that arrived at `media_time`."""

    def on_frame(self, rgb: np.ndarray, media_time: float) -> None:
        """(H, W, 3) uint8 RGB frame that arrived at `media_time`."""

    def on_close(self) -> None:
        """The session ended; called exactly once, after the last on_audio/on_frame."""


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    started_wall: float
    """Unix time when the session was created."""
    started_monotonic: float
    """time.monotonic() at the same instant: media time 0."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Client options from the offer body, passed through untouched."""
    connection_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    """New for every WebRTC connection, also when a client reconnects under the same session_id:
    window numbers restart at 0 per connection, so windows and events are named by (session_id,
    connection_id, seq)."""

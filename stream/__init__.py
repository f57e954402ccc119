"""WebRTC ingest: the aiohttp server, the browser page, and WebRTC clients.

`create_app(settings, sink_factory, events_factory)` (stream/app.py) is the server; `MediaSink`
(stream/sink.py) is what ingest implements to receive one session's audio (16 kHz mono float32)
and video frames (RGB). The clients are in stream/clients/.

`create_app` is imported on first use, so that a client (`import stream.clients.capture`) does
not load the server modules with this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stream.sink import MediaSink, SessionInfo

if TYPE_CHECKING:
    from stream.app import create_app

__all__ = ["MediaSink", "SessionInfo", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from stream.app import create_app

        return create_app
    raise AttributeError(f"module 'stream' has no attribute {name!r}")

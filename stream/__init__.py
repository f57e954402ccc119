"""WebRTC ingest: the aiohttp server, the browser page, and WebRTC clients.

`create_app(settings, sink_factory, events_factory)` is the server; `MediaSink` is what ingest
implements to receive one session's audio (16 kHz mono float32) and video frames (RGB).
"""

from stream.peer import MediaSink, SessionInfo
from stream.server import create_app

__all__ = ["MediaSink", "SessionInfo", "create_app"]

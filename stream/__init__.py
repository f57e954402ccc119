"""WebRTC ingest: the aiohttp server, the browser page, and WebRTC clients.

`create_app(settings, sink_factory, events_factory)` (stream/app.py) is the server; `MediaSink`
(stream/sink.py) is what ingest implements to receive one session's audio (16 kHz mono float32)
and video frames (RGB).
"""

from stream.app import create_app
from stream.sink import MediaSink, SessionInfo

__all__ = ["MediaSink", "SessionInfo", "create_app"]

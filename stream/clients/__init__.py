"""WebRTC clients of the ingest server, apart from the server code (they import only stream.ice
and stream.errors from stream/):

- `peer_client.py`: `connect_peer`, `PeerWatch`, `first_of` and the SSE reader `read_events`,
  shared by every client (and by tests and benchmarks);
- `tracks.py`: `CameraTrack`, `MicrophoneTrack` and the source interfaces they read;
- `devices.py`: the OpenCV camera, the sounddevice microphone, device probing;
- `capture.py`: `merclip capture` (`capture()` and the command);
- `file.py`: `merclip stream-file` (`stream_file()` and the command).
"""

from stream.clients.peer_client import PeerWatch, connect_peer, read_events

__all__ = ["PeerWatch", "connect_peer", "read_events"]

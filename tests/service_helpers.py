"""Test support for the tests that run a whole LiveService (embedded Redis, faster-whisper tiny.en,
test-size CLIP and MER-CLIP) on this machine."""

from __future__ import annotations

from workers.app.settings import Settings

__all__ = ["tiny_settings"]


def tiny_settings(**redis: object) -> Settings:
    """The smallest real service: test-size models, any free port, short windows (fast events)."""
    s = Settings()
    s = s.replace("server", host="127.0.0.1", port=0)
    s = s.replace("model", name="merclip-tiny-live")
    s = s.replace("clip", model="merclip-tiny-clip")
    s = s.replace("features", space="live").replace("model", checkpoint="")
    s = s.replace("ingest", window_seconds=3.0, hop_seconds=1.5, video_fps=2.0)
    if redis:
        s = s.replace("redis", **redis)
    return s

"""The settings sections of the transport layer: [server] (HTTP, WebRTC, SSE) and [auth].

Defaults are the ones documented in the repository's `config.toml`; `workers/app/settings.py`
reads the file and the environment into them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from merclip.typed_config import check

__all__ = ["AuthSettings", "ServerSettings", "StreamSettings"]


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    ice_servers: tuple[str, ...] = ()
    max_sessions: int = 8
    max_body_bytes: int = 262144
    inactivity_timeout_seconds: float = 20.0
    connect_timeout_seconds: float = 10.0
    """A session whose peer has not reached ICE/DTLS "connected" this long after its offer is
    closed (review L1)."""
    read_timeout_seconds: float = 10.0
    """Request headers, and a POST body, must arrive within this (slowloris, review L4); also
    how long an idle keep-alive connection stays open."""
    max_event_streams: int = 64
    """Server-sent event streams (/events/*, /dashboard/events) open at once; more get 503."""
    recycle_after_sessions: int = 0
    """Drain and exit after this many new sessions (0: never): recycles a long-lived process."""
    drain_timeout_seconds: float = 0.0
    """A drain stops waiting for live sessions after this long and closes them (0: no limit)."""

    def validate(self) -> None:
        check(0 <= self.port <= 65535, "server.port", "must be in 0..65535")
        check(self.max_sessions >= 1, "server.max_sessions", "must be >= 1")
        check(self.max_event_streams >= 1, "server.max_event_streams", "must be >= 1")
        check(self.recycle_after_sessions >= 0, "server.recycle_after_sessions", "must be >= 0")
        check(self.drain_timeout_seconds >= 0, "server.drain_timeout_seconds", "must be >= 0")
        check(self.connect_timeout_seconds > 0, "server.connect_timeout_seconds", "must be > 0")
        check(self.read_timeout_seconds > 0, "server.read_timeout_seconds", "must be > 0")
        check(self.max_body_bytes >= 1024, "server.max_body_bytes", "must be >= 1024")


@dataclass(frozen=True)
class AuthSettings:
    enabled: Literal["auto", "on", "off"] = "auto"
    """auto: on whenever server.host is not a loopback address."""
    secret: str = field(default="", repr=False)
    """HMAC key for access tokens (>= 16 bytes); set it via MERCLIP_AUTH_SECRET, not the file."""
    token_ttl_s: float = 3600.0
    """Default lifetime of tokens minted with `merclip token issue`."""

    def validate(self) -> None:
        check(self.token_ttl_s > 0, "auth.token_ttl_s", "must be > 0")


class StreamSettings(Protocol):
    """What stream/ reads (workers.app.settings.Settings has it all)."""

    @property
    def server(self) -> ServerSettings: ...
    @property
    def auth(self) -> AuthSettings: ...

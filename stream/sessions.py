"""The live sessions of one server: a bounded registry, and one lock per session id for offers.

`SessionRegistry` counts sessions in and out (`merclip_stream_sessions`) and refuses a new one
with 503 + Retry-After when every slot is taken. A `session_id` that is already live is a
reconnect: the new peer takes the old one's slot in one step (`replace`), so no other offer can
take the slot in between. `SessionLocks` lets the offer handler (stream/signaling.py) handle
offers for one session id one at a time.

Draining (`drain()`, or by itself after `recycle_after` sessions): a node about to be recycled
refuses new session ids with 503 `draining` + Retry-After, still takes reconnects of its live
sessions (they need no new slot), and `wait_empty()` returns once its last session has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import Gauge

from stream.errors import DrainingError, ServerFullError, SessionBusyError
from stream.peer import PeerSession
from stream.sink import CloseReason

__all__ = ["REGISTRY", "RETRY_AFTER_SECONDS", "SESSIONS", "SessionLocks", "SessionRegistry"]

RETRY_AFTER_SECONDS = 5

SESSIONS = Gauge("merclip_stream_sessions", "Live WebRTC sessions")


class SessionRegistry:
    """The live sessions of one server, bounded by `max_sessions`."""

    def __init__(self, max_sessions: int, recycle_after: int = 0) -> None:
        self.max_sessions = max_sessions
        self.recycle_after = recycle_after
        """Drain by itself once this many sessions have been let in (0: never)."""
        self._sessions: dict[str, PeerSession] = {}
        self.rejected_full = 0
        """Offers refused because every slot was taken."""
        self.admitted = 0
        """New sessions let in since start (a reconnect is not a new one)."""
        self.draining = False
        self._drain_requested = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def count(self) -> int:
        return len(self._sessions)

    def get(self, session_id: str) -> PeerSession | None:
        return self._sessions.get(session_id)

    def sessions(self) -> list[PeerSession]:
        return list(self._sessions.values())

    def drain(self) -> None:
        """Take no new session from now on (idempotent); live ones go on to their end."""
        self.draining = True
        self._drain_requested.set()

    async def wait_drain_requested(self) -> None:
        await self._drain_requested.wait()

    async def wait_empty(self) -> None:
        """Return when no session is live (at once when none is)."""
        await self._empty.wait()

    def check_capacity(self) -> None:
        """Raise DrainingError when draining, ServerFullError when every slot is taken."""
        if self.draining:
            raise DrainingError(
                "this server is draining (about to restart) and takes no new session; retry, "
                "or connect to another node",
                retry_after=RETRY_AFTER_SECONDS,
            )
        if len(self._sessions) >= self.max_sessions:
            self.rejected_full += 1
            raise ServerFullError(
                f"all {self.max_sessions} session slots are in use; retry later",
                retry_after=RETRY_AFTER_SECONDS,
            )

    def add(self, session: PeerSession) -> None:
        """Count `session` in. A different live session under the same id is refused
        (SessionBusyError): overwriting it would leave that peer streaming, uncounted (H2)."""
        held = self._sessions.get(session.session_id)
        if held is session:
            return
        if held is not None:
            raise SessionBusyError(
                f"session {session.session_id!r} is already live; its offer is still being "
                "handled: retry"
            )
        self.check_capacity()
        self._sessions[session.session_id] = session
        self._empty.clear()
        SESSIONS.inc()
        self.admitted += 1
        if self.recycle_after and self.admitted >= self.recycle_after:
            self.drain()

    def replace(self, old: PeerSession, new: PeerSession) -> None:
        """Count `new` in place of `old` (a reconnect), in one step: no other offer can take the
        slot between the two. If `old` has already gone, this is `add(new)`."""
        if self._sessions.get(old.session_id) is old and new.session_id == old.session_id:
            self._sessions[new.session_id] = new
        else:
            self.add(new)

    def remove(self, session: PeerSession) -> None:
        if self._sessions.get(session.session_id) is session:
            del self._sessions[session.session_id]
            SESSIONS.dec()
            if not self._sessions:
                self._empty.set()

    async def aclose_all(self, reason: CloseReason) -> None:
        sessions = self.sessions()
        await asyncio.gather(*(s.aclose(reason) for s in sessions), return_exceptions=True)


class SessionLocks:
    """One asyncio.Lock per session id, forgotten as soon as nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[None]:
        entry = self._locks.get(session_id)
        lock, users = entry if entry is not None else (asyncio.Lock(), 0)
        self._locks[session_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[session_id]
            if users == 1:
                del self._locks[session_id]
            else:
                self._locks[session_id] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


REGISTRY = web.AppKey("merclip_sessions", SessionRegistry)
"""app[REGISTRY]: the live sessions of an app made by create_app (stream/app.py)."""

"""Python subscriber API: typed EmotionEvents from Redis, history first, then live.

    async for event in subscribe(url, session="abc", replay=10):
        print(event.emotions_predicted)

How it avoids gaps and duplicates: it subscribes to the live channel *before* reading the
session stream(s) for the replay, so an event published while the history is read arrives on the
channel too; every event id is yielded once (a bounded memory of recent ids). Live delivery uses
pub/sub, which is fire-and-forget: a subscriber that stops reading for long is disconnected by
Redis at its output-buffer limit; a consumer that must miss nothing reads the per-session stream
`P:{S}:events` with XREAD instead (docs/REDIS.md).

Stopping: `break` out of the loop or cancel the task; the generator then unsubscribes and closes
its connection (use `contextlib.aclosing(subscribe(...))` to make that happen at once instead of
when the generator is garbage-collected).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncGenerator

from merclip.settings import RedisSettings
from workers.bus import Bus
from workers.schemas import EmotionEvent

__all__ = ["subscribe"]

log = logging.getLogger(__name__)

_SEEN_CAPACITY = 4096


class _SeenIds:
    """Bounded set of recently yielded event ids (oldest forgotten first)."""

    def __init__(self, capacity: int = _SEEN_CAPACITY) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def add(self, event_id: str) -> bool:
        """True when the id is new."""
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return True


async def subscribe(
    redis_url: str,
    session: str | None = None,
    replay: int = 0,
    prefix: str = "merclip",
) -> AsyncGenerator[EmotionEvent, None]:
    """Yield events of one session (or of all sessions when `session` is None).

    `replay` > 0 first yields up to that many of the most recent stored events, oldest first.
    Raises workers.bus.BusError when Redis cannot be reached.
    """
    settings = RedisSettings(prefix=prefix)
    seen = _SeenIds(max(_SEEN_CAPACITY, 2 * replay))
    async with Bus.connect(redis_url, settings) as bus:
        async with bus.event_feed(session) as live:
            if replay > 0:
                history = (
                    await bus.events(session, replay)
                    if session is not None
                    else await bus.recent_events(replay)
                )
                for event in history:
                    if seen.add(event.event_id):
                        yield event
            async for event in live:
                if session is not None and event.session_id != session:
                    # Published on this session's channel for another session: not ours to show
                    # (only a forger writes that; review M6).
                    log.debug("dropped an event of %r on %r's channel", event.session_id, session)
                    continue
                if seen.add(event.event_id):
                    yield event

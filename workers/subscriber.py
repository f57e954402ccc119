"""Python subscriber API: typed EmotionEvents from Redis, history first, then live.

    async for event in subscribe(url, session="abc", replay=10):
        print(event.emotions_predicted)

How it avoids gaps and duplicates: it subscribes to the live channel *before* reading the
session stream(s) for the replay, so an event published while the history is read arrives on the
channel too; every event id is yielded once (a bounded memory of recent ids). Live delivery uses
pub/sub, which is fire-and-forget: a subscriber that stops reading for long is disconnected by
Redis at its output-buffer limit; a consumer that must miss nothing reads the per-session stream
`P:{S}:events` with XREAD instead (docs/REDIS.md).

Partial transcripts: with `partials=True`, the PartialTranscripts of the session(s) (words heard
between windows, workers/partials.py) come through too, as they are published: never replayed
(they are not stored) and not deduplicated (each replaces the one before).

Stopping: `break` out of the loop or cancel the task; the generator then unsubscribes and closes
its connection (use `contextlib.aclosing(subscribe(...))` to make that happen at once instead of
when the generator is garbage-collected).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Literal

from workers.bus import Bus, BusError
from workers.schemas import EmotionEvent, PartialTranscript
from workers.settings import RedisSettings

__all__ = ["EventHub", "subscribe"]

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
    cluster: Literal["auto", "on", "off"] = "auto",
    *,
    partials: bool = False,
) -> AsyncGenerator[EmotionEvent | PartialTranscript, None]:
    """Yield events of one session (or of all sessions when `session` is None).

    `replay` > 0 first yields up to that many of the most recent stored events, oldest first.
    `cluster`: redis.cluster (a Redis Cluster is detected at connect by default).
    `partials`: also yield the live PartialTranscripts (see the module doc).
    Raises workers.bus.BusError when Redis cannot be reached.
    """
    settings = RedisSettings(prefix=prefix, cluster=cluster)
    seen = _SeenIds(max(_SEEN_CAPACITY, 2 * replay))
    async with Bus.connect(redis_url, settings) as bus:
        async with bus.event_feed(session, partials=partials) as live:
            if replay > 0:
                history = (
                    await bus.events(session, replay)
                    if session is not None
                    else await bus.recent_events(replay)
                )
                for event in history:
                    if seen.add(event.event_id):
                        yield event
            async for item in live:
                if session is not None and item.session_id != session:
                    # Published on this session's channel for another session: not ours to show
                    # (only a forger writes that; review M6).
                    log.debug("dropped an event of %r on %r's channel", item.session_id, session)
                    continue
                if isinstance(item, PartialTranscript) or seen.add(item.event_id):
                    yield item


# -- one process, many streams ---------------------------------------------------------------

_HUB_QUEUE = 1024
"""Events buffered per stream in the hub; a stream that falls this far behind loses its oldest
(the SSE relay behind it has a bounded queue of its own)."""
REPLAY_CACHE_SECONDS = 1.0
_RING = 1024
"""Live events the hub remembers, to complete a shared replay snapshot (see EventHub.recent)."""
HISTORY_READS = 4
"""History replays read at once by one hub (each holds a Redis connection while it reads)."""


@dataclass(eq=False)
class _Listener:
    session: str | None
    partials: bool = False
    queue: asyncio.Queue[EmotionEvent | PartialTranscript | BaseException] = field(
        default_factory=lambda: asyncio.Queue(_HUB_QUEUE)
    )

    def put(self, item: EmotionEvent | PartialTranscript | BaseException) -> None:
        if self.queue.full():
            self.queue.get_nowait()  # drop the oldest: never block the hub on one stream
        self.queue.put_nowait(item)


class EventHub:
    """Every event stream of one process (the pages' /events/*, /dashboard/events) on ONE
    pub/sub connection and the process's shared Bus (review M3: each stream used to open a
    connection pool plus a pub/sub connection of its own, so 500 streams were 1000 Redis
    clients, and under `ulimit -n 1024` the fds ran out at about 340, logged as "cannot reach
    Redis").

    The hub subscribes to the all-sessions channel while at least one stream is open and hands
    each event to the streams that want it (its session, or all); history is read through the
    Bus, HISTORY_READS at a time, so the Redis clients of a process stay a handful however many
    streams are open. `events()` is `subscribe()`
    on that: joined before the history is read, each id yielded once. When the subscription
    fails (Redis down), every open stream ends with the BusError, as a subscribe() would: the
    pages' EventSource reconnects and replays.

    `recent(count)` (the dashboard replay) is computed once per REPLAY_CACHE_SECONDS for any
    number of dashboards connecting at once (review M4).
    """

    def __init__(self, bus: Bus, *, poll_s: float = 1.0) -> None:
        self.bus = bus
        self.poll_s = poll_s
        self._listeners: set[_Listener] = set()
        self._pump: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._replay: tuple[float, int, asyncio.Task[list[EmotionEvent]]] | None = None
        self._history_reads = asyncio.Semaphore(HISTORY_READS)
        self._ring: deque[tuple[float, EmotionEvent]] = deque(maxlen=_RING)
        self._subscribed_at: float | None = None
        """time.monotonic() since when the current subscription has been up (None: none)."""

    @property
    def streams(self) -> int:
        """Streams open on the hub now."""
        return len(self._listeners)

    async def events(
        self, session: str | None = None, replay: int = 0, *, partials: bool = False
    ) -> AsyncGenerator[EmotionEvent | PartialTranscript, None]:
        """Like `subscribe(url, session, replay, partials=...)`, on the hub's shared
        connections."""
        listener = _Listener(session, partials)
        self._join(listener)
        try:
            await self._subscribed.wait()
            seen = _SeenIds(max(_SEEN_CAPACITY, 2 * replay))
            if replay > 0:
                # A few at a time: each concurrent read takes a connection of the Bus's pool,
                # and 500 pages connecting at once would open 500 of them.
                async with self._history_reads:
                    history = (
                        await self.bus.events(session, replay)
                        if session is not None
                        else await self.recent(replay)
                    )
                for event in history:
                    if seen.add(event.event_id):
                        yield event
            while True:
                item = await listener.queue.get()
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, PartialTranscript) or seen.add(item.event_id):
                    yield item
        finally:
            self._leave(listener)

    async def recent(self, count: int) -> list[EmotionEvent]:
        """The last `count` events of all sessions (Bus.recent_events), shared for
        REPLAY_CACHE_SECONDS by every caller asking for the same count.

        A shared snapshot may have been read before the caller subscribed: the events
        published since the snapshot began, which the hub received live (kept in a short
        ring), are added to it, so nothing falls between snapshot and subscription (duplicates
        are dropped by id downstream). A snapshot is shared only when the hub was already
        subscribed when it began and its ring still reaches back that far."""
        now = time.monotonic()
        cached = self._replay
        if (
            cached is None
            or cached[1] != count
            or now - cached[0] > REPLAY_CACHE_SECONDS
            or self._subscribed_at is None
            or cached[0] < self._subscribed_at
            or (len(self._ring) == self._ring.maxlen and self._ring[0][0] > cached[0])
        ):
            task = asyncio.ensure_future(self.bus.recent_events(count))
            self._replay = cached = (now, count, task)
        try:
            snapshot = list(await asyncio.shield(cached[2]))
        except BaseException:
            if self._replay is cached and cached[2].done():
                self._replay = None  # a failed replay is not cached
            raise
        return snapshot + [event for t, event in self._ring if t >= cached[0]]

    async def aclose(self) -> None:
        """End every open stream and the subscription."""
        for listener in list(self._listeners):
            listener.put(BusError("the event hub closed"))
        self._listeners.clear()
        await self._stop_pump()

    # -- internals ----------------------------------------------------------------------------

    def _join(self, listener: _Listener) -> None:
        self._listeners.add(listener)
        if self._pump is None or self._pump.done():
            self._subscribed = asyncio.Event()
            self._subscribed_at = None  # until the new subscription is up
            self._pump = asyncio.get_running_loop().create_task(
                self._run(self._subscribed), name="event-hub"
            )

    def _leave(self, listener: _Listener) -> None:
        self._listeners.discard(listener)
        if not self._listeners and self._pump is not None:
            pump, self._pump = self._pump, None
            pump.cancel()  # the last stream went: unsubscribe (its connection goes back)

    async def _stop_pump(self) -> None:
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump

    async def _run(self, subscribed: asyncio.Event) -> None:
        mine = asyncio.current_task()
        try:
            # Partials on the same connection: one subscription per process still.
            async with self.bus.event_feed(None, poll_s=self.poll_s, partials=True) as feed:
                self._ring.clear()
                self._subscribed_at = time.monotonic()
                subscribed.set()
                async for event in feed:
                    partial = isinstance(event, PartialTranscript)
                    if isinstance(event, EmotionEvent):
                        self._ring.append((time.monotonic(), event))
                    for listener in list(self._listeners):
                        if partial and not listener.partials:
                            continue
                        if listener.session is None or listener.session == event.session_id:
                            listener.put(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis went away: every stream ends; the pages reconnect
            log.info("event hub: subscription ended (%s); ending %d streams", exc, self.streams)
            if self._pump is mine:
                self._pump = None
                for listener in list(self._listeners):
                    listener.put(exc)
                self._listeners.clear()
        finally:
            if self._pump is mine or self._pump is None:
                self._subscribed_at = None
            subscribed.set()  # never leave a stream waiting for a subscription that failed

"""The overview numbers of a running deployment, read from Redis: what the dashboard shows at the
top and what the Redis-side Prometheus gauges report.

`Monitor` refreshes one snapshot about once a second (a background task), so any number of
dashboard pages polling `/dashboard/overview` and Prometheus scrapes cost Redis nothing extra:

- Redis health: PING round trip in ms, ok/down (a failed PING is the answer, not an error);
- sessions with an event in the last `active_seconds` (the `P:sessions` sorted set);
- inference lag: windows pending in the consumer group (delivered, not acked) and the length of
  the work stream (waiting + pending; acked windows are deleted, see Bus.ack);
- events per second over the last 10 s, counted from the all-sessions live channel (every event
  is published there once, whichever worker wrote it, so this is the deployment's rate).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

from workers import metrics
from workers.bus import Bus, BusError
from workers.settings import WorkerSettings

__all__ = ["ACTIVE_SECONDS", "RATE_WINDOW_SECONDS", "Monitor"]

log = logging.getLogger(__name__)

ACTIVE_SECONDS = 60.0
"""A session counts as active while its latest event is at most this old."""
RATE_WINDOW_SECONDS = 10.0
_SESSIONS_LIMIT = 200
_RETRY_SECONDS = 1.0


class Monitor:
    """`async with Monitor(bus, settings) as mon: await mon.overview()`."""

    def __init__(
        self,
        bus: Bus,
        settings: WorkerSettings,
        *,
        interval: float = 1.0,
        count_events: bool = True,
        active_seconds: float = ACTIVE_SECONDS,
    ) -> None:
        self.bus = bus
        self.group = settings.inference.consumer_group
        self.interval = interval
        self.count_events = count_events
        self.active_seconds = active_seconds
        self.events_seen = 0
        self._stamps: deque[float] = deque()
        self._snapshot: dict[str, Any] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self._tasks:
            return
        await self.refresh()
        self._tasks.append(asyncio.create_task(self._refresh_loop(), name="monitor-refresh"))
        if self.count_events:
            self._tasks.append(asyncio.create_task(self._count_loop(), name="monitor-rate"))

    async def aclose(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> Monitor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- numbers ----------------------------------------------------------------------------

    async def overview(self) -> dict[str, Any]:
        """The latest snapshot (JSON-ready); computed now when the monitor has not run yet."""
        if self._snapshot is None:
            await self.refresh()
        assert self._snapshot is not None
        return dict(self._snapshot, events_per_second=self.events_per_second())

    def events_per_second(self) -> float:
        self._trim(time.monotonic())
        return round(len(self._stamps) / RATE_WINDOW_SECONDS, 3)

    async def refresh(self) -> dict[str, Any]:
        """Read the numbers from Redis now, update the gauges, and keep the snapshot."""
        now = time.time()
        snap: dict[str, Any] = {
            "time": round(now, 3),
            "redis": {"ok": False, "ping_ms": None, "error": None},
            "sessions": [],
            "sessions_active": None,
            "inference": {"group": self.group, "pending": None, "stream_length": None},
            "events_seen": self.events_seen,
        }
        try:
            ping_ms = await self.bus.ping()
            snap["redis"] = {"ok": True, "ping_ms": round(ping_ms, 3), "error": None}
            sessions = await self.bus.sessions(
                since_wall=now - self.active_seconds, limit=_SESSIONS_LIMIT
            )
            snap["sessions"] = sessions
            snap["sessions_active"] = len(sessions)
            snap["inference"]["pending"] = await self.bus.pending_count(self.group)
            snap["inference"]["stream_length"] = await self.bus.windows_length()
        except BusError as exc:
            # The snapshot goes to HTTP clients (/dashboard/overview): no URL, no detail (they
            # may name credentials: review L3). The bus logged the outage, redacted.
            if self.bus.available:
                snap["redis"]["error"] = "Redis answered with an error (see the service log)"
                log.warning("monitor: %s", exc)
            else:
                snap["redis"]["error"] = "cannot reach Redis (see the service log)"
                log.debug("monitor: %s", exc)
        self._snapshot = snap
        self._set_gauges(snap)
        return snap

    def _set_gauges(self, snap: dict[str, Any]) -> None:
        redis = snap["redis"]
        metrics.REDIS_UP.set(1 if redis["ok"] else 0)
        if redis["ping_ms"] is not None:
            metrics.REDIS_PING.set(redis["ping_ms"] / 1000.0)
        if snap["sessions_active"] is not None:
            metrics.SESSIONS_ACTIVE.set(snap["sessions_active"])
        inf = snap["inference"]
        if inf["pending"] is not None:
            metrics.PENDING_WINDOWS.set(inf["pending"])
        if inf["stream_length"] is not None:
            metrics.WINDOWS_STREAM_LENGTH.set(inf["stream_length"])
        if self.count_events:
            metrics.EVENTS_PER_SECOND.set(self.events_per_second())

    def _trim(self, now: float) -> None:
        while self._stamps and self._stamps[0] < now - RATE_WINDOW_SECONDS:
            self._stamps.popleft()

    # -- background tasks -------------------------------------------------------------------

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
            except Exception:  # a monitor must outlive anything odd Redis says
                log.exception("monitor refresh failed")

    async def _count_loop(self) -> None:
        lost = False  # warn once per outage, not once per retry
        while True:
            try:
                async with self.bus.event_feed(None) as feed:
                    if lost:
                        log.info("monitor: live channel back")
                        lost = False
                    async for _event in feed:
                        self.events_seen += 1
                        now = time.monotonic()
                        self._stamps.append(now)
                        self._trim(now)
            except BusError as exc:
                if not lost:
                    log.warning("monitor: live channel lost (%s); resubscribing", exc)
                    lost = True
                await asyncio.sleep(_RETRY_SECONDS)

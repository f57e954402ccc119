"""The ingest outbox: FeatureWindows on their way to Redis, held back while it is unreachable.

While Redis is unreachable, extracted windows wait in ONE bounded buffer per process
(settings.ingest.max_unsent_windows, oldest dropped and counted when full) and a sender task
retries with backoff, in order; sessions go on streaming and windowing meanwhile, so a Redis restart
costs at most the windows that did not fit (and those the inference deadline then skips).

A window is published at once when nothing waits before it; otherwise it queues behind the held
ones, so windows always reach the work stream in the order they were extracted. "Unreachable"
means an error whose `retryable` is true (bus.BusError); any other error is the window's own and
propagates (or, for a held window, is counted in `publish_errors` and the window is let go).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from redis.backoff import EqualJitterBackoff

from stream.drop_oldest import DropOldestQueue
from workers.bus import retryable
from workers.schemas import FeatureWindow

if TYPE_CHECKING:
    from workers.ingest import IngestCounters

__all__ = ["Outbox", "Publish"]

log = logging.getLogger(__name__)

Publish = Callable[[FeatureWindow], Awaitable[object]]
OnSent = Callable[[], None]

RETRY_BASE_SECONDS = 0.1
RETRY_CAP_SECONDS = 2.0
"""The sender's n-th retry in a row waits 0.5x to 1x of min(cap, base x 2^n)."""
_MAX_DOUBLINGS = 30  # 2**n of a long outage's failure count would overflow a float


class Outbox:
    """A bounded, ordered, retrying publisher of FeatureWindows (see the module docstring).

    Updates `counters.windows_unsent`, `windows_dropped_unsent`, `publish_retries` and (for held
    windows) `publish_errors`; whoever sends a window counts it as published in `on_sent`.
    """

    def __init__(self, publish: Publish, counters: IngestCounters, max_unsent: int) -> None:
        self.publish = publish
        self.counters = counters
        self.max_unsent = max_unsent
        self._unsent: DropOldestQueue[tuple[FeatureWindow, OnSent]] = DropOldestQueue(max_unsent)
        self._sender: asyncio.Task[None] | None = None
        self._dropping = False
        self._backoff = EqualJitterBackoff(cap=RETRY_CAP_SECONDS, base=RETRY_BASE_SECONDS)

    def __len__(self) -> int:
        return len(self._unsent)

    async def send(self, fw: FeatureWindow, on_sent: OnSent) -> bool:
        """Publish `fw` now (True, `on_sent()` called), or keep it for the sender when Redis is
        unreachable or older windows still wait (False; the sender calls `on_sent()` once it is
        sent). Errors other than an unreachable Redis propagate."""
        if not self._unsent:
            try:
                await self.publish(fw)
            except Exception as exc:
                if not retryable(exc):
                    raise
                # the bus has logged the outage
            else:
                on_sent()
                return True
        self._keep(fw, on_sent)
        return False

    def _keep(self, fw: FeatureWindow, on_sent: OnSent) -> None:
        counters = self.counters
        dropped = self._unsent.put((fw, on_sent))
        if dropped is not None:
            old, _ = dropped
            if not self._dropping:  # once per outage
                log.warning(
                    "Redis unreachable and %d windows unsent: dropping the oldest (%s:%d)",
                    self.max_unsent,
                    old.session_id,
                    old.seq,
                    extra={"session_id": old.session_id, "stage": "ingest"},
                )
            self._dropping = True
            counters.windows_dropped_unsent += 1
        counters.windows_unsent = len(self._unsent)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(
                self._send_unsent(), name="ingest-unsent"
            )

    async def _send_unsent(self) -> None:
        """Send the buffered windows in order, retrying with backoff until Redis answers."""
        failures = 0
        counters = self.counters
        while self._unsent:
            head = self._unsent.peek()
            fw, on_sent = head
            try:
                await self.publish(fw)
            except Exception as exc:
                if retryable(exc):
                    counters.publish_retries += 1
                    await asyncio.sleep(self._backoff.compute(failures))
                    failures = min(failures + 1, _MAX_DOUBLINGS)
                    continue
                counters.publish_errors += 1
                log.exception(
                    "publishing buffered window %s:%d failed",
                    fw.session_id,
                    fw.seq,
                    extra={"session_id": fw.session_id, "stage": "ingest"},
                )
            else:
                on_sent()
                failures = 0
            # While it was being sent, the window may have been dropped to make room.
            if self._unsent and self._unsent.peek() is head:
                self._unsent.get_nowait()
            counters.windows_unsent = len(self._unsent)
        if self._dropping:
            log.warning(
                "unsent windows flushed (%d dropped in all)", counters.windows_dropped_unsent
            )
        self._dropping = False

    async def aclose(self, timeout: float) -> None:
        """Give the sender up to `timeout` seconds to send what is held; then drop the rest
        (counted)."""
        if self._sender is not None and not self._sender.done():
            done, _ = await asyncio.wait({self._sender}, timeout=timeout)
            if not done:
                self._sender.cancel()
                log.warning("closing with %d windows unsent (Redis unreachable)", len(self._unsent))
                self.counters.windows_dropped_unsent += len(self._unsent.clear())
                self.counters.windows_unsent = 0

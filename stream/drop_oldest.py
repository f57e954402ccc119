"""A bounded asyncio FIFO that never blocks its producer: when full, the OLDEST item is dropped.

Live media goes stale: a window, an event or a frame that waited behind newer ones is worth less
than the newest, and a producer on the event loop (a media callback, a Redis subscription) must
never wait for a slow consumer. So every buffer down the pipe has the same policy: bounded,
drop the oldest, count the drop. `DropOldestQueue` is that policy in one place, for one event
loop (`BlockQueue` in stream/clients/tracks.py is the thread-safe counterpart for device
callbacks).

- `put(item)` never waits; it returns the item it dropped (or None), so the caller can log or
  count what it lost; `dropped` counts every drop of the queue's life.
- `get()` waits for the oldest item; `wait(timeout)` waits for an item, a `wake()` or `close()`
  without taking anything, for consumers that also have timed work (a stage's clock tick).
- `peek()` and `get_nowait()` let a consumer take an item only once it has been handled (an
  outbox that retries the head until it is sent).
- `close()`: no more puts; the consumer drains what is left, then `get()` raises QueueClosed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

from stream.errors import StreamError

__all__ = ["DropOldestQueue", "QueueClosed"]

T = TypeVar("T")


class QueueClosed(StreamError):
    """`get()` on a closed DropOldestQueue that has nothing left: its producer is done."""


class DropOldestQueue(Generic[T]):
    """At most `maxsize` items, oldest first; `put` drops the oldest when full (see module).
    For one event loop and one consumer."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self.dropped = 0
        """Items dropped because the queue was full, over its whole life."""
        self._items: deque[T] = deque()
        self._wakeup = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: T) -> T | None:
        """Append `item`; when that makes the queue too long, drop the oldest item and return
        it (None when nothing was dropped). RuntimeError after close()."""
        if self._closed:
            raise RuntimeError("put on a closed DropOldestQueue")
        self._items.append(item)
        dropped = None
        if len(self._items) > self.maxsize:
            dropped = self._items.popleft()
            self.dropped += 1
        self._wakeup.set()
        return dropped

    def peek(self) -> T:
        """The oldest item, left in the queue; IndexError when empty."""
        return self._items[0]

    def get_nowait(self) -> T:
        """Remove and return the oldest item; IndexError when empty."""
        return self._items.popleft()

    async def get(self) -> T:
        """Remove and return the oldest item, waiting for one; QueueClosed once the queue is
        closed and empty."""
        while not self._items:
            if self._closed:
                raise QueueClosed("the queue is closed and empty")
            await self.wait()
        return self._items.popleft()

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until an item is queued, `wake()` or `close()` is called, or `timeout` seconds
        have passed; take nothing. Returns at once when an item waits or the queue is closed.
        False when the timeout passed first."""
        if self._items or self._closed:
            return True
        self._wakeup.clear()
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def wake(self) -> None:
        """Let a consumer blocked in `wait()` run now although nothing was queued."""
        self._wakeup.set()

    def close(self) -> None:
        """No more puts: the consumer takes what is left, then `get()` raises QueueClosed."""
        self._closed = True
        self._wakeup.set()

    def clear(self) -> list[T]:
        """Remove every item (not counted as dropped); returns them, oldest first."""
        items = list(self._items)
        self._items.clear()
        return items

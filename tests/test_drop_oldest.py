"""DropOldestQueue: bounded, the oldest item dropped and counted when full, explicit wake and
close, and a consumer that drains what is left after close."""

from __future__ import annotations

import asyncio

import pytest

from stream.drop_oldest import DropOldestQueue, QueueClosed

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


async def test_a_full_queue_drops_the_oldest_and_counts_it() -> None:
    q: DropOldestQueue[int] = DropOldestQueue(2)
    assert q.put(1) is None and q.put(2) is None
    assert q.put(3) == 1 and q.put(4) == 2
    assert len(q) == 2 and q.dropped == 2
    assert q.peek() == 3 and len(q) == 2  # peek leaves it there
    assert [q.get_nowait(), await q.get()] == [3, 4]
    assert not q
    with pytest.raises(IndexError):
        q.get_nowait()


async def test_get_waits_for_a_put() -> None:
    q: DropOldestQueue[str] = DropOldestQueue(4)
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0.01)
    assert not getter.done()
    q.put("x")
    assert await asyncio.wait_for(getter, 1) == "x"


async def test_wait_returns_on_wake_timeout_or_item_and_takes_nothing() -> None:
    q: DropOldestQueue[int] = DropOldestQueue(4)
    assert await q.wait(0.01) is False  # timed out
    waiter = asyncio.create_task(q.wait(5))
    await asyncio.sleep(0.01)
    q.wake()
    assert await asyncio.wait_for(waiter, 1) is True and not q
    q.put(7)
    assert await q.wait(5) is True and len(q) == 1  # at once: an item waits


async def test_close_lets_the_consumer_drain_then_get_raises() -> None:
    q: DropOldestQueue[int] = DropOldestQueue(4)
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0.01)
    q.put(1)
    assert await getter == 1
    q.put(2)
    q.close()
    with pytest.raises(RuntimeError):
        q.put(3)
    assert q.closed and await q.get() == 2
    with pytest.raises(QueueClosed):
        await q.get()
    assert await q.wait(5) is True  # closed: nothing to wait for


async def test_close_wakes_a_blocked_getter_and_clear_is_not_a_drop() -> None:
    q: DropOldestQueue[int] = DropOldestQueue(3)
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0.01)
    q.close()
    with pytest.raises(QueueClosed):
        await asyncio.wait_for(getter, 1)
    r: DropOldestQueue[int] = DropOldestQueue(3)
    for i in range(3):
        r.put(i)
    assert r.clear() == [0, 1, 2] and not r and r.dropped == 0


def test_maxsize_must_be_positive() -> None:
    with pytest.raises(ValueError):
        DropOldestQueue(0)

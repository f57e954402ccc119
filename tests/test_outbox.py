"""The ingest outbox on its own: windows are published at once while Redis answers, held in order
(bounded, oldest dropped and counted) while it does not, and sent in order once it answers again.
tests/test_reliability_outage.py does the same against a real Redis that is stopped and restarted.
"""

from __future__ import annotations

import asyncio

import pytest
from bus_helpers import make_window

from workers.bus import BusError
from workers.ingest import IngestCounters
from workers.outbox import Outbox
from workers.schemas import FeatureWindow

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


class Redis:
    """A publish function whose Redis can be taken down (BusError, as the bus raises)."""

    def __init__(self) -> None:
        self.up = True
        self.sent: list[int] = []

    async def publish(self, fw: FeatureWindow) -> None:
        await asyncio.sleep(0)
        if not self.up:
            raise BusError("cannot reach Redis (test)")
        if fw.session_id == "bad":
            raise ValueError("not this one")
        self.sent.append(fw.seq)


async def until(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_an_outage_holds_windows_in_order_bounded_and_counted() -> None:
    redis, counters, published = Redis(), IngestCounters(), []
    box = Outbox(redis.publish, counters, max_unsent=3)
    assert await box.send(make_window("s", 0), lambda: published.append(0)) is True
    redis.up = False
    for seq in range(1, 6):  # 1 and 2 are dropped to make room
        assert await box.send(make_window("s", seq), lambda seq=seq: published.append(seq)) is False
    assert counters.windows_unsent == 3 and counters.windows_dropped_unsent == 2
    await until(lambda: counters.publish_retries >= 2)  # the sender keeps trying
    # While windows wait, a new one queues behind them (pushing 3 out) even when Redis answers.
    redis.up = True
    assert await box.send(make_window("s", 6), lambda: published.append(6)) is False
    await until(lambda: counters.windows_unsent == 0)
    assert redis.sent == [0, 4, 5, 6] and published == [0, 4, 5, 6]
    assert counters.windows_dropped_unsent == 3 and len(box) == 0
    await box.aclose(1.0)


async def test_a_window_that_fails_on_its_own_is_let_go_and_the_rest_follow() -> None:
    redis, counters = Redis(), IngestCounters()
    box = Outbox(redis.publish, counters, max_unsent=8)
    with pytest.raises(ValueError):  # not an outage: the caller's to handle
        await box.send(make_window("bad", 0), lambda: None)
    redis.up = False
    await box.send(make_window("bad", 1), lambda: None)
    await box.send(make_window("s", 2), lambda: None)
    redis.up = True
    await until(lambda: counters.windows_unsent == 0)
    assert redis.sent == [2] and counters.publish_errors == 1
    await box.aclose(1.0)


async def test_closing_during_an_outage_drops_what_is_held_after_the_timeout() -> None:
    redis, counters = Redis(), IngestCounters()
    box = Outbox(redis.publish, counters, max_unsent=8)
    redis.up = False
    for seq in range(3):
        await box.send(make_window("s", seq), lambda: None)
    await box.aclose(0.2)
    assert counters.windows_dropped_unsent == 3 and counters.windows_unsent == 0
    assert redis.sent == [] and len(box) == 0

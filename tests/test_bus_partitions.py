"""The work queue split into several streams (redis.partitions) on one real Redis server: a
session's windows stay in one partition and in order, reads, claims, acks and dead letters
cover every partition, and one partition keeps the single-stream key names of before."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import pytest
from bus_helpers import bus_on, make_window
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from workers.bus import Bus, Keys

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

SESSIONS = [f"sess-{i}" for i in range(8)]


def test_one_partition_keeps_the_single_stream_names() -> None:
    keys = Keys("P")
    assert keys.windows_streams == ("P:windows",) and keys.dead == "P:dead"
    assert {keys.partition_of(s) for s in SESSIONS} == {0}


@pytest.mark.parametrize("partitions", [2, 3, 6])
def test_partition_streams_sit_in_equal_slot_ranges(partitions: int) -> None:
    """What puts N partitions on N different masters of a cluster whose slots are split evenly
    (redis-cli --cluster create)."""
    keys = Keys("merclip", partitions)
    width = REDIS_CLUSTER_HASH_SLOTS / partitions
    ranges = [int(key_slot(s.encode()) // width) for s in keys.windows_streams]
    assert ranges == list(range(partitions))
    dead = [key_slot(keys.dead_stream(i).encode()) for i in range(partitions)]
    assert dead == [key_slot(s.encode()) for s in keys.windows_streams]  # same hash tag


async def test_a_sessions_windows_stay_in_one_partition_and_in_order(redis_url: str) -> None:
    async with bus_on(redis_url, partitions=3) as bus:
        await bus.ensure_group("g")
        for seq in range(4):
            for s in SESSIONS:
                await bus.add_window(make_window(s, seq))
        assert await bus.windows_length() == 4 * len(SESSIONS)
        used = {bus.keys.partition_of(s) for s in SESSIONS}
        assert used == {0, 1, 2}, "the test sessions should cover every partition"
        read: dict[str, list[int]] = defaultdict(list)
        deliveries = []
        while batch := await bus.read_windows("g", "c1", 5, block_ms=0):
            assert len(batch) <= 5
            for d in batch:
                assert d.message is not None
                assert d.partition == bus.keys.partition_of(d.message.session_id)
                read[d.message.session_id].append(d.message.seq)
            deliveries += batch
        assert read == {s: [0, 1, 2, 3] for s in SESSIONS}
        assert await bus.pending_count("g") == len(deliveries)
        assert await bus.ack_deliveries("g", deliveries) == len(deliveries)
        assert await bus.pending_count("g") == 0 and await bus.windows_length() == 0


async def test_a_blocked_read_wakes_for_a_window_on_any_partition(redis_url: str) -> None:
    async with bus_on(redis_url, partitions=3) as bus:
        await bus.ensure_group("g")
        for s in SESSIONS[:3]:
            reader = asyncio.create_task(bus.read_windows("g", "c1", 4, block_ms=3000))
            await asyncio.sleep(0.2)
            assert not reader.done()
            t0 = time.monotonic()
            await bus.add_window(make_window(s, 0))
            [d] = await reader
            assert time.monotonic() - t0 < 0.5 and d.message is not None
            assert d.message.session_id == s


async def test_stale_windows_are_claimed_and_dead_lettered_per_partition(redis_url: str) -> None:
    async with bus_on(redis_url, partitions=3) as bus:
        await bus.ensure_group("g")
        for s in SESSIONS:
            await bus.add_window(make_window(s, 0))
        held = await _read_all(bus, "dead-consumer")
        assert len(held) == len(SESSIONS)
        await asyncio.sleep(0.15)
        claimed = []
        while batch := await bus.claim_stale("g", "live", min_idle_ms=100, count=3):
            assert len(batch) <= 3
            claimed += batch
        assert sorted((d.partition, d.entry_id) for d in claimed) == sorted(
            (d.partition, d.entry_id) for d in held
        )
        assert all(d.deliveries == 2 for d in claimed)
        for d in claimed:
            await bus.dead_letter(d, "test")
        await bus.ack_deliveries("g", claimed)
        dead = await bus.dead_letters()
        assert sorted(str(row["entry_id"]) for row in dead) == sorted(d.entry_id for d in held)
        assert await bus.pending_count("g") == 0


async def _read_all(bus: Bus, consumer: str) -> list:  # type: ignore[type-arg]
    out = []
    while batch := await bus.read_windows("g", consumer, 16, block_ms=0):
        out += batch
    return out

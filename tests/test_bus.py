"""The Redis bus against a real server: streams, consumer groups, claims, dead letters, events."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import numpy as np
import pytest
import redis.asyncio as aioredis
from bus_helpers import bus_on, make_event, make_window, prefix_on

from merclip.errors import SchemaError
from workers.app.settings import RedisSettings
from workers.bus import Bus, BusError
from workers.redis_server import _free_port
from workers.schemas import EmotionEvent, decode

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


async def test_window_round_trips_through_the_stream(bus: Bus) -> None:
    fw = make_window("sess-a", 7)
    await bus.ensure_group("g")
    entry_id = await bus.add_window(fw)
    [d] = await bus.read_windows("g", "c1", 10, block_ms=100)
    assert d.entry_id == entry_id and d.deliveries == 1 and d.error is None
    got = d.message
    assert got is not None
    for f in dataclasses.fields(fw):
        a, b = getattr(fw, f.name), getattr(got, f.name)
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and np.array_equal(a, b)
        else:
            assert a == b, f.name


async def test_consumer_group_reads_in_batches_and_shares_work(bus: Bus) -> None:
    await bus.ensure_group("g")
    assert await bus.ensure_group("g") is False  # idempotent
    ids = [await bus.add_window(make_window("s", i)) for i in range(5)]
    first = await bus.read_windows("g", "c1", 3, block_ms=100)
    second = await bus.read_windows("g", "c2", 10, block_ms=100)
    assert [d.entry_id for d in first] == ids[:3]
    assert [d.entry_id for d in second] == ids[3:]
    assert [d.message.seq for d in first + second] == list(range(5))  # type: ignore[union-attr]
    assert await bus.read_windows("g", "c1", 10, block_ms=0) == []
    assert await bus.pending_count("g") == 5
    assert await bus.ack("g", ids) == 5
    assert await bus.pending_count("g") == 0
    assert await bus.windows_length() == 0  # acked windows are deleted from the work stream


async def test_read_blocks_until_a_window_arrives(bus: Bus) -> None:
    await bus.ensure_group("g")
    reader = asyncio.create_task(bus.read_windows("g", "c1", 4, block_ms=3000))
    await asyncio.sleep(0.2)
    assert not reader.done()
    await bus.add_window(make_window("s", 1))
    got = await asyncio.wait_for(reader, 2)
    assert [d.message.seq for d in got] == [1]  # type: ignore[union-attr]


async def test_undecodable_entry_is_a_delivery_error_and_can_be_dead_lettered(bus: Bus) -> None:
    await bus.ensure_group("g")
    await bus.add_raw_window({"m": b"\xc1not msgpack"})
    await bus.add_raw_window({"other": b"x"})
    await bus.add_window(make_window("s", 3))
    deliveries = await bus.read_windows("g", "c1", 10, block_ms=100)
    assert [d.message is None for d in deliveries] == [True, True, False]
    bad = deliveries[0]
    assert bad.raw == b"\xc1not msgpack" and "msgpack" in (bad.error or "")
    assert "'m'" in (deliveries[1].error or "")
    await bus.dead_letter(bad, bad.error or "")
    [dead] = await bus.dead_letters()
    assert dead["m"] == b"\xc1not msgpack"
    assert dead["entry_id"] == bad.entry_id and dead["deliveries"] == "1"
    assert "msgpack" in str(dead["reason"])


async def test_claim_stale_takes_over_windows_of_a_dead_consumer(bus: Bus) -> None:
    await bus.ensure_group("g")
    ids = [await bus.add_window(make_window("s", i)) for i in range(3)]
    got = await bus.read_windows("g", "dead-consumer", 2, block_ms=100)
    assert len(got) == 2
    assert await bus.claim_stale("g", "live", min_idle_ms=60_000, count=10) == []
    await asyncio.sleep(0.15)
    claimed = await bus.claim_stale("g", "live", min_idle_ms=100, count=10)
    assert [d.entry_id for d in claimed] == ids[:2]
    assert [d.deliveries for d in claimed] == [2, 2]
    assert all(d.message is not None for d in claimed)
    await asyncio.sleep(0.15)
    again = await bus.claim_stale("g", "live", min_idle_ms=100, count=1)
    assert [d.deliveries for d in again] == [3]


async def test_claim_reports_a_pending_window_that_was_deleted(bus: Bus, redis_url: str) -> None:
    await bus.ensure_group("g")
    entry_id = await bus.add_window(make_window("s", 0))
    await bus.read_windows("g", "dead-consumer", 1, block_ms=100)
    raw = aioredis.from_url(redis_url)
    await raw.xdel(bus.keys.windows, entry_id)  # what MAXLEN ~ does to a long-pending entry
    await raw.aclose()
    await asyncio.sleep(0.05)
    claimed = await bus.claim_stale("g", "live", min_idle_ms=10, count=10)
    # Redis 6.2 returns the entry empty; Redis 7 drops it from the PEL and says so.
    assert all(d.message is None and d.error for d in claimed)
    await bus.ack("g", [d.entry_id for d in claimed])
    assert await bus.pending_count("g") == 0


async def test_write_event_is_idempotent_per_event_id(bus: Bus) -> None:
    ev = make_event("sess-x", 4)
    assert await bus.write_event(ev) is True
    assert await bus.write_event(ev) is False
    assert await bus.write_event(dataclasses.replace(ev, transcript="changed")) is False
    stored = await bus.events("sess-x", 10)
    assert [e.event_id for e in stored] == [ev.event_id]
    assert stored[0] == ev
    assert await bus.sessions() == ["sess-x"]


async def test_event_stream_is_capped(redis_url: str) -> None:
    async with bus_on(redis_url, events_maxlen=10) as bus:
        for i in range(400):
            await bus.write_event(make_event("capped", i))
        kept = await bus.events("capped", 1000)
    # MAXLEN ~ trims whole stream nodes (100 entries by default): approximate, never unbounded.
    assert 10 <= len(kept) <= 150
    assert kept[-1].seq == 399 and [e.seq for e in kept] == sorted(e.seq for e in kept)


async def test_session_history_expires_after_the_ttl(redis_url: str) -> None:
    """Sessions that come and go must not grow Redis forever: each session's event stream
    expires events_ttl_s after its latest event, and the live list forgets it too."""
    async with prefix_on(redis_url) as prefix:
        settings = RedisSettings(prefix=prefix, events_ttl_s=1)
        async with Bus.connect(redis_url, settings) as bus:
            await bus.write_event(make_event("old", 0))
            raw = aioredis.from_url(redis_url)
            ttl = await raw.ttl(f"{prefix}:{{old}}:events")
            assert 0 < ttl <= 1
            await asyncio.sleep(2.2)
            assert await raw.exists(f"{prefix}:{{old}}:events") == 0
            await bus.write_event(make_event("new", 0))
            await raw.aclose()
            assert await bus.events("old", 10) == []
            assert await bus.sessions() == ["new"]
        forever = RedisSettings(prefix=prefix, events_ttl_s=0)
        async with Bus.connect(redis_url, forever) as bus:
            await bus.write_event(make_event("kept", 0))
            raw = aioredis.from_url(redis_url)
            assert await raw.ttl(f"{prefix}:{{kept}}:events") == -1  # no expiry
            await raw.aclose()


async def test_events_replay_in_order_and_across_sessions(bus: Bus) -> None:
    for i in range(5):
        await bus.write_event(make_event("a", i, wall_end=1000.0 + 2 * i))
        await bus.write_event(make_event("b", i, wall_end=1001.0 + 2 * i))
    assert [e.seq for e in await bus.events("a", 3)] == [2, 3, 4]
    recent = await bus.recent_events(4)
    assert [(e.session_id, e.seq) for e in recent] == [("a", 3), ("b", 3), ("a", 4), ("b", 4)]
    assert sorted(await bus.sessions()) == ["a", "b"]


async def test_event_feed_delivers_published_events(bus: Bus) -> None:
    async with bus.event_feed("live-s") as feed, bus.event_feed(None) as feed_all:
        ev = make_event("live-s", 1)
        await bus.write_event(make_event("other", 1))
        await bus.write_event(ev)
        assert await asyncio.wait_for(anext(feed), 5) == ev
        first_all = await asyncio.wait_for(anext(feed_all), 5)
        second_all = await asyncio.wait_for(anext(feed_all), 5)
    assert [first_all.session_id, second_all.session_id] == ["other", "live-s"]


async def test_event_payload_is_the_schema_bytes(bus: Bus, redis_url: str) -> None:
    """What other languages read: stream field `m` holds the msgpack event, `id` its id."""
    ev = make_event("raw-s", 2)
    await bus.write_event(ev)
    raw = aioredis.from_url(redis_url)
    [(_, fields)] = await raw.xrange(f"{bus.settings.prefix}:{{raw-s}}:events")
    await raw.aclose()
    assert fields[b"id"].decode() == ev.event_id
    assert decode(fields[b"m"]) == ev


async def test_invalid_session_id_is_refused(bus: Bus) -> None:
    # A SchemaError, not a BusError: callers retry BusErrors as outages (review M5(b)).
    with pytest.raises(SchemaError, match="session id"):
        await bus.write_event(make_event("a{b}", 1))


async def test_unreachable_server_is_a_clean_error() -> None:
    url = f"redis://127.0.0.1:{_free_port()}/0"
    with pytest.raises(BusError, match=f"cannot reach Redis at {url}"):
        async with Bus.connect(url, RedisSettings(), connect_timeout=1.0):
            pass
    with pytest.raises(BusError, match="no Redis URL"):
        async with Bus.connect("", RedisSettings()):
            pass


class _CountingBus(Bus):
    """A Bus that records how many event entries it decodes, and on which thread."""

    decoded = 0
    threads: set[str] = set()

    def _decode_events(self, entries: list) -> list[EmotionEvent]:
        type(self).decoded += len(entries)
        type(self).threads.add(threading.current_thread().name)
        return super()._decode_events(entries)


async def test_the_dashboard_replay_decodes_about_count_events_off_the_loop(
    redis_url: str,
) -> None:
    """Review M4: each dashboard connect read and decoded `count` events PER SESSION on the
    event loop (100 sessions x 300 = 30 000; 8 dashboards stalled the loop for 1.6 s)."""
    written: list[EmotionEvent] = []
    async with prefix_on(redis_url) as prefix:
        async with _CountingBus.connect(redis_url, RedisSettings(prefix=prefix)) as bus:
            # 30 sessions x 40 events, interleaved in time as live sessions are.
            for seq in range(40):
                for s in range(30):
                    ev = make_event(f"s{s}", seq, wall_end=1000.0 + seq + s / 100)
                    await bus.write_event(ev)
                    written.append(ev)
            _CountingBus.decoded = 0
            _CountingBus.threads = set()
            recent = await bus.recent_events(50)
    # The 50 written last (entries written in the same millisecond to different sessions
    # cannot be told apart, so the oldest few may be swapped for ones just before them).
    got = [e.event_id for e in recent]
    assert len(got) == 50 and {e.event_id for e in written[-40:]} <= set(got)
    assert set(got) <= {e.event_id for e in written[-60:]}
    assert recent == sorted(recent, key=lambda e: (e.wall_end, e.session_id, e.seq))
    assert _CountingBus.decoded == 50  # not 30 x 50
    assert threading.main_thread().name not in _CountingBus.threads

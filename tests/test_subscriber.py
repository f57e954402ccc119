"""Subscribers: replay then live, in order, each event once, and a clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from bus_helpers import make_event, redis_clients

from workers.bus import Bus, BusError
from workers.redis_server import _free_port
from workers.subscriber import subscribe

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


async def _numsub(url: str, channel: str) -> int:
    client = aioredis.from_url(url)
    try:
        [(_, n)] = await client.pubsub_numsub(channel)
        return int(n)
    finally:
        await client.aclose()


async def _wait_subscribed(url: str, channel: str, n: int = 1) -> None:
    for _ in range(200):
        if await _numsub(url, channel) >= n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"nobody subscribed to {channel}")


async def test_replays_history_then_yields_live_events_in_order(bus: Bus, redis_url: str) -> None:
    prefix = bus.settings.prefix
    for i in range(5):
        await bus.write_event(make_event("s1", i, wall_end=1000.0 + i))
    await bus.write_event(make_event("s2", 0))  # another session: not ours
    got: list[int] = []

    async def consume() -> None:
        async with contextlib.aclosing(subscribe(redis_url, "s1", replay=3, prefix=prefix)) as evs:
            async for ev in evs:
                assert ev.session_id == "s1"
                got.append(ev.seq)
                if len(got) == 6:
                    break

    task = asyncio.create_task(consume())
    await _wait_subscribed(redis_url, bus.keys.session_channel("s1"))
    for i in range(5, 8):
        await bus.write_event(make_event("s1", i, wall_end=1000.0 + i))
        await bus.write_event(make_event("s2", i))
    await asyncio.wait_for(task, 10)
    assert got == [2, 3, 4, 5, 6, 7]


async def test_all_sessions_and_duplicates_dropped(bus: Bus, redis_url: str) -> None:
    prefix = bus.settings.prefix
    await bus.write_event(make_event("a", 0, wall_end=10.0))
    await bus.write_event(make_event("b", 0, wall_end=11.0))
    got: list[tuple[str, int]] = []

    async def consume() -> None:
        async with contextlib.aclosing(subscribe(redis_url, None, replay=10, prefix=prefix)) as evs:
            async for ev in evs:
                got.append((ev.session_id, ev.seq))
                if len(got) == 4:
                    break

    task = asyncio.create_task(consume())
    await _wait_subscribed(redis_url, bus.keys.events_channel)
    # A duplicate publication (e.g. a foreign producer re-publishing) is yielded once.
    raw = aioredis.from_url(redis_url)
    [(_, fields)] = await raw.xrange(bus.keys.session_events("a"))
    await raw.publish(bus.keys.events_channel, fields[b"m"])
    await raw.aclose()
    await bus.write_event(make_event("a", 1, wall_end=12.0))
    await bus.write_event(make_event("c", 0, wall_end=13.0))
    await asyncio.wait_for(task, 10)
    assert got == [("a", 0), ("b", 0), ("a", 1), ("c", 0)]


async def test_break_and_cancel_unsubscribe(bus: Bus, redis_url: str) -> None:
    prefix = bus.settings.prefix
    channel = bus.keys.session_channel("z")

    async def first_event() -> None:
        async for _ev in subscribe(redis_url, "z", prefix=prefix):
            break

    task = asyncio.create_task(first_event())
    await _wait_subscribed(redis_url, channel)
    await bus.write_event(make_event("z", 0))
    await asyncio.wait_for(task, 10)
    for _ in range(100):  # the generator is finalised right after `break`
        if await _numsub(redis_url, channel) == 0:
            break
        await asyncio.sleep(0.02)
    assert await _numsub(redis_url, channel) == 0

    async def forever() -> None:
        async for _ev in subscribe(redis_url, "z", prefix=prefix):
            pass

    task = asyncio.create_task(forever())
    await _wait_subscribed(redis_url, channel)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if await _numsub(redis_url, channel) == 0:
            break
        await asyncio.sleep(0.02)
    assert await _numsub(redis_url, channel) == 0


async def test_unreachable_redis_raises_bus_error() -> None:
    with pytest.raises(BusError):
        async for _ev in subscribe(f"redis://127.0.0.1:{_free_port()}/0"):
            pass


async def test_subscribe_command_prints_json_lines(bus: Bus, redis_url: str) -> None:
    prefix = bus.settings.prefix
    for i in range(3):
        await bus.write_event(make_event("cli", i, wall_end=100.0 + i))
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "MERCLIP_REDIS_PREFIX": prefix, "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-m", "workers.app", "--config", str(root / "config.toml")]
    cmd += ["subscribe", "--redis-url", redis_url, "--session", "cli", "--replay", "2"]
    proc = await asyncio.create_subprocess_exec(
        *cmd, "--count", "3", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    await _wait_subscribed(redis_url, bus.keys.session_channel("cli"))
    # The replay first: an event written before the command read its history would be in the
    # replay (the last 2) and not again live, and the command would wait for a third forever.
    assert proc.stdout is not None
    replayed = [await asyncio.wait_for(proc.stdout.readline(), 20) for _ in range(2)]
    await bus.write_event(make_event("cli", 3, wall_end=103.0))
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    lines = [json.loads(line) for line in [*replayed, *out.decode().splitlines()]]
    assert [d["seq"] for d in lines] == [1, 2, 3]
    assert lines[0] == make_event("cli", 1, wall_end=101.0).to_json_dict()


def test_subscribe_command_without_url_says_what_to_do(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "MERCLIP_REDIS_URL"}
    env["PYTHONPATH"] = str(root)
    proc = subprocess.run(
        [sys.executable, "-m", "workers.app", "--config", str(root / "config.toml"), "subscribe"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "--redis-url" in proc.stderr


async def test_an_event_of_another_session_on_a_session_channel_is_dropped(
    bus: Bus, redis_url: str
) -> None:
    """Review M6: whoever can PUBLISH (a forger) could put any session's event on `abc`'s
    channel, and `abc`'s page showed it."""
    from workers.schemas import encode

    got: list[tuple[str, int]] = []

    async def consume() -> None:
        prefix = bus.settings.prefix
        async with contextlib.aclosing(subscribe(redis_url, "abc", prefix=prefix)) as evs:
            async for ev in evs:
                got.append((ev.session_id, ev.seq))
                if ev.seq == 2:
                    break

    task = asyncio.create_task(consume())
    await _wait_subscribed(redis_url, bus.keys.session_channel("abc"))
    client = aioredis.from_url(redis_url)
    try:
        channel = bus.keys.session_channel("abc")
        await client.publish(channel, encode(make_event("xyz", 1)))  # forged
        await client.publish(channel, encode(make_event("abc", 2)))
    finally:
        await client.aclose()
    await asyncio.wait_for(task, 10)
    assert got == [("abc", 2)]


async def test_many_event_streams_share_one_pub_sub_connection(bus: Bus, redis_url: str) -> None:
    """Review M3: every stream opened a connection pool and a pub/sub connection of its own
    (500 streams = 1000 Redis clients; the fds ran out at ~340 under ulimit -n 1024). On the
    hub, 40 streams cost one pub/sub connection, and each gets its own session's events."""
    from workers.subscriber import HISTORY_READS, EventHub

    for s in range(4):
        await bus.write_event(make_event(f"h{s}", 0))
    before = await redis_clients(redis_url)
    hub = EventHub(bus)
    got: dict[int, list[tuple[str, int]]] = {i: [] for i in range(40)}

    async def stream(i: int) -> None:
        session = None if i % 10 == 0 else f"h{i % 4}"
        async with contextlib.aclosing(hub.events(session, replay=5)) as evs:
            async for ev in evs:
                got[i].append((ev.session_id, ev.seq))
                if ev.seq == 1 and (session is not None or len(got[i]) == 8):
                    break

    tasks = [asyncio.create_task(stream(i)) for i in range(40)]
    await _wait_subscribed(redis_url, bus.keys.events_channel)
    assert hub.streams == 40
    during = await redis_clients(redis_url)
    for s in range(4):
        await bus.write_event(make_event(f"h{s}", 1))
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    # The pub/sub connection plus at most HISTORY_READS pool connections (was 2 per stream).
    assert during - before <= HISTORY_READS + 1, (before, during)
    for i, events in got.items():
        if i % 10 == 0:
            assert sorted(events) == sorted((f"h{s}", q) for s in range(4) for q in (0, 1))
        else:
            assert events == [(f"h{i % 4}", 0), (f"h{i % 4}", 1)]
    assert hub.streams == 0
    await asyncio.sleep(0.2)
    assert await _numsub(redis_url, bus.keys.events_channel) == 0  # the last one unsubscribed
    await hub.aclose()


async def test_hub_streams_end_with_bus_error_when_redis_goes_away() -> None:
    """As subscribe() does: a page's stream ends (and its EventSource reconnects) instead of
    hanging on a dead subscription."""
    from workers.app.settings import RedisSettings
    from workers.redis_server import EmbeddedRedis
    from workers.subscriber import EventHub

    server = EmbeddedRedis()
    url = server.start()
    try:
        async with Bus.connect(url, RedisSettings()) as bus:
            hub = EventHub(bus, poll_s=0.2)

            async def stream(session: str | None) -> None:
                async for _ in hub.events(session):
                    pass

            tasks = [asyncio.create_task(stream(s)) for s in (None, "a", "b")]
            await _wait_subscribed(url, bus.keys.events_channel)
            server.stop()
            results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)
            assert all(isinstance(r, BusError) for r in results), results
            await hub.aclose()
    finally:
        server.stop()


async def test_dashboards_connecting_at_once_share_one_replay(bus: Bus, redis_url: str) -> None:
    """Review M4: 8 dashboards connecting together each computed the full replay. They share
    one now, and one connecting later within the cache second still misses nothing."""
    from workers.subscriber import EventHub

    calls = 0
    real = bus.recent_events

    async def counted(count: int, sessions_limit: int = 100) -> list:  # type: ignore[type-arg]
        nonlocal calls
        calls += 1
        return await real(count, sessions_limit)

    for s in range(3):
        await bus.write_event(make_event(f"d{s}", 0))
    bus.recent_events = counted  # type: ignore[method-assign]
    hub = EventHub(bus)
    first = hub.events(replay=300)  # the hub subscribes for the first dashboard
    assert (await anext(first)).session_id == "d0"
    replays = await asyncio.gather(*(hub.recent(300) for _ in range(8)))
    assert calls == 1 and all(len(r) == 3 for r in replays)
    # Written after that snapshot was read: a dashboard that reuses it still gets the event.
    await bus.write_event(make_event("d9", 0))
    late = hub.events(replay=300)
    seen = [(await anext(late)).session_id for _ in range(4)]
    assert calls == 1 and seen == ["d0", "d1", "d2", "d9"]
    await late.aclose()
    await first.aclose()
    await hub.aclose()

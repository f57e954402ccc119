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
from test_bus import make_event

from workers.bus import Bus, BusError
from workers.redis_server import _free_port
from workers.subscriber import subscribe

pytestmark = pytest.mark.timeout(60)


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
    cmd = [sys.executable, "-m", "merclip.cli", "--config", str(root / "config.toml")]
    cmd += ["subscribe", "--redis-url", redis_url, "--session", "cli", "--replay", "2"]
    proc = await asyncio.create_subprocess_exec(
        *cmd, "--count", "3", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    await _wait_subscribed(redis_url, bus.keys.session_channel("cli"))
    await bus.write_event(make_event("cli", 3, wall_end=103.0))
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert [d["seq"] for d in lines] == [1, 2, 3]
    assert lines[0] == make_event("cli", 1, wall_end=101.0).to_json_dict()


def test_subscribe_command_without_url_says_what_to_do(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "MERCLIP_REDIS_URL"}
    env["PYTHONPATH"] = str(root)
    proc = subprocess.run(
        [sys.executable, "-m", "merclip.cli", "--config", str(root / "config.toml"), "subscribe"],
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

"""Limits and credentials through the real service: overload answers 503 + Retry-After, and the
bus works with a Redis ACL user (redis://user:pass@host) and never logs the password.

Deadline skipping when inference falls behind is tested in test_inference.py
(test_windows_past_the_deadline_are_skipped_and_counted); poison messages going to the
dead-letter stream in test_inference.py (test_bad_windows_are_dead_lettered_and_the_rest_go_on,
test_a_window_that_keeps_killing_workers_is_dead_lettered).
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from bus_helpers import make_event, make_window, redis_clients
from stream_helpers import SineTrack, wait_for

from stream.app import REGISTRY
from stream.clients.peer_client import connect_peer
from stream.errors import OfferRejectedError
from workers.app.service import LiveService
from workers.app.settings import RedisSettings, Settings
from workers.bus import Bus, BusError
from workers.redis_server import EmbeddedRedis
from workers.subscriber import HISTORY_READS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def test_acl_user_url_works_and_wrong_password_is_refused() -> None:
    acl = (
        "--user",
        "default",
        "off",
        "--user",
        "merclip",
        "on",
        ">s3cret-pass",
        "~*",
        "&*",
        "+@all",
    )
    async with EmbeddedRedis(extra_args=acl) as url:
        authed = url.replace("redis://", "redis://merclip:s3cret-pass@")
        settings = RedisSettings(prefix="acl")
        async with Bus.connect(authed, settings) as bus:
            await bus.add_window(make_window("s", 0))
            assert await bus.windows_length() == 1
        with pytest.raises(BusError) as anonymous:
            async with Bus.connect(url, settings):
                pass
        wrong = url.replace("redis://", "redis://merclip:wrong-pass@")
        with pytest.raises(BusError) as refused:
            async with Bus.connect(wrong, settings):
                pass
        assert "wrong-pass" not in str(refused.value) and "merclip:***@" in str(refused.value)
        assert "s3cret" not in str(anonymous.value)


@pytest.mark.slow
async def test_beyond_max_sessions_the_service_answers_503_with_retry_after() -> None:
    s = Settings().replace("server", host="127.0.0.1", port=0, max_sessions=1)
    s = s.replace("model", name="merclip-tiny-live").replace("clip", model="merclip-tiny-clip")
    s = s.replace("features", space="live").replace("model", checkpoint="")
    async with LiveService(s) as svc:
        assert svc.app is not None
        first, _ = await connect_peer(svc.url, [SineTrack(seconds=10)], session_id="one")
        with pytest.raises(OfferRejectedError) as info:
            await connect_peer(svc.url, [SineTrack(seconds=1)], session_id="two")
        assert info.value.status == 503 and info.value.body["error"] == "server_full"
        assert info.value.retry_after is not None and info.value.retry_after > 0
        assert [p.session_id for p in svc.app[REGISTRY].sessions()] == ["one"]
        assert await wait_for(lambda: first.connectionState == "connected", 10)
        await first.close()
        assert await wait_for(lambda: svc.app[REGISTRY].count == 0, 10)
        again, sid = await connect_peer(svc.url, [SineTrack(seconds=1)], session_id="two")
        assert sid == "two"
        await again.close()


async def _read_event(response: aiohttp.ClientResponse) -> dict:  # type: ignore[type-arg]
    while True:
        line = await asyncio.wait_for(response.content.readline(), 20)
        if line.startswith(b"data: "):
            return json.loads(line[6:])


@pytest.mark.slow
async def test_event_streams_share_redis_connections_and_are_capped() -> None:
    """Review M3: every /events or /dashboard/events stream opened 2 Redis connections of its
    own (500 streams = 1000 Redis clients; fds ran out at ~340 streams under ulimit -n 1024)
    and nothing capped them. Now they share the service's connections, and beyond
    server.max_event_streams a new one is 503 + Retry-After."""
    s = Settings().replace("server", host="127.0.0.1", port=0, max_event_streams=30)
    s = s.replace("model", name="merclip-tiny-live").replace("clip", model="merclip-tiny-clip")
    s = s.replace("features", space="live").replace("model", checkpoint="")
    async with LiveService(s) as svc, aiohttp.ClientSession() as http:
        base = svc.url.rstrip("/")
        before = await redis_clients(svc.redis_url)
        streams = [await http.get(f"{base}/events/page{i % 5}") for i in range(28)]
        streams += [await http.get(f"{base}/dashboard/events") for _ in range(2)]
        assert all(r.status == 200 for r in streams)
        async with http.get(f"{base}/events/page0") as refused:
            assert refused.status == 503 and refused.headers["Retry-After"]
            assert (await refused.json())["error"] == "too_many_streams"
        async with Bus.connect(svc.redis_url, s.redis) as bus:
            await asyncio.sleep(0.5)  # every stream has subscribed and replayed (nothing)
            during = await redis_clients(svc.redis_url) - 1  # not this Bus
            await bus.write_event(make_event("page3", 0, "hello"))
            got = await asyncio.gather(*(_read_event(r) for r in streams[3:28:5] + streams[28:]))
        assert {(e["session_id"], e["seq"]) for e in got} == {("page3", 0)}
        # The hub's pub/sub connection, its HISTORY_READS replays, and up to two connections
        # the service's other parts (monitor, worker) may open meanwhile: never per stream
        # (was 2 per stream: 60).
        assert during - before <= 1 + HISTORY_READS + 2, (before, during)
        for r in streams:
            r.close()

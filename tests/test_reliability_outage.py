"""Redis outage: a live WebRTC session keeps streaming while its Redis server is stopped and
restarted on the same port. Ingest holds what it cannot send in a bounded, counted buffer; ingest
and inference reconnect with backoff and log the outage once; events flow again afterwards.

Everything is real: aiortc client, LiveService (faster-whisper tiny.en, test-size CLIP and
MER-CLIP), and a redis-server process that is really killed and started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from bus_helpers import make_event
from media import SPEECH_TEXT, face_video
from redis.exceptions import RedisError

from stream.app import REGISTRY
from stream.clients.file import stream_file
from workers.app.service import LiveService
from workers.app.settings import RedisSettings, Settings
from workers.bus import Bus, BusError, Keys
from workers.redis_server import EmbeddedRedis
from workers.schemas import decode

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

MAX_UNSENT = 2


def outage_settings(url: str) -> Settings:
    s = Settings()
    s = s.replace("server", host="127.0.0.1", port=0)
    s = s.replace("model", name="merclip-tiny-live")
    s = s.replace("clip", model="merclip-tiny-clip")
    s = s.replace("features", space="live").replace("model", checkpoint="")
    s = s.replace("redis", url=url)
    # Non-overlapping 2 s windows: one window every 2 s, little ASR work on the busy test box.
    s = s.replace("ingest", window_seconds=2.0, hop_seconds=2.0, max_unsent_windows=MAX_UNSENT)
    return s.replace("inference", claim_idle_ms=500, deadline_seconds=120.0, block_ms=100)


async def _event_seqs(url: str, settings: Settings, session: str) -> list[int]:
    """The session's stored events, or [] while Redis is unreachable. A plain redis-py client,
    new each time: the test's reads must neither depend on the code under test reconnecting
    nor log the Bus's outage warnings that the test counts (a Bus of its own did, when a
    connect timed out on a loaded machine: two "cannot reach" lines for one outage)."""
    client = aioredis.from_url(url, socket_connect_timeout=2.0)
    try:
        entries = await client.xrange(Keys(settings.redis.prefix).session_events(session))
    except (RedisError, OSError):
        return []
    finally:
        await client.aclose()
    return [decode(fields[b"m"]).seq for _, fields in entries]


async def _until(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not await cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.25)


async def test_sessions_survive_a_redis_restart(
    media_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="workers.bus")
    video = face_video(media_dir, SPEECH_TEXT, seconds=40.0)
    first = EmbeddedRedis()
    url = await first.astart()
    second: EmbeddedRedis | None = None
    session = "outage"
    try:
        settings = outage_settings(url)
        async with LiveService(settings) as svc:
            assert svc.pipeline is not None and svc.app is not None and svc.bus is not None
            counters = svc.pipeline.counters
            streaming = asyncio.create_task(stream_file(svc.url, video, session_id=session))
            try:
                await _until(lambda: _has_events(url, settings, session), 60, "the first event")
                peer = svc.app[REGISTRY].get(session)
                assert peer is not None
                before = await _event_seqs(url, settings, session)

                await first.aclose()  # Redis goes away mid-stream
                # Windows keep being cut and extracted; what cannot be sent is held, bounded.
                held_max = 0
                deadline = asyncio.get_running_loop().time() + 30
                while counters.windows_dropped_unsent < 1:
                    held_max = max(held_max, counters.windows_unsent)
                    assert asyncio.get_running_loop().time() < deadline, "nothing was dropped"
                    await asyncio.sleep(0.1)
                assert held_max <= MAX_UNSENT and counters.windows_unsent <= MAX_UNSENT
                assert not svc.bus.available
                assert svc.app[REGISTRY].get(session) is peer, "the session was dropped"

                second = EmbeddedRedis(port=first.port)
                await second.astart()  # same address, empty server (no persistence)

                async def newer_events() -> bool:
                    seqs = await _event_seqs(url, settings, session)
                    return bool(seqs) and max(seqs) > max(before)

                await _until(newer_events, 60, "events after the restart")
                assert svc.app[REGISTRY].get(session) is peer, "the session was dropped"
                assert peer.close_reason is None
                assert svc.worker is not None and svc.worker.running
                assert svc.worker.counters.redis_errors >= 1
                assert svc.bus.available and svc.bus.outages == 1
                assert counters.windows_unsent == 0 and counters.publish_retries >= 1
            finally:
                streaming.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await streaming
        # One warning when Redis went away and one when it came back, not one per attempt.
        bus_warnings = [r.getMessage() for r in caplog.records if r.name == "workers.bus"]
        down = [m for m in bus_warnings if "cannot reach Redis" in m]
        back = [m for m in bus_warnings if "answers again" in m]
        assert len(down) == 1 and len(back) == 1, bus_warnings
    finally:
        await first.aclose()
        if second is not None:
            await second.aclose()


async def _has_events(url: str, settings: Settings, session: str) -> bool:
    return bool(await _event_seqs(url, settings, session))


async def test_a_subscription_is_only_up_once_the_server_confirms_it() -> None:
    """redis-py reads no reply to SUBSCRIBE: on a pooled connection left over from before an
    outage the write alone "succeeded", so a subscription opened while Redis was down counted
    as Redis being back, and its first read as a second outage (CI: 2 outages for 1 restart)."""
    first = EmbeddedRedis()
    url = await first.astart()
    second: EmbeddedRedis | None = None
    try:
        async with Bus.connect(url, RedisSettings()) as bus:
            await asyncio.gather(*(bus.ping() for _ in range(4)))  # several pooled connections
            await first.aclose()
            with pytest.raises(BusError):  # was: subscribed, "Redis answers"
                async with bus.event_feed(None):
                    pass
            assert not bus.available and bus.outages == 1
            with pytest.raises(BusError):
                await bus.ping()
            assert not bus.available and bus.outages == 1

            second = EmbeddedRedis(port=first.port)
            await second.astart()
            await bus.ping()  # one connection reconnects; the rest of the pool is still stale
            assert bus.available
            async with bus.event_feed(None) as feed:
                await bus.write_event(make_event("stale", 0, "back"))
                event = await asyncio.wait_for(anext(feed), 10)
            assert (event.session_id, event.seq) == ("stale", 0)
            assert bus.available and bus.outages == 1
    finally:
        await first.aclose()
        if second is not None:
            await second.aclose()

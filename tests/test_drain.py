"""Draining an ingest node before it is recycled: SIGUSR2 (or `server.recycle_after_sessions`)
makes a running `merclip ingest` refuse new sessions (503 `draining` + Retry-After, /readyz 503)
while its live sessions stream on to their end and get every event; then it exits 0 by itself.

The first tests run the stream server in-process with real aiortc peers (what the registry
decides); the last runs real `merclip ingest` and `merclip infer` processes on one Redis with a
real WebRTC client streaming a video file through the drain.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from bus_helpers import prefix_on, tiny_worker_env
from media import SPEECH_TEXT, face_video
from process_helpers import Merclip, start_merclip
from service_helpers import tiny_settings
from stream_helpers import SineTrack, make_settings, running_server, wait_for

from stream.app import REGISTRY
from stream.clients.file import stream_file
from stream.clients.peer_client import connect_peer
from stream.errors import OfferRejectedError
from workers.app.service import LiveService
from workers.bus import Bus
from workers.redis_server import EmbeddedRedis
from workers.settings import RedisSettings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

Response = tuple[int, dict[str, object]]
CLIP_SECONDS = 9.0
WINDOW_SECONDS = 3.0
HOP_SECONDS = 1.5


async def _get(url: str) -> Response:
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as r:
            return r.status, await r.json()


async def test_a_draining_server_refuses_new_sessions_and_takes_reconnects() -> None:
    async with running_server(make_settings(max_sessions=4)) as (url, app, sinks):
        registry = app[REGISTRY]
        live, _ = await connect_peer(url, [SineTrack(seconds=30)], session_id="live")
        assert await wait_for(lambda: live.connectionState == "connected", 10)
        assert await _get(url + "/readyz") == (200, {"status": "ready", "sessions": 1})

        registry.drain()
        status, ready = await _get(url + "/readyz")
        assert (status, ready["status"]) == (503, "draining")
        status, health = await _get(url + "/healthz")  # alive: a liveness probe must not kill it
        assert status == 200 and health["status"] == "draining" and health["draining"] is True
        with pytest.raises(OfferRejectedError) as refused:
            await connect_peer(url, [SineTrack(seconds=5)], session_id="newcomer")
        assert refused.value.status == 503 and refused.value.body["error"] == "draining"
        assert refused.value.retry_after is not None and refused.value.retry_after > 0

        # A reconnect of the live session needs no new slot: still taken.
        again, _ = await connect_peer(url, [SineTrack(seconds=30)], session_id="live")
        assert await wait_for(lambda: again.connectionState == "connected", 10)
        assert registry.count == 1 and len(sinks) == 2
        emptied = asyncio.create_task(registry.wait_empty())
        await asyncio.sleep(0.3)
        assert not emptied.done(), "a drain must wait for the live session"
        await live.close()
        await again.close()
        await asyncio.wait_for(emptied, 10)


async def test_recycle_after_n_sessions_drains_by_itself() -> None:
    settings = make_settings(max_sessions=4, recycle_after_sessions=2)
    async with running_server(settings) as (url, app, _sinks):
        registry = app[REGISTRY]
        first, _ = await connect_peer(url, [SineTrack(seconds=30)], session_id="one")
        assert not registry.draining
        second, _ = await connect_peer(url, [SineTrack(seconds=30)], session_id="two")
        assert registry.draining, "the 2nd session of recycle_after_sessions=2 starts the drain"
        with pytest.raises(OfferRejectedError) as refused:
            await connect_peer(url, [SineTrack(seconds=5)], session_id="three")
        assert refused.value.body["error"] == "draining"
        assert registry.count == 2
        for pc in (first, second):
            await pc.close()


async def test_a_draining_serve_infers_its_last_windows_before_it_returns(
    media_dir: Path,
) -> None:
    """`merclip serve` on its embedded Redis: no other worker will ever infer what is left, so
    the drain returns only once every window of the ended session has its event."""
    video = face_video(media_dir, SPEECH_TEXT, seconds=CLIP_SECONDS)
    async with LiveService(tiny_settings()) as svc:
        assert svc.bus is not None
        # Inference that lags the stream (as on a loaded machine): the session's last windows
        # are still waiting for the worker when its extraction is done.
        predictor = svc.worker.predictor
        predict = predictor.predict

        def slow_predict(samples: object) -> object:
            time.sleep(1.0)
            return predict(samples)

        predictor.predict = slow_predict
        session = "serve-drain"
        streaming = asyncio.create_task(stream_file(svc.url, video, session_id=session))
        deadline = time.monotonic() + 60
        while not await svc.bus.events(session, 1):
            assert time.monotonic() < deadline and not streaming.done()
            await asyncio.sleep(0.1)
        svc.drain()
        drained = asyncio.create_task(svc.drain_when_asked())
        with pytest.raises(OfferRejectedError):
            await stream_file(svc.url, video, session_id="late", seconds=2)
        await streaming
        await asyncio.wait_for(drained, 60)
        # Read at once, before the service stops: nothing is still on its way.
        events = await svc.bus.events(session, 1000)
        assert sorted(e.seq for e in events) == list(range(len(events)))
        assert max(e.media_end for e in events) >= CLIP_SECONDS - HOP_SECONDS
        assert await svc.bus.windows_length() == 0


async def test_the_drain_timeout_closes_sessions_still_live() -> None:
    settings = tiny_settings().replace("server", drain_timeout_seconds=1.0)
    async with LiveService(settings) as svc:
        assert svc.app is not None
        registry = svc.app[REGISTRY]
        pc, _ = await connect_peer(svc.url, [SineTrack(seconds=60)], session_id="endless")
        try:
            assert await wait_for(lambda: pc.connectionState == "connected", 10)
            started = time.monotonic()
            svc.drain()
            await asyncio.wait_for(svc.drain_when_asked(), 30)
            assert registry.count == 0
            assert time.monotonic() - started < 15  # the timeout, then the last windows
        finally:
            await pc.close()


async def test_sigusr2_drains_ingest_a_live_session_gets_all_its_events_then_it_exits(
    media_dir: Path,
) -> None:
    video = face_video(media_dir, SPEECH_TEXT, seconds=CLIP_SECONDS)
    with EmbeddedRedis() as redis_url:
        async with prefix_on(redis_url) as prefix:
            env = tiny_worker_env(
                prefix,
                MERCLIP_INGEST_WINDOW_SECONDS=str(WINDOW_SECONDS),
                MERCLIP_INGEST_HOP_SECONDS=str(HOP_SECONDS),
                MERCLIP_INGEST_VIDEO_FPS="2",
                MERCLIP_INFERENCE_DEADLINE_SECONDS="600",
            )
            infer = start_merclip(
                ["infer", "--redis-url", redis_url, "--stats-every", "0"], env, ready=None
            )
            ingest = start_merclip(
                ["ingest", "--redis-url", redis_url, "--host", "127.0.0.1", "--port", "0"], env
            )
            try:
                await _drain_scenario(ingest.url, redis_url, prefix, video, ingest, infer)
            finally:
                ingest.kill()
                infer.kill()


async def _drain_scenario(
    url: str, redis_url: str, prefix: str, video: Path, ingest: Merclip, infer: Merclip
) -> None:
    session = "drained"
    async with Bus.connect(redis_url, RedisSettings(prefix=prefix)) as bus:
        streaming = asyncio.create_task(stream_file(url, video, session_id=session))
        deadline = time.monotonic() + 90
        while not await bus.events(session, 1):
            assert time.monotonic() < deadline, f"no event:\n{ingest.log}\n{infer.log}"
            assert not streaming.done(), streaming.result()
            await asyncio.sleep(0.2)
        # Mid-stream: drain.
        assert not streaming.done(), "the clip ended before the drain could start"
        ingest.proc.send_signal(signal.SIGUSR2)
        assert await _eventually(lambda: _get(url + "readyz"), lambda r: r[0] == 503)
        with pytest.raises(OfferRejectedError) as refused:
            await stream_file(url, video, session_id="newcomer", seconds=2)
        assert refused.value.status == 503 and refused.value.body["error"] == "draining"
        assert not streaming.done(), "the drain must not cut the live session"

        await streaming  # the clip plays to its end
        ended = time.monotonic()
        code = await asyncio.to_thread(ingest.wait, 60)
        assert code == 0, ingest.log
        assert "drained" in ingest.log
        # It exits by itself once the session's last windows are sent: promptly, not after
        # the 20 s inactivity timeout.
        assert time.monotonic() - ended < 20, ingest.log

        # Every window of the session, up to the end of the clip, gets exactly one event.
        deadline = time.monotonic() + 30
        while True:
            events = await bus.events(session, 1000)
            seqs = sorted(e.seq for e in events)
            if seqs and seqs == list(range(len(seqs))) and not await bus.windows_length():
                break
            assert time.monotonic() < deadline, (seqs, infer.log)
            await asyncio.sleep(0.2)
        assert len({e.event_id for e in events}) == len(events)
        last = max(events, key=lambda e: e.seq)
        assert last.media_end >= CLIP_SECONDS - HOP_SECONDS, [e.media_end for e in events]
        assert not await bus.events("newcomer", 10)


async def _eventually(
    fetch: Callable[[], Awaitable[Response]],
    ok: Callable[[Response], bool],
    timeout: float = 10.0,
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok(await fetch()):
            return True
        await asyncio.sleep(0.1)
    return False

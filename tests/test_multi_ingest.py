"""Several `merclip ingest` processes on one host: two ingest processes on their own ports, one
Redis, one `merclip infer` and one `merclip dashboard`, as README "Operations" runs them. Each
process keeps its own session limit, both sessions get their events from the one worker, and the
dashboard (which reads Redis) lists the sessions of both processes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from bus_helpers import prefix_on, tiny_worker_env
from media import SPEECH_TEXT, face_video
from process_helpers import Merclip, start_merclip

from stream.clients.file import stream_file
from stream.errors import OfferRejectedError
from workers.bus import Bus
from workers.redis_server import EmbeddedRedis
from workers.settings import RedisSettings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CLIP_SECONDS = 7.0


async def _json(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as r:
            assert r.status == 200, (url, r.status)
            body: dict[str, Any] = await r.json()
            return body


async def _until_listed(url: str, sessions: set[str], timeout: float = 15.0) -> dict[str, Any]:
    """The overview at `url` once it lists `sessions` (each refreshes from Redis every second)."""
    deadline = time.monotonic() + timeout
    while True:
        overview = await _json(url)
        if sessions <= set(overview["sessions"]):
            return overview
        assert time.monotonic() < deadline, (url, overview)
        await asyncio.sleep(0.3)


async def test_two_ingest_processes_share_one_redis_with_their_own_limits(
    media_dir: Path,
) -> None:
    video = face_video(media_dir, SPEECH_TEXT, seconds=CLIP_SECONDS)
    procs: list[Merclip] = []
    with EmbeddedRedis() as redis_url:
        async with prefix_on(redis_url) as prefix:
            env = tiny_worker_env(
                prefix,
                MERCLIP_INGEST_WINDOW_SECONDS="3.0",
                MERCLIP_INGEST_HOP_SECONDS="1.5",
                MERCLIP_INGEST_VIDEO_FPS="2",
                MERCLIP_INGEST_EXTRACT_THREADS="1",  # 2 processes x 1 thread on 2 cores
                MERCLIP_INFERENCE_DEADLINE_SECONDS="600",
            )
            try:
                procs.append(
                    start_merclip(
                        ["infer", "--redis-url", redis_url, "--stats-every", "0"], env, ready=None
                    )
                )
                ingest_args = [
                    "ingest",
                    "--redis-url",
                    redis_url,
                    "--port",
                    "0",
                    "--max-sessions",
                    "1",
                ]
                one = start_merclip(ingest_args, env)
                procs.append(one)
                two = start_merclip(ingest_args, env)
                procs.append(two)
                dash = start_merclip(
                    ["dashboard", "--redis-url", redis_url, "--host", "127.0.0.1", "--port", "0"],
                    env,
                    ready="dashboard at",
                )
                procs.append(dash)
                assert one.url != two.url
                await _scenario(one, two, dash, redis_url, prefix, video)
            finally:
                for p in procs:
                    p.kill()


async def _scenario(
    one: Merclip, two: Merclip, dash: Merclip, redis_url: str, prefix: str, video: Path
) -> None:
    streams = {
        "on-one": asyncio.create_task(stream_file(one.url, video, session_id="on-one")),
        "on-two": asyncio.create_task(stream_file(two.url, video, session_id="on-two")),
    }
    async with Bus.connect(redis_url, RedisSettings(prefix=prefix)) as bus:
        deadline = time.monotonic() + 90
        while not (await bus.events("on-one", 1) and await bus.events("on-two", 1)):
            assert time.monotonic() < deadline, f"no events:\n{one.log}\n{two.log}"
            for task in streams.values():
                assert not task.done(), task.result()
            await asyncio.sleep(0.2)

        # The limit is per process: `one` is full, `two` is full, each counts its own session.
        for node, sid in ((one, "on-one"), (two, "on-two")):
            health = await _json(node.url + "healthz")
            assert (health["sessions"], health["max_sessions"]) == (1, 1), (sid, health)
        with pytest.raises(OfferRejectedError) as refused:
            await stream_file(one.url, video, session_id="third", seconds=2)
        assert refused.value.status == 503 and refused.value.body["error"] == "server_full"

        # Both processes' sessions on the dashboard that reads Redis, and on either node's own
        # dashboard, whose process section counts only its own peer.
        base = dash.url.removesuffix("/dashboard")
        await _until_listed(base + "/dashboard/overview", {"on-one", "on-two"})
        own = await _until_listed(one.url + "dashboard/overview", {"on-one", "on-two"})
        assert own["process"]["webrtc_sessions"] == 1

        await asyncio.gather(*streams.values())
        deadline = time.monotonic() + 60
        for sid in streams:
            while True:
                seqs = sorted(e.seq for e in await bus.events(sid, 1000))
                done = len(seqs) >= int(CLIP_SECONDS / 1.5) - 1 and not await bus.windows_length()
                if done and seqs == list(range(len(seqs))):
                    break
                assert time.monotonic() < deadline, (sid, seqs)
                await asyncio.sleep(0.3)
        assert not await bus.events("third", 10)

"""Worker crash: a real `merclip infer` process is SIGKILLed while it holds unacknowledged windows
in the middle of a stream; a live worker claims them after claim_idle_ms, every window yields
exactly one event id, and a subscriber sees each event once.

To kill the worker *while* it holds windows (not between batches, which would prove nothing),
the test freezes it with SIGSTOP, looks at its pending list in Redis, and either SIGKILLs it
(windows pending) or lets it go on (SIGCONT) and tries again a moment later.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from bus_helpers import make_window, prefix_on, tiny_worker_env

from merclip.predictor import Predictor
from workers.app.settings import Settings
from workers.bus import Bus
from workers.inference import InferenceWorker
from workers.redis_server import EmbeddedRedis
from workers.schemas import EmotionEvent, event_id_for
from workers.subscriber import subscribe

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[1]
CLAIM_IDLE_MS = 500
SESSION = "crash"


def crash_settings(prefix: str) -> Settings:
    s = Settings().replace("model", name="merclip-tiny-live")
    s = s.replace("clip", model="merclip-tiny-clip")
    s = s.replace("features", space="live").replace("model", checkpoint="")
    s = s.replace("redis", prefix=prefix)
    return s.replace(
        "inference",
        batch_size=8,
        block_ms=50,
        claim_idle_ms=CLAIM_IDLE_MS,
        deadline_seconds=600.0,  # nothing may be skipped: every window must give an event
    )


def worker_env(prefix: str) -> dict[str, str]:
    return tiny_worker_env(
        prefix,
        MERCLIP_INFERENCE_CLAIM_IDLE_MS=str(CLAIM_IDLE_MS),
        MERCLIP_INFERENCE_DEADLINE_SECONDS="600",
        MERCLIP_INFERENCE_BATCH_SIZE="8",
        MERCLIP_INFERENCE_BLOCK_MS="50",
    )


async def _pending_of(client: aioredis.Redis, key: str, group: str, consumer: str) -> int:
    try:
        rows = await client.xpending_range(key, group, "-", "+", 1000, consumer)
    except aioredis.ResponseError:
        return 0  # the group does not exist yet
    return len(rows)


async def test_sigkilled_worker_loses_no_window_and_duplicates_nothing() -> None:
    with EmbeddedRedis() as url:
        async with prefix_on(url) as prefix:
            await _crash_scenario(url, prefix)


async def _crash_scenario(url: str, prefix: str) -> None:
    settings = crash_settings(prefix)
    cmd = [sys.executable, "-m", "workers.app", "--config", str(ROOT / "config.toml"), "infer"]
    cmd += ["--redis-url", url, "--consumer", "doomed", "--stats-every", "0"]
    proc = subprocess.Popen(
        cmd, env=worker_env(prefix), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    client = aioredis.from_url(url)
    received: list[EmotionEvent] = []

    async def listen() -> None:
        async for ev in subscribe(url, session=SESSION, replay=1000, prefix=prefix):
            received.append(ev)

    listener = asyncio.create_task(listen())
    seq = 0
    try:
        async with Bus.connect(url, settings.redis) as bus:
            group = settings.inference.consumer_group

            async def produce(n: int) -> None:
                nonlocal seq
                for _ in range(n):
                    await bus.add_window(make_window(SESSION, seq, age_s=0.1))
                    seq += 1

            # A stream of windows until the worker process serves them (model load can take a
            # while on a busy machine).
            for _ in range(600):
                await produce(4)
                await asyncio.sleep(0.1)
                if await bus.events(SESSION, 1):
                    break
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
            assert await bus.events(SESSION, 1), "the worker process served nothing"

            # Freeze it mid-stream; kill it only when it holds unacknowledged windows.
            held = 0
            for _ in range(400):
                await produce(8)
                await asyncio.sleep(0.005)
                proc.send_signal(signal.SIGSTOP)
                held = await _pending_of(client, bus.keys.windows, group, "doomed")
                if held:
                    proc.send_signal(signal.SIGKILL)
                    break
                proc.send_signal(signal.SIGCONT)
                await asyncio.sleep(0.02)
            assert held > 0, "never caught the worker holding windows"
            proc.wait(10)
            assert proc.returncode == -signal.SIGKILL

            # A live worker joins; the stream goes on a little longer.
            predictor = await asyncio.to_thread(Predictor.from_settings, settings)
            async with InferenceWorker(settings, bus, predictor, consumer="survivor") as heir:
                await produce(16)
                total = seq
                deadline = asyncio.get_running_loop().time() + 60
                while len(await bus.events(SESSION, 10 * total)) < total:
                    assert asyncio.get_running_loop().time() < deadline, (
                        f"{len(await bus.events(SESSION, 10 * total))}/{total} events"
                    )
                    await asyncio.sleep(0.1)
                await asyncio.sleep(2 * CLAIM_IDLE_MS / 1000)  # any late duplicate shows up
            assert heir.counters.claimed >= held, (heir.counters.claimed, held)
            assert await bus.pending_count(group) == 0
            stored = await bus.events(SESSION, 10 * total)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        await client.aclose()

    # Exactly one event per window, with the deterministic id; none skipped or dead-lettered.
    assert sorted(e.seq for e in stored) == list(range(total))
    model = (stored[0].model_name, stored[0].model_version)
    assert [e.event_id for e in stored] == [event_id_for(SESSION, e.seq, *model) for e in stored]
    # The subscriber (replay + live, overlapping) yielded every event once.
    ids = [e.event_id for e in received]
    assert len(ids) == len(set(ids)) == total

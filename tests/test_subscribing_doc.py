"""docs/SUBSCRIBING.md runs as written: its Python examples, `merclip subscribe`, its redis-cli
commands and its curl line, against a real (embedded) Redis and a real server. The doc's Redis
URL is replaced by the test server's; nothing else in the snippets is changed."""

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from bus_helpers import make_event
from stream_helpers import make_settings, running_server

from workers.app.settings import RedisSettings
from workers.bus import Bus
from workers.redis_server import EmbeddedRedis

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

DOC = Path(__file__).resolve().parents[1] / "docs" / "SUBSCRIBING.md"
DOC_URL = "redis://127.0.0.1:6379/0"
ROOT = DOC.parents[1]

HAPPY = [0.7, 0.1, 0.1, 0.2, 0.0, 0.1]  # every event of these tests predicts "happy"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


def bash_lines(startswith: str) -> list[str]:
    lines = [ln.split("  #")[0].strip() for b in blocks("bash") for ln in b.splitlines()]
    return [ln for ln in lines if ln.startswith(startswith)]


@pytest.fixture
def redis_url() -> Iterator[str]:
    # A server per test (starts in ~50 ms): the doc's default prefix and session "abc" are
    # safe here, and every test starts with no events.
    with EmbeddedRedis() as url:
        yield url


async def write_events(url: str, session: str, n: int, start: int = 0) -> None:
    async with Bus.connect(url, RedisSettings()) as bus:
        for seq in range(start, start + n):
            assert await bus.write_event(
                make_event(session, seq, probs=HAPPY, words=[], wall_end=time.time())
            )


async def wait_subscribed(url: str, channel: str) -> None:
    client = aioredis.from_url(url)
    try:
        for _ in range(300):
            [(_, n)] = await client.pubsub_numsub(channel)
            if n:
                return
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()
    raise AssertionError(f"nobody subscribed to {channel}")


async def read_lines(proc: asyncio.subprocess.Process, n: int, timeout: float = 20) -> list[str]:
    assert proc.stdout is not None
    return [
        (await asyncio.wait_for(proc.stdout.readline(), timeout)).decode().rstrip("\n")
        for _ in range(n)
    ]


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
    await proc.wait()


def python_example(index: int, url: str) -> str:
    code = blocks("python")[index]
    assert DOC_URL in code
    return code.replace(DOC_URL, url)


async def test_live_python_example_prints_events_as_they_are_published(redis_url: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", python_example(0, redis_url), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await wait_subscribed(redis_url, "merclip:events")
        await write_events(redis_url, "doc-live", 2)
        lines = await read_lines(proc, 2)
    finally:
        await stop(proc)
    assert lines == [
        "doc-live 0 ['happy'] positive 'hello'",
        "doc-live 1 ['happy'] positive 'hello'",
    ]


async def test_replay_python_example_returns_the_last_events_and_exits(redis_url: str) -> None:
    await write_events(redis_url, "abc", 5)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", python_example(1, redis_url), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert [ln.split()[0] for ln in lines] == ["2", "3", "4"], lines  # the last 3, oldest first
    assert "'happy': 0.7" in lines[0]


async def test_merclip_subscribe_line_replays_the_session(redis_url: str) -> None:
    await write_events(redis_url, "abc", 5)
    (line,) = [ln for ln in bash_lines("merclip subscribe") if "--replay" in ln]
    argv = shlex.split(line.replace(DOC_URL, redis_url))[2:] + ["--count", "3"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers.app", "subscribe", *argv, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert len(out.decode().splitlines()) == 3
    assert '"session_id": "abc"' in out.decode()


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed")
async def test_redis_cli_lines_show_sessions_history_and_live_events(redis_url: str) -> None:
    await write_events(redis_url, "abc", 5)
    zrev, xrev, sub = (
        shlex.split(ln.replace(DOC_URL, redis_url)) for ln in bash_lines("redis-cli")
    )
    # Not on a terminal, redis-cli prints raw bytes: msgpack payloads, not escaped strings.
    sessions = subprocess.run(zrev, capture_output=True, timeout=10, check=True)
    assert b"abc" in sessions.stdout.split()
    history = subprocess.run(xrev, capture_output=True, timeout=10, check=True)
    assert history.stdout.count(b"hello") == 5  # COUNT 5: five events, each with its transcript
    assert history.stdout.count(b"\xa3abc") == 5  # msgpack str "abc": the session id

    proc = await asyncio.create_subprocess_exec(
        *sub, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    got = b""
    try:
        await wait_subscribed(redis_url, "merclip:events:abc")
        await write_events(redis_url, "abc", 1, start=200)
        assert proc.stdout is not None
        while b"emotion_event" not in got:  # the payload's last field
            got += await asyncio.wait_for(proc.stdout.read(4096), 10)
    finally:
        await stop(proc)
    assert got.startswith(b"subscribe\nmerclip:events:abc\n1\nmessage\nmerclip:events:abc\n")
    assert b"hello" in got and b"\xa3seq\xcc\xc8" in got  # seq 200


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_line_reads_a_session_over_sse() -> None:
    events = [make_event("abc", i, probs=HAPPY).to_json_dict() for i in range(2)]

    async def source(session_id: str) -> AsyncIterator[dict[str, Any]]:
        for ev in events:
            if ev["session_id"] == session_id:
                yield ev

    (line,) = bash_lines("curl")
    async with running_server(make_settings(), events_factory=source) as (url, _, _):
        argv = shlex.split(line.replace("http://localhost:8080", url.rstrip("/")))
        proc = await asyncio.create_subprocess_exec(
            *argv, "--silent", "--max-time", "10",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
    data = [ln for ln in out.decode().splitlines() if ln.startswith("data: ")]
    assert len(data) == 2 and '"seq":1' in data[1] and '"session_id":"abc"' in data[0]

"""Redis Cluster as a target, on a real cluster: 3 masters with one replica each (6 Debian
redis-server processes, tests/cluster_helpers.py).

Detected at connect, partitions of the work queue on different masters, live events fanned out
from every master, a clear error for a cluster that is named "off", and the must-show: windows
streamed end to end through the cluster by a real InferenceWorker while a master is SIGKILLed
and its replica is promoted, with what is lost and how long events are delayed measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from asyncio.subprocess import PIPE
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from bus_helpers import make_event, make_window, tiny_worker_env, unique_prefix
from cluster_helpers import Cluster, cluster_available, real_cluster
from redis.crc import key_slot

from merclip.predictor import Predictor
from workers.app.settings import RedisSettings, Settings
from workers.bus import Bus, BusConfigError, BusError, retryable
from workers.inference import InferenceWorker
from workers.redis_server import EmbeddedRedis
from workers.schemas import EmotionEvent
from workers.subscriber import EventHub

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not cluster_available(), reason="needs /usr/bin/redis-server, redis-cli"),
]


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with real_cluster() as c:
        yield c


def _sessions_on_every_master(cluster: Cluster, n: int = 3) -> list[str]:
    """Session ids whose event streams sit on `n` different masters."""
    found: dict[int, str] = {}
    for i in range(1000):
        s = f"s{i}"
        master = cluster.master_of_slot(key_slot(f"x:{{{s}}}:events".encode()))
        found.setdefault(master, s)
        if len(found) == n:
            return list(found.values())
    raise AssertionError("no sessions found on every master")


async def test_a_cluster_is_detected_at_connect_and_partitions_sit_on_different_masters(
    cluster: Cluster,
) -> None:
    settings = RedisSettings(prefix=unique_prefix(), partitions=3)  # cluster = "auto"
    async with Bus.connect(cluster.url, settings) as bus:
        assert bus.cluster
        masters = {cluster.master_of_slot(key_slot(s.encode())) for s in bus.keys.windows_streams}
        assert len(masters) == 3
        await bus.ensure_group("g")
        for i in range(30):
            await bus.add_window(make_window(f"sess-{i}", 0))
        got = []
        while batch := await bus.read_windows("g", "c", 8, block_ms=100):
            got += batch
        assert len(got) == 30 and {d.partition for d in got} == {0, 1, 2}
        assert await bus.ack_deliveries("g", got) == 30
        assert await bus.pending_count("g") == 0 and await bus.windows_length() == 0


async def test_events_from_every_master_reach_one_subscriber_once(cluster: Cluster) -> None:
    settings = RedisSettings(prefix=unique_prefix())
    sessions = _sessions_on_every_master(cluster)
    async with Bus.connect(cluster.url, settings) as bus:
        hub = EventHub(bus, poll_s=0.2)  # what the pages' SSE streams share
        page = hub.events(sessions[1])
        first = asyncio.ensure_future(anext(page))
        async with bus.event_feed() as feed:  # a plain connection to one node
            await _until(lambda: _subscribers(cluster, bus.keys.events_channel) == 2, 5)
            for s in sessions:
                ev = make_event(s, 0)
                assert await bus.write_event(ev) is True
                assert await bus.write_event(ev) is False  # idempotent in the session's slot
            got = [await asyncio.wait_for(anext(feed), 5) for _ in sessions]
        assert [e.session_id for e in got] == sessions
        assert (await asyncio.wait_for(first, 5)).session_id == sessions[1]
        await page.aclose()
        await hub.aclose()
        assert [len(await bus.events(s)) for s in sessions] == [1, 1, 1]
        assert set(await bus.sessions()) == set(sessions)
        assert [e.session_id for e in await bus.recent_events(10)] == sessions


async def test_a_cluster_named_off_fails_with_an_error_naming_the_setting(
    cluster: Cluster,
) -> None:
    settings = RedisSettings(prefix=unique_prefix(), cluster="off", partitions=3)
    async with Bus.connect(cluster.url, settings) as bus:
        assert not bus.cluster
        with pytest.raises(BusConfigError) as refused:
            await bus.ensure_group("g")  # 3 partitions on 3 masters: one is elsewhere
    message = str(refused.value)
    assert "MOVED" in message and "Redis Cluster node" in message
    assert 'redis.cluster = "auto"' in message
    assert not retryable(refused.value)  # a worker must not retry it as an outage


async def test_a_standalone_server_named_a_cluster_is_refused_at_connect() -> None:
    async with EmbeddedRedis() as url:
        with pytest.raises(BusConfigError, match="not a Redis Cluster node"):
            async with Bus.connect(url, RedisSettings(cluster="on")):
                pass


async def test_merclip_subscribe_on_a_cluster_prints_the_events_of_every_master(
    cluster: Cluster,
) -> None:
    prefix = unique_prefix()
    sessions = _sessions_on_every_master(cluster)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers.app", "subscribe", "--redis-url", cluster.url,
        "--count", str(len(sessions)),
        env=tiny_worker_env(prefix), cwd=ROOT, stdout=PIPE, stderr=PIPE,
    )  # fmt: skip
    try:
        await _until(lambda: _subscribers(cluster, f"{prefix}:events") == 1, 60)
        async with Bus.connect(cluster.url, RedisSettings(prefix=prefix)) as bus:
            for s in sessions:
                await bus.write_event(make_event(s, 0))
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert [json.loads(line)["session_id"] for line in out.decode().splitlines()] == sessions


async def test_merclip_infer_on_a_cluster_serves_every_partition(cluster: Cluster) -> None:
    """The command, configured by config.toml and MERCLIP_REDIS_PARTITIONS only."""
    prefix = unique_prefix()
    settings = _settings(prefix)
    env = tiny_worker_env(prefix, MERCLIP_REDIS_PARTITIONS="3", MERCLIP_INFERENCE_BLOCK_MS="50")
    cmd = [sys.executable, "-m", "workers.app", "--config", str(ROOT / "config.toml"), "infer"]
    cmd += ["--redis-url", cluster.url, "--stats-every", "0"]
    proc = await asyncio.create_subprocess_exec(*cmd, env=env, cwd=ROOT, stderr=PIPE)
    sessions = [f"cli-{i}" for i in range(6)]
    try:
        async with Bus.connect(cluster.url, settings.redis) as bus:
            assert {bus.keys.partition_of(s) for s in sessions} == {0, 1, 2}
            for seq in range(3):
                for s in sessions:
                    await bus.add_window(make_window(s, seq, age_s=0.0))

            async def events() -> dict[str, list[int]]:
                return {s: [e.seq for e in await bus.events(s)] for s in sessions}

            deadline = time.monotonic() + 60
            while (got := await events()) != {s: [0, 1, 2] for s in sessions}:
                assert proc.returncode is None, "merclip infer exited"
                assert time.monotonic() < deadline, f"events so far: {got}"
                await asyncio.sleep(0.2)
            assert await bus.pending_count(settings.inference.consumer_group) == 0
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()[-2000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _subscribers(cluster: Cluster, channel: str) -> int:
    """Subscribers of a classic channel over all nodes (PUBSUB NUMSUB counts one node's)."""
    total = 0
    for n in cluster.nodes:
        with redis.Redis(port=n.port, socket_timeout=2) as r:
            total += int(r.pubsub_numsub(channel)[0][1])
    return total


# -- the must-show: a master dies mid-stream ----------------------------------------------------


def _settings(prefix: str) -> Settings:
    s = Settings().replace("model", name="merclip-tiny-live", checkpoint="")
    s = s.replace("clip", model="merclip-tiny-clip").replace("features", space="live")
    s = s.replace("redis", prefix=prefix, partitions=3)
    # deadline: windows delayed by the failover are still inferred, not skipped.
    return s.replace(
        "inference", batch_size=8, block_ms=50, claim_idle_ms=1000, deadline_seconds=120.0
    )


class _Producer:
    """Adds windows like ingest's outbox: a window whose XADD fails is retried until it is
    acknowledged; remembers when each was first tried and whether it was acknowledged."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.first_try: dict[tuple[str, int], float] = {}
        self.acked: dict[tuple[str, int], float] = {}

    async def add(self, session: str, seq: int) -> None:
        key = (session, seq)
        self.first_try[key] = time.monotonic()
        while True:
            try:
                await self.bus.add_window(make_window(session, seq, age_s=0.0))
                self.acked[key] = time.monotonic()
                return
            except BusError:
                await asyncio.sleep(0.1)


class _Seen:
    """Events as they appear in the per-session histories (polled) and live (pub/sub)."""

    def __init__(self, bus: Bus, sessions: list[str]) -> None:
        self.bus, self.sessions = bus, sessions
        self.history: dict[tuple[str, int], float] = {}
        self.copies: dict[tuple[str, int], int] = {}
        self.live: set[tuple[str, int]] = set()

    async def poll(self) -> None:
        while True:
            with contextlib.suppress(BusError):
                for s in self.sessions:
                    events = await self.bus.events(s, 1000)
                    counts: dict[int, int] = {}
                    for e in events:
                        counts[e.seq] = counts.get(e.seq, 0) + 1
                        self.history.setdefault((s, e.seq), time.monotonic())
                    for seq, n in counts.items():
                        self.copies[(s, seq)] = n
            await asyncio.sleep(0.05)

    async def listen(self) -> None:
        while True:  # a feed whose node died ends with BusError: subscribe again elsewhere
            with contextlib.suppress(BusError):
                async with self.bus.event_feed(poll_s=0.2) as feed:
                    async for e in feed:
                        self._live(e)
            await asyncio.sleep(0.1)

    def _live(self, e: EmotionEvent) -> None:
        self.live.add((e.session_id, e.seq))


async def _until(cond, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_windows_stream_through_a_cluster_whose_master_dies_mid_stream() -> None:
    """Before the kill every window gives exactly one event; then the master of partition 0
    is SIGKILLed at full stream; after its replica is promoted, every window acknowledged
    after the kill gives an event; the only loss allowed is windows acknowledged by the dead
    master just before it died (asynchronous replication), and no window gives two events."""
    settings = _settings(unique_prefix())
    predictor = Predictor.from_settings(settings)
    with real_cluster(node_timeout_ms=1000) as cluster:
        async with (
            Bus.connect(cluster.url, settings.redis) as producer_bus,
            Bus.connect(cluster.url, settings.redis) as worker_bus,
            Bus.connect(cluster.url, settings.redis) as reader_bus,
        ):
            keys = producer_bus.keys
            masters = [cluster.master_of_slot(key_slot(s.encode())) for s in keys.windows_streams]
            assert len(set(masters)) == 3, "the partitions must sit on different masters"
            sessions = [f"live-{i}" for i in range(6)]
            assert {keys.partition_of(s) for s in sessions} == {0, 1, 2}
            doomed = masters[0]
            doomed_sessions = [s for s in sessions if keys.partition_of(s) == 0]

            producer, seen = _Producer(producer_bus), _Seen(reader_bus, sessions)
            poller = asyncio.create_task(seen.poll())
            listener = asyncio.create_task(seen.listen())
            worker = InferenceWorker(settings, worker_bus, predictor, consumer="w")
            try:
                async with worker:
                    await asyncio.sleep(0.5)  # the listener subscribes
                    seq = 0

                    async def stream(rounds: int) -> None:
                        nonlocal seq
                        for _ in range(rounds):  # 6 sessions, one window each per 0.1 s
                            for s in sessions:
                                await producer.add(s, seq)
                            seq += 1
                            await asyncio.sleep(0.1)

                    # 1. steady stream: exactly one event per window, live and in history.
                    await stream(10)
                    before = set(producer.acked)
                    await _until(lambda: before <= set(seen.history), 30)
                    await _until(lambda: before <= seen.live, 10)
                    assert all(seen.copies[k] == 1 for k in before)

                    # 2. the master of partition 0 dies mid-stream (no drain before it).
                    killer = asyncio.create_task(_kill_after(cluster, doomed, 0.35))
                    await stream(40)
                    killed_at = await killer
                    cluster.wait_ok(timeout=30)
                    promoted = cluster.master_of_slot(key_slot(keys.windows_stream(0).encode()))
                    assert promoted != doomed

                    # 3. after the failover: steady again.
                    last_rounds_from = seq
                    await stream(10)
                    # A reply the dead master sent just before SIGKILL may be read a moment after.
                    after_kill = {k for k, t in producer.acked.items() if t > killed_at + 0.2}
                    await _until(lambda: after_kill <= set(seen.history), 60)
                    await asyncio.sleep(3 * settings.inference.claim_idle_ms / 1000)
                # Buses old and new still answer with the dead node, and with a replica dead
                # too (a health check that asked every node would fail here).
                await worker_bus.ping()
                cluster.kill(next(p for p in cluster.replicas() if p != doomed))
                live = next(n for n in cluster.nodes if n.running)
                async with Bus.connect(live.url, settings.redis) as late:
                    assert late.cluster and await late.ping() > 0
                # The whole cluster down is an outage that callers retry, like a lost server
                # (redis-py's "Redis Cluster cannot be connected" is no RedisError).
                for n in cluster.nodes:
                    if n.running:
                        cluster.kill(n.port)
                with pytest.raises(BusError) as down:
                    await producer_bus.add_window(make_window(sessions[0], seq))
                assert retryable(down.value) and "cannot reach Redis" in str(down.value)
            finally:
                poller.cancel()
                listener.cancel()

            acked_before_kill = set(producer.acked) - after_kill
            lost = sorted(k for k in acked_before_kill if k not in seen.history)
            delays = [seen.history[k] - producer.first_try[k] for k in seen.history]
            doomed_after = [k for k in after_kill if k[0] in doomed_sessions and k in seen.history]
            first_back = min(seen.history[k] for k in doomed_after) - killed_at
            late = [k for k in producer.acked if k[1] >= last_rounds_from]
            figures = {
                "windows": len(producer.acked),
                "lost": len(lost),
                "lost_windows": lost,
                "failover_s": round(first_back, 2),
                "max_event_delay_s": round(max(delays), 2),
                "delayed_over_1s": sum(1 for d in delays if d > 1.0),
                "xadd_blocked_s": round(
                    max(producer.acked[k] - producer.first_try[k] for k in producer.acked), 2
                ),
                "duplicates": sum(1 for n in seen.copies.values() if n > 1),
                "claimed": worker.counters.claimed,
            }
            print("\nREDIS CLUSTER FAILOVER:", figures)  # the figures in docs/REDIS.md
            assert figures["duplicates"] == 0
            assert all(k[0] in doomed_sessions for k in lost), "only the dead master's windows"
            assert len(lost) <= 6, "more than the last ~0.1 s of the dead master's windows"
            assert after_kill <= set(seen.history)  # every window acked after the kill
            assert set(late) <= seen.live  # live fan-out works again after the failover
            assert first_back < 15.0


async def _kill_after(cluster: Cluster, port: int, delay: float) -> float:
    await asyncio.sleep(delay)
    await asyncio.to_thread(cluster.kill, port)
    return time.monotonic()

"""Several hosts, as Linux network namespaces on one bridge: Redis, two `merclip ingest` nodes, two
`merclip infer` workers and a client, each in a namespace of its own with one address on
10.77.N.0/24 and its loopback interface left DOWN, so nothing can use 127.0.0.1. The ingest
nodes bind their namespace address (auth is then on: a shared secret, publisher tokens), the
client streams a real video to each over WebRTC (`merclip stream-file` inside its namespace, ICE
host candidates on the bridge), and one inference worker is SIGKILLed mid-stream while it holds
windows: the other claims them, and every window of both sessions gets exactly one event.

The test process itself has an address on the bridge (.1) only to watch Redis and the nodes.
Needs root and `ip netns`; skipped with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from bus_helpers import tiny_worker_env
from media import SPEECH_TEXT, face_video
from process_helpers import MERCLIP, ROOT, Merclip, start_merclip

from stream.auth import issue_token
from workers.bus import Bus
from workers.settings import RedisSettings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CLIP_SECONDS = 12.0
HOP_SECONDS = 1.5
CLAIM_IDLE_MS = 1000
SECRET = "netns-test-secret-0123456789"
HOSTS = {"redis": 2, "ing1": 11, "ing2": 12, "inf1": 21, "inf2": 22, "client": 31}
"""Namespace role -> last octet of its address."""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Hosts:
    """The namespaces and their bridge; `addr[role]`, `ns[role]`, `exec(role)`."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 10000:04d}"
        self.net = random.randrange(100, 250)
        self.bridge = f"mcbr{tag}"
        self.ns = {role: f"mc{tag}-{role}" for role in HOSTS}
        self.addr = {role: f"10.77.{self.net}.{octet}" for role, octet in HOSTS.items()}
        self.gateway = f"10.77.{self.net}.1"

    def exec(self, role: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns[role]]

    def up(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, role in enumerate(HOSTS):
            ns, veth = self.ns[role], f"{self.bridge}v{i}"
            _ip("netns", "add", ns)  # its lo stays down: no 127.0.0.1 in there
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", veth, "master", self.bridge, "up")
            _ip("-n", ns, "addr", "add", f"{self.addr[role]}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def down(self) -> None:
        for ns in self.ns.values():  # deleting a namespace deletes its veth pair
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)

    def listening(self, role: str) -> set[str]:
        """Local addresses of the TCP listeners and UDP sockets in `role`'s namespace."""
        out = subprocess.run(
            [*self.exec(role), "ss", "-ltunH"], check=True, capture_output=True, text=True
        ).stdout
        return {line.split()[4].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()}


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (ip netns add)")
    if shutil.which("ip") is None or shutil.which("ss") is None:
        pytest.skip("needs iproute2 (ip, ss)")
    h = Hosts()
    try:
        h.up()
    except subprocess.CalledProcessError as exc:
        h.down()
        pytest.skip(f"cannot set up network namespaces: {' '.join(exc.cmd)}: {exc.stderr.strip()}")
    try:
        yield h
    finally:
        h.down()


def _redis_server() -> str:
    for path in ("/usr/bin/redis-server", str(Path(sys.executable).parent / "redis-server")):
        if os.access(path, os.X_OK):
            return path
    pytest.skip("no redis-server binary")


async def test_two_ingest_hosts_two_workers_a_sigkilled_worker_loses_no_window(
    hosts: Hosts, media_dir: Path
) -> None:
    video = face_video(media_dir, SPEECH_TEXT, seconds=CLIP_SECONDS)
    redis_host = hosts.addr["redis"]
    url = f"redis://{redis_host}:6379/0"
    procs: list[Merclip] = []
    redis_proc = subprocess.Popen(
        [*hosts.exec("redis"), _redis_server(), "--bind", redis_host, "--port", "6379"]
        + ["--save", "", "--appendonly", "no", "--protected-mode", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        observer = redis.Redis(host=redis_host, port=6379, socket_timeout=5)
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                if observer.ping():
                    break
            assert time.monotonic() < deadline, "redis-server did not start in its namespace"
            time.sleep(0.2)
        env = tiny_worker_env(
            "merclip",
            MERCLIP_AUTH_SECRET=SECRET,
            MERCLIP_INGEST_WINDOW_SECONDS="3.0",
            MERCLIP_INGEST_HOP_SECONDS=str(HOP_SECONDS),
            MERCLIP_INGEST_VIDEO_FPS="2",
            MERCLIP_INGEST_EXTRACT_THREADS="1",
            MERCLIP_INFERENCE_CLAIM_IDLE_MS=str(CLAIM_IDLE_MS),
            MERCLIP_INFERENCE_DEADLINE_SECONDS="600",
        )
        workers: dict[str, Merclip] = {}
        for role in ("inf1", "inf2"):
            args = ["infer", "--redis-url", url, "--consumer", role, "--stats-every", "0"]
            # inf1 waits in XREADGROUP for seconds at a time, so that, frozen there, it is still
            # handed the next window (see _kill_holding); inf2 polls as usual.
            block = {"MERCLIP_INFERENCE_BLOCK_MS": "5000" if role == "inf1" else "200"}
            workers[role] = start_merclip(
                args, {**env, **block}, ready=None, prefix=hosts.exec(role)
            )
            procs.append(workers[role])
        nodes: dict[str, Merclip] = {}
        for role in ("ing1", "ing2"):
            args = ["ingest", "--redis-url", url, "--host", hosts.addr[role], "--port", "8080"]
            nodes[role] = start_merclip(args, env, prefix=hosts.exec(role))
            procs.append(nodes[role])
            assert nodes[role].url == f"http://{hosts.addr[role]}:8080/"
        await _scenario(hosts, url, env, video, nodes, workers, observer)
    finally:
        for p in procs:
            p.kill()
        redis_proc.kill()
        redis_proc.wait()


async def _scenario(
    hosts: Hosts,
    url: str,
    env: dict[str, str],
    video: Path,
    nodes: dict[str, Merclip],
    workers: dict[str, Merclip],
    observer: redis.Redis,
) -> None:
    # Each service listens on its namespace address only.
    assert hosts.listening("redis") == {hosts.addr["redis"]}
    for role in nodes:
        assert hosts.listening(role) == {hosts.addr[role]}, role

    sessions = {"ing1": "netns-a", "ing2": "netns-b"}
    clients = {}
    for role, sid in sessions.items():
        token = issue_token(SECRET, sid, "publisher", 600)
        cmd = [*hosts.exec("client"), *MERCLIP, "stream-file", str(video)]
        cmd += ["--url", nodes[role].url, "--session", sid, "--token", token]
        clients[sid] = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    async with Bus.connect(url, RedisSettings()) as bus:
        deadline = time.monotonic() + 120
        while not all([len(await bus.events(sid, 10)) >= 2 for sid in sessions.values()]):
            assert time.monotonic() < deadline, "no events:\n" + "\n".join(
                n.log for n in nodes.values()
            )
            for sid, c in clients.items():
                assert c.poll() is None, (sid, c.stdout.read() if c.stdout else "")
            await asyncio.sleep(0.2)
        # Mid-stream, WebRTC media flows on the bridge: the nodes' UDP sockets are on their
        # namespace address too.
        for role in nodes:
            assert hosts.listening(role) == {hosts.addr[role]}, role

        held = _kill_holding(workers["inf1"].proc, observer, bus.keys.windows)
        assert held > 0, "never caught inf1 holding windows"

        for sid, c in clients.items():
            out, _ = await asyncio.to_thread(c.communicate, timeout=120)
            assert c.returncode == 0, (sid, out)

        deadline = time.monotonic() + 90
        counts: dict[str, int] = {}
        for sid in sessions.values():
            while True:
                events = await bus.events(sid, 1000)
                seqs = sorted(e.seq for e in events)
                last_end = max((e.media_end for e in events), default=0.0)
                if seqs == list(range(len(seqs))) and last_end >= CLIP_SECONDS - HOP_SECONDS:
                    break
                assert time.monotonic() < deadline, (sid, seqs, last_end)
                await asyncio.sleep(0.3)
            assert len({e.event_id for e in events}) == len(events)
            counts[sid] = len(events)
        assert await bus.pending_count("infer") == 0

    survivor = workers["inf2"]
    survivor.proc.send_signal(signal.SIGTERM)
    assert survivor.wait(60) == 0, survivor.log
    claimed = re.search(r"'claimed': (\d+)", survivor.log)
    assert claimed and int(claimed.group(1)) >= held, survivor.log
    print(
        f"inf1 SIGKILLed holding {held} windows; inf2 claimed {claimed.group(1)}; events {counts}"
    )


def _kill_holding(proc: subprocess.Popen[str], observer: redis.Redis, key: str) -> int:
    """SIGKILL `proc` (consumer inf1) while it holds unacknowledged windows; returns how many.

    Frozen (SIGSTOP) while blocked in XREADGROUP (BLOCK 5000), it is still handed the next
    window by Redis, which then stays pending on it: wait for that, else let it run a moment
    and try again."""
    for _ in range(10):
        proc.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            rows = observer.xpending_range(key, "infer", "-", "+", 1000, "inf1")
            if rows:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                return len(rows)
            time.sleep(0.1)
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.3)
    return 0

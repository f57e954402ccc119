"""A Redis Cluster node is refused at connect with an error that names the problem (the work
queue and event scripts need one server; cluster support is not built yet)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from workers.app.settings import RedisSettings
from workers.bus import Bus, BusError
from workers.redis_server import EmbeddedRedis

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[1]


def _cluster_args(tmp_path: Path) -> tuple[str, ...]:
    return ("--cluster-enabled", "yes", "--cluster-config-file", str(tmp_path / "nodes.conf"))


async def test_a_cluster_node_is_refused_at_connect_naming_the_problem(tmp_path: Path) -> None:
    async with EmbeddedRedis(extra_args=_cluster_args(tmp_path)) as url:
        with pytest.raises(BusError) as refused:
            async with Bus.connect(url, RedisSettings(prefix="cl")):
                pass
    message = str(refused.value)
    assert "Redis Cluster node" in message and "MOVED" in message
    assert "standalone Redis" in message


def test_a_command_on_a_cluster_node_exits_1_with_that_message(tmp_path: Path) -> None:
    with EmbeddedRedis(extra_args=_cluster_args(tmp_path)) as url:
        proc = subprocess.run(
            [sys.executable, "-m", "workers.app", "subscribe", "--redis-url", url, "--count", "1"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
    assert proc.returncode == 1, proc.stderr
    assert "is a Redis Cluster node" in proc.stderr and "Traceback" not in proc.stderr

"""`merclip serve` as a user runs it: no Redis configured, so it starts its embedded Redis; it
serves the page; on SIGINT or SIGTERM it exits cleanly and leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import redis

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 120.0


def _start_serve(tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "MERCLIP_MODEL_NAME": "merclip-tiny-live",
        "MERCLIP_CLIP_MODEL": "merclip-tiny-clip",
        "MERCLIP_FEATURES_SPACE": "live",
        "MERCLIP_MODEL_CHECKPOINT": "",
    }
    env.pop("MERCLIP_REDIS_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "merclip.cli", "serve", "--port", "0"],
        cwd=tmp_path,  # no config.toml here: the embedded defaults
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + START_TIMEOUT
    assert proc.stdout is not None
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "serving at" in line:
            return proc, line.split("serving at", 1)[1].strip()
    proc.kill()
    raise AssertionError("serve did not start:\n" + "".join(lines))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_starts_embedded_redis_and_exits_cleanly(tmp_path: Path, sig: int) -> None:
    proc, url = _start_serve(tmp_path)
    try:
        parent = psutil.Process(proc.pid)
        children = parent.children(recursive=True)
        [redis_child] = [c for c in children if "redis-server" in " ".join(c.cmdline())]
        # Review M6: other local processes must not get into the embedded Redis.
        port = next(c.laddr.port for c in redis_child.net_connections() if c.status == "LISTEN")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, socket_timeout=5).ping()
        with urllib.request.urlopen(url + "healthz", timeout=10) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert b"<html" in resp.read().lower()
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"left behind: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

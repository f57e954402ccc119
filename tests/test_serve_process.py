"""`merclip serve` as a user runs it: no Redis configured, so it starts its embedded Redis; it
serves the page; on SIGINT or SIGTERM it exits cleanly and leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import redis

from workers.app.commands.serve import SHUTDOWN_TIMEOUT_SECONDS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 120.0


def _drain(proc: subprocess.Popen[str], lines: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)


def _exit_code(proc: subprocess.Popen[str], lines: list[str], timeout: float) -> int:
    """The exit code; past `timeout`, the stacks of every thread (SIGUSR1) and the log."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(2)
        proc.kill()
        proc.wait()
        time.sleep(0.5)
        raise AssertionError(
            f"serve did not exit within {timeout:.0f} s:\n" + "".join(lines[-200:])
        ) from None


def _start_serve(tmp_path: Path) -> tuple[subprocess.Popen[str], str, list[str]]:
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
        [sys.executable, "-m", "workers.app", "serve", "--port", "0"],
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
            # Keep reading: a full pipe would block the service's logging, and so its exit.
            threading.Thread(target=_drain, args=(proc, lines), daemon=True).start()
            return proc, line.split("serving at", 1)[1].strip(), lines
    proc.kill()
    raise AssertionError("serve did not start:\n" + "".join(lines))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_starts_embedded_redis_and_exits_cleanly(tmp_path: Path, sig: int) -> None:
    proc, url, log = _start_serve(tmp_path)
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
        code = _exit_code(proc, log, SHUTDOWN_TIMEOUT_SECONDS + 15)
        assert code == 0, "".join(log[-200:])
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"left behind: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigusr1_prints_every_threads_stack_and_serving_goes_on(tmp_path: Path) -> None:
    proc, url, log = _start_serve(tmp_path)
    try:
        proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not any("Current thread" in line for line in log) and time.monotonic() < deadline:
            time.sleep(0.1)
        dump = "".join(log)
        assert "Current thread" in dump and "commands/serve.py" in dump, dump[-3000:]
        with urllib.request.urlopen(url + "healthz", timeout=10) as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert _exit_code(proc, log, SHUTDOWN_TIMEOUT_SECONDS + 15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

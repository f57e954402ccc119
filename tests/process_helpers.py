"""Test support for tests that run `merclip` commands as real subprocesses (serve, ingest, infer)
on the test-size models, read their output and wait for their exit."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MERCLIP", "Merclip", "start_merclip"]

ROOT = Path(__file__).resolve().parents[1]
MERCLIP = [sys.executable, "-m", "workers.app", "--config", str(ROOT / "config.toml")]
"""The `merclip` command, as a test runs it (the repository's config.toml, the environment's
MERCLIP_ overrides on top)."""
START_TIMEOUT = 180.0


@dataclass
class Merclip:
    """A running `merclip` process; its combined output collects in `lines` as it comes."""

    proc: subprocess.Popen[str]
    url: str = ""
    """What its ready line names (the service address), '' for a command that prints none."""
    lines: list[str] = field(default_factory=list)

    @property
    def log(self) -> str:
        return "".join(self.lines[-200:])

    def wait(self, timeout: float) -> int:
        """The exit code; past `timeout`, every thread's stack (SIGUSR1) and the log."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(2)
            self.kill()
            raise AssertionError(f"did not exit within {timeout:.0f} s:\n{self.log}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _drain(m: Merclip) -> None:
    assert m.proc.stdout is not None
    for line in m.proc.stdout:
        m.lines.append(line)


def start_merclip(
    args: Sequence[str],
    env: dict[str, str],
    *,
    ready: str | None = "serving at",
    prefix: Sequence[str] = (),
    timeout: float = START_TIMEOUT,
) -> Merclip:
    """Start `merclip ARGS` (behind `prefix`, e.g. `ip netns exec NS`); with `ready`, wait for
    the output line holding it and take what follows it as the URL. Output is read all along:
    a full pipe would block the process's logging, and so its exit."""
    proc = subprocess.Popen(
        [*prefix, *MERCLIP, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    m = Merclip(proc)
    if ready is None:
        threading.Thread(target=_drain, args=(m,), daemon=True).start()
        return m
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m.lines.append(line)
        if ready in line:
            m.url = line.split(ready, 1)[1].strip()
            threading.Thread(target=_drain, args=(m,), daemon=True).start()
            return m
    m.kill()
    raise AssertionError(f"merclip {' '.join(args)} did not start:\n{m.log}")

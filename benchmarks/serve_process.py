"""What the service benchmarks share: `merclip serve` as a child process, and its memory.

with ServeProcess({"MERCLIP_MODEL_NAME": "merclip-tiny-live"}, workdir) as serve:
    serve.url, serve.redis_url            # the page's base URL, the embedded Redis
series = RssSeries(serve.pid); series.start() ... series.stop.set()
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

import psutil

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["RssSeries", "ServeProcess"]


class ServeProcess:
    """`merclip serve --port 0` on the embedded Redis, started in `workdir` with `env` added to
    this environment (MERCLIP_REDIS_URL removed, HF_HUB_OFFLINE=1). Stopped with SIGINT, the way
    a user stops it, on exit; killed if the benchmark itself dies first."""

    def __init__(self, env: Mapping[str, str], workdir: Path) -> None:
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **env}
        self.env.pop("MERCLIP_REDIS_URL", None)
        self.workdir = workdir
        self.url = ""
        self.redis_url = ""
        self._proc: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None, "not started"
        return self._proc.pid

    @property
    def urls(self) -> list[str]:
        """The ingest nodes' URLs: this one (as Fleet.urls)."""
        return [self.url]

    @property
    def metrics_urls(self) -> list[str]:
        """Where its /metrics are (as Fleet.metrics_urls)."""
        return [self.url]

    def pids(self) -> list[int]:
        """The service's processes (as Fleet.pids): serve, whose children include its Redis."""
        return [self.pid]

    def __enter__(self) -> ServeProcess:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.app", "--log-level", "WARNING", "serve", "--port", "0"],
            cwd=self.workdir, env=self.env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self._proc = proc
        # A killed benchmark must not leave the server behind.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        atexit.register(lambda: None if proc.poll() is not None else proc.kill())
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "serving at" not in line:
            proc.kill()
            raise RuntimeError(f"merclip serve failed to start (it printed {line!r})")
        self.url = line.split("serving at", 1)[1].strip()
        # The embedded Redis URL is not printed (it holds a password): read it from the url
        # file (0600) in the server's directory, which is its working directory (--dir; its
        # command line shows only redis-server's process title).
        redis_child = next(
            c
            for c in psutil.Process(proc.pid).children()
            if "redis-server" in " ".join(c.cmdline())
        )
        url_file = Path(redis_child.cwd()) / "url"
        if url_file.is_file():
            self.redis_url = url_file.read_text().strip()
        else:  # an embedded Redis without a password
            port = next(c.laddr.port for c in redis_child.net_connections() if c.status == "LISTEN")
            self.redis_url = f"redis://127.0.0.1:{port}/0"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            self._proc.wait(timeout=60)


class RssSeries(threading.Thread):
    """RSS of a process and all its children (or of the processes `pid()` names at each sample,
    e.g. a Fleet's, whose members come and go), sampled every `every` seconds:
    `samples` = [(seconds since start, total bytes, {"name[pid]": bytes})], `peak` = max total."""

    def __init__(self, pid: int | Callable[[], list[int]], every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.roots = pid if callable(pid) else (lambda: [pid])
        self.every = every
        self.samples: list[tuple[float, int, dict[str, int]]] = []
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.stop.is_set():
            parts: dict[str, int] = {}
            for pid in self.roots():
                try:
                    root = psutil.Process(pid)
                    for p in [root, *root.children(recursive=True)]:
                        parts[f"{p.name()}[{p.pid}]"] = p.memory_info().rss
                except psutil.Error:
                    continue  # it exited between the listing and the sample
            if not parts:
                break
            total = sum(parts.values())
            self.peak = max(self.peak, total)
            self.samples.append((time.monotonic() - t0, total, parts))
            self.stop.wait(self.every)

"""Several processes as README "Operations" runs them on one host: one Redis, K `merclip ingest`
processes on their own ports, W `merclip infer` workers, started as children of the benchmark.

with Fleet(env, ingest=2, infer=1) as fleet:
    fleet.urls, fleet.redis_url         # each ingest node's base URL, the shared Redis
    fleet.metrics_urls                  # where every process serves /metrics
    fleet.pids()                        # the service's processes now (for RSS and CPU)

With `supervise=True` an ingest process that exits (`--recycle-after-sessions` drains it, then it
exits 0) is started again on the same port, as systemd's `Restart=always` or a Kubernetes pod
would; `restarts` counts them. `ServeProcess` (serve_process.py) is the one-process variant.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from process_helpers import Merclip, start_merclip  # noqa: E402

from workers.redis_server import EmbeddedRedis  # noqa: E402

__all__ = ["Fleet"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Fleet:
    """One embedded Redis, `ingest` ingest nodes and `infer` inference workers, `env` (MERCLIP_*
    settings) given to every process; all stopped on exit."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        ingest: int,
        infer: int = 1,
        ingest_args: Sequence[str] = (),
        supervise: bool = False,
    ) -> None:
        import os

        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **env}
        self.env.pop("MERCLIP_REDIS_URL", None)
        self.n_ingest, self.n_infer = ingest, infer
        self.ingest_args = list(ingest_args)
        self.supervise = supervise
        self.ports = [_free_port() for _ in range(ingest)]
        self.urls = [f"http://127.0.0.1:{p}/" for p in self.ports]
        self.redis_url = ""
        self.metrics_urls = list(self.urls)  # the workers' metrics ports are added as they start
        self.restarts = 0
        self.roles: dict[int, str] = {}
        """Every process started, by pid: "redis", "infer" or "ingest"."""
        self.exit_codes: list[int] = []
        self._redis = EmbeddedRedis()
        self._ingest: list[Merclip] = []
        self._infer: list[Merclip] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    def _start_ingest(self, port: int) -> Merclip:
        args = ["ingest", "--redis-url", self.redis_url, "--port", str(port), *self.ingest_args]
        node = start_merclip(["--log-level", "WARNING", *args], self.env)
        self.roles[node.proc.pid] = "ingest"
        return node

    def __enter__(self) -> Fleet:
        self.redis_url = self._redis.__enter__()
        if self._redis.pid:
            self.roles[self._redis.pid] = "redis"
        try:
            for _ in range(self.n_infer):
                args = ["--log-level", "WARNING", "infer", "--redis-url", self.redis_url]
                port = _free_port()
                args += ["--stats-every", "0", "--metrics-host", "127.0.0.1"]
                args += ["--metrics-port", str(port)]
                self.metrics_urls.append(f"http://127.0.0.1:{port}/")
                worker = start_merclip(args, self.env, ready=None)
                self.roles[worker.proc.pid] = "infer"
                self._infer.append(worker)
            self._ingest = [self._start_ingest(p) for p in self.ports]
        except BaseException:
            self._stop_all()
            raise
        if self.supervise:
            self._watcher = threading.Thread(target=self._watch, daemon=True, name="fleet-watch")
            self._watcher.start()
        return self

    def _watch(self) -> None:
        """Start again any ingest process that exited, on its port."""
        while not self._stop.wait(0.5):
            for i, node in enumerate(self._ingest):
                code = node.proc.poll()
                if code is None or self._stop.is_set():
                    continue
                self.exit_codes.append(code)
                if code != 0:
                    print(f"ingest :{self.ports[i]} exited {code}:\n{node.log}", file=sys.stderr)
                fresh = self._start_ingest(self.ports[i])
                with self._lock:
                    self._ingest[i] = fresh
                    self.restarts += 1

    def pids(self) -> list[int]:
        """The service's processes at this moment: Redis, the workers, the ingest nodes."""
        with self._lock:
            procs = [*self._infer, *self._ingest]
        redis_pid = self._redis.pid
        return ([redis_pid] if redis_pid else []) + [m.proc.pid for m in procs]

    def _stop_all(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=10)
        for m in [*self._ingest, *self._infer]:
            m.kill()
        self._redis.__exit__(None, None, None)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop_all()

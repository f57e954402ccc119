"""Embedded Redis: starts, answers, is private and volatile, and leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import redis
import redis.asyncio as aioredis

from workers.redis_server import EmbeddedRedis, EmbeddedRedisError, _ephemeral_ports

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def _gone(pid: int, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_starts_answers_and_leaves_no_process_or_files() -> None:
    server = EmbeddedRedis()
    with server as url:
        pid = server.pid
        assert pid is not None and psutil.pid_exists(pid)
        assert url.startswith("redis://127.0.0.1:")
        client = redis.Redis.from_url(url)
        assert client.ping() is True
        # Persistence off: nothing of a session survives on disk.
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        workdir = client.config_get("dir")["dir"]
        assert Path(workdir).is_dir()
        client.close()
    assert _gone(pid)
    assert not server.running
    assert not Path(workdir).exists()
    server.stop()  # idempotent


async def test_async_context_on_a_unix_socket() -> None:
    server = EmbeddedRedis(unix_socket=True)
    async with server as url:
        assert url.startswith("unix://") and len(url) < 108
        client = aioredis.from_url(url)
        await client.set("k", "v")
        assert await client.get("k") == b"v"
        await client.aclose()
        pid = server.pid
    assert pid is not None and _gone(pid)


def test_ports_are_chosen_below_the_ephemeral_range() -> None:
    """On an ephemeral port, a client reconnecting to a stopped server can connect to ITSELF
    (TCP self-connect) and believe the server is back; seen once in the Redis-restart test."""
    low, _ = _ephemeral_ports()
    with EmbeddedRedis() as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
    assert 1024 <= port < low


def test_two_servers_are_independent() -> None:
    with EmbeddedRedis() as a, EmbeddedRedis() as b:
        assert a != b
        ra, rb = redis.Redis.from_url(a), redis.Redis.from_url(b)
        ra.set("only-a", 1)
        assert rb.get("only-a") is None
        ra.close()
        rb.close()


@pytest.mark.parametrize("how", ["sigterm", "sigkill", "exit-without-stop"])
def test_no_server_survives_its_parent(how: str) -> None:
    stop = "raise SystemExit(0)" if how == "exit-without-stop" else "time.sleep(60)"
    script = textwrap.dedent(
        f"""
        import sys, time
        from workers.redis_server import EmbeddedRedis
        server = EmbeddedRedis()
        server.start()
        print(server.pid, flush=True)
        {stop}
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
    assert parent.stdout is not None
    line = parent.stdout.readline()
    assert line.strip(), "the child did not start a server"
    pid = int(line)
    assert psutil.pid_exists(pid)
    if how == "sigterm":
        parent.send_signal(signal.SIGTERM)
    elif how == "sigkill":
        parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    assert _gone(pid), f"redis-server {pid} outlived its parent ({how})"


def test_a_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    server = EmbeddedRedis(executable=str(tmp_path / "no-such-redis-server"))
    with pytest.raises(EmbeddedRedisError, match="no-such-redis-server"):
        server.start()
    assert server.pid is None


def test_a_start_up_error_says_what_redis_server_said() -> None:
    """redis-server reports bad arguments on stderr, before its log file exists: the error used
    to say only "no log"."""
    server = EmbeddedRedis(extra_args=("--no-such-directive", "1"))
    with pytest.raises(EmbeddedRedisError) as info:
        server.start()
    message = str(info.value)
    assert "exit code 1" in message and "no-such-directive" in message, message
    assert "Bad directive" in message, message
    assert not server.running


def test_a_taken_port_is_retried_on_another(monkeypatch: pytest.MonkeyPatch) -> None:
    """Between choosing a free port and redis-server binding it, another process may take it
    (other test runs on the machine start servers in the same range)."""
    import socket

    from workers import redis_server

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    chosen: list[int] = []
    real_free_port = redis_server._free_port

    def first_the_taken_one(exclude: tuple[int, ...] = ()) -> int:
        port = taken.getsockname()[1] if not chosen else real_free_port(exclude)
        chosen.append(port)
        return port

    monkeypatch.setattr(redis_server, "_free_port", first_the_taken_one)
    try:
        with EmbeddedRedis() as url:
            assert redis.Redis.from_url(url).ping() is True
    finally:
        taken.close()
    assert len(chosen) == 2 and chosen[0] != chosen[1], chosen
    assert url.endswith(f":{chosen[1]}/0")


def test_a_fixed_port_that_is_taken_is_a_clear_error() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(EmbeddedRedisError, match="Address already in use"):
            EmbeddedRedis(port=port).start()


def test_a_password_keeps_other_clients_out_and_off_the_command_line() -> None:
    """Review M6: the embedded Redis of `merclip serve` took any local client, so any process
    on the machine could read every transcript and publish forged events."""
    password = "pw-" + os.urandom(8).hex()
    server = EmbeddedRedis(password=password)
    with server as url:
        assert url.startswith(f"redis://:{password}@127.0.0.1:")
        assert password not in server.redacted_url and ":***@" in server.redacted_url
        anonymous = redis.Redis(port=server.port)
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        anonymous.close()
        client = redis.Redis.from_url(url)
        assert client.ping() is True
        client.close()
        # Not in /proc/PID/cmdline (world-readable), but in files only this user can read.
        assert server.pid is not None
        assert password not in " ".join(psutil.Process(server.pid).cmdline())
        assert server.url_file is not None and server.url_file.read_text().strip() == url
        assert server.url_file.stat().st_mode & 0o777 == 0o600
        assert server.url_file.parent.stat().st_mode & 0o777 == 0o700
        assert (server.url_file.parent / "redis.conf").stat().st_mode & 0o777 == 0o600


def test_a_password_works_on_the_unix_socket_too() -> None:
    server = EmbeddedRedis(unix_socket=True, password="s3cret-pw")
    with server as url:
        assert url.startswith("unix://:s3cret-pw@/")
        client = redis.Redis.from_url(url)
        assert client.ping() is True
        client.close()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(unix_socket_path=server._socket_path).ping()

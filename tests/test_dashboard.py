"""The dashboard's server side on a real Redis (embedded redis-server): the overview numbers of
`Monitor` (lag, sessions, rate, Redis down), the HTTP routes of `create_dashboard_app`, the SSE
replay of a full history, and the `merclip dashboard` command's error without a Redis URL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from bus_helpers import make_event, make_window, prefix_on
from prometheus_client import REGISTRY

from stream.auth import ALL_SESSIONS, issue_token
from stream.dashboard import DASHBOARD_REPLAY, create_dashboard_app
from workers.app.commands.dashboard import run_dashboard
from workers.app.settings import Settings
from workers.bus import Bus
from workers.monitor import Monitor
from workers.redis_server import EmbeddedRedis
from workers.subscriber import subscribe

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def redis_url() -> Any:
    with EmbeddedRedis() as url:
        yield url


@pytest.fixture
async def settings(redis_url: str) -> AsyncIterator[Settings]:
    async with prefix_on(redis_url) as prefix:
        yield Settings().replace("redis", prefix=prefix)


async def test_overview_reports_lag_sessions_rate_and_redis(
    redis_url: str, settings: Settings
) -> None:
    group = settings.inference.consumer_group
    async with Bus.connect(redis_url, settings.redis) as bus:
        await bus.ensure_group(group)
        for seq in range(3):
            await bus.add_window(make_window("lag", seq))
        taken = await bus.read_windows(group, "slow-worker", 2)  # delivered, never acked
        assert len(taken) == 2
        async with Monitor(bus, settings, interval=0.2) as monitor:
            await asyncio.sleep(0.3)  # subscribed to the live channel
            for seq in range(4):
                assert await bus.write_event(make_event("talker", seq, "hi"))
            await asyncio.sleep(0.5)
            ov = await monitor.overview()
        assert ov["redis"]["ok"] is True and ov["redis"]["ping_ms"] > 0
        assert ov["inference"] == {"group": group, "pending": 2, "stream_length": 3}
        assert ov["sessions"] == ["talker"] and ov["sessions_active"] == 1
        assert ov["events_seen"] == 4
        assert ov["events_per_second"] == pytest.approx(0.4)  # 4 events in the 10 s window
        json.dumps(ov)  # served as JSON as is
        # The same numbers are the Prometheus gauges.
        assert REGISTRY.get_sample_value("merclip_inference_pending_windows") == 2
        assert REGISTRY.get_sample_value("merclip_windows_stream_length") == 3
        assert REGISTRY.get_sample_value("merclip_sessions_active") == 1
        assert REGISTRY.get_sample_value("merclip_redis_up") == 1


async def test_overview_says_redis_is_down_instead_of_failing() -> None:
    settings = Settings()
    redis = EmbeddedRedis()
    url = redis.start()
    try:
        async with Bus.connect(url, settings.redis) as bus:
            monitor = Monitor(bus, settings, count_events=False)
            assert (await monitor.refresh())["redis"]["ok"] is True
            redis.stop()  # the server goes away under a connected monitor
            ov = await asyncio.wait_for(monitor.refresh(), 30)
            assert ov["redis"]["ok"] is False
            assert "cannot reach Redis" in ov["redis"]["error"]
            assert ov["inference"]["pending"] is None and ov["sessions_active"] is None
            assert REGISTRY.get_sample_value("merclip_redis_up") == 0
    finally:
        redis.stop()


@pytest.mark.parametrize("form", ["userinfo", "query"])
async def test_a_redis_password_never_shows_in_errors_logs_or_the_overview(
    form: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Review L3: the `?password=` form was logged and served by /dashboard/overview during an
    outage, and "bad Redis URL" errors quoted the whole URL."""
    import logging

    from workers.bus import BusError

    secret = "S3cretPw" + os.urandom(4).hex()
    caplog.set_level(logging.DEBUG)
    bad = f"redis://alice:{secret}@127.0.0.1:63x79/0"
    with pytest.raises(BusError) as bad_url:
        async with Bus.connect(bad):
            pass
    with pytest.raises(BusError) as bad_option:  # was a raw RedisError (a traceback in the CLI)
        async with Bus.connect(f"rediss://127.0.0.1:1/0?ssl_cert_reqs=bogus&password={secret}"):
            pass
    settings = Settings()
    redis = EmbeddedRedis(password=secret)
    redis.start()
    url = redis.url if form == "userinfo" else f"redis://127.0.0.1:{redis.port}/0?password={secret}"
    try:
        async with Bus.connect(url, settings.redis) as bus:
            monitor = Monitor(bus, settings, count_events=False)
            assert (await monitor.refresh())["redis"]["ok"] is True
            redis.stop()
            ov = await asyncio.wait_for(monitor.refresh(), 30)
            assert ov["redis"]["ok"] is False and "cannot reach Redis" in ov["redis"]["error"]
    finally:
        redis.stop()
    assert "cannot reach Redis" in caplog.text  # the outage was logged, redacted
    for text in (str(bad_url.value), str(bad_option.value), json.dumps(ov), caplog.text):
        assert secret not in text


@pytest.fixture
async def dashboard(redis_url: str, settings: Settings) -> AsyncIterator[str]:
    """`merclip dashboard`'s app on a real Redis; yields its base URL."""
    prefix = settings.redis.prefix

    async def feed() -> AsyncIterator[dict[str, Any]]:
        async for event in subscribe(redis_url, replay=DASHBOARD_REPLAY, prefix=prefix):
            yield event.to_json_dict()

    async with Bus.connect(redis_url, settings.redis) as bus, Monitor(bus, settings) as mon:
        server = TestServer(create_dashboard_app(feed, mon.overview), host="127.0.0.1")
        await server.start_server()
        try:
            yield f"http://127.0.0.1:{server.port}"
        finally:
            await server.close()


async def test_dashboard_routes_serve_local_files_and_json(dashboard: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(dashboard + "/dashboard") as resp:
            html = await resp.text()
            assert resp.status == 200 and "text/html" in resp.headers["Content-Type"]
        # Every script and style is local: no http(s):// URL in the page or its assets.
        assert 'src="/dashboard/static/dashboard.js"' in html
        assert "http://" not in html and "https://" not in html
        for name, ctype in (("dashboard.js", "javascript"), ("dashboard.css", "css")):
            async with http.get(f"{dashboard}/dashboard/static/{name}") as resp:
                body = await resp.text()
                assert resp.status == 200 and ctype in resp.headers["Content-Type"]
                assert "http://" not in body and "https://" not in body
        for bad in ("index.html", "..%2Fdashboard.py", "nope.js"):
            async with http.get(f"{dashboard}/dashboard/static/{bad}") as resp:
                assert resp.status == 404, bad
        async with http.get(dashboard + "/dashboard/overview") as resp:
            ov = await resp.json()
            assert resp.status == 200 and ov["redis"]["ok"] is True
        async with http.get(dashboard + "/", allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/dashboard"
        async with http.get(dashboard + "/metrics") as resp:
            assert "merclip_redis_up" in await resp.text()


async def test_the_dashboard_sends_security_headers(dashboard: str) -> None:
    """Security review L6: /dashboard sent no CSP, framing or nosniff header (and L5: no
    Referrer-Policy, though it is opened as /dashboard?token=...)."""
    async with aiohttp.ClientSession() as http:
        for path in ("/dashboard?token=x", "/dashboard/static/dashboard.js", "/dashboard/overview"):
            async with http.get(dashboard + path) as resp:
                h = resp.headers
                csp = h.get("Content-Security-Policy", "")
                assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
                assert h.get("X-Frame-Options") == "DENY", path
                assert h.get("X-Content-Type-Options") == "nosniff", path
                assert h.get("Referrer-Policy") == "no-referrer", path


async def test_overview_error_is_json_503() -> None:
    async def feed() -> AsyncIterator[dict[str, Any]]:
        if False:
            yield {}

    async def broken() -> dict[str, Any]:
        raise RuntimeError("no numbers today")

    server = TestServer(create_dashboard_app(feed, broken), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{server.port}/dashboard/overview") as resp:
                body = await resp.json()
        assert resp.status == 503
        assert body["error"] == "overview_failed" and "no numbers today" in body["detail"]
    finally:
        await server.close()


async def _read_sse(resp: aiohttp.ClientResponse, n: int) -> list[tuple[str, dict[str, Any]]]:
    """The first n (id, data) messages of an SSE response."""
    out: list[tuple[str, dict[str, Any]]] = []
    event_id = ""
    while len(out) < n:
        line = (await asyncio.wait_for(resp.content.readline(), 10)).decode().rstrip("\n")
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            out.append((event_id, json.loads(line[6:])))
    return out


async def test_events_replay_a_full_history_in_order_then_live(
    dashboard: str, redis_url: str, settings: Settings
) -> None:
    # More history than the page's per-session SSE queue holds: none of it may be dropped.
    async with Bus.connect(redis_url, settings.redis) as bus:
        for seq in range(DASHBOARD_REPLAY):
            await bus.write_event(make_event("long", seq, f"w{seq}"))
        async with aiohttp.ClientSession() as http:
            async with http.get(dashboard + "/dashboard/events") as resp:
                assert resp.headers["Content-Type"] == "text/event-stream"
                replay = await _read_sse(resp, DASHBOARD_REPLAY)
                assert [d["seq"] for _, d in replay] == list(range(DASHBOARD_REPLAY))
                assert all(i == d["event_id"] for i, d in replay)
                await bus.write_event(make_event("other", 0, "live one"))
                [(_, live)] = await _read_sse(resp, 1)
                assert live["session_id"] == "other" and live["transcript"] == "live one"


async def test_dashboard_command_checks_monitor_tokens(redis_url: str, settings: Settings) -> None:
    secret = "dashboard-test-secret-0123456789"
    settings = settings.replace("auth", enabled="on", secret=secret)
    ready: asyncio.Queue[str] = asyncio.Queue()
    stop = asyncio.Event()
    server = asyncio.create_task(
        run_dashboard(settings, redis_url, "127.0.0.1", 0, stop=stop, on_ready=ready.put_nowait)
    )
    try:
        address = await asyncio.wait_for(ready.get(), 20)
        overview = address + "/overview"
        monitor = issue_token(secret, ALL_SESSIONS, "monitor", 60)
        viewer = issue_token(secret, "one", "viewer", 60)
        async with aiohttp.ClientSession() as http:
            async with http.get(overview) as resp:
                assert resp.status == 401
            async with http.get(overview, headers={"Authorization": f"Bearer {viewer}"}) as resp:
                assert resp.status == 403
            async with http.get(overview, params={"token": monitor}) as resp:
                assert resp.status == 200 and (await resp.json())["redis"]["ok"] is True
    finally:
        stop.set()
        await asyncio.wait_for(server, 20)


def test_dashboard_command_without_redis_url_says_what_to_do(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MERCLIP_REDIS_URL"}
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, "-m", "workers.app", "--config", str(ROOT / "config.toml")]
    proc = subprocess.run(
        [*cmd, "dashboard"], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 2
    assert "merclip dashboard" in proc.stderr and "--redis-url" in proc.stderr

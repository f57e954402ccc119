"""`merclip dashboard`: serve only the monitoring dashboard, for a deployment on a shared Redis.

    merclip dashboard --redis-url redis://10.0.0.5:6379 --host 127.0.0.1 --port 8090

It reads everything from Redis (events, sessions, consumer-group lag, health), so it can run on
any machine that reaches the Redis server, beside any number of ingest and inference nodes. The
page is at /dashboard; this process's own Prometheus metrics (the Redis-side gauges) at /metrics.
`merclip serve` and `merclip ingest` serve the same dashboard on their own port.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from stream.app import runner_options
from stream.auth import access_middlewares
from stream.dashboard import DASHBOARD_REPLAY, create_dashboard_app
from workers.app.commands.common import shared_redis_url
from workers.app.settings import Settings
from workers.app.signals import stop_on_signals
from workers.app.web import shown_url, start_site
from workers.bus import Bus
from workers.monitor import Monitor
from workers.subscriber import EventHub

__all__ = ["add_arguments", "run", "run_dashboard"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 8090


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", default=None, help="the shared Redis (overrides redis.url)")
    parser.add_argument("--host", default=None, help="address to bind (default: server.host)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"HTTP port (default {DEFAULT_PORT})"
    )


async def run_dashboard(
    settings: Settings,
    url: str,
    host: str,
    port: int,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the dashboard until `stop` is set (or SIGINT/SIGTERM when stop is None).

    `on_ready(address)` is called with the dashboard's address once the port is open. Access
    tokens are checked as on `merclip serve` (auth.enabled; "auto" = when `host` is not a
    loopback address): every session's transcript is on this page.
    """
    settings = settings.replace("server", host=host)
    middlewares = access_middlewares(settings)  # ConfigError at once when no usable secret
    if stop is None:
        stop = asyncio.Event()
        stop_on_signals(stop)
    async with Bus.connect(url, settings.redis) as bus, Monitor(bus, settings) as monitor:
        hub = EventHub(bus)  # every dashboard on one pub/sub connection (review M3)

        async def feed() -> AsyncIterator[dict[str, Any]]:
            async for event in hub.events(replay=DASHBOARD_REPLAY):
                yield event.to_json_dict()

        app = create_dashboard_app(
            feed,
            monitor.overview,
            middlewares=middlewares,
            max_streams=settings.server.max_event_streams,
        )
        app.on_cleanup.append(lambda _app: hub.aclose())
        runner = web.AppRunner(app, handle_signals=False, **runner_options(settings))
        await runner.setup()
        try:
            bound = await start_site(runner, host, port)
            address = shown_url(host, bound, "/dashboard")
            log.info("dashboard for %s at %s", bus.keys.prefix, address)
            if on_ready is not None:
                on_ready(address)
            await stop.wait()
        finally:
            await runner.cleanup()


def run(args: argparse.Namespace, settings: Settings) -> int:
    url = shared_redis_url(args, settings, "dashboard")
    host = args.host or settings.server.host

    def ready(address: str) -> None:
        # One line on stdout that scripts and tests can wait for.
        print(f"merclip: dashboard at {address}", flush=True)

    asyncio.run(run_dashboard(settings, url, host, args.port, on_ready=ready))
    return 0

"""The live monitoring dashboard: a page plus two feeds, added to an aiohttp app.

Routes (added by `add_dashboard`):
- `GET /dashboard` — the page (stream/static/dashboard.html; its script and style under
  /dashboard/static/). Plain canvas drawing, no library, no CDN.
- `GET /dashboard/events` — server-sent events, one `data:` JSON event per window of every
  session: first the recent history (whatever `events_factory` replays), then live. Each message
  carries `id: <event_id>`; the page ignores ids it has seen, so a reconnect's replay is harmless.
- `GET /dashboard/overview` — JSON from the `overview` provider (sessions, events per second,
  inference lag, Redis health, and whatever else the process adds); the page polls it each second.

stream/ knows nothing about Redis: the caller passes the feed factory and the provider
(workers/service.py and workers/dashboard_command.py build them from workers.monitor and
workers.subscriber).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from stream import sse
from stream.headers import add_security_headers

__all__ = [
    "DASHBOARD_QUEUE_SIZE",
    "DASHBOARD_REPLAY",
    "FeedFactory",
    "OverviewProvider",
    "add_dashboard",
    "create_dashboard_app",
]

log = logging.getLogger(__name__)

FeedFactory = Callable[[], AsyncIterator[Mapping[str, Any]]]
"""Every session's events as JSON-ready dicts: recent history first, then live."""
OverviewProvider = Callable[[], Awaitable[Mapping[str, Any]]]

STATIC_DIR = Path(__file__).parent / "static"
ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
DASHBOARD_QUEUE_SIZE = 1024
"""Events buffered per dashboard connection. Larger than the page's per-session stream because
a connection starts with a replay of every session's recent history, written in one burst."""
DASHBOARD_REPLAY = 300
"""How many recent events (over all sessions) a feed factory should replay on connect: about
ten minutes of one session at a 2 s hop, or the last minute of ten."""

DEFAULT_MAX_STREAMS = 64
"""server.max_event_streams's default, for an app that did not set its own cap."""

DASHBOARD_EVENTS_DROPPED = Counter(
    "merclip_dashboard_events_dropped", "Events dropped because a dashboard read them too slowly"
)


def add_dashboard(
    app: web.Application,
    events_factory: FeedFactory,
    overview: OverviewProvider,
    *,
    static_dir: Path | None = None,
) -> None:
    """Add the dashboard routes to `app` (before it starts). /dashboard/events counts against
    the app's stream cap (`app[sse.STREAM_LIMIT]`, set by create_app; DEFAULT_MAX_STREAMS when
    the app has none)."""
    static = static_dir or STATIC_DIR
    add_security_headers(app)
    if sse.STREAM_LIMIT not in app:
        app[sse.STREAM_LIMIT] = sse.StreamLimit(DEFAULT_MAX_STREAMS)
    stream_limit = app[sse.STREAM_LIMIT]
    streams: set[asyncio.Task[Any]] = set()  # open event streams, cancelled on shutdown

    async def page(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(static / "dashboard.html", headers={"Cache-Control": "no-cache"})

    async def asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in ASSETS:
            raise web.HTTPNotFound()
        return web.FileResponse(
            static / name, headers={"Content-Type": ASSETS[name], "Cache-Control": "no-cache"}
        )

    async def overview_json(request: web.Request) -> web.Response:
        try:
            body = dict(await overview())
        except Exception as exc:  # the page shows the error instead of going blank
            log.exception("dashboard overview failed")
            return web.json_response(
                {"error": "overview_failed", "detail": f"{type(exc).__name__}: {exc}"},
                status=503,
            )
        return web.json_response(body, headers={"Cache-Control": "no-cache"})

    async def events(request: web.Request) -> web.StreamResponse:
        refused = stream_limit.refusal()  # before the factory opens anything
        if refused is not None:
            return refused
        task = asyncio.current_task()
        assert task is not None
        streams.add(task)
        try:
            return await sse.relay(
                request,
                events_factory(),
                queue_size=DASHBOARD_QUEUE_SIZE,
                dropped_counter=DASHBOARD_EVENTS_DROPPED,
                what="dashboard",
                limit=stream_limit,
            )
        finally:
            streams.discard(task)

    async def on_shutdown(app: web.Application) -> None:
        for task in list(streams):
            task.cancel()

    app.router.add_get("/dashboard", page)
    app.router.add_get("/dashboard/", page)
    app.router.add_get("/dashboard/static/{name}", asset)
    app.router.add_get("/dashboard/overview", overview_json)
    app.router.add_get("/dashboard/events", events)
    app.on_shutdown.append(on_shutdown)


def create_dashboard_app(
    events_factory: FeedFactory,
    overview: OverviewProvider,
    *,
    static_dir: Path | None = None,
    middlewares: Iterable[Any] = (),
    max_streams: int = DEFAULT_MAX_STREAMS,
) -> web.Application:
    """An app that serves only the dashboard (`merclip dashboard`): the dashboard routes, `/`
    redirecting to it, `/healthz`, and this process's Prometheus metrics at `/metrics`.

    `middlewares`: e.g. `stream.server.access_middlewares(settings)`, the same token check that
    guards /dashboard on `merclip serve`."""
    app = web.Application(middlewares=list(middlewares))
    app[sse.STREAM_LIMIT] = sse.StreamLimit(max_streams)

    async def index(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/dashboard")

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    add_dashboard(app, events_factory, overview, static_dir=static_dir)
    return app

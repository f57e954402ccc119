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

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from stream import sse
from stream.headers import add_security_headers
from stream.metrics import metrics_handler

__all__ = [
    "DASHBOARD",
    "DASHBOARD_QUEUE_SIZE",
    "DASHBOARD_REPLAY",
    "Dashboard",
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
ASSETS = {
    "dashboard.js": "text/javascript",
    "base.css": "text/css",
    "dashboard.css": "text/css",
}
"""The files under /dashboard/static/ (base.css is shared with the page of stream/app.py)."""
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


@dataclass(frozen=True)
class Dashboard:
    """What the dashboard routes serve: app[DASHBOARD], set by add_dashboard."""

    feed: FeedFactory
    overview: OverviewProvider
    static_dir: Path


DASHBOARD = web.AppKey("merclip_dashboard", Dashboard)


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
    add_security_headers(app)
    sse.add_stream_limit(app, DEFAULT_MAX_STREAMS)
    app[DASHBOARD] = Dashboard(events_factory, overview, static_dir or STATIC_DIR)
    app.router.add_get("/dashboard", page)
    app.router.add_get("/dashboard/", page)
    app.router.add_get("/dashboard/static/{name}", asset)
    app.router.add_get("/dashboard/overview", overview_json)
    app.router.add_get("/dashboard/events", events)


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

    `middlewares`: e.g. `stream.auth.access_middlewares(settings)`, the same token check that
    guards /dashboard on `merclip serve`."""
    app = web.Application(middlewares=list(middlewares))
    sse.add_stream_limit(app, max_streams)
    app.router.add_get("/", _to_dashboard)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", metrics_handler)
    add_dashboard(app, events_factory, overview, static_dir=static_dir)
    return app


# -- handlers ------------------------------------------------------------------------------


async def page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(
        request.app[DASHBOARD].static_dir / "dashboard.html",
        headers={"Cache-Control": "no-cache"},
    )


async def asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    return web.FileResponse(
        request.app[DASHBOARD].static_dir / name,
        headers={"Content-Type": ASSETS[name], "Cache-Control": "no-cache"},
    )


async def overview_json(request: web.Request) -> web.Response:
    try:
        body = dict(await request.app[DASHBOARD].overview())
    except Exception as exc:  # the page shows the error instead of going blank
        log.exception("dashboard overview failed")
        return web.json_response(
            {"error": "overview_failed", "detail": f"{type(exc).__name__}: {exc}"},
            status=503,
        )
    return web.json_response(body, headers={"Cache-Control": "no-cache"})


async def events(request: web.Request) -> web.StreamResponse:
    return await sse.serve_feed(
        request,
        request.app[DASHBOARD].feed,
        queue_size=DASHBOARD_QUEUE_SIZE,
        dropped_counter=DASHBOARD_EVENTS_DROPPED,
        what="dashboard",
    )


async def _to_dashboard(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/dashboard")


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})

"""The WebRTC ingest HTTP app: signalling, the browser page, and live events for the page.

Routes (`create_app`; each handler is a module-level function reading what it needs from
`request.app[...]`):
- `GET /` — the page (stream/static/index.html; app.js, base.css and style.css under /static/).
- `POST /offer` — JSON `{sdp, type: "offer", session_id?, options?}` → `{sdp, type: "answer",
  session_id}` (stream/signaling.py). Errors are JSON `{"error": code, "detail": message}` with a
  4xx status; 503 + Retry-After when every session slot is taken.
- `GET /events/{session}` — server-sent events, one `data:` JSON object per event, from the
  `events_factory` given to `create_app` (stream/ itself knows nothing about Redis).
- `GET /config` — `{"ice_servers": [...], "events": bool}` for the page.
- `GET /healthz` — liveness: always 200, `{"status": "ok" | "draining", "sessions": n,
  "max_sessions": m, "draining": bool}` (a draining node is alive: it is finishing sessions).
- `GET /readyz` — readiness: 200 `{"status": "ready"}` while new sessions are taken, 503
  `{"status": "draining"}` once the node drains, so a load balancer sends offers elsewhere.
- `GET /metrics` — Prometheus counters: sessions, offers by result, video frames delivered or
  dropped, audio seconds, sessions closed by reason, events dropped for slow pages.

Access control is stream/auth.py's `access_middlewares` (tokens on /offer, /events/* and
/dashboard* when auth is on; the Host/Origin check of the open local mode otherwise). The live
sessions are `app[REGISTRY]` (stream/sessions.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from stream import sse
from stream.auth import SESSION_ID_RE, access_middlewares
from stream.errors import error_response
from stream.headers import add_security_headers
from stream.ice import is_loopback_host, use_loopback_candidates
from stream.metrics import metrics_handler
from stream.sessions import REGISTRY, SessionRegistry
from stream.settings import StreamSettings
from stream.signaling import SIGNALING, Signaling, SinkFactory, offer

__all__ = [
    "EVENTS",
    "EVENTS_QUEUE_SIZE",
    "REGISTRY",
    "STATIC_DIR",
    "EventsFactory",
    "SinkFactory",
    "create_app",
    "runner_options",
]

EventsFactory = Callable[[str], AsyncIterator[dict[str, Any]]]

STATIC_DIR = Path(__file__).parent / "static"
EVENTS_QUEUE_SIZE = 64
"""Events buffered per page connection; when the page reads slower, the oldest are dropped."""

EVENTS_DROPPED = Counter(
    "merclip_stream_events_dropped", "Events dropped because a page read them too slowly"
)

EVENTS: web.AppKey[EventsFactory | None] = web.AppKey("merclip_events_factory")
"""app[EVENTS]: the `events_factory` of create_app (None: GET /events/* answers 404)."""
PAGE_DIR = web.AppKey("merclip_page_dir", Path)
"""app[PAGE_DIR]: the directory of index.html and the /static/ files."""


def create_app(
    settings: StreamSettings,
    sink_factory: SinkFactory,
    events_factory: EventsFactory | None = None,
    *,
    static_dir: Path | None = None,
    loopback: bool | None = None,
) -> web.Application:
    """The aiohttp application. `sink_factory(info)` makes one MediaSink per session;
    `events_factory(session_id)` yields that session's event dicts for GET /events/{session}.

    `loopback`: offer 127.0.0.1 as an ICE host candidate (see
    `stream.ice.use_loopback_candidates`); default: when settings.server.host is a loopback
    address, so that a server bound to localhost works even where loopback is the only interface.
    """
    server = settings.server
    if loopback is None:
        loopback = is_loopback_host(server.host)
    if loopback:
        use_loopback_candidates()
    app = web.Application(
        client_max_size=server.max_body_bytes, middlewares=access_middlewares(settings)
    )
    add_security_headers(app)
    # Added first, so its shutdown hook cancels the open event streams before the sessions close.
    sse.add_stream_limit(app, server.max_event_streams)
    app[REGISTRY] = SessionRegistry(server.max_sessions, server.recycle_after_sessions)
    app[SIGNALING] = Signaling(server, sink_factory)
    app[EVENTS] = events_factory
    app[PAGE_DIR] = static_dir or STATIC_DIR

    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/config", config)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_post("/offer", offer)
    app.router.add_get("/events/{session}", events)
    app.router.add_static("/static/", app[PAGE_DIR], show_index=False)
    app.on_shutdown.append(_close_sessions)
    return app


def runner_options(settings: StreamSettings) -> dict[str, Any]:
    """Keyword arguments for the `web.AppRunner` (or `TestServer.start_server`) of an app made
    by create_app or create_dashboard_app.

    aiohttp closes a connection whose request line and headers have not all arrived within its
    keep-alive timeout (armed when the connection opens and after each response, not moved by
    more bytes), so that timeout is the header timeout too. Its default, 3630 s, let a half-sent
    request hold an fd for an hour (review L4: still open after 90 s). Bodies have their own
    timeout in `_read_json`; after an answer that leaves body unread (408, 413), aiohttp reads
    the rest for at most `lingering_time` before closing, so the client sees the answer: at most
    the read timeout (its default is 10 s)."""
    timeout = settings.server.read_timeout_seconds
    return {"keepalive_timeout": timeout, "lingering_time": min(10.0, timeout)}


# -- handlers ------------------------------------------------------------------------------


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(
        request.app[PAGE_DIR] / "index.html", headers={"Cache-Control": "no-cache"}
    )


async def healthz(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    return web.json_response(
        {
            "status": "draining" if registry.draining else "ok",
            "sessions": registry.count,
            "max_sessions": registry.max_sessions,
            "draining": registry.draining,
        }
    )


async def readyz(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    if registry.draining:
        return web.json_response({"status": "draining", "sessions": registry.count}, status=503)
    return web.json_response({"status": "ready", "sessions": registry.count})


async def config(request: web.Request) -> web.Response:
    # What the page needs to build its RTCPeerConnection like ours.
    return web.json_response(
        {
            "ice_servers": list(request.app[SIGNALING].server.ice_servers),
            "events": request.app[EVENTS] is not None,
        }
    )


async def events(request: web.Request) -> web.StreamResponse:
    session_id = request.match_info["session"]
    if not SESSION_ID_RE.fullmatch(session_id):
        return error_response(400, "bad_session_id", "session ids are 1-64 of [A-Za-z0-9_-]")
    events_factory = request.app[EVENTS]
    if events_factory is None:
        return error_response(404, "no_events", "this server was started without an event source")
    return await sse.serve_feed(
        request,
        lambda: events_factory(session_id),
        queue_size=EVENTS_QUEUE_SIZE,
        dropped_counter=EVENTS_DROPPED,
        what="events",
    )


async def _close_sessions(app: web.Application) -> None:
    await app[REGISTRY].aclose_all("shutdown")

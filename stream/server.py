"""The WebRTC ingest HTTP server: signalling, the browser page, and live events for the page.

Routes:
- `GET /` — the page (stream/static/index.html; app.js and style.css under /static/).
- `POST /offer` — JSON `{sdp, type: "offer", session_id?, options?}` → `{sdp, type: "answer",
  session_id}`. No trickle ICE: the client sends its offer after gathering, and so do we.
  Errors are JSON `{"error": code, "detail": message}` with a 4xx status; 503 + Retry-After when
  every session slot is taken.
- `GET /events/{session}` — server-sent events, one `data:` JSON object per event, from the
  `events_factory` given to `create_app` (stream/ itself knows nothing about Redis).
- `GET /config` — `{"ice_servers": [...], "events": bool}` for the page.
- `GET /healthz` — `{"status": "ok", "sessions": n, "max_sessions": m}`.
- `GET /metrics` — Prometheus counters: sessions, offers by result, video frames delivered or
  dropped, audio seconds, sessions closed by reason, events dropped for slow pages.

Access control (stream/auth.py; on by default when the server binds beyond loopback): POST /offer
needs a publisher token for the session it joins (a body without `session_id` joins the token's
session), GET /events/{session} a token of that session (or a monitor token), and every path under
/dashboard a monitor token for all sessions. The token travels as `Authorization: Bearer <token>`
or `?token=<token>` (EventSource cannot set headers); a valid `?token=` on a /dashboard page also
sets an HttpOnly cookie scoped to /dashboard so the page's own requests carry it. Refusals are 401
(no or bad token) or 403 (a token for something else), JSON like every other error. /, /static,
/config, /healthz and /metrics stay open (they hold no session data).

With auth off on a loopback address (the open local mode), every request must name this machine in
its Host header (localhost or a loopback IP, any port) and a non-GET request may carry only such an
Origin; anything else is 403 (`bad_host`, `bad_origin`). Otherwise a web page the local user
visits could rebind its own name to 127.0.0.1 (DNS rebinding) and read /dashboard/events or post
offers same-origin.

A `session_id` that is already live is a reconnect: once the new offer has been answered, the new
peer takes the old one's slot and the old peer is closed, so a client that lost its connection
(aiortc has no ICE restart) can come back under the same id, and an offer that fails leaves the
live session alone. Offers
for one session id are handled one at a time (a per-id lock), so concurrent offers for it replace
each other in turn and exactly one peer stays live, counted once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiortc.sdp import SessionDescription
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

from merclip.errors import ConfigError
from stream import sse
from stream.auth import (
    SESSION_ID_RE,
    AuthError,
    Claims,
    auth_enabled,
    can_monitor,
    can_publish,
    can_view,
    check_secret,
    verify_token,
)
from stream.errors import (
    BadOfferError,
    ForbiddenError,
    OfferError,
    PayloadTooLargeError,
    RequestTimeoutError,
    ServerFullError,
    SessionBusyError,
    UnsupportedMediaTypeError,
)
from stream.headers import add_security_headers
from stream.peer import (
    MediaSink,
    PeerSession,
    SessionInfo,
    ice_configuration,
    is_loopback_host,
    use_loopback_candidates,
)
from stream.settings import StreamSettings

__all__ = [
    "AUTH_CLAIMS",
    "EVENTS_QUEUE_SIZE",
    "REGISTRY",
    "EventsFactory",
    "SessionRegistry",
    "SinkFactory",
    "access_middlewares",
    "create_app",
    "runner_options",
]

log = logging.getLogger(__name__)

SinkFactory = Callable[[SessionInfo], MediaSink]
EventsFactory = Callable[[str], AsyncIterator[dict[str, Any]]]

STATIC_DIR = Path(__file__).parent / "static"
SDP_LINE_RE = re.compile(r"^[a-z]=")
EVENTS_QUEUE_SIZE = 64
"""Events buffered per page connection; when the page reads slower, the oldest are dropped."""
RETRY_AFTER_SECONDS = 5
MAX_SECTIONS_PER_KIND = 2
"""Active audio (and video) sections an offer may have: the first of each kind is used, the rest
are read and discarded. Browsers send one of each; an offer with 100 audio sections started 100
reader tasks and wrote 99 log lines (review L8)."""


SESSIONS = Gauge("merclip_stream_sessions", "Live WebRTC sessions")
OFFERS = Counter(
    "merclip_stream_offers", "POST /offer results: accepted, or the error code", ["result"]
)
EVENTS_DROPPED = Counter(
    "merclip_stream_events_dropped", "Events dropped because a page read them too slowly"
)


class SessionRegistry:
    """The live sessions of one server, bounded by `max_sessions`."""

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._sessions: dict[str, PeerSession] = {}
        self.rejected_full = 0
        """Offers refused because every slot was taken."""

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def count(self) -> int:
        return len(self._sessions)

    def get(self, session_id: str) -> PeerSession | None:
        return self._sessions.get(session_id)

    def sessions(self) -> list[PeerSession]:
        return list(self._sessions.values())

    def check_capacity(self) -> None:
        """Raise ServerFullError when every slot is taken."""
        if len(self._sessions) >= self.max_sessions:
            self.rejected_full += 1
            raise ServerFullError(
                f"all {self.max_sessions} session slots are in use; retry later",
                retry_after=RETRY_AFTER_SECONDS,
            )

    def add(self, session: PeerSession) -> None:
        """Count `session` in. A different live session under the same id is refused
        (SessionBusyError): overwriting it would leave that peer streaming, uncounted (H2)."""
        held = self._sessions.get(session.session_id)
        if held is session:
            return
        if held is not None:
            raise SessionBusyError(
                f"session {session.session_id!r} is already live; its offer is still being "
                "handled: retry"
            )
        self.check_capacity()
        self._sessions[session.session_id] = session
        SESSIONS.inc()

    def replace(self, old: PeerSession, new: PeerSession) -> None:
        """Count `new` in place of `old` (a reconnect), in one step: no other offer can take the
        slot between the two. If `old` has already gone, this is `add(new)`."""
        if self._sessions.get(old.session_id) is old and new.session_id == old.session_id:
            self._sessions[new.session_id] = new
        else:
            self.add(new)

    def remove(self, session: PeerSession) -> None:
        if self._sessions.get(session.session_id) is session:
            del self._sessions[session.session_id]
            SESSIONS.dec()

    async def aclose_all(self, reason: str) -> None:
        sessions = self.sessions()
        await asyncio.gather(*(s.aclose(reason) for s in sessions), return_exceptions=True)


class _SessionLocks:
    """One asyncio.Lock per session id, forgotten as soon as nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[None]:
        entry = self._locks.get(session_id)
        lock, users = entry if entry is not None else (asyncio.Lock(), 0)
        self._locks[session_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[session_id]
            if users == 1:
                del self._locks[session_id]
            else:
                self._locks[session_id] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


REGISTRY = web.AppKey("merclip_sessions", SessionRegistry)
AUTH_CLAIMS = web.RequestKey("merclip_auth_claims", Claims)
"""request[AUTH_CLAIMS]: the verified token of the request (only when auth is on)."""
TOKEN_COOKIE = "merclip_token"


def _request_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    token = request.query.get("token", "")
    if token:
        return token
    if request.method == "GET":  # cookies only for reads: a cross-site POST cannot ride on one
        return request.cookies.get(TOKEN_COOKIE, "")
    return ""


def _auth_middleware(secret: str) -> Any:
    """Checks tokens on /offer, /events/* and /dashboard* (see the module docstring)."""

    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path
        dashboard = path == "/dashboard" or path.startswith("/dashboard/")
        events = path.startswith("/events/")
        if not (dashboard or events or path == "/offer"):
            return await handler(request)
        token = _request_token(request)
        if not token:
            return _auth_error(401, "unauthorized", "this server needs an access token")
        try:
            claims = verify_token(secret, token)
        except AuthError as exc:
            return _auth_error(401, "unauthorized", str(exc))
        if dashboard:
            allowed = can_monitor(claims)
        elif events:
            allowed = can_view(claims, path[len("/events/") :])
        else:  # /offer: the session is in the body, checked by the handler
            allowed = claims.role == "publisher"
        if not allowed:
            return _error(
                403,
                "forbidden",
                f"a {claims.role} token for {claims.session!r} does not grant this request",
            )
        request[AUTH_CLAIMS] = claims
        response = await handler(request)
        if dashboard and request.query.get("token") and not response.prepared:
            ttl = max(0, claims.expires - int(time.time()))
            response.set_cookie(
                TOKEN_COOKIE,
                token,
                path="/dashboard",
                max_age=ttl,
                httponly=True,
                samesite="Strict",
            )
        return response

    return check


def _names_this_machine(host: str) -> bool:
    """Whether a Host (or Origin's host) value, port included or not, is localhost or a loopback
    IP literal. A rebinding page can point its own name at 127.0.0.1, but the browser still sends
    that name; it cannot make the browser send `localhost` or `127.0.0.1` for its origin."""
    name = host.strip().lower()
    if name.startswith("["):  # [::1] or [::1]:8080
        name = name[1 : name.find("]")] if "]" in name else ""
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _loopback_host_middleware() -> Any:
    """The open local mode's guard against DNS rebinding (see the module docstring).

    The port is not checked: a rebinding page uses whatever port the service listens on, so the
    port proves nothing, and a forwarded port (`ssh -L 9000:localhost:8080`) must keep working."""

    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        host = request.headers.get("Host", "")
        if not _names_this_machine(host):
            return _error(
                403,
                "bad_host",
                f"this server is open to local clients only and answers requests for localhost "
                f"or 127.0.0.1, not Host {host[:80]!r}: open it as http://localhost:<port>/ "
                "(or turn auth on to serve other names)",
            )
        origin = request.headers.get("Origin")
        if request.method not in ("GET", "HEAD") and origin is not None:
            origin_host = origin.split("://", 1)[-1].split("/", 1)[0]
            if "://" not in origin or not _names_this_machine(origin_host):
                return _error(
                    403,
                    "bad_origin",
                    f"a page from {origin[:80]!r} may not use this local server: only pages it "
                    "serves itself may post to it",
                )
        return await handler(request)

    return check


def access_middlewares(settings: StreamSettings) -> list[Any]:
    """The access check for an aiohttp app serving /offer, /events/* or /dashboard*: tokens when
    auth is on; when auth is off on a loopback host, the Host/Origin check against DNS rebinding
    (none when auth is off on another address: the operator chose an open service, e.g. behind a
    proxy that authenticates). Raises ConfigError when auth is on without a usable secret."""
    if not auth_enabled(settings):
        if is_loopback_host(settings.server.host):
            return [_loopback_host_middleware()]
        return []
    if not settings.auth.secret:  # refuse to start open to the network
        raise ConfigError(
            f"access tokens are required (auth.enabled = {settings.auth.enabled!r}, server.host "
            f"= {settings.server.host!r}) but auth.secret is empty: set MERCLIP_AUTH_SECRET "
            "(at least 16 bytes), or bind 127.0.0.1, or set auth.enabled = 'off' behind a proxy "
            "that authenticates"
        )
    check_secret(settings.auth.secret)  # a short secret can be brute-forced from one token
    log.info("access tokens required on /offer, /events/* and /dashboard")
    return [_auth_middleware(settings.auth.secret)]


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


def _auth_error(status: int, code: str, detail: str) -> web.Response:
    response = _error(status, code, detail)
    response.headers["WWW-Authenticate"] = 'Bearer realm="merclip"'
    return response


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
    `stream.peer.use_loopback_candidates`); default: when settings.server.host is a loopback
    address, so that a server bound to localhost works even where loopback is the only interface.
    """
    server = settings.server
    if loopback is None:
        loopback = is_loopback_host(server.host)
    if loopback:
        use_loopback_candidates()
    static = static_dir or STATIC_DIR
    registry = SessionRegistry(server.max_sessions)
    offer_locks = _SessionLocks()
    app = web.Application(
        client_max_size=server.max_body_bytes, middlewares=access_middlewares(settings)
    )
    add_security_headers(app)
    app[REGISTRY] = registry
    app[sse.STREAM_LIMIT] = stream_limit = sse.StreamLimit(server.max_event_streams)
    sse_tasks: set[asyncio.Task[Any]] = set()  # open event streams, cancelled on shutdown

    async def index(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(static / "index.html", headers={"Cache-Control": "no-cache"})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", "sessions": registry.count, "max_sessions": registry.max_sessions}
        )

    async def metrics(request: web.Request) -> web.Response:
        # Prometheus text format of this process's default registry (stream/ and anything else
        # in the process that registers there).
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def config(request: web.Request) -> web.Response:
        # What the page needs to build its RTCPeerConnection like ours.
        return web.json_response(
            {"ice_servers": list(server.ice_servers), "events": events_factory is not None}
        )

    async def offer(request: web.Request) -> web.Response:
        try:
            return await _handle_offer(request)
        except OfferError as exc:
            headers = {}
            if isinstance(exc, ServerFullError):
                headers["Retry-After"] = str(exc.retry_after)
            OFFERS.labels(exc.code).inc()
            log.info("offer refused (%s): %s", exc.code, exc.detail)
            response = web.json_response(exc.to_json(), status=exc.status, headers=headers)
            if isinstance(exc, RequestTimeoutError):
                response.force_close()  # the rest of the body may never come
            return response

    async def _handle_offer(request: web.Request) -> web.Response:
        body = await _read_json(request, server.max_body_bytes, server.read_timeout_seconds)
        sdp, session_id, options = _parse_offer(body)
        claims = request.get(AUTH_CLAIMS)
        if claims is not None:
            if isinstance(body, dict) and body.get("session_id") is None:
                session_id = claims.session  # the token names the session to join
            elif not can_publish(claims, session_id):
                raise ForbiddenError(
                    f"the token publishes to session {claims.session!r}, not {session_id!r}"
                )
            if not SESSION_ID_RE.fullmatch(session_id):  # verify_token checks it too
                raise ForbiddenError(f"the token names no valid session id: {session_id!r}")
        # Refused before the SDP is parsed (review L2: 18 ms of loop CPU per 250 KB offer, so
        # ~50 refused offers/s saturated the loop). A reconnect needs no new slot (_join).
        if registry.get(session_id) is None:
            registry.check_capacity()
        _check_sdp(sdp)
        # Serialised per id: without it, concurrent offers for a live id each closed the same old
        # peer, then each added itself (the registry kept one, every peer streamed).
        async with offer_locks.hold(session_id):
            return await _join(session_id, sdp, options)

    async def _join(session_id: str, sdp: str, options: dict[str, Any]) -> web.Response:
        # A reconnect keeps the old peer live until the new offer has been answered: closing it
        # first let an offer that aiortc then rejected end the session it meant to replace
        # (review L10). The new peer then takes over the old one's slot.
        old = registry.get(session_id)
        if old is None:
            registry.check_capacity()  # before the sink exists: a refused offer costs nothing
        info = SessionInfo(
            session_id=session_id,
            started_wall=time.time(),
            started_monotonic=time.monotonic(),
            options=options,
        )
        sink = sink_factory(info)
        session = PeerSession(
            info,
            sink,
            ice_configuration(server.ice_servers),
            server.inactivity_timeout_seconds,
            on_closed=registry.remove,
            connect_timeout=server.connect_timeout_seconds,
        )
        # A new id is registered before the (slow) answer so concurrent offers count against
        # the limit; a reconnect uses the slot its old peer holds.
        if old is None:
            try:
                registry.add(session)
            except OfferError:
                await session.aclose("offer_failed")  # the sink exists: tell it
                raise
        try:
            answer = await session.answer(sdp)
            if old is not None:
                registry.replace(old, session)
        except BaseException:
            await session.aclose("offer_failed")
            raise
        if old is not None:
            log.info("session %s reconnected: its old peer is replaced", session_id)
            await old.aclose("replaced")
        OFFERS.labels("accepted").inc()
        log.info("session %s started (%d/%d)", session_id, registry.count, registry.max_sessions)
        return web.json_response({"sdp": answer.sdp, "type": answer.type, "session_id": session_id})

    async def events(request: web.Request) -> web.StreamResponse:
        session_id = request.match_info["session"]
        if not SESSION_ID_RE.fullmatch(session_id):
            return _error(400, "bad_session_id", "session ids are 1-64 of [A-Za-z0-9_-]")
        if events_factory is None:
            return _error(404, "no_events", "this server was started without an event source")
        refused = stream_limit.refusal()  # before the factory opens anything
        if refused is not None:
            return refused
        task = asyncio.current_task()
        assert task is not None
        sse_tasks.add(task)
        try:
            return await sse.relay(
                request,
                events_factory(session_id),
                queue_size=EVENTS_QUEUE_SIZE,
                dropped_counter=EVENTS_DROPPED,
                what="events",
                limit=stream_limit,
            )
        finally:
            sse_tasks.discard(task)

    async def on_shutdown(app: web.Application) -> None:
        for task in list(sse_tasks):
            task.cancel()
        await registry.aclose_all("shutdown")

    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/config", config)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/offer", offer)
    app.router.add_get("/events/{session}", events)
    app.router.add_static("/static/", static, show_index=False)
    app.on_shutdown.append(on_shutdown)
    return app


# -- request parsing -------------------------------------------------------------------------


async def _read_json(request: web.Request, max_bytes: int, timeout: float) -> Any:
    ctype = request.content_type
    if ctype != "application/json":
        raise UnsupportedMediaTypeError(
            f"Content-Type must be application/json, got {ctype or 'none'!r}"
        )
    too_big = f"the body is larger than the {max_bytes}-byte limit (server.max_body_bytes)"
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLargeError(too_big)
    # Read at most one byte past the limit: a chunked body has no Content-Length to check.
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):  # a body that trickles in holds an fd (slowloris)
            while size <= max_bytes:
                chunk = await request.content.read(max_bytes + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except TimeoutError as exc:
        raise RequestTimeoutError(
            f"the body did not arrive within {timeout:g} s (server.read_timeout_seconds): "
            f"{size} bytes read"
        ) from exc
    if size > max_bytes:
        raise PayloadTooLargeError(too_big)
    try:
        return json.loads(b"".join(chunks))
    except RecursionError as exc:  # json's C scanner recurses per level: ~1000 deep is enough
        raise BadOfferError(
            "the body is nested too deeply to be an offer ({sdp, type, session_id?, options?})",
            code="bad_json",
        ) from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BadOfferError(f"the body is not valid JSON: {exc}", code="bad_json") from exc


def _parse_offer(body: Any) -> tuple[str, str, dict[str, Any]]:
    """Validate the offer body's fields (the SDP itself: `_check_sdp`); returns (sdp,
    session_id, options)."""
    if not isinstance(body, dict):
        raise BadOfferError("the body must be a JSON object {sdp, type, session_id?, options?}")
    unknown = body.keys() - {"sdp", "type", "session_id", "options"}
    if unknown:
        raise BadOfferError(f"unknown fields {sorted(unknown)}", code="unknown_field")
    if "type" not in body:
        raise BadOfferError('missing field "type" (must be "offer")', code="missing_field")
    if body["type"] != "offer":
        raise BadOfferError(f'"type" must be "offer", got {body["type"]!r}', code="not_an_offer")
    sdp = body.get("sdp")
    if sdp is None:
        raise BadOfferError('missing field "sdp"', code="missing_field")
    if not isinstance(sdp, str) or not sdp.strip():
        raise BadOfferError('"sdp" must be a non-empty string', code="bad_field")
    session_id = body.get("session_id")
    if session_id is None:
        session_id = uuid.uuid4().hex[:16]
    elif not isinstance(session_id, str) or not SESSION_ID_RE.fullmatch(session_id):
        raise BadOfferError(
            '"session_id" must be 1-64 characters of [A-Za-z0-9_-]', code="bad_field"
        )
    options = body.get("options", {})
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise BadOfferError('"options" must be a JSON object', code="bad_field")
    return sdp, session_id, options


def _check_sdp(sdp: str) -> None:
    """Parse the SDP and require at least one audio or video section we can receive."""
    # aiortc's parser skips lines it does not know, so check the basic "x=value" shape first.
    lines = [line for line in sdp.splitlines() if line.strip()]
    bad = next((line for line in lines if not SDP_LINE_RE.match(line)), None)
    if not lines or not lines[0].startswith("v=") or bad is not None:
        shown = (bad or (lines[0] if lines else ""))[:60]
        raise BadOfferError(
            f"the SDP is not a session description (starts with v=, then x=value lines): "
            f"offending line {shown!r}",
            code="bad_sdp",
        )
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:  # the parser raises ValueError, IndexError, KeyError, ...
        raise BadOfferError(
            f"the SDP cannot be parsed: {type(exc).__name__}: {exc}", code="bad_sdp"
        ) from exc
    active = [m for m in parsed.media if m.port != 0 and m.direction != "inactive"]
    kinds = {m.kind for m in active}
    for kind in ("audio", "video"):
        n = sum(1 for m in active if m.kind == kind)
        if n > MAX_SECTIONS_PER_KIND:
            raise BadOfferError(
                f"the offer has {n} {kind} sections; at most {MAX_SECTIONS_PER_KIND} are "
                f"accepted (only the first {kind} track is used)",
                code="too_many_tracks",
            )
    if not kinds & {"audio", "video"}:
        raise BadOfferError(
            "the offer has no audio or video section: add a microphone or camera track "
            f"(found: {sorted(kinds) or 'no media'})",
            code="no_media",
        )
    # Checked here, before a sink exists (aiortc would refuse missing ICE credentials later, and
    # accept a missing DTLS fingerprint only to never connect).
    if any(m.ice is None or not m.ice.usernameFragment or not m.ice.password for m in active):
        raise BadOfferError(
            "the offer has no ICE credentials (a=ice-ufrag / a=ice-pwd)", code="bad_sdp"
        )
    if any(m.dtls is None or not m.dtls.fingerprints for m in active):
        raise BadOfferError(
            "the offer has no DTLS fingerprint (a=fingerprint): WebRTC media needs DTLS-SRTP",
            code="bad_sdp",
        )


def _error(status: int, code: str, detail: str) -> web.Response:
    return web.json_response({"error": code, "detail": detail}, status=status)

"""Signed access tokens for the HTTP service: who may publish to, watch, or monitor a session.

A token is `v1.<payload>.<signature>`: the payload is base64url JSON `{"sid": session, "role":
role, "exp": unix seconds}`, the signature base64url HMAC-SHA256 over `v1.<payload>` with the
server's secret (settings.auth.secret / MERCLIP_AUTH_SECRET). Standard library only; stateless, so
every ingest node that shares the secret accepts the same tokens.

Roles and what they open (a token is scoped to ONE session, except a monitor token for "*"):
- publisher: POST /offer for its session (and reading that session's events, for the page);
- viewer:    GET /events/{session} of its session only;
- monitor:   everything a viewer can, for its session or all sessions ("*"), plus /dashboard.

Auth is on when settings.auth.enabled is "on", or "auto" (the default) and the server binds a
non-loopback address.

HTTP access (`access_middlewares`, for the service app of stream/app.py and `merclip dashboard`):
with auth on, POST /offer needs a publisher token for the session it joins (a body without
`session_id` joins the token's session), GET /events/{session} a token of that session (or a
monitor token), and every path under /dashboard a monitor token for all sessions. The token
travels as `Authorization: Bearer <token>` or `?token=<token>` (EventSource cannot set headers); a
valid `?token=` on a /dashboard page also sets an HttpOnly cookie scoped to /dashboard so the
page's own requests carry it. Refusals are 401 (no or bad token) or 403 (a token for something
else), JSON like every other error. /, /static, /config, /healthz, /readyz and /metrics stay open
(they hold no session data).

With auth off on a loopback address (the open local mode), every request must name this machine in
its Host header (localhost or a loopback IP, any port) and a non-GET request may carry only such an
Origin; anything else is 403 (`bad_host`, `bad_origin`). Otherwise a web page the local user
visits could rebind its own name to 127.0.0.1 (DNS rebinding) and read /dashboard/events or post
offers same-origin.

Minting a token (prints it):

    merclip token issue --session abc --role viewer [--ttl 600] [--config config.toml]
    merclip token verify <token>
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from merclip.errors import ConfigError, MerClipError
from stream.errors import error_response
from stream.ice import is_loopback_host
from stream.settings import StreamSettings

__all__ = [
    "ALL_SESSIONS",
    "AUTH_CLAIMS",
    "ROLES",
    "SESSION_ID_RE",
    "TOKEN_COOKIE",
    "AuthError",
    "Claims",
    "Role",
    "access_middlewares",
    "auth_enabled",
    "can_monitor",
    "can_publish",
    "can_view",
    "check_secret",
    "issue_token",
    "verify_token",
]

Role = Literal["publisher", "viewer", "monitor"]
ROLES: tuple[str, ...] = ("publisher", "viewer", "monitor")
ALL_SESSIONS = "*"
"""Session scope of a monitor token that may watch every session."""
SESSION_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What a session id may be (use `fullmatch`): it names Redis keys (`P:{S}:events`) and URL paths
(`/events/S`), so a token for any other name would join a session nobody can read (M8)."""
MIN_SECRET_BYTES = 16
_VERSION = "v1"

log = logging.getLogger(__name__)


class AuthError(MerClipError):
    """A token is missing, malformed, forged, expired, or does not grant the request."""


@dataclass(frozen=True)
class Claims:
    """What a verified token grants."""

    session: str
    role: str
    expires: int
    """Unix time (seconds) after which the token is refused."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: str, message: str) -> str:
    return _b64(hmac.new(secret.encode(), message.encode("ascii"), hashlib.sha256).digest())


def check_secret(secret: str) -> None:
    """A short secret can be brute-forced offline from one token: refuse it."""
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"auth.secret must be at least {MIN_SECRET_BYTES} bytes (set MERCLIP_AUTH_SECRET, "
            "e.g. to the output of `python -c 'import secrets; print(secrets.token_urlsafe())'`)"
        )


def issue_token(
    secret: str, session: str, role: str, ttl: float, *, now: float | None = None
) -> str:
    """A token granting `role` on `session` (monitor: "*" for all) for `ttl` seconds."""
    check_secret(secret)
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if not session or (session == ALL_SESSIONS and role != "monitor"):
        raise ValueError("a token needs a session id; only monitor tokens may use '*'")
    if session != ALL_SESSIONS and not SESSION_ID_RE.fullmatch(session):
        raise ValueError(f"session ids are 1-64 characters of [A-Za-z0-9_-], got {session!r}")
    if ttl <= 0:
        raise ValueError("ttl must be > 0 seconds")
    exp = int((time.time() if now is None else now) + ttl)
    payload = _b64(json.dumps({"sid": session, "role": role, "exp": exp}).encode())
    body = f"{_VERSION}.{payload}"
    return f"{body}.{_sign(secret, body)}"


def verify_token(secret: str, token: str, *, now: float | None = None) -> Claims:
    """The token's claims, or AuthError saying why it is refused."""
    # Tokens are base64url and dots: anything else is refused here, before it can reach the
    # ASCII encode in _sign or compare_digest on non-ASCII str (both raise, which was a 500).
    ascii_only = isinstance(token, str) and token.isascii()
    parts = token.split(".") if ascii_only else []
    if len(parts) != 3 or parts[0] != _VERSION or len(token) > 2048:
        raise AuthError("malformed token (expected v1.<payload>.<signature>, ASCII only)")
    body = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(_sign(secret, body), parts[2]):
        raise AuthError("bad token signature (wrong secret, or the token was altered)")
    try:
        data = json.loads(_unb64(parts[1]))
        claims = Claims(str(data["sid"]), str(data["role"]), int(data["exp"]))
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise AuthError(f"malformed token payload: {exc}") from exc
    if claims.role not in ROLES:
        raise AuthError(f"unknown role {claims.role!r}")
    # Tokens minted before issue_token checked the name (or by other code that shares the secret).
    scope_all = claims.session == ALL_SESSIONS and claims.role == "monitor"
    if not scope_all and not SESSION_ID_RE.fullmatch(claims.session):
        raise AuthError(
            f"the token names session {claims.session!r}, which is not a valid session id "
            "(1-64 characters of [A-Za-z0-9_-]): ask for a token for a valid one"
        )
    if claims.expires < (time.time() if now is None else now):
        raise AuthError("token expired: ask for a new one")
    return claims


def can_publish(claims: Claims, session: str) -> bool:
    return claims.role == "publisher" and claims.session == session


def can_view(claims: Claims, session: str) -> bool:
    if claims.role == "monitor":
        return claims.session in (session, ALL_SESSIONS)
    return claims.session == session  # its own viewer or publisher


def can_monitor(claims: Claims) -> bool:
    return claims.role == "monitor" and claims.session == ALL_SESSIONS


def auth_enabled(settings: StreamSettings) -> bool:
    """On when configured "on", or "auto" and the server binds beyond loopback."""
    mode = settings.auth.enabled
    if mode != "auto":
        return mode == "on"
    # A host name other than localhost is not loopback: assume it is reachable from outside.
    return not is_loopback_host(settings.server.host)


# -- HTTP access: the aiohttp middlewares (see the module docstring) ------------------------

AUTH_CLAIMS = web.RequestKey("merclip_auth_claims", Claims)
"""request[AUTH_CLAIMS]: the verified token of the request (only when auth is on)."""
TOKEN_COOKIE = "merclip_token"


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
            return error_response(
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
    return is_loopback_host(name)


def _loopback_host_middleware() -> Any:
    """The open local mode's guard against DNS rebinding (see the module docstring).

    The port is not checked: a rebinding page uses whatever port the service listens on, so the
    port proves nothing, and a forwarded port (`ssh -L 9000:localhost:8080`) must keep working."""

    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        host = request.headers.get("Host", "")
        if not _names_this_machine(host):
            return error_response(
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
                return error_response(
                    403,
                    "bad_origin",
                    f"a page from {origin[:80]!r} may not use this local server: only pages it "
                    "serves itself may post to it",
                )
        return await handler(request)

    return check


def _auth_error(status: int, code: str, detail: str) -> web.Response:
    response = error_response(status, code, detail)
    response.headers["WWW-Authenticate"] = 'Bearer realm="merclip"'
    return response

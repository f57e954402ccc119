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
non-loopback address. Minting a token (prints it):

    python -m stream.auth issue --session abc --role viewer [--ttl 600] [--config config.toml]
    python -m stream.auth verify <token>
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import re
import sys
import time
from dataclasses import dataclass
from typing import Literal

from merclip.errors import ConfigError, MerClipError
from stream.settings import StreamSettings

__all__ = [
    "ALL_SESSIONS",
    "ROLES",
    "SESSION_ID_RE",
    "AuthError",
    "Claims",
    "Role",
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
    host = settings.server.host
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost: assume it is reachable from outside
        return True


def _main(argv: list[str] | None = None) -> int:
    from workers.app.settings import load_settings

    parser = argparse.ArgumentParser(
        prog="python -m stream.auth", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--config", default=None, help="config.toml (secret and default TTL)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("issue", help="print a new token")
    p.add_argument("--session", required=True, help="session id ('*' with --role monitor)")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--ttl", type=float, default=None, help="seconds (default auth.token_ttl_s)")
    v = sub.add_parser("verify", help="check a token and print its claims")
    v.add_argument("token")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        secret = settings.auth.secret
        if args.cmd == "issue":
            ttl = args.ttl if args.ttl is not None else settings.auth.token_ttl_s
            print(issue_token(secret, args.session, args.role, ttl))
        else:
            c = verify_token(secret, args.token)
            print(json.dumps({"session": c.session, "role": c.role, "expires": c.expires}))
    except (MerClipError, ValueError) as exc:
        print(f"stream.auth: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main())

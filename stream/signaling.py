"""WebRTC signalling: `POST /offer` checked, answered, and joined to the session registry.

`POST /offer` takes JSON `{sdp, type: "offer", session_id?, options?}` and answers `{sdp, type:
"answer", session_id}`. No trickle ICE: the client sends its offer after gathering, and so do we.
Errors are JSON `{"error": code, "detail": message}` with a 4xx status; 503 + Retry-After when
every session slot is taken. The body is read under a size cap and a read timeout, its fields
checked (`_parse_offer`) and its SDP checked (`_check_sdp`) before anything is allocated for it.

A `session_id` that is already live is a reconnect: once the new offer has been answered, the new
peer takes the old one's slot and the old peer is closed, so a client that lost its connection
(aiortc has no ICE restart) can come back under the same id, and an offer that fails leaves the
live session alone. Offers for one session id are handled one at a time (a per-id lock), so
concurrent offers for it replace each other in turn and exactly one peer stays live, counted once.

The handler is `offer`; what it works with is `app[SIGNALING]` and `app[REGISTRY]`, set by
`create_app` (stream/app.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiortc.sdp import SessionDescription
from prometheus_client import Counter

from stream.auth import AUTH_CLAIMS, SESSION_ID_RE, can_publish
from stream.errors import (
    BadOfferError,
    ForbiddenError,
    OfferError,
    PayloadTooLargeError,
    RequestTimeoutError,
    ServerFullError,
    UnsupportedMediaTypeError,
    error_response,
)
from stream.ice import ice_configuration
from stream.peer import PeerSession
from stream.sessions import REGISTRY, SessionLocks, SessionRegistry
from stream.settings import ServerSettings
from stream.sink import MediaSink, SessionInfo

__all__ = ["MAX_SECTIONS_PER_KIND", "OFFERS", "SIGNALING", "Signaling", "SinkFactory", "offer"]

log = logging.getLogger(__name__)

SinkFactory = Callable[[SessionInfo], MediaSink]

SDP_LINE_RE = re.compile(r"^[a-z]=")
MAX_SECTIONS_PER_KIND = 2
"""Active audio (and video) sections an offer may have: the first of each kind is used, the rest
are read and discarded. Browsers send one of each; an offer with 100 audio sections started 100
reader tasks and wrote 99 log lines (review L8)."""

OFFERS = Counter(
    "merclip_stream_offers", "POST /offer results: accepted, or the error code", ["result"]
)


@dataclass(frozen=True)
class Signaling:
    """What POST /offer works with: app[SIGNALING] of an app made by create_app."""

    server: ServerSettings
    sink_factory: SinkFactory
    """Makes one MediaSink per session (ingest's)."""
    locks: SessionLocks = field(default_factory=SessionLocks)
    """One lock per session id: offers for one id are handled one at a time."""


SIGNALING = web.AppKey("merclip_signaling", Signaling)


async def offer(request: web.Request) -> web.Response:
    """POST /offer (see the module docstring). Refusals are JSON `{"error", "detail"}`."""
    try:
        return await _handle_offer(request, request.app[SIGNALING], request.app[REGISTRY])
    except OfferError as exc:
        headers = {}
        if isinstance(exc, ServerFullError):
            headers["Retry-After"] = str(exc.retry_after)
        OFFERS.labels(exc.code).inc()
        log.info("offer refused (%s): %s", exc.code, exc.detail)
        response = error_response(exc.status, exc.code, exc.detail, headers)
        if isinstance(exc, RequestTimeoutError):
            response.force_close()  # the rest of the body may never come
        return response


async def _handle_offer(
    request: web.Request, signaling: Signaling, registry: SessionRegistry
) -> web.Response:
    server = signaling.server
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
    async with signaling.locks.hold(session_id):
        return await _join(signaling, registry, session_id, sdp, options)


async def _join(
    signaling: Signaling,
    registry: SessionRegistry,
    session_id: str,
    sdp: str,
    options: dict[str, Any],
) -> web.Response:
    # A reconnect keeps the old peer live until the new offer has been answered: closing it
    # first let an offer that aiortc then rejected end the session it meant to replace
    # (review L10). The new peer then takes over the old one's slot.
    server = signaling.server
    old = registry.get(session_id)
    if old is None:
        registry.check_capacity()  # before the sink exists: a refused offer costs nothing
    info = SessionInfo(
        session_id=session_id,
        started_wall=time.time(),
        started_monotonic=time.monotonic(),
        options=options,
    )
    sink = signaling.sink_factory(info)
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

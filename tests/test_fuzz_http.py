"""Bad input at every HTTP endpoint (property-based, hypothesis): malformed JSON and SDP, huge
bodies, wrong content types and methods, unknown session ids and junk tokens. The server must
never answer 5xx (except 503 server_full, which is the overload contract) and must keep serving.

Two real apps run in a background thread: one with auth off (so bodies reach the offer parser)
and one with auth on (so tokens reach the checker). Both have real aiortc peers behind /offer,
real Redis behind /events/* (subscriber API on an embedded redis-server), and the dashboard
routes when stream/dashboard.py is present.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiortc import RTCPeerConnection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stream_helpers import RecordingSink, SineTrack, make_settings

from stream.app import create_app
from stream.auth import issue_token
from stream.ice import ice_configuration, use_loopback_candidates
from stream.sink import SessionInfo
from workers.app.settings import RedisSettings
from workers.bus import Bus
from workers.redis_server import EmbeddedRedis
from workers.subscriber import subscribe

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SECRET = "fuzz-secret-0123456789abcdef"
MAX_BODY = 4096
FUZZ_EXAMPLES = int(os.environ.get("MERCLIP_FUZZ_EXAMPLES", "1500"))
PATHS = [
    "/", "/offer", "/events/abc", "/events/", "/config", "/healthz", "/metrics", "/static/app.js",
    "/dashboard", "/dashboard/", "/dashboard/overview", "/dashboard/events",
    "/dashboard/static/dashboard.js", "/nope",
]  # fmt: skip
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
CONTENT_TYPES = [
    "application/json", "application/json; charset=latin-1", "text/plain", "application/sdp",
    "multipart/form-data; boundary=x", "application/x-www-form-urlencoded", "", "\x7f/\x00",
]  # fmt: skip


class _Servers:
    """The two apps on one event loop in a daemon thread; requests come from the test thread."""

    def __init__(self, redis_url: str, sdp: str) -> None:
        self.redis_url = redis_url
        self.sdp = sdp
        self.ports: dict[str, int] = {}
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runners: list[web.AppRunner] = []
        self.sinks: list[RecordingSink] = []
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        prefix = "fuzz"

        async def events(session_id: str) -> AsyncIterator[dict[str, Any]]:
            async for ev in subscribe(self.redis_url, session=session_id, replay=5, prefix=prefix):
                yield ev.to_json_dict()

        async def all_events() -> AsyncIterator[dict[str, Any]]:
            async for ev in subscribe(self.redis_url, replay=5, prefix=prefix):
                yield ev.to_json_dict()

        async def overview() -> dict[str, Any]:
            async with Bus.connect(self.redis_url, RedisSettings(prefix=prefix)) as bus:
                return {"sessions": len(await bus.sessions())}

        def sink(info: SessionInfo) -> RecordingSink:
            s = RecordingSink(info)
            self.sinks.append(s)
            return s

        base = make_settings(max_body_bytes=MAX_BODY, inactivity_timeout_seconds=2.0)
        for name, auth in (("open", "off"), ("auth", "on")):
            app = create_app(
                base.replace("auth", enabled=auth, secret=SECRET), sink, events, loopback=True
            )
            try:
                from stream.dashboard import add_dashboard

                add_dashboard(app, all_events, overview)
            except ImportError:
                pass
            runner = web.AppRunner(app, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.ports[name] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._runners.append(runner)

    def start(self) -> None:
        self.thread.start()
        assert self._ready.wait(30)

    def stop(self) -> None:
        async def cleanup() -> None:
            for r in self._runners:
                await r.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def request(
    port: int, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        # SSE answers never end: the status line and a first chunk are enough.
        if resp.getheader("Content-Type", "").startswith("text/event-stream"):
            return resp.status, b""  # an event stream never ends: the status is the answer
        data = resp.read()
        return resp.status, data
    finally:
        conn.close()


async def _real_offer_sdp() -> str:
    use_loopback_candidates()
    pc = RTCPeerConnection(ice_configuration(()))
    pc.addTrack(SineTrack(seconds=0.1))
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


@pytest.fixture(scope="module")
def servers() -> Iterator[_Servers]:
    with EmbeddedRedis() as redis_url:
        sdp = asyncio.run(_real_offer_sdp())
        FUZZ_SDP[0] = sdp
        s = _Servers(redis_url, sdp)
        s.start()
        try:
            yield s
        finally:
            s.stop()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
session_ids = st.one_of(
    st.sampled_from(["abc", "unknown-session", "", "*", "a" * 65, "../etc", "%00", "{x}"]),
    st.text(max_size=70),
)


@st.composite
def mangled_sdp(draw: st.DrawFn) -> str:
    lines = FUZZ_SDP[0].split("\r\n")
    ops = draw(st.lists(st.sampled_from(["drop", "dup", "junk", "truncate", "swap"]), max_size=4))
    for op in ops:
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        if op == "drop":
            lines = lines[:i] + lines[i + 1 :]
        elif op == "dup":
            lines = lines[: i + 1] + lines[i:]
        elif op == "junk":
            lines[i] = draw(st.text(max_size=40))
        elif op == "truncate":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        else:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
    return "\r\n".join(lines)


FUZZ_SDP: list[str] = [""]  # filled by the fixture before hypothesis draws


@st.composite
def bodies(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.sampled_from(["none", "bytes", "json", "offer", "huge", "deep"]))
    if kind == "none":
        return None
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "huge":
        return b"{" + b'"a":' * draw(st.integers(MAX_BODY // 4, 4 * MAX_BODY)) + b"}"
    if kind == "deep":
        depth = draw(st.integers(100, 5000))
        return b"[" * depth + b"]" * depth
    offer: dict[str, Any] = {
        "sdp": draw(mangled_sdp()),
        "type": draw(st.sampled_from(["offer", "answer", 1])),
    }
    if draw(st.booleans()):
        offer["session_id"] = draw(session_ids)
    if draw(st.booleans()):
        offer["options"] = draw(json_values)
    if draw(st.booleans()):
        offer[draw(st.text(max_size=6))] = draw(json_values)
    return json.dumps(offer).encode()


@st.composite
def tokens(draw: st.DrawFn) -> str | None:
    kind = draw(st.sampled_from(["none", "junk", "viewer", "publisher", "monitor", "expired"]))
    if kind == "none":
        return None
    if kind == "junk":
        # Printable ASCII, plus non-ASCII (security review M1: a 500 from the signature check).
        alphabet = st.characters(min_codepoint=33, max_codepoint=126) | st.sampled_from("é€ü✓")
        junk = st.text(alphabet=alphabet, max_size=40)
        if draw(st.booleans()):  # shaped like a token, so that it reaches the signature check
            return f"v1.{draw(junk)}.{draw(junk)}"
        return draw(junk)
    if kind == "expired":
        return issue_token(SECRET, "abc", "viewer", 1, now=0.0)
    session = "*" if kind == "monitor" else draw(st.sampled_from(["abc", "other"]))
    return issue_token(SECRET, session, kind, 60)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    server=st.sampled_from(["open", "auth"]),
    method=st.sampled_from(METHODS),
    path=st.one_of(st.sampled_from(PATHS), session_ids.map(lambda s: "/events/" + s)),
    body=bodies(),
    ctype=st.sampled_from(CONTENT_TYPES),
    token=tokens(),
    token_in_query=st.booleans(),
)
def test_no_request_gets_a_5xx_or_kills_the_server(
    servers: _Servers,
    server: str,
    method: str,
    path: str,
    body: bytes | None,
    ctype: str,
    token: str | None,
    token_in_query: bool,
) -> None:

    path = quote(path, safe="/?=&")
    headers = {"Content-Type": ctype} if ctype else {}
    if token is not None:
        if token_in_query:
            path += ("&" if "?" in path else "?") + "token=" + quote(token, safe="")
        else:  # UTF-8 bytes as they are (http.client would send latin-1), like curl -H
            headers["Authorization"] = f"Bearer {token}".encode().decode("latin-1")
    try:
        status, data = request(servers.ports[server], method, path, body, headers)
    except (http.client.HTTPException, ConnectionResetError, BrokenPipeError):
        # The server may cut off a body past the size limit before reading it all.
        status, data = 413, b""
    if status == 503:
        assert json.loads(data)["error"] in ("server_full",), data[:300]
    else:
        assert status < 500, (status, method, path, data[:300])
    for port in servers.ports.values():
        assert request(port, "GET", "/healthz", None, {})[0] == 200

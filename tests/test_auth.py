"""Access control: signed tokens (stream/auth.py) and their enforcement by the real HTTP app.

The events behind GET /events/{session} come from a real Redis (events written through the bus,
read back by the subscriber API), so "one session's viewer cannot read another session's events"
is checked on the same path the service uses.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from bus_helpers import make_event, prefix_on
from stream_helpers import SineTrack, make_settings, running_server

from merclip.errors import ConfigError
from stream.auth import AuthError, auth_enabled, issue_token, verify_token
from stream.clients.peer_client import connect_peer
from stream.errors import OfferRejectedError
from workers.app.settings import RedisSettings, Settings
from workers.bus import Bus
from workers.redis_server import EmbeddedRedis
from workers.subscriber import subscribe

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[1]
SECRET = "test-secret-0123456789abcdef"


def auth_settings(**server: Any) -> Settings:
    return make_settings(**server).replace("auth", enabled="on", secret=SECRET)


# -- tokens ------------------------------------------------------------------------------------


def test_token_round_trip_and_refusals() -> None:
    token = issue_token(SECRET, "abc", "viewer", 60, now=1000.0)
    claims = verify_token(SECRET, token, now=1030.0)
    assert (claims.session, claims.role, claims.expires) == ("abc", "viewer", 1060)
    with pytest.raises(AuthError, match="expired"):
        verify_token(SECRET, token, now=1061.0)
    with pytest.raises(AuthError, match="signature"):
        verify_token("another-secret-0123456789", token, now=1030.0)
    # Changing the payload (here: the role) without the secret breaks the signature.
    version, _payload, sig = token.split(".")
    forged = issue_token("another-secret-0123456789", "abc", "monitor", 60, now=1000.0)
    with pytest.raises(AuthError, match="signature"):
        verify_token(SECRET, f"{version}.{forged.split('.')[1]}.{sig}", now=1030.0)
    for junk in ("", "abc", "v1.x.y", "v2." + token[3:], "v1..", token + "x"):
        with pytest.raises(AuthError):
            verify_token(SECRET, junk, now=1030.0)


def test_token_arguments_are_checked() -> None:
    with pytest.raises(ConfigError, match="16 bytes"):
        issue_token("short", "abc", "viewer", 60)
    with pytest.raises(ValueError, match="role"):
        issue_token(SECRET, "abc", "admin", 60)
    with pytest.raises(ValueError, match="monitor"):
        issue_token(SECRET, "*", "viewer", 60)
    assert verify_token(SECRET, issue_token(SECRET, "*", "monitor", 60)).session == "*"


@pytest.mark.parametrize(
    "mode, host, expected",
    [
        ("auto", "127.0.0.1", False),
        ("auto", "localhost", False),
        ("auto", "::1", False),
        ("auto", "0.0.0.0", True),
        ("auto", "192.168.1.5", True),
        ("auto", "my-host.example", True),
        ("on", "127.0.0.1", True),
        ("off", "0.0.0.0", False),
    ],
)
def test_auth_is_on_by_default_beyond_loopback(mode: str, host: str, expected: bool) -> None:
    s = Settings().replace("server", host=host).replace("auth", enabled=mode)
    assert auth_enabled(s) is expected


async def test_auth_on_without_a_secret_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match="MERCLIP_AUTH_SECRET"):
        async with running_server(make_settings().replace("auth", enabled="on")):
            pass


def test_tokens_can_be_minted_from_the_command_line(tmp_path: Path) -> None:
    env = {**os.environ, "MERCLIP_AUTH_SECRET": SECRET, "PYTHONPATH": str(ROOT)}
    merclip = [sys.executable, "-m", "workers.app"]
    cmd = [*merclip, "token", "issue", "--session", "s9", "--role", "publisher"]
    out = subprocess.run(
        cmd + ["--ttl", "120"], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    claims = verify_token(SECRET, out.stdout.strip())
    assert claims.session == "s9" and claims.role == "publisher"
    check = subprocess.run(
        [*merclip, "token", "verify", out.stdout.strip()],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert check.returncode == 0 and json.loads(check.stdout)["session"] == "s9"
    env.pop("MERCLIP_AUTH_SECRET")
    bad = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and "MERCLIP_AUTH_SECRET" in bad.stderr


# -- the HTTP app --------------------------------------------------------------------------


async def test_offers_need_a_publisher_token_for_their_session() -> None:
    pub_a = issue_token(SECRET, "sess-a", "publisher", 60)
    async with running_server(auth_settings()) as (url, app, sinks):
        for token, session, status in [
            (None, "sess-a", 401),
            ("v1.garbage.sig", "sess-a", 401),
            (issue_token(SECRET, "sess-a", "viewer", 60), "sess-a", 403),
            (issue_token(SECRET, "*", "monitor", 60), "sess-a", 403),
            (pub_a, "sess-b", 403),
            (issue_token(SECRET, "sess-a", "publisher", 60, now=0.0), "sess-a", 401),  # expired
        ]:
            with pytest.raises(OfferRejectedError) as info:
                await connect_peer(url, [SineTrack(seconds=1)], session_id=session, token=token)
            assert info.value.status == status, (token, session, info.value.body)
        assert sinks == [], "a refused offer must not create a sink"
        pc, sid = await connect_peer(url, [SineTrack(seconds=1)], token=pub_a)
        assert sid == "sess-a", "an offer without session_id joins the token's session"
        assert [s.info.session_id for s in sinks] == ["sess-a"]
        await pc.close()


@pytest.fixture(scope="module")
def redis_url():
    with EmbeddedRedis() as url:
        yield url


async def test_a_viewer_reads_its_session_only(redis_url: str) -> None:
    async with prefix_on(redis_url) as prefix:
        async with Bus.connect(redis_url, RedisSettings(prefix=prefix)) as bus:
            await bus.write_event(make_event("room-a", 0))
            await bus.write_event(make_event("room-b", 0))

        async def events(session_id: str) -> AsyncIterator[dict[str, Any]]:
            async for ev in subscribe(redis_url, session=session_id, replay=10, prefix=prefix):
                yield ev.to_json_dict()

        viewer_a = issue_token(SECRET, "room-a", "viewer", 60)
        monitor = issue_token(SECRET, "*", "monitor", 60)
        async with running_server(auth_settings(), events) as (url, _, _):
            async with aiohttp.ClientSession() as http:

                async def first_event(path: str, **kw: Any) -> tuple[int, dict | None]:
                    async with http.get(f"{url}{path}", **kw) as r:
                        if r.status != 200:
                            return r.status, await r.json()
                        async for line in r.content:
                            if line.startswith(b"data: "):
                                return 200, json.loads(line[6:])
                    return r.status, None

                status, ev = await first_event("/events/room-a", params={"token": viewer_a})
                assert status == 200 and ev is not None and ev["session_id"] == "room-a"
                bearer = {"Authorization": f"Bearer {viewer_a}"}
                status, ev = await first_event("/events/room-a", headers=bearer)
                assert status == 200 and ev is not None and ev["session_id"] == "room-a"
                status, body = await first_event("/events/room-b", params={"token": viewer_a})
                assert status == 403 and body is not None and body["error"] == "forbidden"
                status, body = await first_event("/events/room-b")
                assert status == 401 and body is not None and body["error"] == "unauthorized"
                status, ev = await first_event("/events/room-b", params={"token": monitor})
                assert status == 200 and ev is not None and ev["session_id"] == "room-b"
                # The page's publisher may watch its own session.
                pub_b = issue_token(SECRET, "room-b", "publisher", 60)
                status, ev = await first_event("/events/room-b", params={"token": pub_b})
                assert status == 200 and ev is not None and ev["session_id"] == "room-b"


async def test_dashboard_paths_need_a_monitor_token_and_open_paths_stay_open() -> None:
    async with running_server(auth_settings()) as (url, app, _):
        async with aiohttp.ClientSession() as http:
            for path in ("/dashboard", "/dashboard/", "/dashboard/api/sessions"):
                async with http.get(f"{url}{path}") as r:
                    assert r.status == 401, path
                viewer = issue_token(SECRET, "x", "viewer", 60)
                async with http.get(f"{url}{path}", params={"token": viewer}) as r:
                    assert r.status == 403, path
                one_session_monitor = issue_token(SECRET, "x", "monitor", 60)
                async with http.get(f"{url}{path}", params={"token": one_session_monitor}) as r:
                    assert r.status == 403, path
                monitor = issue_token(SECRET, "*", "monitor", 60)
                async with http.get(f"{url}{path}", params={"token": monitor}) as r:
                    assert r.status not in (401, 403), path  # 404 without a dashboard module
            for path in ("/", "/healthz", "/config"):
                async with http.get(f"{url}{path}") as r:
                    assert r.status == 200, path


# -- security review M1, M8 --------------------------------------------------------------------


def test_non_ascii_tokens_are_refused_not_crashed_on() -> None:
    """M1: the ASCII encode in the signature check (payload) and compare_digest on non-ASCII
    str (signature) raised UnicodeEncodeError / TypeError instead of AuthError."""
    good = issue_token(SECRET, "abc", "viewer", 60)
    _, payload, sig = good.split(".")
    # The last: how aiohttp hands over the UTF-8 bytes of a header it cannot decode.
    for token in (f"v1.é.{sig}", f"v1.{payload}.é", "v1.€.x", f"{good}\udce9"):
        with pytest.raises(AuthError, match="malformed"):
            verify_token(SECRET, token)


async def _raw_request(url: str, request: bytes) -> tuple[int, dict[str, Any]]:
    """Send exact bytes (clients refuse to put UTF-8 in a header), like `curl -H $'...\\xc3'`."""
    import asyncio
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def test_non_ascii_tokens_get_401_on_every_guarded_route(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """M1, end to end: these four requests were each a 500 with a logged traceback."""
    async with running_server(auth_settings()) as (url, _, _):
        async with aiohttp.ClientSession() as http:
            for path in (
                "/events/abc?token=v1.%C3%A9.abc",
                "/events/abc?token=v1.abc.%C3%A9",
                "/dashboard?token=v1.%E2%82%AC.x",
            ):
                async with http.get(f"{url}{path}") as r:
                    assert r.status == 401, (path, await r.text())
                    assert (await r.json())["error"] == "unauthorized"
        host = url.split("//", 1)[1]
        status, body = await _raw_request(
            url,
            b"POST /offer HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
            b"Authorization: Bearer v1.abc.\xc3\xa9\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\nConnection: close\r\n\r\n{}",
        )
        assert status == 401 and body["error"] == "unauthorized", body
        assert "ASCII" in body["detail"]
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


def test_a_token_names_a_valid_session_id() -> None:
    """M8: tokens for `alice@example.com` or `x{y}` joined sessions whose events could never be
    read (/events/... is 400 for such names) and whose windows were skipped in silence."""
    for bad in ("alice@example.com", "x{y}", "a b", "a" * 65, "abc\n", "é"):
        with pytest.raises(ValueError, match="session ids"):
            issue_token(SECRET, bad, "publisher", 60)
    assert verify_token(SECRET, issue_token(SECRET, "alice_example-com", "viewer", 60))
    # A token minted without the check (older code, or other code that shares the secret).
    for bad in ("alice@example.com", "x{y}"):
        forged = _sign_without_checks(bad, "publisher")
        with pytest.raises(AuthError, match="not a valid session id"):
            verify_token(SECRET, forged)
    # "*" stays a monitor's scope only.
    with pytest.raises(AuthError, match="not a valid session id"):
        verify_token(SECRET, _sign_without_checks("*", "publisher"))


def _sign_without_checks(session: str, role: str) -> str:
    from stream.auth import _b64, _sign

    payload = _b64(json.dumps({"sid": session, "role": role, "exp": 2**40}).encode())
    return f"v1.{payload}.{_sign(SECRET, 'v1.' + payload)}"


async def test_an_offer_with_a_token_for_an_invalid_session_is_refused() -> None:
    """M8, end to end: the session named by the token used to be joined without a check."""
    async with running_server(auth_settings()) as (url, _, sinks):
        for name in ("alice@example.com", "x{y}"):
            with pytest.raises(OfferRejectedError) as info:
                await connect_peer(
                    url, [SineTrack(seconds=1)], token=_sign_without_checks(name, "publisher")
                )
            assert info.value.status == 401, info.value.body
            assert "not a valid session id" in info.value.body["detail"]
        assert sinks == []

"""Access control: signed tokens (stream/auth.py) and their enforcement by the real HTTP app.

The events behind GET /events/{session} come from a real Redis (events written through the bus,
read back by the subscriber API), so "one session's viewer cannot read another session's events"
is checked on the same path the service uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from bus_helpers import prefix_on
from stream_support import SineTrack, make_settings, running_server
from test_bus import make_event

from merclip.errors import ConfigError
from merclip.settings import RedisSettings, Settings
from stream.auth import AuthError, auth_enabled, issue_token, verify_token
from stream.file_client import OfferRejectedError, connect_peer
from workers.bus import Bus
from workers.redis_server import EmbeddedRedis
from workers.subscriber import subscribe

pytestmark = pytest.mark.timeout(60)

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
    cmd = [sys.executable, "-m", "stream.auth", "issue", "--session", "s9", "--role", "publisher"]
    out = subprocess.run(
        cmd + ["--ttl", "120"], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    claims = verify_token(SECRET, out.stdout.strip())
    assert claims.session == "s9" and claims.role == "publisher"
    check = subprocess.run(
        [sys.executable, "-m", "stream.auth", "verify", out.stdout.strip()],
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

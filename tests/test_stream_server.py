"""The WebRTC server with real aiortc peers on loopback: media delivery, bad offers, limits,
cleanup. Each test runs its own server on a free port."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from aiortc import RTCPeerConnection, RTCSessionDescription
from stream_helpers import (
    PatternVideoTrack,
    RecordingSink,
    SilentPausedTrack,
    SineTrack,
    make_settings,
    running_server,
    wait_for,
)

from stream.app import REGISTRY, create_app
from stream.clients.peer_client import connect_peer
from stream.errors import OfferRejectedError
from stream.ice import ice_configuration, use_loopback_candidates

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

AMPLITUDE = 0.25
SECONDS = 3.0


async def test_audio_and_video_reach_the_sink() -> None:
    async with running_server(make_settings()) as (url, app, sinks):
        audio = SineTrack(AMPLITUDE, 440.0, SECONDS)
        video = PatternVideoTrack(320, 240, fps=15, seconds=SECONDS)
        pc, sid = await connect_peer(url, [audio, video], session_id="media-1")
        assert sid == "media-1"
        registry = app[REGISTRY]
        assert registry.count == 1
        assert await wait_for(lambda: audio.readyState == "ended", SECONDS + 5)
        await asyncio.sleep(0.5)  # let the jitter buffer drain
        await pc.close()
        assert await wait_for(lambda: registry.count == 0, 5), "server kept the closed peer"

    (sink,) = sinks
    assert sink.closed == 1
    assert sink.info.session_id == "media-1"

    # Audio: 16 kHz mono float32, the sent level, about as long as what was sent.
    chunks = [a for a, _ in sink.audio]
    assert all(a.dtype == np.float32 and a.ndim == 1 for a in chunks)
    samples = sink.samples
    sent_16k = audio.sent / 3
    assert 0.9 * sent_16k <= samples.size <= 1.05 * sent_16k, (samples.size, sent_16k)
    steady = samples[8000:-8000]  # skip Opus start-up and the tail
    rms = float(np.sqrt(np.mean(steady**2)))
    assert rms == pytest.approx(AMPLITUDE / np.sqrt(2), rel=0.1), rms
    spectrum = np.abs(np.fft.rfft(steady[:16000]))
    assert np.argmax(spectrum) * 16000 / 16000 == pytest.approx(440, abs=2)

    audio_times = [t for _, t in sink.audio]
    assert audio_times == sorted(audio_times)
    assert audio_times[-1] == pytest.approx(samples.size / 16000, abs=0.6)

    # Video: only the frames the sink asked for (2 per second), as RGB arrays.
    assert sink.frames_offered >= 0.8 * video.sent
    assert 4 <= len(sink.frames) <= 8, len(sink.frames)
    for rgb, _ in sink.frames:
        assert rgb.shape == (240, 320, 3) and rgb.dtype == np.uint8
    # The red bar survived the VP8 trip.
    rgb = sink.frames[-1][0]
    assert rgb[..., 0].max() > 180 and rgb[..., 1].min() < 120
    frame_times = [t for _, t in sink.frames]
    assert frame_times == sorted(frame_times)
    assert all(b - a >= 0.5 for a, b in zip(frame_times, frame_times[1:], strict=False))


async def test_audio_only_and_video_only_sessions() -> None:
    async with running_server(make_settings()) as (url, app, sinks):
        a_pc, _ = await connect_peer(url, [SineTrack(seconds=1.5)])
        v_pc, _ = await connect_peer(url, [PatternVideoTrack(seconds=1.5)])
        assert await wait_for(
            lambda: len(sinks) == 2 and all(s.audio or s.frames for s in sinks), 5
        )
        assert app[REGISTRY].count == 2
        assert await wait_for(
            lambda: a_pc.connectionState == v_pc.connectionState == "connected", 5
        )
        await a_pc.close()
        await v_pc.close()
        assert await wait_for(lambda: app[REGISTRY].count == 0, 5)
    audio_sink, video_sink = sinks
    assert audio_sink.audio and not audio_sink.frames
    assert video_sink.frames and not video_sink.audio


async def test_large_video_frames_are_scaled_down_before_the_sink_keeps_them() -> None:
    """Review M10: frames reached the sink (and the windower, and the frame jobs) at the size
    sent: one 4K session held ~250 MB of RGB. The long side is capped at MAX_FRAME_SIDE."""
    from stream.peer import MAX_FRAME_SIDE

    async with running_server(make_settings()) as (url, app, sinks):
        video = PatternVideoTrack(1600, 1200, fps=4, seconds=2.5)
        pc, _ = await connect_peer(url, [video])
        assert await wait_for(lambda: bool(sinks) and len(sinks[0].frames) >= 2, 20)
        await pc.close()
        assert await wait_for(lambda: app[REGISTRY].count == 0, 5)
    (sink,) = sinks
    assert MAX_FRAME_SIDE == 1280
    for rgb, _ in sink.frames:
        assert rgb.shape == (960, 1280, 3) and rgb.dtype == np.uint8
    # Still the picture: the red bar survived the scaling.
    assert sink.frames[-1][0][..., 0].max() > 180


def _metric(text: str, name: str) -> float:
    """A sample's value from Prometheus text format (the registry is process-wide)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def _without(sdp: str, prefix: str) -> str:
    return "\r\n".join(line for line in sdp.split("\r\n") if not line.startswith(prefix))


def _offer_sdp_without_media() -> str:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
        "a=mid:0\r\na=sctp-port:5000\r\n"
    )


async def test_bad_offers_get_4xx_json_and_the_server_keeps_serving() -> None:
    settings = make_settings(max_body_bytes=4096)
    async with running_server(settings) as (url, app, sinks):
        async with aiohttp.ClientSession() as http:

            async def post(data: bytes | str, ctype: str = "application/json") -> tuple[int, dict]:
                async with http.post(
                    f"{url}/offer", data=data, headers={"Content-Type": ctype}
                ) as r:
                    assert r.content_type == "application/json"
                    return r.status, await r.json()

            good_sdp = "v=0\r\n"  # replaced below by a real offer's SDP
            from aiortc import RTCPeerConnection

            pc = RTCPeerConnection()
            pc.addTransceiver("audio", direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            good_sdp = pc.localDescription.sdp
            await pc.close()

            cases = [
                ("{not json", "application/json", 400, "bad_json"),
                ("[1, 2]", "application/json", 400, "bad_offer"),
                (json.dumps({"type": "offer"}), "application/json", 400, "missing_field"),
                (json.dumps({"sdp": good_sdp}), "application/json", 400, "missing_field"),
                (json.dumps({"sdp": 5, "type": "offer"}), "application/json", 400, "bad_field"),
                (
                    json.dumps({"sdp": good_sdp, "type": "answer"}),
                    "application/json",
                    400,
                    "not_an_offer",
                ),
                (
                    json.dumps({"sdp": good_sdp, "type": "offer", "session_id": "a b/c"}),
                    "application/json",
                    400,
                    "bad_field",
                ),
                (
                    json.dumps({"sdp": good_sdp, "type": "offer", "extra": 1}),
                    "application/json",
                    400,
                    "unknown_field",
                ),
                (
                    json.dumps({"sdp": "hello world", "type": "offer"}),
                    "application/json",
                    400,
                    "bad_sdp",
                ),
                (
                    json.dumps({"sdp": _offer_sdp_without_media(), "type": "offer"}),
                    "application/json",
                    400,
                    "no_media",
                ),
                (
                    json.dumps({"sdp": _without(good_sdp, "a=fingerprint"), "type": "offer"}),
                    "application/json",
                    400,
                    "bad_sdp",
                ),
                (
                    json.dumps({"sdp": _without(good_sdp, "a=ice-ufrag"), "type": "offer"}),
                    "application/json",
                    400,
                    "bad_sdp",
                ),
                (json.dumps({"sdp": good_sdp, "type": "offer"}), "text/plain", 415, None),
                (
                    json.dumps({"sdp": good_sdp + "a=x:" + "y" * 5000 + "\r\n", "type": "offer"}),
                    "application/json",
                    413,
                    "payload_too_large",
                ),
            ]
            for body, ctype, status, code in cases:
                got_status, got = await post(body, ctype)
                assert got_status == status, (body[:60], got)
                assert set(got) == {"error", "detail"} and got["detail"], got
                if code is not None:
                    assert got["error"] == code, (body[:60], got)

            async with http.get(f"{url}/healthz") as r:
                assert (await r.json())["sessions"] == 0
        assert sinks == [], "a refused offer must not create a sink"

        pc, _ = await connect_peer(url, [SineTrack(seconds=1.0)])
        assert await wait_for(lambda: bool(sinks and sinks[0].audio), 5)
        await pc.close()


async def test_max_sessions_answers_503_with_retry_after() -> None:
    async with running_server(make_settings(max_sessions=1)) as (url, app, sinks):
        first, _ = await connect_peer(url, [SineTrack(seconds=5)])
        with pytest.raises(OfferRejectedError) as info:
            await connect_peer(url, [SineTrack(seconds=5)])
        assert info.value.status == 503
        assert info.value.body["error"] == "server_full"
        assert info.value.retry_after is not None and info.value.retry_after > 0
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/metrics") as r:
                metrics = await r.text()
            assert _metric(metrics, 'merclip_stream_offers_total{result="server_full"}') >= 1
            assert _metric(metrics, "merclip_stream_sessions") >= 1
            async with http.post(f"{url}/offer", json={"sdp": "v=0\r\n", "type": "answer"}) as r:
                # The body's fields are checked first; a full server still says what is wrong
                # with them (the SDP itself is not parsed when the server is full: L2).
                assert r.status == 400
        assert len(sinks) == 1
        # Close once connected: a peer closed mid-handshake is only noticed by the inactivity
        # timeout (there is no DTLS session yet to say goodbye on).
        assert await wait_for(lambda: first.connectionState == "connected", 5)
        await first.close()
        assert await wait_for(lambda: app[REGISTRY].count == 0, 5)
        again, _ = await connect_peer(url, [SineTrack(seconds=1)])
        assert app[REGISTRY].count == 1
        await again.close()


async def test_a_full_server_refuses_a_new_offer_before_parsing_its_sdp() -> None:
    """Security review L2: a refused offer still had its whole SDP parsed first (18 ms of loop
    CPU per 250 KB offer: ~50 refused offers/s saturated the loop). Seen from outside: an SDP
    that is not even valid gets the 503 of a full server, not the 400 of a parse."""
    junk = "v=0\r\n" + "a=x-filler:" + "y" * 200_000 + "\r\nnot an sdp line\r\n"
    async with running_server(make_settings(max_sessions=1)) as (url, app, sinks):
        holder, _ = await connect_peer(url, [SineTrack(seconds=20)], session_id="holder")
        assert await wait_for(lambda: holder.connectionState == "connected", 5)
        async with aiohttp.ClientSession() as http:
            body = {"sdp": junk, "type": "offer", "session_id": "newcomer"}
            async with http.post(f"{url}/offer", json=body) as r:
                assert r.status == 503 and (await r.json())["error"] == "server_full"
                assert r.headers["Retry-After"]
            # A reconnect needs no new slot: its SDP is checked as always (and refused).
            body = {"sdp": junk, "type": "offer", "session_id": "holder"}
            async with http.post(f"{url}/offer", json=body) as r:
                assert r.status == 400 and (await r.json())["error"] == "bad_sdp"
        assert app[REGISTRY].count == 1 and len(sinks) == 1 and sinks[0].closed == 0
        await holder.close()
        assert await wait_for(lambda: app[REGISTRY].count == 0, 5)
        async with aiohttp.ClientSession() as http:  # with a free slot, the SDP is parsed
            body = {"sdp": junk, "type": "offer", "session_id": "newcomer"}
            async with http.post(f"{url}/offer", json=body) as r:
                assert r.status == 400 and (await r.json())["error"] == "bad_sdp"


async def test_reconnect_with_same_session_id_replaces_the_old_peer() -> None:
    async with running_server(make_settings(max_sessions=1)) as (url, app, sinks):
        first, _ = await connect_peer(url, [SineTrack(seconds=5)], session_id="same")
        second, sid = await connect_peer(url, [SineTrack(seconds=5)], session_id="same")
        assert sid == "same"
        assert app[REGISTRY].count == 1
        assert sinks[0].closed == 1 and sinks[1].closed == 0
        await first.close()
        await second.close()


async def test_a_failing_reconnect_offer_leaves_the_live_peer_streaming() -> None:
    """Security review L10: the old peer was closed before the new offer was answered, so an
    offer that aiortc rejected ended the live session it meant to replace."""
    async with running_server(make_settings(max_sessions=1)) as (url, app, sinks):
        live, _ = await connect_peer(url, [SineTrack(seconds=20)], session_id="keep")
        assert await wait_for(lambda: live.connectionState == "connected", 5)
        session = app[REGISTRY].get("keep")
        pc, sdp = await _offer_sdp(SineTrack(seconds=5))
        await pc.close()
        # Passes the server's own checks; aiortc's setRemoteDescription refuses it.
        bad = _without(sdp, "a=rtcp-mux")
        async with aiohttp.ClientSession() as http:
            body = {"sdp": bad, "type": "offer", "session_id": "keep"}
            async with http.post(f"{url}/offer", json=body) as r:
                assert r.status == 400 and (await r.json())["error"] == "bad_sdp"
        assert app[REGISTRY].get("keep") is session and app[REGISTRY].count == 1
        assert sinks[0].closed == 0 and session.close_reason is None
        heard = len(sinks[0].audio)
        assert await wait_for(lambda: len(sinks[0].audio) > heard + 10, 3)  # still streaming
        # A good reconnect still replaces it, in the same slot (max_sessions=1).
        again, _ = await connect_peer(url, [SineTrack(seconds=5)], session_id="keep")
        assert app[REGISTRY].count == 1 and app[REGISTRY].get("keep") is not session
        assert session.close_reason == "replaced" and sinks[0].closed == 1
        assert sinks[-1].closed == 0
        await live.close()
        await again.close()


async def _offer_sdp(track: SineTrack) -> tuple[RTCPeerConnection, str]:
    use_loopback_candidates()
    pc = RTCPeerConnection(ice_configuration(()))
    pc.addTrack(track)
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def test_extra_media_sections_are_bounded_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Security review L8: an offer with N audio sections started N reader tasks and wrote N-1
    INFO lines ("extra audio track discarded")."""
    use_loopback_candidates()
    async with running_server(make_settings()) as (url, app, sinks):
        async with aiohttp.ClientSession() as http:
            many = RTCPeerConnection(ice_configuration(()))
            for _ in range(5):
                many.addTrack(SineTrack(seconds=1))
            await many.setLocalDescription(await many.createOffer())
            body = {"sdp": many.localDescription.sdp, "type": "offer"}
            async with http.post(f"{url}/offer", json=body) as r:
                assert r.status == 400 and (await r.json())["error"] == "too_many_tracks"
            await many.close()
            assert sinks == [] and app[REGISTRY].count == 0
        # Two of each kind are accepted: the first is used, the second read and discarded,
        # and one line says so for the session.
        with caplog.at_level(logging.INFO, logger="stream.peer"):
            tracks = [SineTrack(seconds=3), SineTrack(seconds=3)]
            tracks += [PatternVideoTrack(seconds=3), PatternVideoTrack(seconds=3)]
            pc, _ = await connect_peer(url, tracks)
            (session,) = app[REGISTRY].sessions()
            assert await wait_for(lambda: session.stats.extra_tracks == 2, 5)
            assert await wait_for(lambda: bool(sinks[0].audio and sinks[0].frames), 5)
            await pc.close()
        extra = [r for r in caplog.records if "extra" in r.getMessage()]
        assert len(extra) == 1, [r.getMessage() for r in extra]


async def test_concurrent_offers_for_one_live_session_leave_exactly_one_peer() -> None:
    """Security review H2: N offers for a live id at once each used to close the same old peer,
    then each registered itself; all N streamed while the registry counted one, beyond
    max_sessions, and the sessions gauge stayed wrong for good."""
    n = 6
    async with running_server(make_settings(max_sessions=2)) as (url, app, sinks):
        registry = app[REGISTRY]
        async with aiohttp.ClientSession() as http:

            async def gauge() -> float:
                async with http.get(f"{url}/metrics") as r:
                    return _metric(await r.text(), "merclip_stream_sessions")

            before = await gauge()
            first, _ = await connect_peer(url, [SineTrack(seconds=20)], session_id="race1")
            assert await wait_for(lambda: first.connectionState == "connected", 5)
            assert await gauge() == before + 1

            clients = [await _offer_sdp(SineTrack(seconds=20)) for _ in range(n)]

            async def offer(sdp: str) -> tuple[int, dict]:
                body = {"sdp": sdp, "type": "offer", "session_id": "race1"}
                async with http.post(f"{url}/offer", json=body) as r:
                    return r.status, await r.json()

            replies = await asyncio.gather(*(offer(sdp) for _, sdp in clients))
            # Each offer replaced the one before it, in turn: all answered, one peer left.
            assert [status for status, _ in replies] == [200] * n, replies
            for (pc, _), (_, reply) in zip(clients, replies, strict=True):
                await pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
            await asyncio.sleep(1.0)

            assert len(sinks) == n + 1
            live = [s for s in sinks if not s.closed]
            assert len(live) == 1, [s.closed for s in sinks]
            assert registry.count == 1
            session = registry.get("race1")
            assert session is not None and session.sink is live[0] and not session.closed
            assert await gauge() == before + 1
            async with http.get(f"{url}/healthz") as r:
                assert (await r.json())["sessions"] == 1
            # Only the registered peer still gets media: the replaced ones were closed.
            delivered = len(live[0].audio)
            await asyncio.sleep(0.5)
            assert len(live[0].audio) > delivered

            for pc, _ in clients:
                await pc.close()
            await first.close()
            assert await wait_for(lambda: registry.count == 0, 10)
            assert await gauge() == before
            assert all(s.closed == 1 for s in sinks)


async def test_a_deeply_nested_json_body_is_a_400_not_a_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Security review M2: json.loads raised RecursionError from about 1000 levels (2 KB)."""
    async with running_server(make_settings()) as (url, app, sinks):
        async with aiohttp.ClientSession() as http:
            for depth in (1000, 5000, 100_000):
                nested = "[" * depth + "]" * depth
                for body in (nested, '{"sdp": ' + nested + "}"):
                    async with http.post(
                        f"{url}/offer", data=body, headers={"Content-Type": "application/json"}
                    ) as r:
                        assert r.status == 400, (depth, await r.text())
                        got = await r.json()
                    assert got["error"] == "bad_json" and "nested too deeply" in got["detail"]
            async with http.get(f"{url}/healthz") as r:
                assert r.status == 200
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert sinks == []


async def test_the_open_local_server_refuses_other_host_names() -> None:
    """Security review M7 (DNS rebinding): with auth off on loopback, a page on any site could
    point its own name at 127.0.0.1 and read the open routes same-origin."""
    from stream.dashboard import add_dashboard

    async def no_events() -> AsyncIterator[dict]:
        await asyncio.Event().wait()
        yield {}

    async def overview() -> dict:
        return {"sessions": ["secret-session"]}

    settings = make_settings()  # 127.0.0.1, auth "auto": off
    app = create_app(settings, RecordingSink, loopback=True)
    add_dashboard(app, no_events, overview)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    port = server.port
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:

            async def get(path: str, host: str) -> tuple[int, dict | None]:
                async with http.get(f"{base}{path}", headers={"Host": host}) as r:
                    body = await r.json() if r.content_type == "application/json" else None
                    return r.status, body

            for path in ("/dashboard/overview", "/healthz", "/", "/config"):
                forged_hosts = (
                    f"attacker.example:{port}",
                    "attacker.example",
                    f"127.0.0.1.nip.io:{port}",
                )
                for forged in forged_hosts:
                    status, body = await get(path, forged)
                    assert status == 403, (path, forged, status)
                    assert body is not None and body["error"] == "bad_host", body
                for ok in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST"):
                    status, body = await get(path, ok)
                    assert status == 200, (path, ok, status, body)
            status, body = await get("/dashboard/overview", f"localhost:{port}")
            assert body == {"sessions": ["secret-session"]}

            # A cross-site POST (Host right, Origin another site's) is refused before parsing.
            offer = {"sdp": "v=0\r\n", "type": "offer"}
            for origin, want in (
                ("http://attacker.example", 403),
                ("null", 403),
                (f"http://localhost:{port}", 400),  # reaches the offer parser: bad SDP
            ):
                async with http.post(f"{base}/offer", json=offer, headers={"Origin": origin}) as r:
                    assert r.status == want, (origin, await r.text())
                    if want == 403:
                        assert (await r.json())["error"] == "bad_origin"
    finally:
        await server.close()

    # With auth on, the token is the guard and any name may be served (a proxy's, a LAN name).
    secret = "host-test-secret-0123456789"
    async with running_server(settings.replace("auth", enabled="on", secret=secret)) as (url, _, _):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/healthz", headers={"Host": "merclip.example"}) as r:
                assert r.status == 200


async def _read_until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (TimeoutError if it keeps
    the connection open longer than `timeout`)."""
    out = b""
    async with asyncio.timeout(timeout):
        while chunk := await reader.read(65536):
            out += chunk
    return out


async def test_half_sent_requests_are_closed_after_the_read_timeout() -> None:
    """Security review L4 (slowloris): a request whose headers never end, and a POST whose body
    never arrives, each held a connection (an fd) open: still open after 90 s."""
    async with running_server(make_settings(read_timeout_seconds=1.0)) as (url, app, _):
        port = int(url.rsplit(":", 1)[1])
        # Headers trickling in, never finished.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        await writer.drain()
        await asyncio.sleep(0.5)
        writer.write(b"X-Slow: 1\r\n")
        assert await _read_until_closed(reader, 4) == b""
        writer.close()
        # A body announced at 1000 bytes, 1 sent.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /offer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        await writer.drain()
        answer = await _read_until_closed(reader, 4)
        assert answer.startswith(b"HTTP/1.1 408") and b'"body_timeout"' in answer, answer[:300]
        writer.close()
        # Complete requests are served as before.
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/healthz") as r:
                assert r.status == 200


async def test_the_page_and_every_answer_send_security_headers() -> None:
    """Security review L6 (and L5's Referer): / sent no CSP, framing or nosniff header, and no
    Referrer-Policy, though the page may be opened as /?token=..."""
    async with running_server(make_settings()) as (url, _, _):
        async with aiohttp.ClientSession() as http:
            for path in ("/?token=x", "/static/app.js", "/healthz", "/events/a%20b"):
                async with http.get(url + path) as r:
                    h = r.headers
                    csp = h.get("Content-Security-Policy", "")
                    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
                    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
                    assert h.get("X-Frame-Options") == "DENY", path
                    assert h.get("X-Content-Type-Options") == "nosniff", path
                    assert h.get("Referrer-Policy") == "no-referrer", path


async def test_inactivity_closes_a_session_without_media() -> None:
    settings = make_settings(inactivity_timeout_seconds=1.0)
    async with running_server(settings) as (url, app, sinks):
        pc, _ = await connect_peer(url, [SilentPausedTrack()])
        session = app[REGISTRY].sessions()[0]
        assert await wait_for(lambda: app[REGISTRY].count == 0, 4)
        assert session.close_reason == "inactivity"
        assert sinks[0].closed == 1
        await pc.close()


async def test_offers_that_never_connect_free_their_slots_after_the_connect_timeout() -> None:
    """Security review L1: clients that post an offer and never do ICE held every slot for the
    whole inactivity timeout (8 POSTs in 30 ms filled the server for 20 s)."""
    settings = make_settings(
        max_sessions=2, connect_timeout_seconds=1.0, inactivity_timeout_seconds=20.0
    )
    async with running_server(settings) as (url, app, sinks):
        async with aiohttp.ClientSession() as http:
            for _ in range(2):
                pc, sdp = await _offer_sdp(SineTrack(seconds=5))
                await pc.close()  # gone before any ICE
                async with http.post(f"{url}/offer", json={"sdp": sdp, "type": "offer"}) as r:
                    assert r.status == 200
        sessions = app[REGISTRY].sessions()
        assert len(sessions) == 2
        assert await wait_for(lambda: app[REGISTRY].count == 0, 4)
        assert [s.close_reason for s in sessions] == ["connect_timeout"] * 2
        assert [s.closed for s in sinks] == [1, 1]
        # A peer that does connect is not hurt by the short deadline.
        pc, _ = await connect_peer(url, [SineTrack(seconds=3)])
        await asyncio.sleep(2.0)
        assert app[REGISTRY].count == 1 and sinks[-1].audio
        await pc.close()


async def test_app_shutdown_closes_every_peer() -> None:
    async with running_server(make_settings()) as (url, app, sinks):
        peers = [(await connect_peer(url, [SineTrack(seconds=10)]))[0] for _ in range(2)]
        assert await wait_for(lambda: all(s.audio for s in sinks), 5)
        sessions = app[REGISTRY].sessions()
        assert len(sessions) == 2
    # running_server's exit ran the app's on_shutdown
    assert all(s.closed for s in sessions)
    assert [s.closed for s in sinks] == [1, 1]
    assert app[REGISTRY].count == 0
    for pc in peers:
        await pc.close()


async def test_the_page_and_the_dashboard_share_one_base_stylesheet() -> None:
    """Review D3: the colours and base rules are written once, in static/base.css, which both
    pages link before their own sheet and both static routes serve."""
    from stream.dashboard import add_dashboard

    async def no_events() -> AsyncIterator[dict]:
        await asyncio.Event().wait()
        yield {}

    async def overview() -> dict:
        return {}

    app = create_app(make_settings(), RecordingSink, loopback=True)
    add_dashboard(app, no_events, overview)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with aiohttp.ClientSession() as http:
            for page, prefix, own in (
                ("/", "/static/", "style.css"),
                ("/dashboard", "/dashboard/static/", "dashboard.css"),
            ):
                async with http.get(base + page) as r:
                    html = await r.text()
                shared, sheet = f'href="{prefix}base.css"', f'href="{prefix}{own}"'
                assert shared in html and html.index(shared) < html.index(sheet), page
                async with http.get(f"{base}{prefix}base.css") as r:
                    assert r.status == 200 and "text/css" in r.headers["Content-Type"], prefix
                    assert "--bg:" in await r.text()
    finally:
        await server.close()


async def test_peer_log_lines_name_their_session_in_extra(caplog: pytest.LogCaptureFixture) -> None:
    """Review 2.6: a session's log lines carry `session_id` and `stage` as record attributes (for
    a JSON log to filter on), and keep their text."""
    async with running_server(make_settings()) as (url, app, sinks):
        with caplog.at_level(logging.INFO, logger="stream.peer"):
            pc, sid = await connect_peer(url, [SineTrack(seconds=1)], session_id="logged")
            assert await wait_for(lambda: bool(sinks and sinks[0].audio), 5)
            await pc.close()
            assert await wait_for(lambda: app[REGISTRY].count == 0, 10)
    (closing,) = [r for r in caplog.records if "closing" in r.getMessage()]
    assert closing.getMessage().startswith("session logged closing: ")
    assert closing.__dict__["session_id"] == "logged" and closing.__dict__["stage"] == "peer"

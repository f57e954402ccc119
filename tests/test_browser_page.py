"""The browser page in a real headless Chromium: camera and microphone from files, WebRTC to the
server, this session's events rendered live. Screenshots go to test-artifacts/."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from browser_helpers import ARTIFACTS, chromium, fake_media_args, require_chromium
from bus_helpers import make_event
from media import face_y4m, read_wav_16k
from stream_helpers import make_settings, running_server, wait_for

from stream.app import REGISTRY
from workers.schemas import Latency, Word

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(120)]


def _event(
    session_id: str, seq: int, *, zero_shot: bool, pretrained: bool, text: str, new: str = ""
) -> dict:
    """`text`: the window's whole transcript; `new`: the words only this event says (default
    all of them)."""
    first = seq == 0
    words = [
        Word(w, 2.0 * seq + 2.0 + 0.4 * i, 2.0 * seq + 2.3 + 0.4 * i)
        for i, w in enumerate(new.split())
    ]
    extra = {"words": words, "new_text": new} if new else {}
    return make_event(
        session_id,
        seq,
        text,
        **extra,
        probs=[0.81, 0.12, 0.05, 0.64, 0.02, 0.07] if first else [0.2, 0.7, 0.1, 0.1, 0.1, 0.1],
        media_start=2.0 * seq,
        media_end=2.0 * seq + 4.0,
        wall_start=0.0,
        wall_end=0.0,
        sentiment_probs=[0.2, 0.8] if first else [0.9, 0.1],
        sentiment_smoothed=[0.2, 0.8],
        sentiment="positive" if first else "negative",
        speech_present=first,
        zero_shot=zero_shot,
        pretrained=pretrained,
        latency=Latency(features_ready_ms=410.0, inference_done_ms=455.0, published_ms=461.0),
        stage_ms={},
    ).to_json_dict()


class TwoEvents:
    """events_factory: one event once the page subscribes, the second when the test says so."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.subscribed: list[str] = []

    async def __call__(self, session_id: str) -> AsyncIterator[dict[str, Any]]:
        self.subscribed.append(session_id)
        first = _event(session_id, 0, zero_shot=True, pretrained=False, text="hello world")
        yield first
        await self.release.wait()
        yield first  # replayed, as after an EventSource reconnect: not shown again
        # The next window overlaps the first: its transcript says "hello world" again.
        yield _event(
            session_id,
            1,
            zero_shot=True,
            pretrained=True,
            text="hello world this is a test",
            new="this is a test",
        )
        await asyncio.Event().wait()  # a live source never ends on its own


@pytest.fixture(scope="module")
def chromium_args(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    require_chromium()
    from media import speech_wav

    media = tmp_path_factory.mktemp("browser-media")
    wav = speech_wav(media, "Hello world, this is a test of the emotion recognition system.")
    y4m = face_y4m(media, seconds=3.0, fps=15, size=(640, 480))
    return fake_media_args(y4m, wav)


async def test_page_streams_camera_and_microphone_and_renders_events(
    chromium_args: list[str],
) -> None:
    wav = Path(next(a for a in chromium_args if "fake-audio" in a).split("=", 1)[1])
    events = TwoEvents()
    ARTIFACTS.mkdir(exist_ok=True)
    async with running_server(make_settings(), events) as (url, app, sinks):
        page_url = url.replace("127.0.0.1", "localhost")  # a secure context for getUserMedia
        async with chromium(chromium_args) as browser:
            page = await browser.new_page(viewport={"width": 1100, "height": 760})
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            await page.goto(page_url + "/?session=browser-1")
            await page.click("#join")
            await page.wait_for_function(
                "document.getElementById('status').textContent === 'connected'",
                timeout=15000,
            )
            assert await page.text_content("#session-id") == "browser-1"

            # Media reaches the sink: speech audio and 640x480 camera frames.
            assert await wait_for(
                lambda: (
                    bool(sinks) and sinks[0].samples.size > 3 * 16000 and len(sinks[0].frames) >= 3
                ),
                15,
            ), console
            (sink,) = sinks
            assert sink.info.session_id == "browser-1"
            rgb = sink.frames[-1][0]
            assert rgb.dtype == np.uint8 and rgb.shape == (480, 640, 3)
            got = sink.samples
            times = [t for _, t in sink.audio]
            assert times == sorted(times)
            # About real time: 16 kHz samples delivered ≈ media time elapsed.
            span = times[-1] - times[0]
            assert got.size == pytest.approx(span * 16000, rel=0.15, abs=3200)
            # Speech at roughly its recorded level (the page turns off auto gain).
            sent = read_wav_16k(wav)
            rms_sent = float(np.sqrt(np.mean(sent[np.abs(sent) > 0.02] ** 2)))
            rms_got = float(np.sqrt(np.mean(got[np.abs(got) > 0.02] ** 2)))
            assert rms_got == pytest.approx(rms_sent, rel=0.35), (rms_got, rms_sent)
            # The sink's 2 frames/s, not the camera's 15.
            assert sink.frames_offered > 3 * len(sink.frames)

            # First event: zero-shot on random CLIP, so a loud banner.
            await page.wait_for_function(
                "document.getElementById('event-count').textContent === '1'", timeout=10000
            )
            assert events.subscribed == ["browser-1"]
            banner = page.locator("#banner")
            assert await banner.is_visible()
            text = await banner.text_content() or ""
            assert "pretrained = false" in text and "Zero-shot" in text
            bars = page.locator("#bars .bar")
            assert await bars.count() == 6
            assert await page.locator("#bars .bar.predicted").evaluate_all(
                "els => els.map(e => e.dataset.label)"
            ) == ["happy", "surprise"]
            happy = page.locator('#bars .bar[data-label="happy"]')
            assert await happy.locator(".value").text_content() == "0.81"
            width = await happy.locator(".fill").evaluate(
                "e => e.getBoundingClientRect().width / e.parentElement.clientWidth"
            )
            assert width == pytest.approx(0.81, abs=0.02)
            assert "positive" in (await page.text_content("#sentiment") or "")
            assert "hello world" in (await page.text_content("#transcript") or "")
            assert await page.text_content("#face") == "in view"
            assert await page.text_content("#speech") == "speaking"
            assert "461 ms" in (await page.text_content("#latency") or "")
            await page.wait_for_timeout(400)  # let the 0.3 s bar transitions finish
            await page.screenshot(path=str(ARTIFACTS / "browser_page_first_event.png"))

            # Second event: bars, transcript and banner follow.
            events.release.set()
            await page.wait_for_function(
                "document.getElementById('event-count').textContent === '2'", timeout=10000
            )
            text = await banner.text_content() or ""
            assert "Zero-shot" in text and "pretrained = false" not in text
            assert await page.locator("#bars .bar.predicted").evaluate_all(
                "els => els.map(e => e.dataset.label)"
            ) == ["sad"]
            # The running transcript: each event's new words on a line, nothing twice.
            transcript = await page.locator("#transcript li").all_text_contents()
            assert len(transcript) == 2, transcript
            assert transcript[0].endswith("hello world") and transcript[1] == "4.0sthis is a test"
            assert "negative" in (await page.text_content("#sentiment") or "")
            assert await page.text_content("#speech") == "silence"
            await page.wait_for_timeout(400)
            await page.screenshot(path=str(ARTIFACTS / "browser_page.png"), full_page=True)

            # Leave: the server's peer goes away.
            await page.click("#leave")
            assert await wait_for(lambda: app[REGISTRY].count == 0, 10)
            assert sink.closed == 1


async def test_page_reports_a_full_server(chromium_args: list[str]) -> None:
    from stream_helpers import SineTrack

    from stream.clients.peer_client import connect_peer

    async with running_server(make_settings(max_sessions=1)) as (url, app, sinks):
        holder, _ = await connect_peer(url, [SineTrack(seconds=30)])
        async with chromium(chromium_args) as browser:
            page = await browser.new_page()
            await page.goto(url.replace("127.0.0.1", "localhost"))
            await page.click("#join")
            error = page.locator("#error")
            await error.wait_for(state="visible", timeout=15000)
            text = await error.text_content() or ""
            assert "503" in text and "retry in" in text
            assert await page.is_enabled("#join")
        await holder.close()


async def test_page_joins_with_an_access_token_and_is_refused_without(
    chromium_args: list[str],
) -> None:
    """With auth on, the page passes ?token= to the offer and the event stream."""
    from stream.auth import issue_token

    secret = "browser-test-secret-0123456789"
    settings = make_settings().replace("auth", enabled="on", secret=secret)
    events = TwoEvents()
    async with running_server(settings, events) as (url, app, sinks):
        base = url.replace("127.0.0.1", "localhost")
        token = issue_token(secret, "tok-1", "publisher", 300)
        async with chromium(chromium_args) as browser:
            page = await browser.new_page()
            await page.goto(base + "/")
            await page.click("#join")
            error = page.locator("#error")
            await error.wait_for(state="visible", timeout=15000)
            assert "401" in (await error.text_content() or "")
            assert app[REGISTRY].count == 0

            await page.goto(base + f"/?token={token}")
            await page.click("#join")
            await page.wait_for_function(
                "document.getElementById('status').textContent === 'connected'",
                timeout=15000,
            )
            assert await page.text_content("#session-id") == "tok-1"
            await page.wait_for_function(
                "document.getElementById('event-count').textContent === '1'", timeout=10000
            )
            assert events.subscribed == ["tok-1"]
            # Review L5: the token leaves the address bar once read, and a reload still joins.
            assert "token" not in page.url
            await page.reload()
            await page.click("#join")
            await page.wait_for_function(
                "document.getElementById('status').textContent === 'connected'",
                timeout=15000,
            )
            assert "token" not in page.url


async def test_the_page_works_under_its_content_security_policy_and_cannot_be_framed(
    chromium_args: list[str],
) -> None:
    """Security review L6: the page now sends `default-src 'self'; frame-ancestors 'none'` (and
    no 'unsafe-inline' / 'unsafe-eval'). Here the browser enforces it (the other browser tests
    bypass it for playwright's own eval): the page still joins and renders an event, nothing is
    refused, and a page of another origin cannot frame it."""
    from playwright.async_api import expect

    async with running_server(make_settings(), TwoEvents()) as (url, app, sinks):
        page_url = url.replace("127.0.0.1", "localhost")
        async with chromium(chromium_args, enforce_csp=True) as browser:
            page = await browser.new_page()
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            await page.goto(page_url + "/?session=csp-1")
            await page.click("#join")
            await expect(page.locator("#status")).to_have_text("connected", timeout=15000)
            await expect(page.locator("#event-count")).to_have_text("1", timeout=10000)
            # (The page has no favicon: its 404 is the one console error expected.)
            refused = [c for c in console if "Content Security Policy" in c or "Refused" in c]
            assert not refused, console
            await page.click("#leave")

            framer = await browser.new_page()
            framed: list[str] = []
            framer.on("console", lambda m: framed.append(m.text))
            await framer.set_content(f'<iframe src="{page_url}/"></iframe>')
            await asyncio.sleep(1.5)
            frame = framer.frames[1]
            assert await frame.query_selector("#join") is None  # refused: nothing rendered
            assert any("frame-ancestors" in m for m in framed), framed

"""The whole service through a real browser: headless Chromium with a fake camera (a face .y4m)
and microphone (espeak-ng speech) opens the page of a real LiveService, joins, and the session's
events, produced by the real pipeline (faster-whisper, CLIP, MER-CLIP, Redis), show on the page.
Screenshot: test-artifacts/browser_e2e.png."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from browser_helpers import ARTIFACTS, chromium, fake_media_args, require_chromium
from media import SPEECH_TEXT, face_y4m, speech_wav
from service_helpers import tiny_settings

from workers.app.service import LiveService
from workers.bus import Bus

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
async def service() -> AsyncIterator[LiveService]:
    async with LiveService(tiny_settings()) as svc:
        yield svc


async def test_browser_joins_and_sees_its_events(service: LiveService, media_dir: Path) -> None:
    require_chromium()
    wav = speech_wav(media_dir, SPEECH_TEXT)
    y4m = face_y4m(media_dir, seconds=4.0, fps=15, size=(640, 480))
    ARTIFACTS.mkdir(exist_ok=True)
    async with chromium(fake_media_args(y4m, wav)) as browser:
        page = await browser.new_page(viewport={"width": 1100, "height": 760})
        console: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        await page.goto(service.url + "?session=chromium-e2e")
        await page.click("#join")
        await page.wait_for_function(
            "document.getElementById('status').textContent === 'connected'", timeout=20000
        )
        # Chromium loops the speech file: within a few windows the words show up.
        await page.wait_for_function(
            "Number(document.getElementById('event-count').textContent) >= 2 && "
            "/hello|world|test/i.test(document.getElementById('transcript').textContent)",
            timeout=90000,
        )
        assert await page.locator("#bars .bar").count() == 6
        assert await page.text_content("#face") == "in view", console
        sentiment = await page.text_content("#sentiment") or ""
        assert "positive" in sentiment or "negative" in sentiment
        banner = await page.text_content("#banner") or ""
        assert "pretrained = false" in banner  # random CLIP is announced, never hidden
        assert "ms" in (await page.text_content("#latency") or "")
        await page.screenshot(path=str(ARTIFACTS / "browser_e2e.png"), full_page=True)

    async with Bus.connect(service.redis_url, service.settings.redis) as bus:
        stored = await bus.events("chromium-e2e", count=100)
    assert stored and all(ev.session_id == "chromium-e2e" for ev in stored)
    assert any(ev.face_present for ev in stored)

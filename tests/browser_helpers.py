"""Test support for the browser tests: the Debian Chromium, launched headless the same way by each.

playwright is imported only when a browser starts, so collecting the tests does not need it.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

__all__ = [
    "ARTIFACTS",
    "BASE_ARGS",
    "CHROMIUM",
    "chromium",
    "fake_media_args",
    "require_chromium",
]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
BASE_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def require_chromium() -> None:
    """Skip, rather than fail, where the Debian chromium the browser tests drive is missing."""
    if shutil.which(CHROMIUM) is None:
        pytest.skip("Debian chromium is not installed")


def fake_media_args(video: Path, audio: Path) -> list[str]:
    """BASE_ARGS plus a camera and microphone fed from files, granted without a prompt."""
    return [
        *BASE_ARGS,
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
        f"--use-file-for-fake-audio-capture={audio}",
        "--allow-loopback-in-peer-connection",
    ]


@asynccontextmanager
async def chromium(
    args: Sequence[str] = BASE_ARGS, *, enforce_csp: bool = False
) -> AsyncIterator[Browser]:
    """A headless Chromium with `args`, closed (and playwright stopped) however the test ends.

    Its pages ignore the pages' Content-Security-Policy unless `enforce_csp`: playwright's
    `wait_for_function` compiles its predicate with `eval` in the page, which the policy
    (stream/headers.py, no 'unsafe-eval') refuses. The tests that check the pages under their
    policy pass `enforce_csp=True` and wait with locators instead."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=list(args))
        if not enforce_csp:
            new_page = browser.new_page

            async def new_page_without_csp(**kwargs: Any) -> Page:
                return await new_page(**{"bypass_csp": True, **kwargs})

            browser.new_page = new_page_without_csp  # type: ignore[method-assign]
        try:
            yield browser
        finally:
            await browser.close()

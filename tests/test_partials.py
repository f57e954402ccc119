"""Partial transcripts (workers/partials.py): a talking session's words reach subscribers
between windows, marked partial, before the event of the window that owns them; over the real
bus and the page's event stream they stay apart from the events."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from media import CONTINUOUS_SPEECH, read_wav_16k, speech_wav
from service_helpers import tiny_settings
from stream_helpers import make_settings, running_server

from merclip.clip_backbone import ClipBackbone
from stream.sink import SessionInfo
from stream.sse import sse_message
from workers.bus import Bus
from workers.features.asr import Transcriber
from workers.features.extractor import WindowExtractor
from workers.ingest import IngestPipeline
from workers.partials import PARTIAL_CONTEXT_SECONDS
from workers.schemas import FeatureWindow, PartialTranscript, Word, decode, encode
from workers.subscriber import EventHub, subscribe
from workers.transcript import normalise

pytestmark = pytest.mark.slow


def _partial(session: str, text: str = "hello there", seq: int = 0) -> PartialTranscript:
    words = [Word(t, 1.0 + i * 0.3, 1.25 + i * 0.3, 0.9) for i, t in enumerate(text.split())]
    return PartialTranscript(session, "c1", seq, 0.75, 2.0, time.time(), words, text, 12.0)


async def _feed_paced(sink, audio: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """20 ms chunks in real time, as a live peer sends them (audio only)."""
    chunk, t0 = 320, time.monotonic()
    for i in range(0, audio.size, chunk):
        sink.on_audio(audio[i : i + chunk], (i + chunk) / 16000)
        await asyncio.sleep(max(0.0, t0 + (i + chunk) / 16000 - time.monotonic()))


async def test_words_reach_partials_before_the_event_of_their_window(
    media_dir: Path, tiny_clip: ClipBackbone, bundled_whisper: Transcriber
) -> None:
    """15 s of continuous speech in real time through the service's windows (4 s, 2 s hop):
    partials every 0.5 s carry most words before the window that owns them is even published,
    every partial word ends after what events had given out, and the windows' own words (the
    final transcript) are unchanged: each spoken word once, in order."""
    settings = tiny_settings().replace(
        "ingest", window_seconds=4.0, hop_seconds=2.0, max_pending_windows=16
    )
    settings = settings.replace("asr", partial_seconds=0.5)
    speech = read_wav_16k(speech_wav(media_dir, CONTINUOUS_SPEECH))
    audio = np.concatenate([np.zeros(5600, np.float32), speech, np.zeros(16000, np.float32)])
    extractor = WindowExtractor(settings, tiny_clip, bundled_whisper)
    partial_asr = Transcriber.from_settings(
        settings.asr, context_seconds=PARTIAL_CONTEXT_SECONDS, cpu_threads=1
    )
    windows: list[tuple[float, FeatureWindow]] = []
    partials: list[tuple[float, PartialTranscript]] = []

    async def publish(fw: FeatureWindow) -> None:
        windows.append((time.monotonic(), fw))

    async def publish_partial(p: PartialTranscript) -> None:
        decoded = decode(encode(p))  # what really crosses Redis
        assert isinstance(decoded, PartialTranscript)
        partials.append((time.monotonic(), decoded))

    async with IngestPipeline(
        settings, extractor, publish, partial_asr=partial_asr, publish_partial=publish_partial
    ) as pipeline:
        sink = pipeline.sink_factory(SessionInfo("talker", time.time(), time.monotonic()))
        await _feed_paced(sink, audio)
        sink.on_close()
        await sink.wait_done()

    counters = pipeline.counters
    assert counters.windows_dropped_backlog == 0
    assert counters.partials_published == len(partials) >= 8
    assert [p.seq for _, p in partials] == list(range(len(partials)))
    for _, p in partials:
        assert (
            p.partial and p.session_id == "talker" and p.text == " ".join(w.text for w in p.words)
        )
        assert all(w.media_end > p.final_until for w in p.words)
        assert all(w.media_start >= p.media_end - PARTIAL_CONTEXT_SECONDS for w in p.words)
    # The events' words are still the windows': every spoken word once, in order.
    final = [w for _, fw in windows for w in fw.words]
    spoken = [normalise(w) for w in CONTINUOUS_SPEECH.split()]
    assert [normalise(w.text) for w in final] == spoken
    # Earlier than the window: the first partial that has the word (same spelling, end within
    # 0.3 s) against the moment the window that owns it was published.
    published_at = {id(w): t for t, fw in windows for w in fw.words}
    sooner, lead = 0, []
    for w in final:
        seen = [
            t
            for t, p in partials
            for pw in p.words
            if normalise(pw.text) == normalise(w.text) and abs(pw.media_end - w.media_end) < 0.3
        ]
        if seen and min(seen) < published_at[id(w)]:
            sooner += 1
            lead.append(published_at[id(w)] - min(seen))
    assert sooner >= 0.6 * len(final), (sooner, len(final))
    assert float(np.median(lead)) > 0.3
    # One thread: the partials' ASR took at most the wall time of the session.
    assert 0 < counters.partial_asr_ms / 1000 < audio.size / 16000


async def test_partials_travel_on_their_own_channels(bus: Bus) -> None:
    """A subscriber asks for partials; one that does not (any existing client) never sees them,
    and no partial is stored in the session's history."""
    got_all: list[object] = []
    got_events: list[object] = []

    async def listen(into: list[object], partials: bool) -> None:
        async for item in subscribe(bus.url, "s1", prefix=bus.settings.prefix, partials=partials):
            into.append(item)

    tasks = [
        asyncio.create_task(listen(got_all, True)),
        asyncio.create_task(listen(got_events, False)),
    ]
    await asyncio.sleep(0.5)
    await bus.publish_partial(_partial("s1"))
    await bus.publish_partial(_partial("other"))
    deadline = time.monotonic() + 5
    while not got_all and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert len(got_all) == 1 and isinstance(got_all[0], PartialTranscript)
    assert got_all[0].session_id == "s1" and got_all[0].text == "hello there"
    assert got_events == []
    assert await bus.events("s1", 10) == []


async def test_the_hub_gives_partials_only_to_streams_that_ask(bus: Bus) -> None:
    hub = EventHub(bus, poll_s=0.1)
    with_partials = hub.events("s2", partials=True)
    without = hub.events("s2")
    first = asyncio.ensure_future(with_partials.__anext__())
    other = asyncio.ensure_future(without.__anext__())
    await asyncio.sleep(0.5)
    await bus.publish_partial(_partial("s2", "good morning"))
    item = await asyncio.wait_for(first, 5)
    assert isinstance(item, PartialTranscript) and item.text == "good morning"
    await asyncio.sleep(0.3)
    assert not other.done()
    other.cancel()
    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
        await other
    await with_partials.aclose()
    await without.aclose()
    await hub.aclose()


def test_a_partial_is_a_named_sse_event_without_an_id() -> None:
    """`event: partial`: EventSource's onmessage (every client written for events only) never
    sees it, and a reconnect never resumes from it."""
    message = sse_message(_partial("s3").to_json_dict()).decode()
    assert message.startswith("event: partial\ndata: {")
    assert "\nid:" not in message and message.endswith("\n\n")
    assert '"partial":true' in message


async def test_the_page_stream_sends_partials_as_named_events(bus: Bus) -> None:
    """/events/{session} over real HTTP, fed by the hub as the service feeds it: a published
    partial arrives as `event: partial`."""
    hub = EventHub(bus, poll_s=0.1)

    async def source(session_id: str) -> AsyncIterator[dict[str, Any]]:
        async for item in hub.events(session_id, partials=True):
            yield item.to_json_dict()

    try:
        async with running_server(make_settings(), source) as (url, _app, _):
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{url}/events/s4") as resp:
                    await asyncio.sleep(0.5)
                    await bus.publish_partial(_partial("s4", "see you"))
                    body = b""
                    deadline = time.monotonic() + 5
                    while b"event: partial" not in body and time.monotonic() < deadline:
                        body += await asyncio.wait_for(resp.content.readany(), 5)
        assert b"event: partial\ndata: {" in body and b'"text":"see you"' in body
    finally:
        await hub.aclose()

"""Prometheus metrics move when a session streams: GET /metrics of a real LiveService (embedded
Redis, faster-whisper tiny.en, test-size CLIP and MER-CLIP) scraped before and after a face video
with speech, and `merclip infer`'s own endpoint (--metrics-port) scraped while it serves windows.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from bus_helpers import make_window, prefix_on
from media import SPEECH_TEXT, face_video
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from service_helpers import tiny_settings

from stream.clients.file import stream_file
from workers.app.commands.infer import run_inference
from workers.app.service import LiveService
from workers.bus import Bus
from workers.redis_server import EmbeddedRedis

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(url: str) -> Samples:
    """Every sample of the exposition, keyed by (name, sorted labels)."""
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def until(cond: object, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await cond():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.5)


@pytest.fixture
async def service() -> AsyncIterator[LiveService]:
    async with LiveService(tiny_settings()) as svc:
        yield svc


async def test_serve_metrics_move_when_a_session_streams(service: LiveService, media_dir) -> None:
    metrics_url = service.url + "metrics"
    before = await scrape(metrics_url)
    # Registered and exposed before anything happened.
    for name in (
        "merclip_ingest_windows_cut_total",
        "merclip_ingest_windows_published_total",
        "merclip_inference_windows_processed_total",
        "merclip_inference_windows_skipped_total",
        "merclip_inference_windows_dead_lettered_total",
        "merclip_inference_pending_windows",
        "merclip_windows_stream_length",
        "merclip_sessions_active",
        "merclip_redis_up",
    ):
        assert any(key[0] == name for key in before), name
    assert value(before, "merclip_ingest_windows_dropped_total", reason="backlog") >= 0
    assert value(before, "merclip_redis_up") == 1.0

    video = face_video(media_dir, SPEECH_TEXT, seconds=6.0)
    await stream_file(service.url, video, session_id="metrics-1")

    async def settled() -> bool:
        # The session has ended and every window it published has been inferred: from here on
        # the numbers stay put, so the checks below compare complete counts.
        now = await scrape(metrics_url)
        published = value(now, "merclip_ingest_windows_published_total") - value(
            before, "merclip_ingest_windows_published_total"
        )
        processed = value(now, "merclip_inference_windows_processed_total") - value(
            before, "merclip_inference_windows_processed_total"
        )
        return (
            value(now, "merclip_ingest_sessions_active") == 0
            and published >= 2
            and processed == published
            and value(now, "merclip_sessions_active") >= 1
        )

    await until(settled, 60)
    after = await scrape(metrics_url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    cut = delta("merclip_ingest_windows_cut_total")
    published = delta("merclip_ingest_windows_published_total")
    processed = delta("merclip_inference_windows_processed_total")
    dropped = sum(
        delta("merclip_ingest_windows_dropped_total", reason=r)
        for r in ("backlog", "windowing", "extraction_error", "publish_error")
    )
    # 6 s at a 3 s window / 1.5 s hop: about 3 windows, plus the flushed tail.
    assert cut >= 3
    assert published + dropped <= cut and published >= 2
    assert processed == published >= 2
    assert delta("merclip_ingest_sessions_started_total") == 1
    # Sampled frames ran through faces + CLIP in batches of at least one frame each.
    encoded = delta("merclip_ingest_frames_encoded_total")
    assert encoded >= 3 and 1 <= delta("merclip_ingest_frame_batches_total") <= encoded
    assert delta("merclip_stream_offers_total", result="accepted") == 1
    for stage in ("asr", "faces", "face_encoder", "text_encoder", "audio"):
        assert delta("merclip_stage_seconds_count", stage=stage) == published, stage
    assert delta("merclip_stage_seconds_count", stage="queue") == processed
    for stage in ("features_ready", "inference_done", "published"):
        count = delta("merclip_event_latency_seconds_count", stage=stage)
        assert count == processed, stage
        assert delta("merclip_event_latency_seconds_sum", stage=stage) > 0
    assert delta("merclip_inference_batch_size_sum") == processed
    assert value(after, "merclip_sessions_active") >= 1
    assert value(after, "merclip_redis_ping_seconds") > 0
    # The stream's own counters live in the same registry.
    assert delta("merclip_stream_audio_seconds_total") > 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_infer_serves_its_own_metrics_port() -> None:
    with EmbeddedRedis() as redis_url:
        async with prefix_on(redis_url) as prefix:
            settings = tiny_settings().replace("redis", prefix=prefix)
            settings = settings.replace("inference", block_ms=50)
            port = _free_port()
            url = f"http://127.0.0.1:{port}/metrics"
            stop = asyncio.Event()
            name = "merclip_inference_windows_processed_total"
            processed_before = REGISTRY.get_sample_value(name) or 0.0
            worker = asyncio.create_task(
                run_inference(
                    settings,
                    redis_url,
                    consumer="metrics-worker",
                    stats_every_s=0,
                    metrics_port=port,
                    metrics_host="127.0.0.1",
                    stop=stop,
                )
            )
            try:
                async with Bus.connect(redis_url, settings.redis) as bus:
                    # The model loads first; keep offering fresh windows until one is served.
                    for seq in range(60):
                        await bus.add_window(make_window("inf-m", seq, age_s=0.1))
                        await asyncio.sleep(0.5)
                        if len(await bus.events("inf-m", 5)) >= 3 or worker.done():
                            break
                    served = len(await bus.events("inf-m", 100))
                assert served >= 3

                async def counted() -> bool:
                    s = await scrape(url)
                    return value(s, name) - processed_before == served

                await until(counted, 10)
                samples = await scrape(url)
                assert value(samples, "merclip_redis_up") == 1.0
                assert ("merclip_inference_pending_windows", ()) in samples
                assert value(samples, "merclip_inference_batch_seconds_count") >= 1
            finally:
                stop.set()
                await asyncio.wait_for(worker, 30)

"""Shared helpers of the Redis bus / inference tests: a real Redis and realistic windows.

Every test runs against the embedded redis-server (workers/redis_server.py) and, when the
REDIS_URL environment variable is set, also against that server. Each test uses its own key
prefix and deletes its keys afterwards, so tests never collide on a shared server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from workers.app.settings import RedisSettings
from workers.bus import Bus
from workers.redis_server import EmbeddedRedis
from workers.schemas import EmotionEvent, FeatureWindow, Latency, Word, event_id_for

__all__ = [
    "bus_on",
    "cleanup_prefix",
    "make_window",
    "prefix_on",
    "redis_params",
    "redis_server",
    "unique_prefix",
]


def redis_params() -> list[str]:
    """Fixture params: always the embedded server, plus $REDIS_URL when set."""
    return ["embedded"] + (["env"] if os.environ.get("REDIS_URL") else [])


@contextlib.contextmanager
def redis_server(kind: str) -> Iterator[str]:
    if kind == "env":
        yield os.environ["REDIS_URL"]
        return
    with EmbeddedRedis() as url:
        yield url


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def cleanup_prefix(url: str, prefix: str) -> None:
    client = aioredis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def prefix_on(url: str) -> AsyncIterator[str]:
    prefix = unique_prefix()
    try:
        yield prefix
    finally:
        await cleanup_prefix(url, prefix)


@contextlib.asynccontextmanager
async def bus_on(url: str, **redis: Any) -> AsyncIterator[Bus]:
    """A Bus under a fresh key prefix (`redis` sets the rest), its keys deleted afterwards."""
    async with prefix_on(url) as prefix:
        async with Bus.connect(url, RedisSettings(prefix=prefix, **redis)) as bus:
            yield bus


def make_window(
    session_id: str = "s1",
    seq: int = 0,
    dim: int = 64,
    *,
    age_s: float = 0.5,
    language: bool = True,
    visual: bool = True,
    audio: bool = True,
    clip_model: str = "merclip-tiny-clip",
    rng_seed: int | None = None,
) -> FeatureWindow:
    """A live-space window whose end lies `age_s` seconds in the past (features float16)."""
    rng = np.random.default_rng(seq if rng_seed is None else rng_seed)
    now = time.time()
    wall_end = now - age_s

    def arr(t: int, d: int) -> np.ndarray:
        return rng.standard_normal((t, d)).astype(np.float16)

    return FeatureWindow(
        session_id=session_id,
        seq=seq,
        media_start=2.0 * seq,
        media_end=2.0 * seq + 4.0,
        wall_start=wall_end - 4.0,
        wall_end=wall_end,
        transcript="i am so happy today" if language else "",
        language=arr(7, dim) if language else None,
        visual=arr(2, dim) if visual else None,
        audio=arr(50, 64) if audio else None,
        face_present=visual,
        speech_present=language,
        clip_model=clip_model,
        clip_pretrained="",
        features_ready_wall=wall_end + 0.2,
        stage_ms={"asr": 120.0, "face_encoder": 10.0},
    )


async def redis_clients(url: str) -> int:
    """Clients connected to the Redis at `url`, not counting the one that asks."""
    client = aioredis.from_url(url)
    try:
        return len(await client.client_list()) - 1
    finally:
        await client.aclose()


LABELS = ["happy", "sad", "anger", "surprise", "disgust", "fear"]


def make_event(
    session_id: str = "s1",
    seq: int = 0,
    text: str = "hello",
    probs: list[float] | None = None,
    *,
    wall_end: float | None = None,
    **fields: Any,
) -> EmotionEvent:
    """An event of merclip-tiny-live/test predicting `probs`, for window `seq` ending at
    `wall_end` (default: now); `fields` replace any other value, and the event id follows the
    model_name / model_version given. Unless `fields` set words / new_text, every word of `text`
    is new in this event (timed 0.4 s apart from the window's start), as in a session whose
    windows do not overlap."""
    if probs is None:
        probs = [0.7, 0.1, 0.1, 0.2, 0.05, 0.1] if seq % 2 == 0 else [0.1, 0.8, 0.2, 0.1, 0.1, 0.3]
    now = time.time() if wall_end is None else wall_end
    model = (fields.get("model_name", "merclip-tiny-live"), fields.get("model_version", "test"))
    event = EmotionEvent(
        event_id=event_id_for(session_id, seq, *model),
        session_id=session_id,
        seq=seq,
        media_start=1.5 * seq,
        media_end=1.5 * seq + 3.0,
        wall_start=now - 3.0,
        wall_end=now,
        transcript=text,
        emotion_labels=LABELS,
        emotion_probs=probs,
        emotion_smoothed=probs,
        emotions_predicted=[lab for lab, p in zip(LABELS, probs, strict=True) if p >= 0.6],
        emotion_threshold=0.6,
        sentiment_labels=["negative", "positive"],
        sentiment_probs=[0.3, 0.7],
        sentiment_smoothed=[0.3, 0.7],
        sentiment="positive",
        face_present=True,
        speech_present=bool(text),
        model_name="merclip-tiny-live",
        model_version="test",
        zero_shot=True,
        pretrained=True,
        latency=Latency(features_ready_ms=300.0, inference_done_ms=340.0, published_ms=345.0),
        stage_ms={"asr": 210.0, "faces": 30.0, "queue": 4.0},
    )
    event = dataclasses.replace(event, **fields)
    if "words" in fields or "new_text" in fields:
        return event
    t0 = event.media_start
    said = event.transcript.split()
    words = [Word(w, t0 + 0.4 * i, t0 + 0.4 * i + 0.3, 0.9) for i, w in enumerate(said)]
    return dataclasses.replace(event, words=words, new_text=" ".join(w.text for w in words))


def tiny_worker_env(prefix: str, **more: str) -> dict[str, str]:
    """The environment of a `merclip` subprocess on the test-size model (CLIP zero-shot on the
    tiny CLIP, offline) under Redis key prefix `prefix`; none of the caller's MERCLIP_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERCLIP_")}
    env.update(
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
        HF_HUB_OFFLINE="1",
        MERCLIP_MODEL_NAME="merclip-tiny-live",
        MERCLIP_CLIP_MODEL="merclip-tiny-clip",
        MERCLIP_FEATURES_SPACE="live",
        MERCLIP_MODEL_CHECKPOINT="",
        MERCLIP_REDIS_PREFIX=prefix,
        **more,
    )
    return env

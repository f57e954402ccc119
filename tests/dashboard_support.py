"""Test support for the dashboard and page tests: realistic EmotionEvents of the test model."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from workers.schemas import EmotionEvent, Latency, Word, event_id_for

__all__ = ["LABELS", "make_event"]

LABELS = ["happy", "sad", "anger", "surprise", "disgust", "fear"]


def make_event(
    session_id: str, seq: int, text: str, probs: list[float] | None = None, **fields: Any
) -> EmotionEvent:
    """An event of merclip-tiny-live/test predicting `probs`; `fields` replace any other value.
    Unless `fields` set words / new_text, every word of `text` is new in this event (timed 0.4 s
    apart from the window's start), as in a session whose windows do not overlap."""
    if probs is None:
        probs = [0.7, 0.1, 0.1, 0.2, 0.05, 0.1] if seq % 2 == 0 else [0.1, 0.8, 0.2, 0.1, 0.1, 0.3]
    now = time.time()
    event = EmotionEvent(
        event_id=event_id_for(session_id, seq, "merclip-tiny-live", "test"),
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

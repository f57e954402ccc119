"""Event construction without Redis or a model: the per-session moving average (Smoother) and the
pure build_event, on hand-made windows and predictions."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from bus_helpers import make_window

from merclip.predictor import Prediction
from workers.events import Smoother, Timings, build_event
from workers.schemas import Word, event_id_for

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


@dataclasses.dataclass(frozen=True)
class Model:
    """What build_event reads of a Predictor."""

    model_name: str = "tiny"
    model_version: str = "7"
    emotion_labels: tuple[str, ...] = ("happy", "sad")
    sentiment_labels: tuple[str, ...] = ("negative", "positive")
    threshold: float = 0.5
    zero_shot: bool = False
    pretrained: bool = True
    trained_on: str = "hand-made windows"


def pred(emotion: list[float], sentiment: list[float], words: bool = True) -> Prediction:
    emo = np.asarray(emotion, np.float32)
    return Prediction(
        emotion_probs=emo,
        emotions=[label for label, p in zip(Model.emotion_labels, emo, strict=True) if p >= 0.5],
        sentiment_probs=np.asarray(sentiment, np.float32),
        sentiment=("negative", "positive")[int(np.argmax(sentiment))] if words else None,
    )


def test_build_event_takes_everything_from_its_arguments() -> None:
    fw = dataclasses.replace(
        make_window("ev", 3, visual=False),
        connection_id="c1",
        words=[Word("so", 6.1, 6.3), Word("happy", 6.3, 6.8)],
    )
    p = pred([0.9, 0.2], [0.3, 0.7])
    t = Timings(
        read_wall=fw.features_ready_wall + 0.05,
        inference_ms=12.3456,
        done_wall=fw.wall_end + 0.3,
        published_wall=fw.wall_end + 0.31,
    )
    smoothed = (np.array([0.5, 0.5]), np.array([0.4, 0.6]))
    ev = build_event(fw, p, smoothed, t, Model())
    assert ev.event_id == event_id_for("ev", 3, "tiny", "7", "c1")
    assert (ev.session_id, ev.seq, ev.transcript) == ("ev", 3, fw.transcript)
    assert ev.emotion_probs == pytest.approx([0.9, 0.2]) and ev.emotions_predicted == ["happy"]
    assert ev.emotion_smoothed == [0.5, 0.5] and ev.sentiment_smoothed == [0.4, 0.6]
    assert ev.sentiment == "positive" and ev.emotion_threshold == 0.5
    assert ev.emotion_labels == ["happy", "sad"] and ev.sentiment_labels == ["negative", "positive"]
    assert ev.face_present is False and ev.speech_present is True
    assert (ev.zero_shot, ev.pretrained, ev.trained_on) == (False, True, "hand-made windows")
    # Latencies from the window's end: features 0.2 s later (make_window), then the timings.
    assert ev.latency.features_ready_ms == pytest.approx(200.0, abs=1e-3)
    assert ev.latency.inference_done_ms == pytest.approx(300.0, abs=1e-3)
    assert ev.latency.published_ms == pytest.approx(310.0, abs=1e-3)
    assert ev.stage_ms["queue"] == pytest.approx(50.0, abs=1e-3)
    assert ev.stage_ms["inference"] == 12.346 and ev.stage_ms["asr"] == 120.0
    assert ev.words == fw.words and ev.new_text == "so happy"


def test_smoothing_is_an_ema_per_session_and_silence_keeps_the_sentiment() -> None:
    s = Smoother(alpha=0.25)
    first = s.update(make_window("a", 0), pred([0.8, 0.0], [0.2, 0.8]))
    np.testing.assert_allclose(first[0], [0.8, 0.0])  # the first window is its own average
    emo, sen = s.update(make_window("a", 1), pred([0.0, 0.4], [1.0, 0.0]))
    np.testing.assert_allclose(emo, [0.6, 0.1])
    np.testing.assert_allclose(sen, [0.4, 0.6])
    # No words: no evidence about sentiment, the running value stays.
    _, sen = s.update(make_window("a", 2), pred([0.0, 0.0], [1.0, 0.0], words=False))
    np.testing.assert_allclose(sen, [0.4, 0.6])
    other = s.update(make_window("b", 0), pred([0.1, 0.1], [0.5, 0.5]))
    np.testing.assert_allclose(other[0], [0.1, 0.1])  # sessions do not mix
    assert len(s) == 2


def test_a_reconnect_starts_afresh_and_a_redelivery_does_not_rewind() -> None:
    s = Smoother(alpha=0.5)
    s.update(make_window("a", 0), pred([1.0, 0.0], [0.5, 0.5]))
    s.update(make_window("a", 1), pred([0.0, 0.0], [0.5, 0.5]))  # state: [0.5, 0]
    redelivered = s.update(make_window("a", 0), pred([1.0, 0.0], [0.5, 0.5]))
    np.testing.assert_allclose(redelivered[0], [0.75, 0.0])  # smoothed against the state ...
    emo, _ = s.update(make_window("a", 2), pred([0.0, 0.0], [0.5, 0.5]))
    np.testing.assert_allclose(emo, [0.25, 0.0])  # ... which it did not rewind
    fresh = dataclasses.replace(make_window("a", 0), connection_id="new")
    emo, _ = s.update(fresh, pred([0.0, 1.0], [0.5, 0.5]))
    np.testing.assert_allclose(emo, [0.0, 1.0])  # a new connection: no old average


def test_non_finite_values_never_enter_the_state_and_old_sessions_are_forgotten() -> None:
    s = Smoother(alpha=0.5, max_sessions=2)
    s.update(make_window("a", 0), pred([0.4, 0.4], [0.5, 0.5]))
    s.update(make_window("a", 1), pred([float("nan"), 0.0], [0.5, 0.5]))
    emo, _ = s.update(make_window("a", 2), pred([0.0, 0.0], [0.5, 0.5]))
    np.testing.assert_allclose(emo, [0.2, 0.2])  # averaged with the last finite state
    s.update(make_window("b", 0), pred([0.0, 0.0], [0.5, 0.5]))
    s.update(make_window("c", 0), pred([0.0, 0.0], [0.5, 0.5]))
    assert len(s) == 2
    emo, _ = s.update(make_window("a", 3), pred([1.0, 1.0], [0.5, 0.5]))
    np.testing.assert_allclose(emo, [1.0, 1.0])  # "a" was the least recent: forgotten

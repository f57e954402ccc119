"""From one inferred window to its EmotionEvent: the session's moving average and the event itself.

Smoothing: `emotion_smoothed` / `sentiment_smoothed` are an exponential moving average per
session (weight `smoothing_alpha` on the new window), kept in this worker's memory. With several
workers each sees only some of a session's windows, so smoothing is per worker; the raw
probabilities are always exact.

`build_event` is pure: everything it writes into the event comes from its arguments (the window,
the prediction, the smoothed values, the model and the worker's timings), so it is tested without
Redis or a model. The inference worker (workers/inference.py) calls `Smoother.update` and then
`build_event` once per window, in session and window order.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from workers.schemas import EmotionEvent, FeatureWindow, Latency, event_id_for

if TYPE_CHECKING:  # torch: imported where a model runs, not to build an event
    from merclip.predictor import Prediction

__all__ = ["ServingModel", "Smoothed", "Smoother", "Timings", "build_event"]

MAX_SMOOTHING_SESSIONS = 10_000
"""Sessions whose moving average a worker keeps (least recently updated forgotten first)."""

Smoothed = tuple[np.ndarray, np.ndarray]
"""(emotion, sentiment) moving averages, in the model's label orders."""


class ServingModel(Protocol):
    """What an event says about the model that made it (merclip.predictor.Predictor has it)."""

    @property
    def model_name(self) -> str: ...
    @property
    def model_version(self) -> str: ...
    @property
    def emotion_labels(self) -> Sequence[str]: ...
    @property
    def sentiment_labels(self) -> Sequence[str]: ...
    @property
    def threshold(self) -> float: ...
    @property
    def zero_shot(self) -> bool: ...
    @property
    def pretrained(self) -> bool: ...
    @property
    def trained_on(self) -> str: ...


@dataclass(frozen=True)
class Timings:
    """When the worker handled one window (unix times; the event's latencies are measured from
    the window's end)."""

    read_wall: float
    """The worker read the window from the stream."""
    inference_ms: float
    """Wall time of the predictor call that served the window's batch."""
    done_wall: float
    """That predictor call returned."""
    published_wall: float
    """The event is being written."""


@dataclass
class _SessionState:
    seq: int
    emotion: np.ndarray
    sentiment: np.ndarray
    connection_id: str = ""
    wall_start: float = 0.0


class Smoother:
    """The per-session exponential moving averages of one worker (see the module docstring)."""

    def __init__(self, alpha: float, max_sessions: int = MAX_SMOOTHING_SESSIONS) -> None:
        self.alpha = alpha
        """Weight of the new window."""
        self.max_sessions = max_sessions
        self._state: OrderedDict[str, _SessionState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._state)

    def update(self, fw: FeatureWindow, pred: Prediction) -> Smoothed:
        """The smoothed values for this window, remembered for the session's next one."""
        a = self.alpha
        state = self._state.get(fw.session_id)
        known = state
        if state is not None and state.connection_id != fw.connection_id:
            # A reconnect under the same session id: seq starts again at 0 and the old average
            # says nothing about the new connection, so its first window starts afresh.
            state = None
        if state is None or state.emotion.shape != pred.emotion_probs.shape:
            emo, sen = pred.emotion_probs, pred.sentiment_probs
        else:
            emo = a * pred.emotion_probs + (1.0 - a) * state.emotion
            # A window without words says nothing about sentiment: the running value stays.
            b = a if pred.sentiment is not None else 0.0
            sen = b * pred.sentiment_probs + (1.0 - b) * state.sentiment
        # A redelivered older window is smoothed against the state but does not rewind it; a
        # late window of an earlier connection does not take the state back to that connection.
        if state is not None:
            newer = fw.seq > state.seq
        else:
            newer = known is None or fw.wall_start >= known.wall_start
        if newer and np.isfinite(emo).all() and np.isfinite(sen).all():  # never NaN in state
            self._state[fw.session_id] = _SessionState(
                fw.seq, emo, sen, fw.connection_id, fw.wall_start
            )
            self._state.move_to_end(fw.session_id)
            if len(self._state) > self.max_sessions:
                self._state.popitem(last=False)
        return emo, sen


def build_event(
    window: FeatureWindow,
    prediction: Prediction,
    smoothed: Smoothed,
    timings: Timings,
    model: ServingModel,
) -> EmotionEvent:
    """The EmotionEvent of one window (its id is deterministic: see schemas.event_id_for)."""
    fw, p, pred = window, model, prediction
    emo_s, sen_s = smoothed

    def ms(t: float) -> float:
        return round((t - fw.wall_end) * 1000.0, 3)

    stage_ms = dict(fw.stage_ms)
    stage_ms["queue"] = round(max(0.0, timings.read_wall - fw.features_ready_wall) * 1000.0, 3)
    stage_ms["inference"] = round(timings.inference_ms, 3)
    return EmotionEvent(
        event_id=event_id_for(
            fw.session_id, fw.seq, p.model_name, p.model_version, fw.connection_id
        ),
        session_id=fw.session_id,
        seq=fw.seq,
        media_start=fw.media_start,
        media_end=fw.media_end,
        wall_start=fw.wall_start,
        wall_end=fw.wall_end,
        transcript=fw.transcript,
        emotion_labels=list(p.emotion_labels),
        emotion_probs=[float(x) for x in pred.emotion_probs],
        emotion_smoothed=[float(x) for x in emo_s],
        emotions_predicted=list(pred.emotions),
        emotion_threshold=float(p.threshold),
        sentiment_labels=list(p.sentiment_labels),
        sentiment_probs=[float(x) for x in pred.sentiment_probs],
        sentiment_smoothed=[float(x) for x in sen_s],
        sentiment=pred.sentiment,
        face_present=fw.face_present and fw.visual is not None,
        speech_present=fw.speech_present,
        model_name=p.model_name,
        model_version=p.model_version,
        zero_shot=bool(p.zero_shot),
        pretrained=bool(p.pretrained),
        latency=Latency(
            features_ready_ms=ms(fw.features_ready_wall),
            inference_done_ms=ms(timings.done_wall),
            published_ms=ms(timings.published_wall),
        ),
        stage_ms=stage_ms,
        trained_on=p.trained_on,
        words=list(fw.words),
        new_text=" ".join(w.text for w in fw.words),
    )

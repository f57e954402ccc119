"""Every message that travels through Redis: typed, versioned, msgpack-encoded.

Three message types:
- `FeatureWindow` (ingest → inference, on the windows stream): the features of one rolling window
  of one session. Features only: never raw audio or video.
- `EmotionEvent` (inference → subscribers, on the per-session event stream and the live channel).
- `PartialTranscript` (ingest → subscribers, on the partials channels only, never stored): the
  words heard since the last event's, between windows; the next event replaces them.

Wire format: a msgpack map `{"v": SCHEMA_VERSION, "type": <MessageType>, ...fields}`; numpy arrays
are msgpack ext type 1 holding `dtype|shape|raw bytes`. Other languages read the same map; arrays
are only in FeatureWindow, which they never need. Stream entries carry the encoded message in the
field `m`.

What `decode` accepts (anyone who can write to Redis can write a message, review M5): every field
must have its annotated type (an int where a float is annotated is fine, a bool is never a
number), floats must be finite (NaN is not JSON, and would poison the smoothing state), and the
session id must be non-empty without braces (they would break the key's Cluster hash tag). A
message that breaks any of this raises SchemaError, so its window is dead-lettered alone instead
of failing the batch it was read with. An encoded FeatureWindow is at most MAX_WINDOW_BYTES: real
ones are under 200 KB (MiniLM 128 x 384 or CLIP 77 x 512 text rows, 4 face rows, 40 log-mel
rows of float16); the bus refuses bigger ones on both ends.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import json
import math
import struct
import types
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import msgpack
import numpy as np

from merclip.errors import SchemaError

if TYPE_CHECKING:  # torch: imported by to_sample, where a model runs (never by a subscriber)
    from merclip.batch import Sample

__all__ = [
    "EXTRACTION_STAGES",
    "MAX_WINDOW_BYTES",
    "SCHEMA_VERSION",
    "EmotionEvent",
    "FeatureWindow",
    "Latency",
    "MessageType",
    "PartialTranscript",
    "Word",
    "check_session_id",
    "decode",
    "encode",
    "event_id_for",
]

SCHEMA_VERSION = 1
_NDARRAY_EXT = 1
MAX_WINDOW_BYTES = 1 << 20
"""Largest encoded FeatureWindow (1 MiB, 5x the largest real one; see the module docstring)."""
EXTRACTION_STAGES: tuple[str, ...] = ("asr", "faces", "face_encoder", "text_encoder", "audio")
"""The stages the extractor times in every FeatureWindow.stage_ms (workers/features/extractor.py;
the `stage` label of merclip_stage_seconds). A window may add others (`frames_ahead`)."""


class MessageType(enum.StrEnum):
    FEATURE_WINDOW = "feature_window"
    EMOTION_EVENT = "emotion_event"
    PARTIAL_TRANSCRIPT = "partial_transcript"


@dataclass(frozen=True)
class Word:
    """One recognised word, on the session's media clock (workers/transcript.py owns the rule
    that publishes each word once although windows overlap)."""

    text: str
    """As Whisper wrote it, punctuation attached ("world,"), no surrounding spaces."""
    media_start: float
    """Seconds since the session started, like the window's media_start."""
    media_end: float
    probability: float = 0.0
    """Whisper's mean token probability of the word (0 to 1)."""


@dataclass(frozen=True)
class FeatureWindow:
    """Features of one window of one session, as computed by the live extractors."""

    TYPE: ClassVar[MessageType] = MessageType.FEATURE_WINDOW

    session_id: str
    seq: int
    """Window sequence number within the session, from 0."""
    media_start: float
    """Seconds since the session started (monotonic arrival clock), window start."""
    media_end: float
    wall_start: float
    """Unix time of the window start."""
    wall_end: float
    transcript: str
    """ASR text of the window ('' when silent or no audio track)."""
    language: np.ndarray | None
    """(T_l, D) float16: CLIP text-encoder token outputs of the transcript; last row = EOT."""
    visual: np.ndarray | None
    """(N_faces, D) float16: CLIP image embeddings of face crops; None when no face in view."""
    audio: np.ndarray | None
    """(T_a, D_a) float16: log-mel frames; None when there is no audio or it is silent."""
    face_present: bool
    speech_present: bool
    clip_model: str
    """open_clip model name the features were computed with."""
    clip_pretrained: str
    """Pretrained tag/file of that CLIP ('' = random init)."""
    features_ready_wall: float
    """Unix time when extraction finished."""
    stage_ms: dict[str, float] = field(default_factory=dict)
    """Extraction time per stage: asr, faces, face_encoder, text_encoder, audio
    (EXTRACTION_STAGES)."""
    feature_space: str = "live"
    connection_id: str = ""
    """The WebRTC connection the window came from (stream.sink.SessionInfo.connection_id). seq
    restarts at 0 when a client reconnects under the same session_id, so a window is named by
    (session_id, connection_id, seq). '' in windows from before this field."""
    words: list[Word] = field(default_factory=list)
    """The recognised words this window owns, in order: each word of the session is in exactly
    one window although windows overlap (workers/transcript.py). The extractor fills in every
    word of the window; the session's ingest keeps the owned ones before publishing. `transcript`
    still holds the whole window's text (the language features cover the whole window)."""

    def to_sample(self) -> Sample:
        """The model input for one FeatureWindow (float32 arrays; absent modalities stay None)."""
        from merclip.batch import Sample

        def f32(x: np.ndarray | None) -> np.ndarray | None:
            return None if x is None or x.size == 0 else np.asarray(x, dtype=np.float32)

        return Sample(
            language=f32(self.language),
            visual=f32(self.visual),
            audio=f32(self.audio),
            id=f"{self.session_id}:{self.seq}",
        )


@dataclass(frozen=True)
class Latency:
    """Milliseconds from the window's end to each stage."""

    features_ready_ms: float
    inference_done_ms: float
    published_ms: float


@dataclass(frozen=True)
class EmotionEvent:
    """The prediction for one window of one session."""

    TYPE: ClassVar[MessageType] = MessageType.EMOTION_EVENT

    event_id: str
    """Deterministic: same session, window and model give the same id (see event_id_for)."""
    session_id: str
    seq: int
    media_start: float
    media_end: float
    wall_start: float
    wall_end: float
    transcript: str
    """ASR text of the whole window (overlapping windows repeat words: see words / new_text)."""
    emotion_labels: list[str]
    emotion_probs: list[float]
    """Per label, in emotion_labels order: sigmoid of normalised similarities."""
    emotion_smoothed: list[float]
    """Exponential moving average of emotion_probs over the session's windows."""
    emotions_predicted: list[str]
    """Labels whose probability is at least the threshold."""
    emotion_threshold: float
    sentiment_labels: list[str]
    sentiment_probs: list[float]
    sentiment_smoothed: list[float]
    sentiment: str | None
    """Most probable sentiment; null when the window has no words (no evidence to read it from:
    no speech, or no face and no speech)."""
    face_present: bool
    speech_present: bool
    model_name: str
    model_version: str
    zero_shot: bool
    """True when no trained MER-CLIP checkpoint is loaded (CLIP similarity only)."""
    pretrained: bool
    """False when the CLIP encoders are randomly initialised: predictions are meaningless."""
    latency: Latency
    stage_ms: dict[str, float] = field(default_factory=dict)
    trained_on: str = ""
    """What the model was trained on, e.g. "FER2013 faces + MELD utterances + RAVDESS speech"
    ('' for zero-shot)."""
    words: list[Word] = field(default_factory=list)
    """The words this event publishes, in order, with their media times: each recognised word of
    the session is in exactly one event (the window whose last hop, moved 0.25 s earlier, holds
    the word's end; workers/transcript.py)."""
    new_text: str = ""
    """`words` joined by spaces: the text new in this event. A session's running transcript is
    its events' new_text in seq order, with no repeats ('' in events from before this field)."""

    def to_json_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what `merclip subscribe` prints and the pages read)."""
        return _to_plain(self)


@dataclass(frozen=True)
class PartialTranscript:
    """What one session said since its last event's words, transcribed between windows
    (workers/partials.py). Provisional: the words of the next events replace it (they may spell
    a word differently, or drop one), so a page shows it after the final transcript, marked as
    partial, and forgets the words of it that an event has since published."""

    TYPE: ClassVar[MessageType] = MessageType.PARTIAL_TRANSCRIPT

    session_id: str
    connection_id: str
    seq: int
    """Partial number within the connection, from 0 (a later one replaces an earlier one)."""
    final_until: float
    """Media time up to which the session's events have given out words (or will, for the
    windows already cut): the words here all end after it."""
    media_end: float
    """The audio transcribed ends here (media clock)."""
    wall_end: float
    """Unix time at which the audio up to media_end had arrived."""
    words: list[Word]
    text: str
    """`words` joined by spaces."""
    asr_ms: float
    partial: bool = True
    """Always true: lets a client that reads any message tell this one from an event."""

    def to_json_dict(self) -> dict[str, Any]:
        return _to_plain(self)


def event_id_for(
    session_id: str, seq: int, model_name: str, model_version: str, connection_id: str = ""
) -> str:
    """Deterministic event id: redelivering a window never creates a second event, and a window
    of a later connection under the same session id (seq from 0 again) is never taken for one."""
    key = f"{session_id}\x00{seq}\x00{model_name}\x00{model_version}"
    if connection_id:  # '' keeps the ids of windows from before connection_id existed
        key += f"\x00{connection_id}"
    return hashlib.blake2b(key.encode(), digest_size=12).hexdigest()


Message = FeatureWindow | EmotionEvent | PartialTranscript


def encode(message: Message) -> bytes:
    body = _to_plain(message, keep_arrays=True)
    body["v"] = SCHEMA_VERSION
    body["type"] = message.TYPE.value
    return msgpack.packb(body, default=_pack_ext, use_bin_type=True)


def decode(data: bytes) -> Message:
    """Decode bytes into their message; anything malformed raises SchemaError."""
    try:
        body = msgpack.unpackb(data, ext_hook=_unpack_ext, raw=False, strict_map_key=True)
    except SchemaError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types
        raise SchemaError(f"not a msgpack message: {exc}") from exc
    if not isinstance(body, dict):
        raise SchemaError("message is not a map")
    version = body.pop("v", None)
    if version != SCHEMA_VERSION:
        raise SchemaError(f"schema version {version!r} not supported (this is {SCHEMA_VERSION})")
    kind = body.pop("type", None)
    cls: type[FeatureWindow] | type[EmotionEvent] | type[PartialTranscript]
    if kind == MessageType.FEATURE_WINDOW.value:
        cls = FeatureWindow
    elif kind == MessageType.PARTIAL_TRANSCRIPT.value:
        cls = PartialTranscript
    elif kind == MessageType.EMOTION_EVENT.value:
        cls = EmotionEvent
        if isinstance(body.get("latency"), dict):
            body["latency"] = _build(Latency, body["latency"], "latency")
    else:
        raise SchemaError(f"unknown message type {kind!r}")
    if isinstance(body.get("words"), list):  # maps become Words; anything else fails the check
        body["words"] = [
            _build(Word, w, "word") if isinstance(w, dict) else w for w in body["words"]
        ]
    message = _build(cls, body, str(kind))
    check_session_id(message.session_id)
    return message


def check_session_id(session_id: str) -> str:
    """`session_id`, if it can name Redis keys: non-empty, no braces (they would break the
    Cluster hash tag `{S}`; an empty id would collide across sessions). Else SchemaError."""
    if not session_id or "{" in session_id or "}" in session_id:
        raise SchemaError(f"invalid session id {session_id!r}: must be non-empty without braces")
    return session_id


def _build(cls: type, body: dict[str, Any], kind: str) -> Any:
    """cls(**body) after checking the field names and the type of every value."""
    names = {f.name for f in dataclasses.fields(cls)}
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = required - body.keys()
    if missing:
        raise SchemaError(f"{kind} is missing fields {sorted(missing)}")
    unknown = body.keys() - names
    if unknown:
        raise SchemaError(f"{kind} has unknown fields {sorted(unknown)}")
    hints = _field_types(cls)
    for name, value in body.items():
        if not _fits(value, hints[name]):
            shown = repr(value)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            wanted = _type_name(hints[name])
            wanted += " (finite)" if "float" in wanted else ""
            raise SchemaError(
                f"{kind} field {name!r} must be {wanted}, got {type(value).__name__} {shown}"
            )
    return cls(**body)


@functools.cache
def _field_types(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is None and hasattr(hint, "__name__"):
        return str(hint.__name__)
    return str(hint).replace("numpy.", "np.")


def _fits(value: Any, hint: Any) -> bool:
    """Whether a decoded value has the annotated type (the few shapes the schemas use)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if origin is dict:
        k, v = typing.get_args(hint)
        return isinstance(value, dict) and all(
            _fits(a, k) and _fits(b, v) for a, b in value.items()
        )
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return number and math.isfinite(value)
    return isinstance(value, hint)


def _to_plain(obj: Any, keep_arrays: bool = False) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: _to_plain(getattr(obj, f.name), keep_arrays) for f in dataclasses.fields(obj)
        }
    if isinstance(obj, np.ndarray):
        return obj if keep_arrays else obj.tolist()
    if isinstance(obj, dict):
        return {k: _to_plain(v, keep_arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v, keep_arrays) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _pack_ext(obj: Any) -> msgpack.ExtType:
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        header = json.dumps([arr.dtype.str, list(arr.shape)]).encode()
        return msgpack.ExtType(
            _NDARRAY_EXT, struct.pack("<I", len(header)) + header + arr.tobytes()
        )
    raise TypeError(f"cannot encode {type(obj).__name__}")


def _unpack_ext(code: int, data: bytes) -> Any:
    if code != _NDARRAY_EXT:
        raise SchemaError(f"unknown msgpack ext type {code}")
    try:
        (n,) = struct.unpack_from("<I", data)
        dtype, shape = json.loads(data[4 : 4 + n])
        dt = np.dtype(dtype)
        if dt.kind not in "fiub":
            raise SchemaError(f"array dtype {dtype} not allowed")
        return np.frombuffer(data[4 + n :], dtype=dt).reshape(shape).copy()
    except SchemaError:
        raise
    except Exception as exc:
        raise SchemaError(f"bad array payload: {exc}") from exc

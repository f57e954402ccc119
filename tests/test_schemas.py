"""Redis messages: typed, versioned, compact; anything malformed is a SchemaError."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import msgpack
import numpy as np
import pytest
from bus_helpers import make_event

from merclip.errors import SchemaError
from workers.schemas import (
    EmotionEvent,
    FeatureWindow,
    Latency,
    Word,
    decode,
    encode,
    event_id_for,
)

pytestmark = pytest.mark.unit


def _window(visual: np.ndarray | None) -> FeatureWindow:
    rng = np.random.default_rng(0)
    return FeatureWindow(
        session_id="s1",
        seq=3,
        media_start=6.0,
        media_end=10.0,
        wall_start=1000.0,
        wall_end=1004.0,
        transcript="hello there",
        language=rng.standard_normal((5, 512)).astype(np.float16),
        visual=visual,
        audio=None,
        face_present=visual is not None,
        speech_present=True,
        clip_model="ViT-B-32",
        clip_pretrained="",
        features_ready_wall=1004.3,
        stage_ms={"asr": 400.0},
    )


def test_feature_window_round_trip_keeps_arrays_and_absence() -> None:
    fw = _window(np.ones((2, 512), np.float16))
    out = decode(encode(fw))
    assert isinstance(out, FeatureWindow)
    assert out.audio is None
    np.testing.assert_array_equal(out.language, fw.language)
    np.testing.assert_array_equal(out.visual, fw.visual)
    assert out.language.dtype == np.float16
    assert (out.session_id, out.seq, out.transcript, out.stage_ms) == (
        "s1",
        3,
        "hello there",
        {"asr": 400.0},
    )


def test_encoding_is_compact() -> None:
    fw = _window(None)
    # 5 x 512 float16 = 5120 bytes of features; the envelope adds little.
    assert len(encode(fw)) < 5120 + 600


def test_event_round_trip_and_json() -> None:
    ev = make_event(
        "s1",
        3,
        "hi",
        wall_end=5.0,
        emotion_smoothed=[0.6, 0.1, 0.1, 0.2, 0.05, 0.1],
        zero_shot=False,
        latency=Latency(300.0, 350.0, 360.0),
    )
    out = decode(encode(ev))
    assert out == ev
    assert ev.to_json_dict()["latency"]["published_ms"] == 360.0


def test_event_id_is_deterministic() -> None:
    assert event_id_for("s", 1, "m", "v") == event_id_for("s", 1, "m", "v")
    assert event_id_for("s", 1, "m", "v") != event_id_for("s", 2, "m", "v")
    assert event_id_for("s", 1, "m", "v") != event_id_for("s", 1, "m", "v2")


def test_event_ids_tell_connections_of_one_session_apart() -> None:
    """seq restarts at 0 when a client reconnects under the same session id: without the
    connection in the id, the new connection's events were dropped as duplicates (review H1)."""
    assert event_id_for("s", 0, "m", "v", "conn-a") != event_id_for("s", 0, "m", "v", "conn-b")
    assert event_id_for("s", 0, "m", "v", "conn-a") == event_id_for("s", 0, "m", "v", "conn-a")
    # Windows from before the field keep their ids (a redelivery after an upgrade is no new event).
    legacy = hashlib.blake2b(b"s\x000\x00m\x00v", digest_size=12).hexdigest()
    assert event_id_for("s", 0, "m", "v", "") == event_id_for("s", 0, "m", "v") == legacy


def test_a_window_without_connection_id_still_decodes() -> None:
    """Messages written before connection_id existed (still in the stream during an upgrade)."""
    fw = _window(None)
    body = msgpack.unpackb(encode(fw), raw=False)
    assert body.pop("connection_id") == ""
    old = decode(msgpack.packb(body, use_bin_type=True))
    assert isinstance(old, FeatureWindow) and old.connection_id == ""
    assert decode(encode(replace(fw, connection_id="c1"))).connection_id == "c1"


WORDS = [Word("Hello", 6.3, 6.62, 0.91), Word("world,", 6.62, 7.1, 0.58)]


def test_words_round_trip_in_windows_and_events() -> None:
    fw = replace(_window(None), words=WORDS)
    out = decode(encode(fw))
    assert isinstance(out, FeatureWindow) and out.words == WORDS
    ev = replace(make_event("s1", 0, "Hello world, again"), words=WORDS, new_text="Hello world,")
    back = decode(encode(ev))
    assert back == ev and all(isinstance(x, Word) for x in back.words)
    plain = ev.to_json_dict()
    assert plain["words"][1] == {
        "text": "world,",
        "media_start": 6.62,
        "media_end": 7.1,
        "probability": 0.58,
    }
    assert plain["new_text"] == "Hello world," and plain["transcript"] == "Hello world, again"


def test_messages_from_before_words_still_decode() -> None:
    """Windows and events written before `words` / `new_text` existed (still in the streams
    during an upgrade) decode with no words."""
    for message, fields in (
        (replace(_window(None), words=WORDS), ("words",)),
        (replace(make_event("s1", 0, "hi"), words=WORDS, new_text="x"), ("words", "new_text")),
    ):
        body = msgpack.unpackb(encode(message), raw=False)
        for name in fields:
            del body[name]
        old = decode(msgpack.packb(body, use_bin_type=True))
        assert old.words == [] and getattr(old, "new_text", "") == ""


@pytest.mark.parametrize(
    "words",
    [
        "Hello world",
        ["Hello"],
        [{"text": "Hello", "media_start": 0.0}],
        [{"text": "Hello", "media_start": 0.0, "media_end": float("nan")}],
        [{"text": 3, "media_start": 0.0, "media_end": 0.2}],
        [{"text": "Hello", "media_start": 0.0, "media_end": 0.2, "speaker": "a"}],
    ],
)
def test_malformed_words_are_a_schema_error(words: object) -> None:
    with pytest.raises(SchemaError, match="word"):
        decode(_with(_window(None), words=words))
    with pytest.raises(SchemaError, match="word"):
        decode(_with(make_event("s1", 0, "hi"), words=words))


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1garbage",
        msgpack.packb([1, 2, 3]),
        msgpack.packb({"v": 99, "type": "feature_window"}),
        msgpack.packb({"v": 1, "type": "nope"}),
        msgpack.packb({"v": 1, "type": "feature_window", "session_id": "x"}),
        msgpack.packb({"v": 1, "type": "emotion_event", "bogus": 1}),
    ],
)
def test_malformed_messages_raise_schema_error(payload: bytes) -> None:
    with pytest.raises(SchemaError):
        decode(payload)


def test_object_arrays_are_refused() -> None:
    body = encode(_window(None)).replace(b"<f2", b"|O8")
    with pytest.raises(SchemaError):
        decode(body)


def _with(message: FeatureWindow | EmotionEvent, **fields: object) -> bytes:
    """`message` encoded with some fields set to values of the wrong type (as a foreign
    producer, or anyone with Redis access, can write them)."""
    body = msgpack.unpackb(encode(message), raw=False)
    body.update(fields)
    return msgpack.packb(body, use_bin_type=True)


@pytest.mark.parametrize(
    "fields",
    [
        {"wall_end": "soon"},
        {"seq": 1.5},
        {"seq": True},
        {"media_start": float("nan")},
        {"wall_end": float("inf")},
        {"transcript": 7},
        {"face_present": 1},
        {"language": [[1.0, 2.0]]},
        {"stage_ms": {"asr": "fast"}},
        {"stage_ms": [1, 2]},
        {"session_id": "a{b}c"},
        {"session_id": ""},
        {"session_id": None},
    ],
)
def test_a_window_field_of_the_wrong_type_is_a_schema_error(fields: dict[str, object]) -> None:
    (name,) = fields
    with pytest.raises(SchemaError, match="session.id" if name == "session_id" else name):
        decode(_with(_window(None), **fields))


@pytest.mark.parametrize(
    "fields",
    [
        {"emotion_probs": [0.5, float("nan")]},
        {"emotion_labels": ["happy", 3]},
        {"sentiment": 1},
        {"latency": {"features_ready_ms": "x", "inference_done_ms": 1, "published_ms": 2}},
        {"latency": "late"},
    ],
)
def test_an_event_field_of_the_wrong_type_is_a_schema_error(fields: dict[str, object]) -> None:
    good = make_event("s1", 0, "hi")
    assert decode(encode(good)) == good
    with pytest.raises(SchemaError):
        decode(_with(good, **fields))


def test_ints_stand_for_floats_but_bools_for_nothing() -> None:
    fw = decode(_with(_window(None), media_start=6, wall_end=1004))
    assert isinstance(fw, FeatureWindow) and fw.media_start == 6 and fw.wall_end == 1004
    assert decode(_with(_window(None), stage_ms={})).stage_ms == {}

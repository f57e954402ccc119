"""FER2013, MELD and RAVDESS readers on tiny copies of their real layouts written here, plus one
pass over the real data in shared/data when it is present."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from emotion_data import (
    FER_CLASSES,
    MELD_HEADER,
    MELD_TRAIN,
    RAVDESS_CODES,
    face_pixels,
    meld_row,
    shared_data,
    write_fer,
    write_flac,
    write_meld,
    write_ravdess,
)

from merclip.data.emotion_sets import (
    EMOTIONS,
    KINDS,
    RawItem,
    available_splits,
    clean_text,
    load_split,
    map_emotion,
    map_sentiment,
    parse_data_spec,
)
from merclip.data.mosei_labels import EMOTION_LABELS
from merclip.errors import DatasetError

pytestmark = pytest.mark.unit

MELD_EMOTIONS = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
# Every source class of the three sets → its CMU-MOSEI emotion (None: the empty label set).
MAPPING = {
    "angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happy", "neutral": None,
    "sad": "sad", "surprise": "surprise",  # FER2013
    "anger": "anger", "joy": "happy", "sadness": "sad",  # MELD (+ disgust fear neutral surprise)
    "calm": None, "fearful": "fear", "surprised": "surprise",  # RAVDESS (+ the rest above)
}  # fmt: skip


@pytest.fixture
def fer_root(tmp_path: Path) -> Path:
    write_fer(tmp_path / "fer", {"train": 3, "val": 1})
    return tmp_path / "fer"


@pytest.fixture
def meld_root(tmp_path: Path) -> Path:
    write_meld(tmp_path / "meld")
    return tmp_path / "meld"


@pytest.fixture
def ravdess_root(tmp_path: Path) -> Path:
    write_ravdess(tmp_path / "ravdess")
    return tmp_path / "ravdess"


# --- label mapping --------------------------------------------------------------------------


def test_emotion_order_is_the_cmu_mosei_one() -> None:
    assert EMOTIONS == EMOTION_LABELS == ("happy", "sad", "anger", "surprise", "disgust", "fear")


@pytest.mark.parametrize(
    "label",
    [*FER_CLASSES, *MELD_EMOTIONS, *RAVDESS_CODES.values()],
)
def test_every_source_class_maps_to_one_mosei_emotion_or_none(label: str) -> None:
    expected = np.zeros(6, np.float32)
    if MAPPING[label] is not None:
        expected[EMOTIONS.index(MAPPING[label])] = 1.0
    got = map_emotion(label)
    assert got.dtype == np.float32 and got.shape == (6,)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(map_emotion(f" {label.upper()} "), expected)


def test_neutral_and_calm_are_the_empty_label_set() -> None:
    assert not map_emotion("neutral").any() and not map_emotion("calm").any()


def test_unknown_emotion_class_is_an_error_listing_the_known_ones() -> None:
    with pytest.raises(DatasetError, match=r"'contempt'.*joy.*calm"):
        map_emotion("contempt")


def test_sentiment_is_negative_0_positive_1_and_neutral_none() -> None:
    assert [map_sentiment(s) for s in ("negative", "positive", "neutral")] == [0, 1, None]
    with pytest.raises(DatasetError, match="'mixed'.*negative, neutral, positive"):
        map_sentiment("mixed")


# --- data specs and splits ------------------------------------------------------------------


def test_data_spec_names_kind_and_directory(meld_root: Path) -> None:
    assert parse_data_spec(f"meld:{meld_root}") == ("meld", meld_root)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("mosi:{root}", r"unknown kind 'mosi'; known: fer2013, meld, ravdess"),
        ("meld:{root}/nowhere", r"nowhere is not a directory"),
        ("{root}", r"expected KIND:DIR"),
    ],
)
def test_bad_data_spec_says_what_is_wrong(tmp_path: Path, spec: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        parse_data_spec(spec.format(root=tmp_path))


def test_available_splits_lists_only_what_exists(
    fer_root: Path, meld_root: Path, ravdess_root: Path
) -> None:
    assert available_splits("fer2013", fer_root) == ["train", "val"]
    assert available_splits("meld", meld_root) == ["train", "val"]  # from dev_sent_emo.csv
    assert available_splits("ravdess", ravdess_root) == ["train", "val"]


def test_loading_an_absent_split_names_what_to_expect_and_what_exists(fer_root: Path) -> None:
    with pytest.raises(DatasetError, match=r"no test split .*fer/test; splits found: train, val"):
        load_split("fer2013", fer_root, "test")


def test_unknown_split_or_kind_is_an_error(fer_root: Path) -> None:
    with pytest.raises(DatasetError, match="unknown split 'dev'; known: train, val, test"):
        load_split("fer2013", fer_root, "dev")
    with pytest.raises(DatasetError, match="unknown dataset kind 'affectnet'"):
        load_split("affectnet", fer_root, "train")
    with pytest.raises(ValueError, match="limit_per_class"):
        load_split("fer2013", fer_root, "train", limit_per_class=0)


# --- FER2013 --------------------------------------------------------------------------------


def test_fer_reads_every_class_as_48x48_grayscale_in_sorted_order(fer_root: Path) -> None:
    items = load_split("fer2013", fer_root, "train")
    assert len(items) == 7 * 3 and all(isinstance(i, RawItem) for i in items)
    assert [i.id for i in items] == sorted(i.id for i in items)
    assert items[0].id == "fer2013/train/angry/Training_70.jpg"
    assert Counter(i.source_label for i in items) == dict.fromkeys(FER_CLASSES, 3)
    for item in items:
        assert item.kind == "fer2013" and item.sentiment is None
        assert item.image is not None and item.image.dtype == np.uint8
        assert item.image.shape == (48, 48) and item.text is None and item.audio is None
        np.testing.assert_array_equal(item.emotion, map_emotion(item.source_label))
    # The pixels are the ones written (JPEG is lossy: compare loosely).
    c, k = FER_CLASSES.index("happy"), 2
    happy = next(i for i in items if i.id == f"fer2013/train/happy/Training_{9 - k}{c}.jpg")
    assert happy.image is not None
    assert np.abs(happy.image.astype(int) - face_pixels(100 * c + k)).mean() < 40


def test_fer_limit_per_class_takes_the_first_sorted_files(fer_root: Path) -> None:
    items = load_split("fer2013", fer_root, "train", limit_per_class=2)
    assert len(items) == 7 * 2
    assert [i.id for i in items if i.source_label == "sad"] == [
        "fer2013/train/sad/Training_75.jpg",
        "fer2013/train/sad/Training_85.jpg",
    ]


def test_fer_unknown_class_folder_names_the_known_ones(fer_root: Path) -> None:
    (fer_root / "train" / "contempt").mkdir()
    with pytest.raises(DatasetError, match=r"'contempt'; the known ones are angry, disgust, fear"):
        load_split("fer2013", fer_root, "train")


def test_fer_unreadable_image_is_an_error_naming_the_file(fer_root: Path) -> None:
    (fer_root / "train" / "fear" / "Training_00.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=r"fear/Training_00\.jpg: not a readable image"):
        load_split("fer2013", fer_root, "train")


def test_fer_empty_split_says_it_is_empty(tmp_path: Path) -> None:
    (tmp_path / "fer" / "val" / "happy").mkdir(parents=True)
    with pytest.raises(DatasetError, match="the val split in .* is empty"):
        load_split("fer2013", tmp_path / "fer", "val")


# --- MELD -----------------------------------------------------------------------------------


def test_meld_reads_rows_in_csv_order_with_labels_and_sentiment(meld_root: Path) -> None:
    items = load_split("meld", meld_root, "train")
    assert [i.id for i in items[:5]] == [
        "meld/train/dia0_utt0", "meld/train/dia0_utt1", "meld/train/dia0_utt2",
        "meld/train/dia0_utt3", "meld/train/dia1_utt0",
    ]  # fmt: skip
    assert [i.source_label for i in items] == [emo for _, emo, _, _ in MELD_TRAIN]
    assert [i.sentiment for i in items] == [0, None, 1, 0, 0, 0, 0, 1]
    for item in items:
        assert item.kind == "meld" and item.image is None and item.audio is None
        np.testing.assert_array_equal(item.emotion, map_emotion(item.source_label))


def test_meld_text_is_clean_utf8_with_ascii_quotes(meld_root: Path) -> None:
    """C1 "\\x92", mojibake "â€™", curly quotes, a quoted comma and newline, doubled spaces."""
    items = load_split("meld", meld_root, "train")
    assert [i.text for i in items] == [clean for *_, clean in MELD_TRAIN]


def test_meld_dev_file_is_the_val_split_even_in_windows_1252(meld_root: Path) -> None:
    (item,) = load_split("meld", meld_root, "val")
    assert item.id == "meld/val/dia0_utt0" and item.text == "I don't know"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("it\u0092s", "it's"),
        ("it\u00e2\u20ac\u2122s", "it's"),  # UTF-8 bytes of "’" read as cp1252
        ("it\u00e2\x80\x99s", "it's"),  # ... and read as latin-1
        ("caf\u00c3\u00a9", "caf\u00e9"),
        ("caf\u00e9\u2019s", "caf\u00e9's"),  # genuine é next to a quote stays
        ("Wait\u2014what\u2026", "Wait\u2014what\u2026"),
        ("\u00a0 so \t  what  ", "so what"),
    ],
)
def test_mis_decoded_characters_are_repaired(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


def test_meld_limit_per_class_keeps_the_first_rows_of_each_emotion(meld_root: Path) -> None:
    items = load_split("meld", meld_root, "train", limit_per_class=1)
    assert Counter(i.source_label for i in items) == dict.fromkeys(MELD_EMOTIONS, 1)
    assert next(i.text for i in items if i.source_label == "joy") == '"All right," he said\u2026'


def test_meld_missing_csv_names_the_expected_file(meld_root: Path) -> None:
    with pytest.raises(DatasetError, match=r"no test split .*test_sent_emo\.csv"):
        load_split("meld", meld_root, "test")


def test_meld_missing_column_names_it_and_the_official_header(tmp_path: Path) -> None:
    (tmp_path / "train_sent_emo.csv").write_text("Utterance,Emotion\nhi,joy\n")
    with pytest.raises(DatasetError, match=r"missing column\(s\) Sentiment, .*header is Sr No\."):
        load_split("meld", tmp_path, "train")


def test_meld_unknown_emotion_names_file_and_line(tmp_path: Path) -> None:
    rows = [MELD_HEADER, meld_row(1, "ok", "joy", "positive", 0, 0)]
    rows.append(meld_row(2, "hm", "contempt", "negative", 0, 1))
    (tmp_path / "train_sent_emo.csv").write_text("\n".join(rows))
    with pytest.raises(DatasetError, match=r"train_sent_emo\.csv, line 3: .*'contempt'"):
        load_split("meld", tmp_path, "train")


def test_meld_repeated_utterance_id_is_an_error(tmp_path: Path) -> None:
    rows = [MELD_HEADER, meld_row(1, "ok", "joy", "positive", 3, 1)]
    rows.append(meld_row(2, "ok again", "joy", "positive", 3, 1))
    (tmp_path / "train_sent_emo.csv").write_text("\n".join(rows))
    with pytest.raises(DatasetError, match=r"line 3: a second row for meld/train/dia3_utt1"):
        load_split("meld", tmp_path, "train")


def test_meld_csv_without_rows_is_an_empty_split(tmp_path: Path) -> None:
    (tmp_path / "dev_sent_emo.csv").write_text(MELD_HEADER + "\n")
    with pytest.raises(DatasetError, match="val split .* is empty"):
        load_split("meld", tmp_path, "val")


# --- RAVDESS --------------------------------------------------------------------------------


def test_ravdess_reads_speech_and_skips_song_and_malformed_names(
    ravdess_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="merclip.data.emotion_sets"):
        items = load_split("ravdess", ravdess_root, "train")
    assert len(items) == 8 + 1 + 1
    assert items[0].id == "ravdess/Actor_01/03-01-01-01-01-01-01"
    assert [i.id for i in items] == sorted(i.id for i in items)
    one_each_and_a_second_happy_and_angry = Counter([*RAVDESS_CODES.values(), "happy", "angry"])
    assert Counter(i.source_label for i in items) == one_each_and_a_second_happy_and_angry
    (warning,) = caplog.messages
    assert "skipped 3 file(s)" in warning
    assert "2 malformed name (e.g. 03-01-03-01-01-02.flac)" in warning
    assert "1 not audio-only speech (e.g. 03-02-03-01-01-01-02.flac)" in warning
    for item in items:
        assert item.kind == "ravdess" and item.sentiment is None and item.image is None
        assert item.audio is not None and item.audio.dtype == np.float32 and item.audio.ndim == 1
        np.testing.assert_array_equal(item.emotion, map_emotion(item.source_label))
    flac = items[0].audio
    assert flac is not None and flac.size == 4000  # 0.25 s at 16 kHz, sample-exact
    assert abs(np.abs(flac).max() - 0.5) < 0.01


def test_48khz_stereo_wav_becomes_16khz_mono_at_the_same_loudness(ravdess_root: Path) -> None:
    (item,) = [i for i in load_split("ravdess", ravdess_root, "train") if i.id.endswith("-02")]
    audio = item.audio
    assert item.source_label == "angry" and audio is not None
    assert audio.size == 8000  # 0.5 s at 16 kHz, the resampler's tail included
    # L = R at 0.9: averaged, not summed at 0.707 each (which would give 1.27, clipped to 1).
    assert 0.87 < np.abs(audio[1000:-1000]).max() < 0.93
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * 16000 / audio.size - 440) < 5


def test_ravdess_limit_per_class_reads_the_first_sorted_clip(ravdess_root: Path) -> None:
    items = load_split("ravdess", ravdess_root, "train", limit_per_class=1)
    assert len(items) == 8
    assert next(i.id for i in items if i.source_label == "happy").endswith("03-01-03-01-01-01-01")


def test_ravdess_actor_folders_without_splits_are_told_how_to_split(tmp_path: Path) -> None:
    write_flac(tmp_path / "Actor_01" / "03-01-01-01-01-01-01.flac")
    with pytest.raises(DatasetError, match=r"Actor_XX folders sit directly in it: move them"):
        load_split("ravdess", tmp_path, "train")


def test_ravdess_undecodable_file_is_an_error_naming_it(ravdess_root: Path) -> None:
    bad = ravdess_root / "val" / "Actor_17" / "03-01-05-01-01-01-17.wav"
    bad.write_bytes(b"RIFF but not really")
    with pytest.raises(DatasetError, match=r"03-01-05-01-01-01-17\.wav: cannot decode audio"):
        load_split("ravdess", ravdess_root, "val")


# --- the real data, when present ------------------------------------------------------------

CLASS_COUNT = {"fer2013": 7, "meld": 7, "ravdess": 8}


@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize("kind", KINDS)
def test_real_data_reads_two_items_of_every_class(kind: str, split: str) -> None:
    root = shared_data(kind)
    assert split in available_splits(kind, root)
    items = load_split(kind, root, split, limit_per_class=2)
    counts = Counter(i.source_label for i in items)
    assert len(counts) == CLASS_COUNT[kind] and set(counts.values()) == {2}
    assert len({i.id for i in items}) == len(items)
    for item in items:
        payload = {"fer2013": item.image, "meld": item.text, "ravdess": item.audio}[kind]
        assert payload is not None and len(payload) > 0
        assert (item.sentiment is not None) <= (kind == "meld")
    if kind == "fer2013":
        assert all(i.image is not None and i.image.shape == (48, 48) for i in items)
    if kind == "meld":
        assert all(i.text is not None and i.text.isprintable() for i in items)
        assert not any(ch in (i.text or "") for i in items for ch in "\u2018\u2019\u201c\u201d")
    if kind == "ravdess":
        assert all(i.audio is not None and 2.0 < i.audio.size / 16000 < 8.0 for i in items)

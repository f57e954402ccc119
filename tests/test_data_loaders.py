"""MMSA pickles and CMU-MOSEI label files, built by the test in the real layouts, then loaded."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from merclip.data.mmsa import load_mmsa
from merclip.data.mosei_labels import EMOTION_LABELS, clip_key, load_emotion_labels
from merclip.data.sources import load_data
from merclip.data.synthetic import SyntheticSpec, make_synthetic
from merclip.errors import DatasetError
from merclip.training.metrics import binarize_has0, binarize_non0

pytestmark = pytest.mark.unit

T = 8
IDS = ["vidA$_$0", "vidA$_$1", "vidB$_$0", "vidC$_$2"]
REG = np.array([-1.4, 0.0, 0.6, 2.2], dtype=np.float32)
# 7 SDK values per clip: sentiment, happy, sad, anger, surprise, disgust, fear
LABEL_ROWS = {
    ("vidA", 0): [-1.4, 0.0, 1.0, 0.33, 0.0, 0.0, 0.0],
    ("vidA", 1): [0.0, 0.66, 0.0, 0.0, 0.0, 0.0, 0.0],
    ("vidB", 0): [0.6, 1.3, 0.0, 0.0, 0.33, 0.0, 0.0],
    ("vidC", 2): [2.2, 2.0, 0.0, 0.0, 0.0, 0.0, 1.0],
}


def _split(rng: np.random.Generator, dims: dict[str, int]) -> dict[str, object]:
    n = len(IDS)
    text_len = np.array([5, 8, 3, 6])
    audio_len = np.array([4, 0, 8, 2])  # clip 1 has no audio
    vision_len = np.array([8, 3, 0, 1])  # clip 2 has no face
    text = np.zeros((n, T, dims["language"]), np.float32)
    audio = np.zeros((n, T, dims["audio"]), np.float32)
    vision = np.zeros((n, T, dims["visual"]), np.float32)
    mask = np.zeros((n, T), np.int64)
    for i in range(n):
        text[i, : text_len[i]] = rng.standard_normal((text_len[i], dims["language"]))
        audio[i, : audio_len[i]] = rng.standard_normal((audio_len[i], dims["audio"]))
        vision[i, : vision_len[i]] = rng.standard_normal((vision_len[i], dims["visual"]))
        mask[i, : text_len[i]] = 1
    audio[0, 1, 3] = -np.inf  # COVAREP ships -inf values
    text_bert = np.stack([mask * 101, mask, np.zeros_like(mask)], axis=1)  # (N, 3, T)
    return {
        "raw_text": np.array(["a", "b", "c", "d"]),
        "id": np.array(IDS),
        "text": text,
        "text_bert": text_bert,
        "audio": audio,
        "vision": vision,
        "audio_lengths": audio_len.tolist(),
        "vision_lengths": vision_len.tolist(),
        "regression_labels": REG,
        "classification_labels": (REG >= 0).astype(np.float32),
    }


@pytest.fixture
def mosei_pickle(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    dims = {"language": 768, "audio": 74, "visual": 35}
    data = {s: _split(rng, dims) for s in ("train", "valid", "test")}
    path = tmp_path / "aligned_50.pkl"
    path.write_bytes(pickle.dumps(data))
    return path


def test_mmsa_pickle_lengths_masks_and_values(mosei_pickle: Path) -> None:
    splits = load_mmsa(mosei_pickle, "mosei")
    assert set(splits) == {"train", "valid", "test"}
    s = splits["train"]
    assert [x.id for x in s] == IDS
    assert [x.language.shape for x in s] == [(5, 768), (8, 768), (3, 768), (6, 768)]
    assert s[1].audio is None and s[2].visual is None  # zero length = absent
    assert s[0].audio.shape == (4, 74) and s[3].visual.shape == (1, 35)
    assert np.isfinite(s[0].audio).all() and s[0].audio[1, 3] == 0.0
    with open(mosei_pickle, "rb") as f:
        raw = pickle.load(f)
    np.testing.assert_array_equal(s[3].language, raw["train"]["text"][3, :6])
    assert [x.regression for x in s] == pytest.approx(REG.tolist())
    assert [x.sentiment for x in s] == [0, 1, 1, 1]  # has-0 training classes
    assert all(x.emotion is None for x in s)


def test_mmsa_sentiment_binarised_both_ways(mosei_pickle: Path) -> None:
    reg = np.array([x.regression for x in load_mmsa(mosei_pickle, "mosei")["test"]])
    assert binarize_has0(reg).tolist() == [0, 1, 1, 1]
    labels, keep = binarize_non0(reg)
    assert keep.tolist() == [True, False, True, True]  # the 0.0 clip is dropped
    assert labels[keep].tolist() == [0, 1, 1]


def test_mmsa_without_lengths_strips_trailing_zero_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    split = _split(rng, {"language": 768, "audio": 5, "visual": 20})
    for key in ("audio_lengths", "vision_lengths", "text_bert"):
        del split[key]
    path = tmp_path / "mosi.pkl"
    path.write_bytes(pickle.dumps({s: split for s in ("train", "valid", "test")}))
    s = load_mmsa(path, "mosi")["valid"]
    assert [x.language.shape[0] for x in s] == [5, 8, 3, 6]
    assert s[1].audio is None and s[2].visual is None


def test_mmsa_wrong_width_is_a_clear_error(mosei_pickle: Path) -> None:
    with pytest.raises(DatasetError, match="expected \\(N, T, 5\\)"):
        load_mmsa(mosei_pickle, "mosi")


def _write_csd(path: Path, entries: dict[str, np.ndarray]) -> None:
    """The CMU-MultimodalSDK computational-sequence layout (write_CSD)."""
    with h5py.File(path, "w") as f:
        root = f.create_group("All Labels")
        data = root.create_group("data")
        for key, rows in entries.items():
            g = data.create_group(key)
            g.create_dataset("features", data=np.asarray(rows, np.float32))
            g.create_dataset("intervals", data=np.zeros((len(rows), 2)))
        meta = root.create_group("metadata")
        meta.create_dataset("root name", (1,), dtype=h5py.special_dtype(vlen=str))
        meta["root name"][0] = json.dumps("All Labels")


def _label_file(tmp_path: Path, form: str) -> Path:
    if form == "csd-aligned":
        path = tmp_path / "labels_aligned.csd"
        _write_csd(path, {f"{v}[{k}]": [row] for (v, k), row in LABEL_ROWS.items()})
    elif form == "csd-shipped":
        # one row per segment in order; vidC has segments 0..2, only [2] is used
        path = tmp_path / "CMU_MOSEI_Labels.csd"
        rows = {
            "vidA": [LABEL_ROWS[("vidA", 0)], LABEL_ROWS[("vidA", 1)]],
            "vidB": [LABEL_ROWS[("vidB", 0)]],
            "vidC": [[0.0] * 7, [1.0] * 7, LABEL_ROWS[("vidC", 2)]],
        }
        _write_csd(path, rows)
    elif form == "json":
        path = tmp_path / "labels.json"
        path.write_text(json.dumps({f"{v}[{k}]": row for (v, k), row in LABEL_ROWS.items()}))
    else:
        path = tmp_path / "labels.pkl"
        path.write_bytes(
            pickle.dumps({f"{v}$_${k}": np.array(row) for (v, k), row in LABEL_ROWS.items()})
        )
    return path


@pytest.mark.parametrize("form", ["csd-aligned", "csd-shipped", "json", "pkl"])
def test_mosei_emotion_labels_joined_by_clip_id(
    tmp_path: Path, mosei_pickle: Path, form: str
) -> None:
    labels = _label_file(tmp_path, form)
    table = load_emotion_labels(labels)
    assert table[("vidA", 0)].tolist() == pytest.approx(LABEL_ROWS[("vidA", 0)])
    s = load_mmsa(mosei_pickle, "mosei", emotion_labels=labels)["train"]
    assert list(EMOTION_LABELS) == ["happy", "sad", "anger", "surprise", "disgust", "fear"]
    # present = intensity > 0
    assert s[0].emotion.tolist() == [0, 1, 1, 0, 0, 0]
    assert s[1].emotion.tolist() == [1, 0, 0, 0, 0, 0]
    assert s[2].emotion.tolist() == [1, 0, 0, 1, 0, 0]
    assert s[3].emotion.tolist() == [1, 0, 0, 0, 0, 1]


def test_missing_labels_error_or_skip(tmp_path: Path, mosei_pickle: Path) -> None:
    path = tmp_path / "partial.json"
    rows = {f"{v}[{k}]": r for (v, k), r in LABEL_ROWS.items() if v != "vidB"}
    path.write_text(json.dumps(rows))
    with pytest.raises(DatasetError, match="1 of 4 clips have no emotion labels.*vidB"):
        load_mmsa(mosei_pickle, "mosei", emotion_labels=path)
    kept = load_mmsa(mosei_pickle, "mosei", emotion_labels=path, missing_labels="skip")
    assert [x.id for x in kept["train"]] == ["vidA$_$0", "vidA$_$1", "vidC$_$2"]


def test_clip_key_forms() -> None:
    assert clip_key("abc[3]") == ("abc", 3)
    assert clip_key("-3g5y$_$12") == ("-3g5y", 12)
    with pytest.raises(DatasetError):
        clip_key("no-clip-index")


def test_load_data_specs(mosei_pickle: Path) -> None:
    src = load_data(f"mosei:{mosei_pickle}", {"language": 1, "visual": 1, "audio": 1})
    assert src.feature_space == "benchmark"
    assert src.dims == {"language": 768, "visual": 35, "audio": 74}
    with pytest.raises(DatasetError, match="unknown kind"):
        load_data("imagenet:/x", src.dims)
    with pytest.raises(DatasetError, match="not found"):
        load_data("mosi:/nonexistent.pkl", src.dims)


def test_synthetic_is_deterministic_and_has_signal_in_every_modality() -> None:
    dims = {"language": 16, "visual": 12, "audio": 8}
    spec = SyntheticSpec(n_train=400, n_valid=4, n_test=4)
    a = make_synthetic(dims, spec, seed=3)["train"]
    b = make_synthetic(dims, spec, seed=3)["train"]
    assert all(
        (x.language is None and y.language is None) or np.array_equal(x.language, y.language)
        for x, y in zip(a, b, strict=True)
    )
    assert any(x.visual is None for x in a) and all(
        any(getattr(x, m) is not None for m in ("language", "visual", "audio")) for x in a
    )
    y = np.stack([x.emotion for x in a])
    for m in ("language", "visual", "audio"):
        # the mean feature of samples with "happy" differs from those without, per modality
        rows = [
            (getattr(x, m).mean(0), lab)
            for x, lab in zip(a, y[:, 0], strict=True)
            if getattr(x, m) is not None
        ]
        has = np.mean([r for r, lab in rows if lab], axis=0)
        no = np.mean([r for r, lab in rows if not lab], axis=0)
        gap = np.linalg.norm(has - no)
        assert gap > 2.0, (m, gap)

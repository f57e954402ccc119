"""Live-space dataset format: write, load back, same arrays; absent stays absent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from merclip.data.live_dataset import LiveDatasetWriter, load_live_dataset
from merclip.errors import DatasetError

pytestmark = pytest.mark.unit

DIMS = {"language": 16, "visual": 16, "audio": 8}


def _rows(rng: np.random.Generator, t: int, d: int) -> np.ndarray:
    return rng.standard_normal((t, d)).astype(np.float32)


def test_round_trip_with_shards_and_absent_modalities(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    written = []
    with LiveDatasetWriter(tmp_path / "ds", "merclip-tiny-clip", "", DIMS, shard_size=3) as w:
        for i in range(7):
            split = "train" if i < 5 else "test"
            lang = _rows(rng, 4 + i, 16) if i != 2 else None  # no transcript
            vis = _rows(rng, i % 3, 16)  # i % 3 == 0: zero faces = absent
            aud = _rows(rng, 10, 8) if i != 4 else None
            emo = (rng.random(6) > 0.5).astype(np.float32) if i != 1 else None
            sent = i % 2 if i != 3 else None
            reg = float(i) - 3.0 if i != 5 else None
            w.add(f"clip{i}", split, lang, vis, aud, f"text {i}", emo, sent, reg)
            written.append((split, lang, vis if vis.shape[0] else None, aud, emo, sent, reg))
    meta = json.loads((tmp_path / "ds" / "meta.json").read_text())
    assert meta["feature_space"] == "live" and meta["dims"] == DIMS
    assert meta["counts"] == {"train": 5, "test": 2}
    assert meta["shards"]["train"] == ["train-00000.npz", "train-00001.npz"]
    assert meta["labels"]["emotion"][0] == "happy"

    ds = load_live_dataset(tmp_path / "ds")
    loaded = ds.splits["train"] + ds.splits["test"]
    assert [s.id for s in loaded] == [f"clip{i}" for i in range(7)]
    assert ds.transcripts["test"] == ["text 5", "text 6"]
    for s, (_split, lang, vis, aud, emo, sent, reg) in zip(loaded, written, strict=True):
        for got, want in ((s.language, lang), (s.visual, vis), (s.audio, aud)):
            if want is None:
                assert got is None
            else:
                np.testing.assert_array_equal(got, want)
        assert (s.emotion is None) == (emo is None)
        if emo is not None:
            np.testing.assert_array_equal(s.emotion, emo)
        assert s.sentiment == sent
        assert s.regression == (pytest.approx(reg) if reg is not None else None)


def test_writer_rejects_bad_input(tmp_path: Path) -> None:
    w = LiveDatasetWriter(tmp_path / "ds", "m", "", DIMS)
    with pytest.raises(DatasetError, match="expected \\(T, 16\\)"):
        w.add("a", "train", np.zeros((3, 15)), None, None, "")
    with pytest.raises(DatasetError, match="emotion has 2 values"):
        w.add("a", "train", None, None, None, "", emotion=[1, 0])
    w.add("a", "train", None, None, None, "")
    with pytest.raises(DatasetError, match="duplicate"):
        w.add("a", "train", None, None, None, "")
    w.close()
    with pytest.raises(DatasetError, match="not empty"):
        LiveDatasetWriter(tmp_path / "ds", "m", "", DIMS)


def test_interrupted_write_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with LiveDatasetWriter(tmp_path / "ds", "m", "", DIMS, shard_size=1) as w:
            w.add("a", "train", np.ones((2, 16)), None, None, "x")
            raise RuntimeError("extraction crashed")
    assert list((tmp_path / "ds").glob("*.npz"))  # a shard was written
    with pytest.raises(DatasetError, match="no meta.json"):
        load_live_dataset(tmp_path / "ds")

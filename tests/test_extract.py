"""`merclip extract` on generated videos writes a live dataset that load_live_dataset reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from media import SPEECH_TEXT, face_video

from merclip.data.live_dataset import load_live_dataset
from merclip.errors import DatasetError
from workers.app.cli import main
from workers.app.settings import Settings
from workers.extract import read_labels

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    media = tmp_path_factory.mktemp("extract-media")
    root = tmp_path_factory.mktemp("videos")
    (root / "sub").mkdir()
    shutil.copy(face_video(media, SPEECH_TEXT, 4.5), root / "talking.mp4")
    shutil.copy(face_video(media, "", 2.5, face=False), root / "sub" / "quiet.mp4")
    return root


@pytest.fixture
def tiny_clip_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """`merclip extract` on the test-size CLIP's live feature space."""
    monkeypatch.setenv("MERCLIP_CLIP_MODEL", "merclip-tiny-clip")
    monkeypatch.setenv("MERCLIP_FEATURES_SPACE", "live")


def test_extract_writes_a_loadable_live_dataset(
    video_dir: Path, tmp_path: Path, tiny_clip_env: None
) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "id,split,happy,sad,anger,surprise,disgust,fear,sentiment\n"
        "talking,train,2.5,0,0,0.3,0,0,1.6\n"
        "quiet,valid,0,1,0,0,0,1,negative\n"
        "not-a-video,train,0,0,0,0,0,0,0\n",
        encoding="utf-8",
    )
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"test": ["sub/quiet"]}), encoding="utf-8")
    out = tmp_path / "ds"
    rc = main(
        [
            "extract",
            str(video_dir),
            "--out",
            str(out),
            "--labels",
            str(labels),
            "--split-file",
            str(splits),
        ]
    )
    assert rc == 0
    ds = load_live_dataset(out)
    assert ds.meta["clip_model"] == "merclip-tiny-clip" and ds.meta["feature_space"] == "live"
    assert ds.meta["dims"] == {"language": 64, "visual": 64, "audio": 64}
    assert set(ds.splits) == {"train", "test"}  # the split file beats the CSV's "valid"

    (talking,) = ds.splits["train"]
    assert talking.id == "talking"
    assert "hello" in ds.transcripts["train"][0].lower()
    assert talking.language is not None and talking.language.shape[1] == 64
    # 4.5 s clip at the default 1 fps → 5 sampled frames, capped at max_faces_per_window (4).
    assert Settings().ingest.video_fps == 1.0
    cap = Settings().ingest.max_faces_per_window
    assert talking.visual is not None and talking.visual.shape == (cap, 64)
    assert talking.audio is not None and talking.audio.shape == (44, 64)
    assert talking.emotion is not None and talking.emotion.tolist() == [1, 0, 0, 1, 0, 0]
    assert talking.sentiment == 1 and talking.regression == pytest.approx(1.6)

    (quiet,) = ds.splits["test"]
    assert quiet.id == "sub/quiet"
    assert ds.transcripts["test"] == [""]
    assert quiet.language is None and quiet.visual is None and quiet.audio is None
    assert quiet.emotion is not None and quiet.emotion.tolist() == [0, 1, 0, 0, 0, 1]
    assert quiet.sentiment == 0 and quiet.regression is None


def test_a_broken_file_is_skipped_and_reported(
    video_dir: Path, tmp_path: Path, tiny_clip_env: None
) -> None:
    root = tmp_path / "in"
    root.mkdir()
    shutil.copy(video_dir / "sub" / "quiet.mp4", root / "ok.mp4")
    (root / "broken.mp4").write_bytes(b"\x00not a video" * 100)
    out = tmp_path / "ds"
    assert main(["extract", str(root), "--out", str(out), "--default-split", "test"]) == 1
    ds = load_live_dataset(out)
    assert [s.id for s in ds.splits["test"]] == ["ok"]
    assert ds.splits["test"][0].emotion is None  # no labels given
    # An existing dataset is not overwritten by accident.
    assert main(["extract", str(root), "--out", str(out)]) == 2


def test_label_csv_errors_name_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,happy,sad\nclip,1,0\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="missing"):
        read_labels(bad, ["clip"])
    bad.write_text("id,sentiment\nclip,7\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"bad\.csv:2"):
        read_labels(bad, ["clip"])
    ok = tmp_path / "ok.csv"
    ok.write_text("id,sentiment\nclip,-0.4\nother,\n", encoding="utf-8")
    got = read_labels(ok, ["a/clip", "other"])  # a unique stem matches a nested video
    assert got["a/clip"].sentiment == 0 and got["a/clip"].regression == pytest.approx(-0.4)
    assert got["other"].sentiment is None and got["other"].emotion is None

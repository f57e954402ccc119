"""MER-CLIP trained on FER2013 + MELD + RAVDESS layouts (tiny copies written here), through the
live-pretrained encoders: each sample carries only its dataset's modality, both tasks train, the
checkpoint serves, and `evaluate` writes the report keys users rely on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from emotion_data import write_fer, write_meld, write_ravdess
from training_helpers import quick_options

from merclip.checkpoint import load_checkpoint
from merclip.data.sources import load_sources
from merclip.predictor import LIVE_PRETRAINED_DIMS
from merclip.training.evaluate import evaluate_checkpoint
from merclip.training.train import train

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setenv("MERCLIP_FEATURE_CACHE", str(tmp_path / "cache"))
    write_fer(tmp_path / "fer", {"train": 3, "val": 1})
    write_meld(tmp_path / "meld")
    write_ravdess(tmp_path / "ravdess")
    return {"fer2013": tmp_path / "fer", "meld": tmp_path / "meld", "ravdess": tmp_path / "ravdess"}


def _specs(roots: dict[str, Path]) -> tuple[str, ...]:
    return tuple(f"{kind}:{root}" for kind, root in roots.items())


def test_each_sample_carries_only_the_modality_its_dataset_has(roots: dict[str, Path]) -> None:
    source = load_sources(_specs(roots), LIVE_PRETRAINED_DIMS)
    assert source.feature_space == "live-pretrained"
    assert set(source.splits) == {"train", "val"}  # MELD's dev is "val"
    present = {}
    for s in source.splits["train"]:
        kind = s.id.split("/")[0]
        has = tuple(m for m in ("language", "visual", "audio") if getattr(s, m) is not None)
        present.setdefault(kind, set()).add(has)
    assert present["fer2013"] == {("visual",)}
    assert present["meld"] == {("language",)}
    # RAVDESS: the voice plus the words of its fixed statement
    assert present["ravdess"] == {("language", "audio")}
    face = next(s for s in source.splits["train"] if s.id.startswith("fer2013/"))
    assert face.visual.shape == (1, LIVE_PRETRAINED_DIMS["visual"])
    words = next(s for s in source.splits["train"] if s.id.startswith("meld/"))
    assert words.language.shape[1] == LIVE_PRETRAINED_DIMS["language"]
    # sentiment only where MELD gives positive/negative
    assert all(s.sentiment is None for s in source.splits["train"] if not s.id.startswith("meld/"))
    assert {s.sentiment for s in source.splits["train"] if s.id.startswith("meld/")} == {0, 1, None}


def test_features_are_cached_and_reused(roots: dict[str, Path], tmp_path: Path) -> None:
    first = load_sources(f"meld:{roots['meld']}", LIVE_PRETRAINED_DIMS)
    assert list((tmp_path / "cache").iterdir())
    again = load_sources(f"meld:{roots['meld']}", LIVE_PRETRAINED_DIMS)
    a, b = first.splits["train"][0], again.splits["train"][0]
    np.testing.assert_allclose(a.language, b.language, atol=1e-6)
    assert a.id == b.id and a.sentiment == b.sentiment


def test_training_on_all_three_serves_both_tasks_and_evaluates(
    roots: dict[str, Path], tmp_path: Path
) -> None:
    result = train(
        quick_options(
            tmp_path / "run",
            data=_specs(roots),
            model="merclip-minilm-live",
            epochs=2,
            batch_size=8,
            min_share=0.5,
            compose=0.5,
        )
    )
    model = load_checkpoint(result.best_checkpoint)
    assert model.tasks == ("emotion", "sentiment")
    assert model.config.feature_space == "live-pretrained"
    assert model.extra["trained_on"] == "FER2013 faces + MELD utterances + RAVDESS speech"
    # the frozen MiniLM tower comes from its package, not from the checkpoint
    assert result.best_checkpoint.stat().st_size < 30e6
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history["epochs"]) == 2
    # The best epoch is chosen on every dataset's own val figures, averaged: 3.6k FER2013 faces
    # would otherwise outvote 240 RAVDESS clips.
    for epoch in history["epochs"]:
        by_dataset = epoch["valid_by_dataset"]
        assert set(by_dataset) == {"fer2013", "meld", "ravdess"}
        assert set(by_dataset["fer2013"]) == set(by_dataset["ravdess"]) == {"emotion"}
        figures = [m["f1"] for d in by_dataset.values() for m in d.values()]
        assert epoch["score"] == pytest.approx(sum(figures) / len(figures))
    assert model.config.emotion_norm == "pattern" and model.config.summary_rows

    out = tmp_path / "eval"
    report = evaluate_checkpoint(result.best_checkpoint, f"meld:{roots['meld']}", out, "train")
    emo = report["tasks"]["emotion"]["model"]
    assert {"micro_f1", "accuracy", "per_label"} <= set(emo)
    assert set(emo["per_label"]) == {"happy", "sad", "anger", "surprise", "disgust", "fear"}
    assert 0.0 <= emo["micro_f1"] <= 1.0 and emo["micro_f1"] == emo["f1"]
    sen = report["tasks"]["sentiment"]["model"]
    assert {"acc2", "f1"} <= set(sen)
    assert sen["n"] == 7  # the neutral utterance has no positive/negative label
    for task in ("emotion", "sentiment"):
        png = Path(report["plots"][f"confusion_{task}"])
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    confusion = emo["confusion"]
    assert confusion["names"][-1] == "neutral"
    assert sum(map(sum, confusion["matrix"])) == report["n"]
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["tasks"]["emotion"]["model"]["micro_f1"] == emo["micro_f1"]


def test_a_dataset_of_another_feature_space_cannot_join(roots: dict[str, Path]) -> None:
    from merclip.errors import DatasetError

    with pytest.raises(DatasetError, match="cannot be trained with"):
        load_sources((f"meld:{roots['meld']}", "synthetic"), LIVE_PRETRAINED_DIMS)

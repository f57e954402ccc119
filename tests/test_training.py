"""Training on real (tiny) MER-CLIP models, CPU only, on synthetic and fixture data."""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from training_helpers import quick_options

from merclip.checkpoint import load_checkpoint
from merclip.data.live_dataset import LiveDatasetWriter
from merclip.data.synthetic import SyntheticSpec, make_synthetic
from merclip.errors import ConfigError
from merclip.training.ablate import ablate
from merclip.training.train import (
    TrainOptions,
    add_arguments,
    options_from_args,
    selection_score,
    train,
)
from workers.app.cli import main
from workers.app.settings import Settings

pytestmark = pytest.mark.slow

# Small enough for ~10-15 s per task on 2 shared cores; one thread avoids oversubscription.
SMALL = SyntheticSpec(n_train=384, n_valid=64, n_test=128)
TINY = SyntheticSpec(n_train=64, n_valid=32, n_test=32)
MARGIN = 0.15


def _opts(tmp_path: Path, task: str, **kw: object) -> TrainOptions:
    base = dict(out_dir=tmp_path / task, tasks=(task,), epochs=10, batch_size=64, lr=2e-3)
    fields: dict[str, Any] = {**base, "synthetic": SMALL, **kw}
    return quick_options(fields.pop("out_dir"), **fields)


@pytest.mark.slow
def test_emotion_training_beats_label_frequency_baseline(tmp_path: Path) -> None:
    result = train(_opts(tmp_path, "emotion"))
    model, base = result.test["emotion"]["model"], result.test["emotion"]["baseline"]
    assert model["f1"] >= base["f1"] + MARGIN, (model["f1"], base["f1"])
    assert model["accuracy"] >= base["accuracy"] + MARGIN
    assert len(result.history["epochs"]) == 10
    assert (tmp_path / "emotion" / "best.pt").is_file()
    summary = json.loads((tmp_path / "emotion" / "summary.json").read_text())
    assert summary["test"]["emotion"]["model"]["f1"] == pytest.approx(model["f1"])


@pytest.mark.slow
def test_sentiment_training_beats_majority_baseline(tmp_path: Path) -> None:
    result = train(_opts(tmp_path, "sentiment"))
    model, base = result.test["sentiment"]["model"], result.test["sentiment"]["baseline"]
    assert model["acc2"] >= base["acc2"] + MARGIN, (model["acc2"], base["acc2"])
    assert model["f1"] >= base["f1"] + MARGIN
    assert {"acc2_has0", "f1_non0", "acc7", "mae", "corr"} <= set(model)


def test_resume_continues_exactly(tmp_path: Path) -> None:
    full = train(_opts(tmp_path, "emotion", out_dir=tmp_path / "full", epochs=3, synthetic=TINY))
    train(
        _opts(
            tmp_path,
            "emotion",
            out_dir=tmp_path / "cut",
            epochs=3,
            synthetic=TINY,
            stop_after_epoch=2,
        )
    )
    assert len(json.loads((tmp_path / "cut" / "history.json").read_text())["epochs"]) == 2
    resumed = train(
        _opts(tmp_path, "emotion", out_dir=tmp_path / "cut", epochs=3, synthetic=TINY, resume=True)
    )
    assert [e["epoch"] for e in resumed.history["epochs"]] == [1, 2, 3]
    a = load_checkpoint(tmp_path / "full" / "last.pt").state_dict()
    b = load_checkpoint(tmp_path / "cut" / "last.pt").state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)
    with pytest.raises(ConfigError, match="another model config"):
        train(
            _opts(
                tmp_path,
                "emotion",
                out_dir=tmp_path / "cut",
                epochs=4,
                synthetic=TINY,
                resume=True,
                query_word="Mood",
            )
        )
    assert full.best_epoch >= 1


def test_cli_train_then_evaluate_writes_report_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    rc = main(
        [
            "train",
            "--data",
            "synthetic",
            "--model",
            "merclip-tiny-live",
            "--task",
            "both",
            "--epochs",
            "2",
            "--batch-size",
            "64",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--seed",
            "5",
            "--out",
            str(run),
        ]
    )
    assert rc == 0
    assert "best checkpoint" in capsys.readouterr().out
    rc = main(
        [
            "evaluate",
            "--checkpoint",
            str(run / "best.pt"),
            "--data",
            "synthetic",
            "--out",
            str(tmp_path / "eval"),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert set(report["tasks"]) == {"emotion", "sentiment"}
    # Same checkpoint, same (seeded) data: the report reproduces the training summary.
    for task in ("emotion", "sentiment"):
        assert report["tasks"][task]["model"]["f1"] == pytest.approx(
            summary["test"][task]["model"]["f1"]
        )
        assert "baseline" in report["tasks"][task]
    assert len(report["tasks"]["emotion"]["model"]["per_label"]) == 6
    for name in ("training_curves", "per_label_f1_emotion", "per_label_f1_sentiment"):
        png = Path(report["plots"][name])
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert png.stat().st_size > 5000


def test_ablate_query_two_words(tmp_path: Path) -> None:
    base = _opts(tmp_path, "emotion", out_dir=tmp_path / "abl", epochs=1, synthetic=TINY)
    table = ablate(base, ["Emotion", "none"])
    assert [r["word"] for r in table["rows"]] == ["Emotion", "none"]
    md = (tmp_path / "abl" / "ablation.md").read_text()
    assert "| Emotion |" in md and "| (no word) |" in md and "| Acc | P | R | F1 |" in md
    saved = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert saved["rows"][1]["metrics"]["f1"] == pytest.approx(table["rows"][1]["metrics"]["f1"])
    words = [
        load_checkpoint(tmp_path / "abl" / w / "best.pt").config.emotion_query_word
        for w in ("Emotion", "none")
    ]
    assert words == ["Emotion", ""]


def test_train_on_live_dataset_and_feature_space_check(tmp_path: Path) -> None:
    dims = {"language": 64, "visual": 64, "audio": 64}
    splits = make_synthetic(dims, TINY, seed=1)
    with LiveDatasetWriter(tmp_path / "live", "merclip-tiny-clip", "", dims) as w:
        for split, samples in splits.items():
            for s in samples:
                w.add(
                    s.id,
                    split,
                    s.language,
                    s.visual,
                    s.audio,
                    "",
                    s.emotion,
                    s.sentiment,
                    s.regression,
                )
    result = train(_opts(tmp_path, "sentiment", data=f"live:{tmp_path / 'live'}", epochs=1))
    assert result.test["sentiment"]["model"]["n"] == TINY.n_test
    with pytest.raises(ConfigError, match="feature space"):
        train(
            _opts(
                tmp_path,
                "sentiment",
                data=f"live:{tmp_path / 'live'}",
                model="merclip-tiny-bench",
                epochs=1,
            )
        )


def test_train_on_mmsa_pickle_with_mosei_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data, labels = {}, {}
    for split, n in (("train", 24), ("valid", 8), ("test", 8)):
        ids = [f"vid{split}{i // 3}$_${i % 3}" for i in range(n)]
        data[split] = {
            "id": np.array(ids),
            "raw_text": np.array(["x"] * n),
            "text": rng.standard_normal((n, 6, 768)).astype(np.float32),
            "audio": rng.standard_normal((n, 6, 74)).astype(np.float32),
            "vision": rng.standard_normal((n, 6, 35)).astype(np.float32),
            "audio_lengths": [6] * n,
            "vision_lengths": [4] * n,
            "regression_labels": rng.uniform(-3, 3, n).astype(np.float32),
        }
        for i in ids:
            v, k = i.split("$_$")
            labels[f"{v}[{k}]"] = [0.0, *(rng.random(6) > 0.6).astype(float)]
    (tmp_path / "aligned_50.pkl").write_bytes(pickle.dumps(data))
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    result = train(
        _opts(
            tmp_path,
            "emotion",
            data=f"mosei:{tmp_path / 'aligned_50.pkl'}",
            emotion_labels=tmp_path / "labels.json",
            model="merclip-tiny-bench",
            epochs=1,
            batch_size=8,
        )
    )
    assert result.test["emotion"]["model"]["n"] == 8


def test_selection_weighs_each_dataset_alike_not_each_sample() -> None:
    pooled = {"emotion": {"f1": 0.60}}  # dominated by the big dataset
    by_dataset = {
        "fer2013": {"emotion": {"f1": 0.62}},
        "meld": {"emotion": {"f1": 0.40}, "sentiment": {"f1": 0.70}},
        "ravdess": {"emotion": {"f1": 0.30}},
    }
    assert selection_score(pooled) == pytest.approx(0.60)
    assert selection_score(pooled, by_dataset) == pytest.approx((0.62 + 0.40 + 0.70 + 0.30) / 4)


def test_every_given_flag_reaches_the_options_a_zero_included() -> None:
    """A flag given as 0 is that value, never the [train] default (no `flag or default`)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    settings = Settings().replace("train", seed=5, weight_decay=0.05)
    opts = options_from_args(parser.parse_args(["--weight-decay", "0", "--seed", "0"]), settings)
    assert (opts.weight_decay, opts.seed) == (0.0, 0)
    opts = options_from_args(parser.parse_args(["--epochs", "3", "--lr", "0.01"]), settings)
    assert (opts.epochs, opts.lr, opts.weight_decay, opts.seed) == (3, 0.01, 0.05, 5)
    defaults = options_from_args(parser.parse_args([]), Settings())
    t = Settings().train
    assert (defaults.epochs, defaults.batch_size, defaults.lr, defaults.weight_decay) == (
        t.epochs,
        t.batch_size,
        t.lr,
        t.weight_decay,
    )
    # Flags are checked like the file: a learning rate of 0 is refused, not replaced.
    with pytest.raises(ConfigError, match="train.lr must be > 0"):
        options_from_args(parser.parse_args(["--lr", "0"]), Settings())

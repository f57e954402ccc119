"""`merclip evaluate`: run a checkpoint over a dataset split, write a JSON report and PNG plots.

Report (`report.json`): checkpoint, data, split, per task the metrics of the model and of the
label-frequency baseline (fitted on the train split when there is one), and where the plots are.
Emotion (`tasks.emotion.model`): `micro_f1` (micro-averaged over the six emotions, multi-hot, the
empty set for neutral; `f1` is the same number), `accuracy` (per-sample Jaccard; an empty truth
and an empty prediction count as 1), `precision`, `recall`, `per_label` {label: f1, precision,
recall, support} and `confusion`. Sentiment (`tasks.sentiment.model`): `acc2` and weighted `f1`
(positive vs negative; samples without a positive/negative label, e.g. MELD's neutral, excluded).
Plots: per-label F1 bars and a confusion matrix for every task, and the training curves from the
run's `history.json` (next to the checkpoint, or `--history`) when there is one.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from merclip.batch import Sample, collate
from merclip.checkpoint import load_checkpoint, resolve_checkpoint
from merclip.data.sources import load_data
from merclip.devices import resolve_device
from merclip.errors import DatasetError
from merclip.model import MerClip
from merclip.settings import MerClipSettings
from merclip.training.metrics import (
    LabelFrequencyBaseline,
    emotion_confusion,
    emotion_metrics,
    sentiment_metrics,
)

__all__ = [
    "add_arguments",
    "baseline_metrics",
    "evaluate_checkpoint",
    "evaluate_model",
    "has_task_labels",
    "predict",
    "run",
]

log = logging.getLogger(__name__)


def has_task_labels(sample: Sample, task: str) -> bool:
    return (sample.emotion if task == "emotion" else sample.sentiment) is not None


@torch.no_grad()
def predict(
    model: MerClip,
    samples: Sequence[Sample],
    task: str,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """(probs (N, C), prediction (N, C)) of `model` in eval mode."""
    model.eval()
    probs, preds = [], []
    for i in range(0, len(samples), batch_size):
        batch = collate(samples[i : i + batch_size], model.dims).to(device)
        out = model(batch, task)
        probs.append(out.probs.float().cpu().numpy())
        preds.append(out.prediction.float().cpu().numpy())
    c = len(model.labels(task))
    if not probs:
        return np.zeros((0, c)), np.zeros((0, c))
    return np.concatenate(probs), np.concatenate(preds)


def task_metrics(
    task: str,
    samples: Sequence[Sample],
    probs: np.ndarray,
    pred: np.ndarray,
    labels: Sequence[str],
) -> dict[str, Any]:
    """Metrics of one task's outputs against the samples' labels (all must be labelled)."""
    if task == "emotion":
        y = np.stack([np.asarray(s.emotion) for s in samples])
        metrics = emotion_metrics(y, pred, labels)
        metrics["micro_f1"] = metrics["f1"]
        metrics["confusion"] = emotion_confusion(y, probs, pred, labels)
        return metrics
    cls = pred.argmax(axis=1)
    if all(s.regression is not None for s in samples):
        reg = np.array([s.regression for s in samples], dtype=np.float64)
        out: dict[str, Any] = sentiment_metrics(cls, regression=reg, probs=probs)
    else:
        out = sentiment_metrics(cls, labels=np.array([s.sentiment for s in samples]))
    # Per-class F1 (against the has-0 / given labels) for the same bar chart as emotions.
    y = np.array([s.sentiment for s in samples])
    onehot_t = np.eye(len(labels))[y]
    onehot_p = np.eye(len(labels))[cls]
    out["per_label"] = emotion_metrics(onehot_t, onehot_p, labels)["per_label"]
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(matrix, (y.astype(int), cls.astype(int)), 1)
    out["confusion"] = {"names": list(labels), "matrix": matrix.tolist(), "left_out": 0}
    return out


def evaluate_model(
    model: MerClip,
    samples: Sequence[Sample],
    task: str,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Metrics of `model` on the samples that carry labels for `task`."""
    labelled = [s for s in samples if has_task_labels(s, task)]
    if not labelled:
        raise DatasetError(f"no sample has {task} labels")
    probs, pred = predict(model, labelled, task, batch_size, device)
    return task_metrics(task, labelled, probs, pred, model.labels(task))


def baseline_metrics(
    train: Sequence[Sample], samples: Sequence[Sample], task: str, labels: Sequence[str]
) -> dict[str, Any]:
    """The label-frequency baseline (fitted on `train`) scored like the model."""
    base = LabelFrequencyBaseline.fit([s for s in train if has_task_labels(s, task)])
    labelled = [s for s in samples if has_task_labels(s, task)]
    n = len(labelled)
    if task == "emotion":
        pred = base.predict_emotion(n)
        probs = np.tile(base.emotion_frequency, (n, 1))
    else:
        cls = base.predict_sentiment(n)
        pred = np.eye(len(labels))[cls]
        probs = pred.astype(np.float64)
    return task_metrics(task, labelled, probs, pred, labels)


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str,
    out_dir: str | Path,
    split: str = "test",
    tasks: Sequence[str] | None = None,
    emotion_labels: str | Path | None = None,
    history: str | Path | None = None,
    batch_size: int = 64,
    device: str = "auto",
    seed: int | None = None,
    limit_per_class: int | None = None,
) -> dict[str, Any]:
    """Evaluate, write `report.json` and plots into `out_dir`, return the report."""
    from merclip.training.plots import plot_confusion, plot_per_label_f1, plot_training_curves

    dev = resolve_device(device, "--device / train.device")
    checkpoint = resolve_checkpoint(str(checkpoint))
    model = load_checkpoint(checkpoint, device=dev)
    if seed is None:  # synthetic data must be regenerated with the training seed
        seed = int(model.extra.get("seed", 0))
    source = load_data(data, model.dims, emotion_labels, seed=seed, limit_per_class=limit_per_class)
    if split == "val" and "val" not in source.splits and source.splits.get("dev"):
        split = "dev"
    if source.feature_space is not None and source.feature_space != model.config.feature_space:
        raise DatasetError(
            f"{data} is in the {source.feature_space!r} feature space, the checkpoint was "
            f"trained on {model.config.feature_space!r} features"
        )
    samples = source.split(split)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "data": data,
        "split": split,
        "n": len(samples),
        "model": model.config.name,
        "clip": {"name": model.clip_name, "pretrained": model.clip_pretrained},
        "query_words": {t: model.config.query_word(t) for t in model.tasks},
        "tasks": {},
        "plots": {},
    }
    for task in tasks or model.tasks:
        if not tasks and not any(has_task_labels(s, task) for s in samples):
            # e.g. sentiment on FER2013 faces: the data has no such labels (asked for, it fails)
            report["skipped"] = {**report.get("skipped", {}), task: f"no {task} labels in {data}"}
            continue
        metrics = evaluate_model(model, samples, task, batch_size, dev)
        entry: dict[str, Any] = {"model": metrics}
        if source.splits.get("train"):
            entry["baseline"] = baseline_metrics(
                source.splits["train"], samples, task, model.labels(task)
            )
        report["tasks"][task] = entry
        png = out / f"per_label_f1_{task}.png"
        plot_per_label_f1(metrics["per_label"], png, f"{task}: per-label F1 ({split})")
        report["plots"][f"per_label_f1_{task}"] = str(png)
        conf = metrics["confusion"]
        png = out / f"confusion_{task}.png"
        plot_confusion(conf["matrix"], conf["names"], png, f"{task}: confusion ({data}, {split})")
        report["plots"][f"confusion_{task}"] = str(png)
    hist_path = Path(history) if history else Path(checkpoint).with_name("history.json")
    if hist_path.is_file():
        png = out / "training_curves.png"
        plot_training_curves(json.loads(hist_path.read_text(encoding="utf-8")), png)
        report["plots"]["training_curves"] = str(png)
    else:
        log.warning("no training history at %s: training curves not plotted", hist_path)
    (out / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        default="bundled",
        help="checkpoint file (default: the shipped one, 'bundled')",
    )
    parser.add_argument(
        "--data",
        required=True,
        help="synthetic | mosi:PKL | mosei:PKL | live:DIR | fer2013:DIR | meld:DIR | ravdess:DIR",
    )
    parser.add_argument(
        "--limit-per-class",
        type=int,
        default=None,
        help="raw emotion datasets: first N items per class only (quick runs)",
    )
    parser.add_argument(
        "--emotion-labels",
        type=Path,
        default=None,
        help="CMU-MOSEI emotion labels (.csd, .pkl or .json) for mosei: data",
    )
    parser.add_argument("--split", default="test", help="split to evaluate (default test)")
    parser.add_argument(
        "--task",
        choices=("emotion", "sentiment"),
        default=None,
        help="default: every task of the checkpoint",
    )
    parser.add_argument(
        "--history",
        type=Path,
        default=None,
        help="training history.json (default: next to the checkpoint)",
    )
    parser.add_argument("--out", type=Path, required=True, help="report directory (JSON + plots)")
    parser.add_argument("--batch-size", type=int, default=64, help="windows per forward pass")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="synthetic data seed (default: the checkpoint's training seed)",
    )


def run(args: argparse.Namespace, settings: MerClipSettings) -> int:
    report = evaluate_checkpoint(
        args.checkpoint,
        args.data,
        args.out,
        split=args.split,
        tasks=[args.task] if args.task else None,
        emotion_labels=args.emotion_labels,
        history=args.history,
        batch_size=args.batch_size,
        device=args.device or settings.train.device,
        seed=args.seed,
        limit_per_class=args.limit_per_class,
    )
    for task, entry in report["tasks"].items():
        m = entry["model"]
        keys = (
            ("micro_f1", "accuracy", "precision", "recall")
            if task == "emotion"
            else ("acc2", "f1", "acc2_has0", "f1_has0", "acc7", "mae", "corr")
        )
        shown = ", ".join(f"{k}={m[k]:.4f}" for k in keys if k in m)
        print(f"{task} ({report['split']}, n={report['n']}): {shown}")
    print(f"report: {Path(args.out) / 'report.json'}")
    return 0

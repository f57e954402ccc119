"""Logistic-regression probes on the live-pretrained features, beside the MER-CLIP checkpoint, on
the val splits of ../shared/data (FER2013 val, MELD dev, RAVDESS val).

A probe is what a simple, honest pipeline reaches with the same features: one multinomial
logistic regression per dataset, fitted on that dataset's train split, over the classes "the six
MOSEI emotions + none" (neutral and RAVDESS's calm are "none"), on fixed-size summaries of the
features MER-CLIP reads:
- FER2013: the face's expression features (135: pooled last block + the 7 FER logits);
- MELD: the sentence embedding (the last language row, 384);
- RAVDESS: mean / std / max over the log-mel rows (192), as the data README's reference probe.
MELD also gets a positive-vs-negative sentiment probe on the sentence embedding. Both are scored
exactly like `merclip evaluate` scores the model (merclip/training/metrics.py); the difference of
the two micro-F1s comes with its paired bootstrap standard error (1,000 resamples of the val set).

    python benchmarks/probe.py [--data ../shared/data] [--checkpoint bundled] [--json OUT.json]

Features come from the on-disk cache (workers/features/datasets.py): the first run featurises.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from merclip.batch import Sample
from merclip.checkpoint import load_checkpoint, resolve_checkpoint
from merclip.data.mosei_labels import EMOTION_LABELS
from merclip.training.evaluate import evaluate_model, predict
from merclip.training.metrics import emotion_metrics, sentiment_metrics
from workers.features.datasets import load_featurized

SETS = (("fer2013", "val"), ("meld", "val"), ("ravdess", "val"))


def summary(kind: str, s: Sample) -> np.ndarray:
    """Fixed-size probe input of one sample."""
    if kind == "fer2013":
        return np.asarray(s.visual, np.float32).mean(axis=0)
    if kind == "meld":
        return np.asarray(s.language, np.float32)[-1]
    a = np.asarray(s.audio, np.float32)
    return np.concatenate([a.mean(axis=0), a.std(axis=0), a.max(axis=0)])


def usable(kind: str, s: Sample) -> bool:
    need = {"fer2013": s.visual, "meld": s.language, "ravdess": s.audio}[kind]
    return need is not None and len(need) > 0


def class_of(s: Sample) -> int:
    e = np.asarray(s.emotion)
    return int(e.argmax()) if e.sum() > 0 else len(EMOTION_LABELS)


def multi_hot(classes: np.ndarray) -> np.ndarray:
    out = np.zeros((len(classes), len(EMOTION_LABELS) + 1), np.float32)
    out[np.arange(len(classes)), classes] = 1.0
    return out[:, : len(EMOTION_LABELS)]  # the "none" class is the empty set


def fit(x: np.ndarray, y: np.ndarray) -> object:
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    return clf.fit(x, y)


def difference_se(
    truth: np.ndarray, model_pred: np.ndarray, probe_pred: np.ndarray, n: int = 1000
) -> float:
    """Bootstrap standard error of micro-F1(model) - micro-F1(probe), both on the same resamples
    of the val samples: how far apart the two must be before one is ahead."""
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(n):
        i = rng.integers(0, len(truth), len(truth))
        diffs.append(
            emotion_metrics(truth[i], model_pred[i])["f1"]  # type: ignore[operator]
            - emotion_metrics(truth[i], probe_pred[i])["f1"]
        )
    return float(np.std(diffs))


def probe(kind: str, train: list[Sample], val: list[Sample]) -> dict[str, object]:
    train = [s for s in train if usable(kind, s)]
    val = [s for s in val if usable(kind, s)]
    x_tr = np.stack([summary(kind, s) for s in train])
    x_va = np.stack([summary(kind, s) for s in val])
    clf = fit(x_tr, np.array([class_of(s) for s in train]))
    pred = clf.predict(x_va)  # type: ignore[attr-defined]
    truth = np.stack([np.asarray(s.emotion) for s in val])
    out: dict[str, object] = {"emotion": emotion_metrics(truth, multi_hot(pred), EMOTION_LABELS)}
    out["emotion_pred"] = multi_hot(pred)
    if kind == "meld":
        tr = [s for s in train if s.sentiment is not None]
        va = [s for s in val if s.sentiment is not None]
        sclf = fit(np.stack([summary(kind, s) for s in tr]), np.array([s.sentiment for s in tr]))
        spred = sclf.predict(np.stack([summary(kind, s) for s in va]))  # type: ignore[attr-defined]
        out["sentiment"] = sentiment_metrics(spred, labels=np.array([s.sentiment for s in va]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_data = Path(__file__).resolve().parents[2] / "shared" / "data"
    ap.add_argument("--data", type=Path, default=default_data)
    ap.add_argument("--checkpoint", default="bundled")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.data.is_dir():
        print(f"no data at {args.data}: pass --data DIR (see ../shared/data/README.md)")
        return 2
    model = load_checkpoint(resolve_checkpoint(args.checkpoint))
    rows, report = [], {}
    for kind, split in SETS:
        t = time.perf_counter()
        splits = load_featurized(kind, args.data / kind, ["train", split])
        val = [s for s in splits[split] if usable(kind, s)]
        p = probe(kind, splits["train"], val)
        m_emo = evaluate_model(model, val, "emotion")
        truth = np.stack([np.asarray(s.emotion) for s in val])
        model_pred = predict(model, val, "emotion")[1]
        se = difference_se(truth, model_pred, p.pop("emotion_pred"))  # type: ignore[arg-type]
        entry = {"n": len(val), "probe": p, "model": {"emotion": m_emo}}
        line = {
            "data": f"{kind} {split}",
            "n": len(val),
            "probe_micro_f1": p["emotion"]["f1"],  # type: ignore[index]
            "model_micro_f1": m_emo["f1"],
            "probe_accuracy": p["emotion"]["accuracy"],  # type: ignore[index]
            "model_accuracy": m_emo["accuracy"],
            "difference_se": se,
        }
        if kind == "meld":
            m_sen = evaluate_model(model, val, "sentiment")
            entry["model"]["sentiment"] = m_sen  # type: ignore[index]
            line["probe_acc2"] = p["sentiment"]["acc2"]  # type: ignore[index]
            line["model_acc2"] = m_sen["acc2"]
        line["seconds"] = round(time.perf_counter() - t, 1)
        rows.append(line)
        report[f"{kind}:{split}"] = entry
    print(f"checkpoint: {resolve_checkpoint(args.checkpoint)}")
    head = (
        "| data | n | micro-F1 probe / model | model - probe (bootstrap SE) "
        "| Jaccard acc probe / model | ACC2 probe / model |"
    )
    print(head)
    print("|---|---|---|---|---|---|")
    for r in rows:
        acc2 = f"{r['probe_acc2']:.3f} / {r['model_acc2']:.3f}" if "probe_acc2" in r else "–"
        print(
            f"| {r['data']} | {r['n']} | {r['probe_micro_f1']:.3f} / {r['model_micro_f1']:.3f} "
            f"| {r['model_micro_f1'] - r['probe_micro_f1']:+.3f} ({r['difference_se']:.3f}) "
            f"| {r['probe_accuracy']:.3f} / {r['model_accuracy']:.3f} | {acc2} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "detail": report}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

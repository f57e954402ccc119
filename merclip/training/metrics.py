"""Evaluation metrics of the paper's tables, plus the label-frequency baseline.

Emotion recognition (multi-label), as in the MER literature the paper follows:
- accuracy: mean per-sample Jaccard index |Y ∩ Ŷ| / |Y ∪ Ŷ|; a sample with no true and no
  predicted emotion counts as 1 (the prediction agrees exactly), so "no emotion" is not free
  of cost or reward beyond what it deserves.
- precision, recall, micro-F1: micro-averaged over all (sample, label) decisions.
- per-label F1, so a model that is "99 % neutral" cannot hide behind one number.

Sentiment analysis (binary, negative/positive):
- ACC2 and weighted F1 in both conventions: "has-0" (regression >= 0 is positive, every sample
  counts) and "non-0" (regression > 0 vs < 0, samples labelled exactly 0 are dropped).
- ACC7, MAE and Pearson r when regression labels exist. The classifier has no regression head, so
  its continuous estimate is (p(pos) - p(neg)) * 3, which lies in [-3, 3] like the labels. This is
  a documented stand-in, not the paper's regression output: treat ACC7/MAE as indicative only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from merclip.batch import Sample

__all__ = [
    "LabelFrequencyBaseline",
    "binarize_has0",
    "binarize_non0",
    "emotion_metrics",
    "regression_estimate",
    "sentiment_metrics",
    "weighted_f1",
]


def _f1(tp: float, fp: float, fn: float) -> float:
    denom = 2 * tp + fp + fn
    return float(2 * tp / denom) if denom > 0 else 0.0


def emotion_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str] | None = None
) -> dict[str, object]:
    """Multi-label metrics of multi-hot arrays (N, C). Returns accuracy/precision/recall/f1 and
    `per_label` {label: {f1, precision, recall, support}}."""
    t = np.asarray(y_true) > 0.5
    p = np.asarray(y_pred) > 0.5
    if t.shape != p.shape or t.ndim != 2:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} must both be (N, C)")
    n, c = t.shape
    labels = list(labels) if labels is not None else [str(i) for i in range(c)]
    inter = (t & p).sum(axis=1)
    union = (t | p).sum(axis=1)
    jaccard = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    tp = float((t & p).sum())
    fp = float((~t & p).sum())
    fn = float((t & ~p).sum())
    per_label: dict[str, dict[str, float]] = {}
    for j, name in enumerate(labels):
        tpj = float((t[:, j] & p[:, j]).sum())
        fpj = float((~t[:, j] & p[:, j]).sum())
        fnj = float((t[:, j] & ~p[:, j]).sum())
        per_label[name] = {
            "f1": _f1(tpj, fpj, fnj),
            "precision": tpj / (tpj + fpj) if tpj + fpj > 0 else 0.0,
            "recall": tpj / (tpj + fnj) if tpj + fnj > 0 else 0.0,
            "support": float(t[:, j].sum()),
        }
    return {
        "n": int(n),
        "accuracy": float(jaccard.mean()) if n else 0.0,
        "precision": tp / (tp + fp) if tp + fp > 0 else 0.0,
        "recall": tp / (tp + fn) if tp + fn > 0 else 0.0,
        "f1": _f1(tp, fp, fn),
        "per_label": per_label,
    }


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 per class, averaged with weights = class support (sklearn's average='weighted')."""
    y_true = np.asarray(y_true).astype(int)
    y_pred = np.asarray(y_pred).astype(int)
    if y_true.size == 0:
        return 0.0
    total = 0.0
    for cls in np.unique(y_true):
        tp = float(((y_true == cls) & (y_pred == cls)).sum())
        fp = float(((y_true != cls) & (y_pred == cls)).sum())
        fn = float(((y_true == cls) & (y_pred != cls)).sum())
        total += _f1(tp, fp, fn) * float((y_true == cls).sum())
    return total / y_true.size


def binarize_has0(regression: np.ndarray) -> np.ndarray:
    """Positive (1) when the score is >= 0, negative (0) otherwise; keeps every sample."""
    return (np.asarray(regression, dtype=np.float64) >= 0).astype(np.int64)


def binarize_non0(regression: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels, keep): positive when > 0, negative when < 0; `keep` is False where it is 0."""
    r = np.asarray(regression, dtype=np.float64)
    return (r > 0).astype(np.int64), r != 0


def regression_estimate(probs: np.ndarray) -> np.ndarray:
    """Continuous sentiment in [-3, 3] from 2-class probabilities (negative, positive)."""
    probs = np.asarray(probs, dtype=np.float64)
    return 3.0 * (probs[:, 1] - probs[:, 0])


def sentiment_metrics(
    pred: np.ndarray,
    labels: np.ndarray | None = None,
    regression: np.ndarray | None = None,
    probs: np.ndarray | None = None,
) -> dict[str, float]:
    """Sentiment metrics of predicted classes `pred` (N,) (0 negative, 1 positive).

    With `regression` (N,) the labels are derived from it both ways (has-0 and non-0) and, when
    `probs` (N, 2) are given too, ACC7/MAE/Pearson of `regression_estimate(probs)` are added.
    Without regression, `labels` (N,) are the truth and only acc2/f1 are reported.
    """
    pred = np.asarray(pred).astype(np.int64)
    out: dict[str, float] = {"n": float(pred.size)}
    if regression is None:
        if labels is None:
            raise ValueError("sentiment_metrics needs labels or regression")
        y = np.asarray(labels).astype(np.int64)
        out["acc2"] = float((y == pred).mean()) if y.size else 0.0
        out["f1"] = weighted_f1(y, pred)
        return out
    reg = np.asarray(regression, dtype=np.float64)
    y_has0 = binarize_has0(reg)
    out["acc2_has0"] = float((y_has0 == pred).mean()) if reg.size else 0.0
    out["f1_has0"] = weighted_f1(y_has0, pred)
    y_non0, keep = binarize_non0(reg)
    out["n_non0"] = float(keep.sum())
    out["acc2_non0"] = float((y_non0[keep] == pred[keep]).mean()) if keep.any() else 0.0
    out["f1_non0"] = weighted_f1(y_non0[keep], pred[keep])
    # Headline numbers follow the non-0 convention most papers report first.
    out["acc2"] = out["acc2_non0"]
    out["f1"] = out["f1_non0"]
    if probs is not None:
        est = regression_estimate(probs)
        out["mae"] = float(np.abs(est - reg).mean()) if reg.size else 0.0
        truth7 = np.clip(np.round(reg), -3, 3)
        est7 = np.clip(np.round(est), -3, 3)
        out["acc7"] = float((truth7 == est7).mean()) if reg.size else 0.0
        out["corr"] = _pearson(est, reg)
    return out


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or np.std(a) == 0 or np.std(b) == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


@dataclass
class LabelFrequencyBaseline:
    """Predicts from label statistics of the training split only, never from features.

    Emotion: every label whose training frequency is at least `threshold`; the threshold is chosen
    on the training split to maximise micro-F1 among such constant predictions (a stronger
    baseline than a fixed 0.5, which would often predict nothing). Sentiment: the majority class.
    """

    emotion_frequency: np.ndarray | None = None
    emotion_prediction: np.ndarray | None = None
    sentiment_class: int | None = None

    @classmethod
    def fit(cls, train: Sequence[Sample]) -> LabelFrequencyBaseline:
        base = cls()
        emo = [s.emotion for s in train if s.emotion is not None]
        if emo:
            y = (np.stack(emo) > 0.5).astype(np.float64)
            freq = y.mean(axis=0)
            best, best_f1 = np.zeros_like(freq), -1.0
            for thr in sorted(set(freq.tolist()), reverse=True):
                cand = (freq >= thr).astype(np.float64)
                f1 = float(emotion_metrics(y, np.broadcast_to(cand, y.shape))["f1"])  # type: ignore[arg-type]
                if f1 > best_f1:
                    best, best_f1 = cand, f1
            base.emotion_frequency, base.emotion_prediction = freq, best
        sent = [s.sentiment for s in train if s.sentiment is not None]
        if sent:
            base.sentiment_class = int(np.bincount(np.asarray(sent, dtype=np.int64)).argmax())
        return base

    def predict_emotion(self, n: int) -> np.ndarray:
        if self.emotion_prediction is None:
            raise ValueError("baseline was fitted on data without emotion labels")
        return np.tile(self.emotion_prediction, (n, 1))

    def predict_sentiment(self, n: int) -> np.ndarray:
        if self.sentiment_class is None:
            raise ValueError("baseline was fitted on data without sentiment labels")
        return np.full(n, self.sentiment_class, dtype=np.int64)


NO_EMOTION = "neutral"
"""Confusion-matrix name of the empty emotion set."""


def emotion_confusion(
    y_true: np.ndarray, probs: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]
) -> dict[str, object]:
    """Confusion of single-label samples (one emotion or none): true class vs the most probable
    predicted emotion ("neutral" when none passes the threshold). Multi-label samples are
    left out and counted."""
    t = np.asarray(y_true) > 0.5
    p = np.asarray(y_pred) > 0.5
    names = [*labels, NO_EMOTION]
    c = len(labels)
    matrix = np.zeros((c + 1, c + 1), dtype=np.int64)
    single = t.sum(axis=1) <= 1
    for i in np.flatnonzero(single):
        true = int(t[i].argmax()) if t[i].any() else c
        pred = int(np.where(p[i], probs[i], -np.inf).argmax()) if p[i].any() else c
        matrix[true, pred] += 1
    return {"names": names, "matrix": matrix.tolist(), "left_out": int((~single).sum())}

"""Metrics against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from merclip.batch import Sample
from merclip.training.metrics import (
    LabelFrequencyBaseline,
    binarize_has0,
    binarize_non0,
    emotion_metrics,
    regression_estimate,
    sentiment_metrics,
    weighted_f1,
)

pytestmark = pytest.mark.unit


def test_emotion_metrics_hand_computed() -> None:
    y = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 0]])
    p = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0]])
    m = emotion_metrics(y, p, ["a", "b", "c"])
    # Jaccard per sample: 1/3, 1, 1 (both empty), 0 → mean 7/12
    assert m["accuracy"] == pytest.approx(7 / 12)
    # tp=2 (s0 a, s1 b), fp=1 (s0 b), fn=3 (s0 c, s3 a, s3 b)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 5)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 3))
    per = m["per_label"]
    assert per["a"]["f1"] == pytest.approx(2 / 3)  # tp1 fp0 fn1
    assert per["b"]["f1"] == pytest.approx(2 / 4)  # tp1 fp1 fn1
    assert per["c"]["f1"] == 0.0
    assert per["b"]["support"] == 2


def test_emotion_metrics_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError):
        emotion_metrics(np.zeros((2, 3)), np.zeros((2, 2)))


def test_weighted_f1_hand_computed() -> None:
    y = np.array([0, 0, 0, 1])
    p = np.array([0, 0, 1, 1])
    # class 0: tp2 fp0 fn1 → 0.8, support 3; class 1: tp1 fp1 fn0 → 2/3, support 1
    assert weighted_f1(y, p) == pytest.approx((0.8 * 3 + 2 / 3) / 4)


def test_binarisation_both_ways() -> None:
    r = np.array([-1.2, 0.0, 0.4, -0.2, 3.0])
    assert binarize_has0(r).tolist() == [0, 1, 1, 0, 1]
    labels, keep = binarize_non0(r)
    assert keep.tolist() == [True, False, True, True, True]
    assert labels[keep].tolist() == [0, 1, 0, 1]


def test_sentiment_metrics_has0_vs_non0_and_regression() -> None:
    reg = np.array([-2.0, 0.0, 1.0, 2.6])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.1, 0.9]])
    pred = probs.argmax(axis=1)  # [0, 0, 1, 1]
    m = sentiment_metrics(pred, regression=reg, probs=probs)
    # has-0 truth [0,1,1,1]: 3/4 right; non-0 drops the zero: [0,1,1] all right
    assert m["acc2_has0"] == pytest.approx(0.75)
    assert m["acc2_non0"] == pytest.approx(1.0)
    assert m["n_non0"] == 3
    assert m["acc2"] == m["acc2_non0"]
    est = regression_estimate(probs)
    assert est.tolist() == pytest.approx([-2.4, -1.8, 0.6, 2.4])
    assert m["mae"] == pytest.approx((0.4 + 1.8 + 0.4 + 0.2) / 4)
    # rounded truth [-2,0,1,3], rounded estimate [-2,-2,1,2] → 2/4
    assert m["acc7"] == pytest.approx(0.5)
    assert m["corr"] == pytest.approx(float(np.corrcoef(est, reg)[0, 1]))


def test_sentiment_metrics_from_labels_only() -> None:
    m = sentiment_metrics(np.array([1, 1, 0]), labels=np.array([1, 0, 0]))
    assert m["acc2"] == pytest.approx(2 / 3)
    assert "mae" not in m


def _sample(emotion: list[int], sentiment: int) -> Sample:
    return Sample(None, None, None, emotion=np.array(emotion, np.float32), sentiment=sentiment)


def test_label_frequency_baseline() -> None:
    train = [_sample([1, 0, 0], 1), _sample([1, 1, 0], 1), _sample([1, 0, 0], 0)]
    base = LabelFrequencyBaseline.fit(train)
    assert base.emotion_frequency.tolist() == pytest.approx([1.0, 1 / 3, 0.0])
    # predicting only label 0 gives micro-F1 0.857 on train; adding label 1 gives 0.8
    assert base.predict_emotion(2).tolist() == [[1, 0, 0], [1, 0, 0]]
    assert base.predict_sentiment(3).tolist() == [1, 1, 1]

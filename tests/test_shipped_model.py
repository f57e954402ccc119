"""The checkpoint that ships is small, loads offline, and recognises real held-apart data.

Figures here are floors on small val samples (the full val figures are in docs/MODEL_CARD.md,
from `merclip evaluate` and `benchmarks/probe.py`); they fail if the file is replaced by an
untrained or broken model. They read ../shared/data and skip when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from emotion_data import shared_data

from merclip.batch import Sample
from merclip.checkpoint import BUNDLED_CHECKPOINT, load_checkpoint, read_checkpoint
from merclip.predictor import Predictor
from merclip.training.evaluate import evaluate_checkpoint
from workers.app.settings import Settings
from workers.features.encoders import PretrainedEncoders
from workers.features.faces import FaceDetector

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def test_the_shipped_checkpoint_is_small_and_self_describing() -> None:
    assert BUNDLED_CHECKPOINT.is_file()
    assert BUNDLED_CHECKPOINT.stat().st_size <= 30 * 1024 * 1024
    payload = read_checkpoint(BUNDLED_CHECKPOINT)
    assert payload["feature_space"] == "live-pretrained"
    assert payload["labels"]["emotion"] == ["happy", "sad", "anger", "surprise", "disgust", "fear"]
    assert payload["labels"]["sentiment"] == ["negative", "positive"]
    assert payload["extra"]["trained_on"] == "FER2013 faces + MELD utterances + RAVDESS speech"
    model = load_checkpoint(BUNDLED_CHECKPOINT)
    assert model.tasks == ("emotion", "sentiment")


@pytest.mark.parametrize(("kind", "floor"), [("fer2013", 0.58), ("meld", 0.37), ("ravdess", 0.40)])
def test_it_recognises_real_val_data_far_above_the_label_frequency_baseline(
    kind: str, floor: float, tmp_path: Path
) -> None:
    """The whole val split (features cached in ~/.cache/merclip/features after the first run)."""
    root = shared_data(kind)
    report = evaluate_checkpoint("bundled", f"{kind}:{root}", tmp_path / "eval", split="val")
    emo = report["tasks"]["emotion"]
    assert emo["model"]["micro_f1"] >= floor, emo["model"]
    # per-sample Jaccard: the baseline (every label frequent enough in train) scores far lower
    assert emo["model"]["accuracy"] > emo["baseline"]["accuracy"] + 0.1, emo
    if kind == "meld":
        assert report["tasks"]["sentiment"]["model"]["acc2"] >= 0.68
    else:
        assert "sentiment" in report["skipped"]  # faces and voices carry no sentiment labels


def test_a_live_face_goes_the_live_path_to_the_right_emotion() -> None:
    """FER2013 val faces pasted into a webcam frame → YuNet → expression net → MER-CLIP."""
    val = shared_data("fer2013") / "val"
    encoders = PretrainedEncoders.from_packages()
    detector = FaceDetector(margin=encoders.face_margin)
    predictor = Predictor.from_settings(Settings().replace("inference", device="cpu"))
    hits, seen = 0, 0
    for fer_class, emotion in (("happy", "happy"), ("surprise", "surprise")):
        for path in sorted((val / fer_class).glob("*.jpg"))[:10]:
            face = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            frame = np.full((480, 640, 3), 118, np.uint8)
            frame[110:370, 190:450] = cv2.resize(face, (260, 260), cv2.INTER_CUBIC)[:, :, None]
            crops = detector.crops(frame, max_faces=1)
            if not crops:
                continue
            seen += 1
            visual = encoders.faces(crops)
            (pred,) = predictor.predict([Sample(None, visual, None)])
            top = predictor.emotion_labels[int(np.argmax(pred.emotion_probs))]
            hits += top == emotion
            assert pred.sentiment is None  # a face without words has no sentiment
    assert seen >= 16
    assert hits / seen >= 0.7, (hits, seen)

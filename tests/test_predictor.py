"""Predictor: the inference worker's entry point, trained and zero-shot paths, real tiny CLIP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from merclip.batch import MODALITIES, Sample, collate
from merclip.checkpoint import checkpoint_version, save_checkpoint
from merclip.clip_backbone import ClipBackbone
from merclip.config import MerClipConfig
from merclip.errors import CheckpointMismatchError, ConfigError
from merclip.model import create_model
from merclip.predictor import FeatureDimensionError, Predictor
from merclip.zeroshot import ZeroShotClassifier
from workers.app.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def _settings(checkpoint: str = "", name: str = "merclip-tiny-live") -> Settings:
    s = Settings().replace("model", name=name, checkpoint=checkpoint)
    s = s.replace("clip", model="merclip-tiny-clip").replace("features", space="live")
    return s.replace("inference", device="cpu")


def _live_samples(clip: ClipBackbone) -> list[Sample]:
    """Features as ingest computes them (CLIP text tokens, CLIP face embeddings, log-mel)."""
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 255, size=(64, 64, 3), dtype=np.uint8) for _ in range(2)]
    visual = clip.encode_images(faces).numpy().astype(np.float16)
    lang = clip.encode_text_tokens(["I am so happy today"])[0].astype(np.float16)
    audio = rng.normal(size=(40, 64)).astype(np.float16)
    return [
        Sample(lang, visual, audio, id="all"),
        Sample(lang, None, audio, id="no-face"),
        Sample(None, visual, None, id="face-only"),
        Sample(None, None, None, id="nothing"),
        Sample(np.zeros((0, 64), np.float16), None, audio, id="empty-transcript"),
    ]


def _check_valid(predictor: Predictor, preds: list, samples: list[Sample]) -> None:
    assert len(preds) == len(samples)
    for p, s in zip(preds, samples, strict=True):
        has = {m: getattr(s, m) is not None and len(getattr(s, m)) > 0 for m in MODALITIES}
        assert p.emotion_probs.shape == (6,) and p.sentiment_probs.shape == (2,)
        assert np.isfinite(p.emotion_probs).all() and np.isfinite(p.sentiment_probs).all()
        assert ((p.emotion_probs >= 0) & (p.emotion_probs <= 1)).all()
        assert abs(float(p.sentiment_probs.sum()) - 1.0) < 1e-5
        expected = [
            w
            for w, q in zip(predictor.emotion_labels, p.emotion_probs, strict=True)
            if q >= predictor.threshold
        ]
        # No evidence at all: no emotion; no words: no sentiment (null in the event).
        assert p.emotions == (expected if any(has.values()) else [])
        top = predictor.sentiment_labels[int(p.sentiment_probs.argmax())]
        assert p.sentiment == (top if has["language"] else None)


def test_zero_shot_predictor(clip: ClipBackbone) -> None:
    predictor = Predictor.from_settings(_settings(), clip=clip)
    assert predictor.zero_shot and not predictor.pretrained
    assert predictor.model_version == "zero-shot-merclip-tiny-clip"
    assert predictor.feature_dims == {"language": 64, "visual": 64, "audio": 64}
    assert predictor.emotion_labels == ["happy", "sad", "anger", "surprise", "disgust", "fear"]
    samples = _live_samples(clip)
    preds = predictor.predict(samples)
    _check_valid(predictor, preds, samples)
    # No CLIP-space evidence (audio is not in CLIP space): uniform, nothing predicted.
    for p in (preds[3], preds[4]):
        assert np.allclose(p.emotion_probs, 0.5) and p.emotions == []
        assert np.allclose(p.sentiment_probs, 0.5)
    # Evidence changes the answer, and each modality counts.
    assert not np.allclose(preds[0].emotion_probs, preds[1].emotion_probs)
    assert not np.allclose(preds[1].emotion_probs, preds[2].emotion_probs)
    # Batching does not change a window's prediction.
    alone = predictor.predict([samples[1]])[0]
    assert np.allclose(alone.emotion_probs, preds[1].emotion_probs, atol=1e-5)
    assert predictor.predict([]) == []


def test_zero_shot_matches_clip_similarity(clip: ClipBackbone) -> None:
    """Language-only window: sims are cosines of CLIP's pooled transcript embedding."""
    zs = ZeroShotClassifier(clip, ["happy", "sad"], ["negative", "positive"])
    lang = clip.encode_text_tokens(["what a day"])[0]
    out = zs(
        collate([Sample(lang, None, None)], {"language": 64, "visual": 64, "audio": 64}),
        "sentiment",
    )
    pooled = clip.encode_texts(["what a day"])[0]
    expected = pooled @ zs.label_embeddings["sentiment"].t()
    assert torch.allclose(out.similarity[0], expected, atol=1e-4)
    assert torch.allclose(out.probs[0], (100 * expected).softmax(-1), atol=1e-4)


def test_zero_shot_rejects_benchmark_space(clip: ClipBackbone) -> None:
    with pytest.raises(ConfigError, match="live feature space"):
        Predictor.from_settings(_settings(name="merclip-tiny-bench"), clip=clip)


def test_trained_predictor(clip: ClipBackbone, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("merclip-tiny-live", clip=clip)
    path = save_checkpoint(tmp_path / "m.pt", model, {"epoch": 1})
    predictor = Predictor.from_settings(_settings(checkpoint=str(path)))
    assert not predictor.zero_shot
    assert predictor.model_name == "merclip-tiny-live"
    assert predictor.model_version == checkpoint_version(path)
    assert predictor.clip_model == "merclip-tiny-clip"
    # Label and query encodings were computed once at load.
    assert set(predictor.model._cache) == {"emotion", "sentiment"}
    samples = _live_samples(clip)
    preds = predictor.predict(samples)
    _check_valid(predictor, preds, samples)
    # Same as the model itself (missing modality masked, batch-independent in eval).
    model.eval()
    ref = model(collate(samples, model.dims), "emotion").probs.detach().numpy()
    assert np.allclose(np.stack([p.emotion_probs for p in preds]), ref, atol=1e-5)
    alone = predictor.predict([samples[2]])[0]
    assert np.allclose(alone.emotion_probs, preds[2].emotion_probs, atol=1e-5)


def test_threshold_from_settings(clip: ClipBackbone, tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "m.pt", create_model("merclip-tiny-live", clip=clip))
    settings = _settings(checkpoint=str(path)).replace("model", emotion_threshold=0.01)
    predictor = Predictor.from_settings(settings)
    assert predictor.threshold == 0.01
    (pred,) = predictor.predict(_live_samples(clip)[:1])
    assert pred.emotions == predictor.emotion_labels  # every sigmoid is above 0.01


def test_the_service_threshold_wins_over_the_model_config(
    clip: ClipBackbone, tmp_path: Path
) -> None:
    """model.emotion_threshold decides, and the served model's own prediction agrees."""
    torch.manual_seed(0)
    model = create_model("merclip-tiny-live", clip=clip, emotion_threshold=0.9)
    path = save_checkpoint(tmp_path / "m.pt", model)
    settings = _settings(checkpoint=str(path)).replace("model", emotion_threshold=0.01)
    predictor = Predictor.from_settings(settings)
    assert predictor.model.config.emotion_threshold == 0.01
    samples = _live_samples(clip)[:1]
    out = predictor.model(predictor.batch(samples), "emotion")
    assert out.prediction.bool().all()  # every sigmoid is above 0.01
    # One default for both: the paper's 0.6.
    assert Settings().model.emotion_threshold == MerClipConfig().emotion_threshold == 0.6


def test_checkpoint_for_other_features_is_refused(clip: ClipBackbone, tmp_path: Path) -> None:
    bench = save_checkpoint(tmp_path / "b.pt", create_model("merclip-tiny-bench", clip=clip))
    with pytest.raises(CheckpointMismatchError, match="benchmark"):
        Predictor.from_settings(_settings(checkpoint=str(bench)))
    live = save_checkpoint(tmp_path / "l.pt", create_model("merclip-tiny-live", clip=clip))
    other_clip = _settings(checkpoint=str(live)).replace("clip", model="ViT-B-32")
    with pytest.raises(CheckpointMismatchError, match="merclip-tiny-clip"):
        Predictor.from_settings(other_clip)


def test_wrong_feature_width_is_a_clear_error(clip: ClipBackbone) -> None:
    predictor = Predictor.from_settings(_settings(), clip=clip)
    bad = Sample(np.zeros((3, 512), np.float16), None, None, id="w1")
    with pytest.raises(FeatureDimensionError, match=r"w1: language .*\(3, 512\).*\(T, 64\)"):
        predictor.predict([bad])


def test_a_window_without_words_has_no_sentiment_and_without_evidence_no_emotion(
    clip: ClipBackbone, tmp_path: Path
) -> None:
    """A trained model too: an empty window is not "negative", a silent face has no sentiment."""
    path = save_checkpoint(tmp_path / "m.pt", create_model("merclip-tiny-live", clip=clip))
    predictor = Predictor.from_settings(_settings(checkpoint=str(path)))
    samples = _live_samples(clip)
    preds = {s.id: p for s, p in zip(samples, predictor.predict(samples), strict=True)}
    assert preds["nothing"].sentiment is None and preds["nothing"].emotions == []
    assert preds["face-only"].sentiment is None
    assert preds["all"].sentiment in ("negative", "positive")


def test_the_default_settings_serve_the_shipped_checkpoint() -> None:
    predictor = Predictor.from_settings(Settings().replace("inference", device="cpu"))
    assert not predictor.zero_shot and predictor.pretrained
    assert predictor.feature_space == "live-pretrained"
    assert predictor.model_name == "merclip-minilm-live"
    assert predictor.feature_dims == {"language": 384, "visual": 135, "audio": 64}
    assert "FER2013" in predictor.trained_on and "MELD" in predictor.trained_on
    assert len(predictor.model_version) == 12  # content hash of the shipped file

"""What the inference worker calls: windows' features in, emotion + sentiment predictions out.

Two paths behind one API:
- trained: a MER-CLIP checkpoint (settings.model.checkpoint; "bundled" = the shipped one). Label
  and query encodings are computed once at load (`MerClip.cache_encodings`), so a batch costs
  adapters + decoder + heads.
- zero-shot: no checkpoint; CLIP zero-shot (merclip.zeroshot) with settings.clip, in the CLIP
  live space only.

Feature spaces (settings.features.space): "live-pretrained" (MiniLM tokens 384-d, FER expression
features 135-d, log-mel 64-d) or "live" (CLIP embeddings of settings.clip.model, log-mel 64-d).
Missing modalities are masked; feature widths are checked per sample.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import open_clip
import torch

from merclip.batch import MODALITIES, ModalityBatch, Sample, collate
from merclip.checkpoint import checkpoint_version, load_checkpoint, resolve_checkpoint
from merclip.clip_backbone import ClipBackbone, load_clip, register_bundled_clip_configs
from merclip.config import load_model_config
from merclip.devices import resolve_device
from merclip.errors import ConfigError, MerClipError
from merclip.feature_spaces import LIVE_AUDIO_DIM, LIVE_PRETRAINED_DIMS
from merclip.heads import TaskOutput
from merclip.model import MerClip
from merclip.settings import MerClipSettings
from merclip.zeroshot import ZeroShotClassifier

__all__ = [
    "LIVE_AUDIO_DIM",
    "LIVE_PRETRAINED_DIMS",
    "FeatureDimensionError",
    "Prediction",
    "Predictor",
    "feature_dims",
    "live_dims",
]

log = logging.getLogger(__name__)


class FeatureDimensionError(MerClipError, ValueError):
    """Incoming features do not have the width the model was built for."""


@dataclass(frozen=True)
class Prediction:
    emotion_probs: np.ndarray
    """(C_e,) float32 probabilities, in `Predictor.emotion_labels` order."""
    emotions: list[str]
    """Labels whose probability is >= the threshold."""
    sentiment_probs: np.ndarray
    """(C_s,) float32, in `Predictor.sentiment_labels` order."""
    sentiment: str | None
    """Most probable sentiment label; None when the window has no words (sentiment is read from
    what is said: the shipped model learnt it from MELD's utterances only, and a window with no
    face and no speech has no evidence at all); '' when the model has no sentiment task."""


def live_dims(clip_model: str) -> dict[str, int]:
    """Feature widths of the live feature space for a CLIP model name (no weights loaded)."""
    register_bundled_clip_configs()
    cfg = open_clip.get_model_config(clip_model)
    if cfg is None:
        raise ConfigError(f"clip.model: unknown open_clip model {clip_model!r}")
    d = int(cfg["embed_dim"])
    return {"language": d, "visual": d, "audio": LIVE_AUDIO_DIM}


def feature_dims(settings: MerClipSettings) -> dict[str, int]:
    """Feature widths of the configured live feature space."""
    if settings.features.space == "live":
        return live_dims(settings.clip.model)
    return dict(LIVE_PRETRAINED_DIMS)


class Predictor:
    def __init__(
        self,
        model: MerClip | ZeroShotClassifier,
        *,
        model_name: str,
        model_version: str,
        pretrained: bool,
        clip_model: str,
        feature_dims: dict[str, int],
        threshold: float,
        device: torch.device,
        feature_space: str = "live",
        trained_on: str = "",
    ) -> None:
        self.model = model
        self.model_name = model_name
        self.model_version = model_version
        self.zero_shot = isinstance(model, ZeroShotClassifier)
        self.pretrained = pretrained
        self.clip_model = clip_model
        self.feature_space = feature_space
        self.trained_on = trained_on
        self.feature_dims = dict(feature_dims)
        self.threshold = threshold
        self.device = device
        self.tasks = tuple(model.tasks)
        self.emotion_labels = model.labels("emotion") if "emotion" in self.tasks else []
        self.sentiment_labels = model.labels("sentiment") if "sentiment" in self.tasks else []
        for task in ("emotion", "sentiment"):
            if task not in self.tasks:
                log.warning("model %s has no %s task: its outputs are empty", model_name, task)

    @classmethod
    def from_settings(
        cls, settings: MerClipSettings, clip: ClipBackbone | None = None
    ) -> Predictor:
        """Trained checkpoint (settings.model.checkpoint) or CLIP zero-shot when it is empty.

        `clip` (zero-shot only) reuses an already loaded CLIP instead of loading settings.clip.
        """
        device = resolve_device(settings.inference.device, "inference.device")
        threshold = settings.model.emotion_threshold
        space = settings.features.space
        dims = feature_dims(settings)
        path = resolve_checkpoint(settings.model.checkpoint)
        if path:
            model = load_checkpoint(
                path,
                expect_feature_space=space,
                expect_clip_model=settings.clip.model if space == "live" else None,
                expect_dims=dims,
                device=device,
            )
            model.set_emotion_threshold(threshold)  # the service setting wins over the config's
            if space == "live" and model.clip_pretrained != settings.clip.pretrained:
                log.warning(
                    "checkpoint %s was trained on CLIP weights %r, ingest uses %r: predictions "
                    "are only valid if both are the same weights",
                    path,
                    model.clip_pretrained,
                    settings.clip.pretrained,
                )
            model.cache_encodings()
            log.info("MER-CLIP %s loaded from %s on %s", model.config.name, path, device)
            return cls(
                model,
                model_name=model.config.name,
                model_version=checkpoint_version(path),
                # live-pretrained: every encoder (MiniLM, expression net, YuNet) is pretrained.
                pretrained=space == "live-pretrained" or bool(model.clip_pretrained),
                clip_model=model.clip_name,
                feature_dims=dims,
                threshold=threshold,
                device=device,
                feature_space=space,
                trained_on=str(model.extra.get("trained_on", model.extra.get("data", ""))),
            )
        if space != "live":
            raise ConfigError(
                f"model.checkpoint is empty, but zero-shot needs CLIP features and features.space "
                f"is {space!r}: set model.checkpoint = 'bundled' (the shipped model) or a file "
                "written by `merclip train`, or features.space = 'live'"
            )
        config = load_model_config(settings.model.name)
        if clip is None:
            clip = load_clip(settings.clip.model, settings.clip.pretrained, device)
        elif clip.name != settings.clip.model:
            raise ConfigError(f"clip.model is {settings.clip.model!r}, given CLIP is {clip.name!r}")
        zs = ZeroShotClassifier.from_config(config, clip, threshold)
        log.warning("no MER-CLIP checkpoint (model.checkpoint is empty): running CLIP zero-shot")
        return cls(
            zs,
            model_name=settings.model.name,
            model_version=f"zero-shot-{clip.name}",
            pretrained=clip.pretrained,
            clip_model=clip.name,
            feature_dims=dims,
            threshold=threshold,
            device=device,
        )

    def check(self, samples: Sequence[Sample]) -> None:
        """Raise FeatureDimensionError when a present modality has the wrong shape."""
        for i, s in enumerate(samples):
            for m in MODALITIES:
                x = getattr(s, m)
                if x is None or np.asarray(x).size == 0:
                    continue
                shape = np.asarray(x).shape
                if len(shape) != 2 or shape[1] != self.feature_dims[m]:
                    raise FeatureDimensionError(
                        f"sample {s.id or i}: {m} features have shape {shape}, model "
                        f"{self.model_name} expects (T, {self.feature_dims[m]}) from CLIP "
                        f"{self.clip_model}: ingest and inference must use the same clip.model"
                    )

    def batch(self, samples: Sequence[Sample]) -> ModalityBatch:
        self.check(samples)
        return collate(samples, self.feature_dims).to(self.device)

    @torch.inference_mode()
    def predict(self, samples: Sequence[Sample]) -> list[Prediction]:
        """One batched forward per task for all samples; order preserved."""
        if not samples:
            return []
        batch = self.batch(samples)
        outputs: dict[str, TaskOutput] = {t: self.model(batch, t) for t in self.tasks}
        n = len(samples)
        emo = _probs(outputs.get("emotion"), n)
        sen = _probs(outputs.get("sentiment"), n)
        present = batch.present().cpu().numpy()  # (B, 3) in MODALITIES order
        preds = []
        for i in range(n):
            evidence = bool(present[i].any())
            emotions = [
                w
                for w, p in zip(self.emotion_labels, emo[i], strict=True)
                if evidence and p >= self.threshold
            ]
            sentiment: str | None = ""
            if sen.shape[1]:
                has_words = bool(present[i, MODALITIES.index("language")])
                sentiment = self.sentiment_labels[int(sen[i].argmax())] if has_words else None
            preds.append(Prediction(emo[i], emotions, sen[i], sentiment))
        return preds


def _probs(out: TaskOutput | None, n: int) -> np.ndarray:
    if out is None:
        return np.zeros((n, 0), dtype=np.float32)
    return out.probs.float().cpu().numpy().astype(np.float32)

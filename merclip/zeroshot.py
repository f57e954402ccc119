"""CLIP zero-shot emotion and sentiment, for when there is no trained MER-CLIP checkpoint.

Label embeddings: each label word in a few prompt templates, encoded with CLIP's text encoder,
L2-normalised and averaged (prompt ensembling, as in CLIP's zero-shot ImageNet). Window embedding:
the L2-normalised mean of the L2-normalised CLIP-space modalities the window has:
- language: the last row of the language features (CLIP's pooled EOT output of the transcript);
- visual: the mean of the face-crop embeddings.
Audio features (log-mel) are not in CLIP space, so zero-shot ignores them. A window with neither
transcript nor face has no evidence: its similarities are all 0, giving uniform probabilities
(sigmoid 0.5 per emotion, below any threshold > 0.5; sentiment 1/C each).

Heads mirror the trained ones without learned state: emotion = sigmoid(z-score of the similarities
across labels) ("sample" normalisation), threshold → multi-hot; sentiment = softmax(100 × sims),
CLIP's zero-shot logit scale. Only meaningful in the live feature space.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from merclip.batch import ModalityBatch
from merclip.clip_backbone import ClipBackbone
from merclip.config import MerClipConfig
from merclip.errors import ConfigError
from merclip.heads import TaskOutput, sample_normalise

__all__ = ["DEFAULT_TEMPLATES", "ZERO_SHOT_LOGIT_SCALE", "ZeroShotClassifier"]

log = logging.getLogger(__name__)

DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {} person.",
    "a person feeling {}.",
    "a face showing {}.",
    "an expression of {}.",
)
ZERO_SHOT_LOGIT_SCALE = 100.0


class ZeroShotClassifier:
    """Zero-shot MER from CLIP embeddings; `forward(batch, task)` returns a TaskOutput."""

    def __init__(
        self,
        clip: ClipBackbone,
        emotion_labels: Sequence[str],
        sentiment_labels: Sequence[str],
        threshold: float = 0.6,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
    ) -> None:
        self.clip = clip
        self.threshold = threshold
        self.templates = tuple(templates)
        self._labels = {"emotion": list(emotion_labels), "sentiment": list(sentiment_labels)}
        # Input-independent: computed once here, never per batch.
        self.label_embeddings = {t: self._encode_labels(w) for t, w in self._labels.items()}

    @classmethod
    def from_config(
        cls, config: MerClipConfig, clip: ClipBackbone, threshold: float | None = None
    ) -> ZeroShotClassifier:
        if config.feature_space != "live":
            raise ConfigError(
                f"zero-shot needs the live feature space (CLIP embeddings), but model config "
                f"{config.name!r} uses {config.feature_space!r} features: train a checkpoint "
                "and set model.checkpoint"
            )
        return cls(
            clip,
            config.emotion_labels,
            config.sentiment_labels,
            config.emotion_threshold if threshold is None else threshold,
        )

    @property
    def tasks(self) -> tuple[str, ...]:
        return ("emotion", "sentiment")

    def labels(self, task: str) -> list[str]:
        return list(self._labels[task])

    @torch.no_grad()
    def _encode_labels(self, words: list[str]) -> torch.Tensor:
        texts = [t.format(w) for w in words for t in self.templates]
        z = self.clip.encode_texts(texts, normalize=True)  # (C * K, D)
        z = z.view(len(words), len(self.templates), -1).mean(dim=1)  # (C, D)
        return F.normalize(z, dim=-1)

    def window_embeddings(self, batch: ModalityBatch) -> torch.Tensor:
        """(B, D): normalised mean of the present CLIP-space modalities; zeros with none."""
        d = self.clip.embed_dim
        for m in ("language", "visual"):
            width = batch.features(m)[0].shape[-1]
            if width != d:
                raise ConfigError(
                    f"zero-shot: {m} features are {width}-d but CLIP {self.clip.name} embeds "
                    f"to {d}-d: features and CLIP model do not match"
                )
        lang, lmask = batch.language, batch.language_mask  # (B, T_l, D), (B, T_l)
        last = (lmask.long().sum(dim=1) - 1).clamp(min=0)  # EOT = last real row
        lang_vec = F.normalize(lang[torch.arange(lang.shape[0]), last], dim=-1)  # (B, D)
        vmask = batch.visual_mask.unsqueeze(-1).to(batch.visual.dtype)  # (B, T_v, 1)
        vis = (batch.visual * vmask).sum(dim=1) / vmask.sum(dim=1).clamp(min=1.0)
        vis_vec = F.normalize(vis, dim=-1)  # (B, D)
        has_l = lmask.any(dim=1, keepdim=True).to(lang_vec.dtype)  # (B, 1)
        has_v = batch.visual_mask.any(dim=1, keepdim=True).to(vis_vec.dtype)
        summed = lang_vec * has_l + vis_vec * has_v
        return F.normalize(summed, dim=-1)  # all-zero rows stay zero (no evidence)

    @torch.no_grad()
    def forward(self, batch: ModalityBatch, task: str) -> TaskOutput:
        if task not in self._labels:
            raise ConfigError(f"zero-shot has no task {task!r}")
        emb = self.window_embeddings(batch)
        labels = self.label_embeddings[task].to(emb.device)
        sim = emb @ labels.t()  # (B, C)
        if task == "emotion":
            logits = sample_normalise(sim)
            probs = torch.sigmoid(logits)
            pred = (probs >= self.threshold).to(probs.dtype)
        else:
            logits = sim * ZERO_SHOT_LOGIT_SCALE
            probs = logits.softmax(dim=-1)
            pred = F.one_hot(probs.argmax(dim=-1), probs.shape[-1]).to(probs.dtype)
        return TaskOutput(sim, logits, probs, pred, None)

    __call__ = forward

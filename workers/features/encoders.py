"""The pretrained encoders behind a live feature space: transcript → language rows, face crops →
visual rows. `WindowExtractor` (live ingest and `merclip extract`) and the dataset featuriser
(`workers/features/datasets.py`, for `merclip train --data fer2013:DIR` ...) both call these, so a
model is trained on exactly what it is served.

- "live-pretrained": language = MiniLM token states + the sentence row (T_l, 384); visual = the
  FER2013 mini-Xception's pooled last block + logits per face (N_faces, 135).
- "live": language = CLIP text tokens SOT..EOT (T_l, embed_dim); visual = CLIP image embedding
  per face (N_faces, embed_dim).

Audio is the same in both: 64-band log-mel rows (audio_features.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from merclip.clip_backbone import ClipBackbone, load_clip
from merclip.minilm import MiniLm, load_minilm
from workers.features.expression import EXPRESSION_MARGIN, ExpressionEncoder
from workers.settings import WorkerSettings

__all__ = ["ClipEncoders", "FeatureEncoders", "PretrainedEncoders", "load_encoders"]

log = logging.getLogger(__name__)

CLIP_FACE_MARGIN = 0.2
"""CLIP sees hair, chin and some context around the face, as in face-crop datasets."""


class FeatureEncoders(Protocol):
    space: str
    """The FeatureWindow.feature_space these encoders produce."""
    name: str
    """FeatureWindow.clip_model: the open_clip model name ('' in live-pretrained)."""
    pretrained_source: str
    face_margin: float
    """Margin the face detector adds around a face before `faces` sees the crop."""

    def language(self, texts: Sequence[str]) -> list[np.ndarray]: ...

    def faces(self, crops: Sequence[np.ndarray]) -> np.ndarray: ...


class ClipEncoders:
    """CLIP's text and image towers (features.space "live")."""

    space = "live"

    def __init__(self, clip: ClipBackbone) -> None:
        self.clip = clip
        self.name = clip.name
        self.pretrained_source = clip.pretrained_source
        self.face_margin = CLIP_FACE_MARGIN

    def language(self, texts: Sequence[str]) -> list[np.ndarray]:
        return self.clip.encode_text_tokens(list(texts))

    def faces(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        return self.clip.encode_images(list(crops)).cpu().numpy()


class PretrainedEncoders:
    """MiniLM for text and the FER2013 expression net for faces (features.space
    "live-pretrained"): pretrained parts that ship inside PyPI packages."""

    space = "live-pretrained"
    name = ""
    pretrained_source = ""

    def __init__(self, minilm: MiniLm, expression: ExpressionEncoder) -> None:
        self.minilm = minilm
        self.expression = expression
        self.face_margin = EXPRESSION_MARGIN
        self.clip = None

    @classmethod
    def from_packages(cls) -> PretrainedEncoders:
        return cls(load_minilm(), ExpressionEncoder.from_package())

    def language(self, texts: Sequence[str]) -> list[np.ndarray]:
        return self.minilm.token_features(list(texts))

    def faces(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        return self.expression.features(list(crops))


def load_encoders(
    settings: WorkerSettings, device: str = "cpu"
) -> ClipEncoders | PretrainedEncoders:
    """The encoders of settings.features.space (loaded once per process: seconds)."""
    if settings.features.space == "live":
        return ClipEncoders(load_clip(settings.clip.model, settings.clip.pretrained, device))
    return PretrainedEncoders.from_packages()

"""The settings sections the model library reads: [model], [features], [clip], [train].

Frozen dataclasses with the defaults documented in the repository's `config.toml`. The service's
other sections live with the layer that reads them (`stream/settings.py`, `workers/settings.py`);
`workers/app/settings.py` composes all of them into `Settings` and reads config.toml and the
environment. Library code takes any object with these sections (`MerClipSettings`), so it never
imports the service layer above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, Self

from merclip.labels import EMOTION_THRESHOLD
from merclip.typed_config import check

__all__ = [
    "ClipSettings",
    "FeaturesSettings",
    "MerClipSettings",
    "ModelSettings",
    "TrainSettings",
]


@dataclass(frozen=True)
class ModelSettings:
    name: str = "merclip-minilm-live"
    """Named MER-CLIP architecture in merclip/model_configs/ (zero-shot and `train` default)."""
    checkpoint: str = "bundled"
    """Trained checkpoint: "bundled" = the one shipped in merclip/checkpoints/, a path, or empty
    for CLIP zero-shot (features.space "live" only)."""
    emotion_threshold: float = EMOTION_THRESHOLD
    """Probability at or above which the service reports an emotion; it wins over the served
    model's own `MerClipConfig.emotion_threshold` (the Predictor applies it to the model) and
    defaults to the paper's 0.6 (merclip/labels.py), the default of that field too."""

    def validate(self) -> None:
        check(0.0 < self.emotion_threshold < 1.0, "model.emotion_threshold", "must be in (0, 1)")


@dataclass(frozen=True)
class FeaturesSettings:
    space: Literal["live-pretrained", "live"] = "live-pretrained"
    """What ingest computes per window and the model reads: "live-pretrained" = MiniLM token
    states, FER2013 expression features of YuNet faces, log-mel audio; "live" = CLIP text and
    image embeddings of clip.model (needs CLIP weights to mean anything)."""


@dataclass(frozen=True)
class ClipSettings:
    model: str = "ViT-B-32"
    pretrained: str = ""
    """open_clip pretrained tag or local checkpoint file; empty = random init (warned)."""


@dataclass(frozen=True)
class TrainSettings:
    task: Literal["emotion", "sentiment"] = "emotion"
    query_word: str = ""
    epochs: int = 20
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.01
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    out_dir: str = "runs"

    def validate(self) -> None:
        check(self.epochs >= 1, "train.epochs", "must be >= 1")
        check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        check(self.lr > 0, "train.lr", "must be > 0")
        check(self.device in ("auto", "cpu", "cuda"), "train.device", "auto|cpu|cuda")


class _HasDevice(Protocol):
    @property
    def device(self) -> str: ...


class MerClipSettings(Protocol):
    """What `Predictor.from_settings` and the training commands read (workers.app.settings has
    it all)."""

    @property
    def model(self) -> ModelSettings: ...
    @property
    def features(self) -> FeaturesSettings: ...
    @property
    def clip(self) -> ClipSettings: ...
    @property
    def train(self) -> TrainSettings: ...
    @property
    def inference(self) -> _HasDevice: ...
    def replace(self, section: str, **values: Any) -> Self:
        """A copy with some keys of one section changed, validated like the file."""
        ...

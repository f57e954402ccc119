"""MER-CLIP (WACV 2025), Algorithm 1 of the supplement, read top to bottom:

    Z^L = LabelEncoder(label words)          (C, D)   CoOp prompts through CLIP's text tower
    Z^E = QueryEncoder(query word)           (T_q, D) learnable prompts + "Emotion"/"Sentiment"
    Z^[3] = CMD(proj(Z^E), [X^L, X^V, X^A])  (B, T_q, W)
    z = Linear(pool(Z^[3]))                  (B, D)   pool = EOT token (config.pooling)
    sim = cos(z, Z^L)                        (B, C)   → emotion / sentiment head

One model can carry both tasks: each task has its own label words, label prompts, query word and
query prompts; the adapters and the decoder are shared. CLIP's text tower is frozen by default.
Where no CLIP weights exist, `text_tower = "minilm"` puts the pretrained MiniLM sentence encoder
in the text tower's place (merclip/minilm.py), so label words and query words keep a meaning.

At inference the label embeddings and the query do not depend on the input: `cache_encodings()`
computes them once, and every later eval-mode forward costs only adapters + decoder + heads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from merclip.batch import ModalityBatch
from merclip.clip_backbone import ClipBackbone, load_clip
from merclip.config import MerClipConfig, load_model_config
from merclip.decoder import CrossModalDecoder
from merclip.errors import ConfigError
from merclip.heads import EmotionHead, SentimentHead, TaskOutput
from merclip.minilm import MiniLm, MiniLmTextTower, load_minilm
from merclip.prompts import LabelEncoder, QueryEncoder, TextTower

__all__ = ["HEADS", "MerClip", "TaskOutput", "create_model"]

log = logging.getLogger(__name__)


def _emotion_head(config: MerClipConfig) -> nn.Module:
    return EmotionHead(len(config.emotion_labels), config.emotion_norm, config.emotion_threshold)


def _sentiment_head(config: MerClipConfig) -> nn.Module:
    return SentimentHead(config.logit_scale_init)


HEADS: dict[str, Callable[[MerClipConfig], nn.Module]] = {
    "emotion": _emotion_head,
    "sentiment": _sentiment_head,
}
"""The head of each task (config.TASKS), built from the config."""


class TaskModule(nn.Module):
    """What one task owns: label encoder, query encoder and head."""

    def __init__(
        self, task: str, config: MerClipConfig, tower: TextTower | MiniLmTextTower
    ) -> None:
        super().__init__()
        self.labels = LabelEncoder(tower, list(config.labels(task)), config.n_ctx, config.ctx_init)
        self.query = QueryEncoder(tower, config.query_word(task), config.n_ctx)
        self.head = HEADS[task](config)


class MerClip(nn.Module):
    def __init__(self, config: MerClipConfig, backbone: ClipBackbone | MiniLm) -> None:
        """`backbone` provides the text tower: a CLIP (text_tower "clip") or MiniLM ("minilm")."""
        super().__init__()
        self.config = config
        self.text: TextTower | MiniLmTextTower
        if config.text_tower == "minilm":
            if not isinstance(backbone, MiniLm):
                raise ConfigError(f"model config {config.name!r} needs the MiniLM text tower")
            self.clip_name, self.clip_pretrained = "", ""
            self.text = MiniLmTextTower(backbone)
        else:
            if not isinstance(backbone, ClipBackbone) or backbone.name != config.clip_model:
                got = getattr(backbone, "name", type(backbone).__name__)
                raise ConfigError(
                    f"model config {config.name!r} needs CLIP {config.clip_model!r}, got {got!r}"
                )
            self.clip_name = backbone.name
            self.clip_pretrained = backbone.pretrained_source
            self.text = TextTower(backbone)
        # The tower shares CLIP's modules (no copy): set both ways, the last model built wins.
        self.text.requires_grad_(not config.freeze_clip)
        self.task_modules = nn.ModuleDict(
            {t: TaskModule(t, config, self.text) for t in config.tasks}
        )
        embed_dim = self.text.embed_dim
        self.query_proj = nn.Linear(embed_dim, config.width)  # Z^E (D) → decoder width
        self.decoder = CrossModalDecoder(config)
        self.out_proj = nn.Linear(config.width, embed_dim)  # pooled Z^[3] → CLIP space
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.extra: dict[str, Any] = {}
        """Training metadata of the checkpoint this model was loaded from."""

    # -- introspection ---------------------------------------------------------------------------
    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.task_modules.keys())

    def labels(self, task: str) -> list[str]:
        return list(self.config.labels(self._check_task(task)))

    @property
    def dims(self) -> dict[str, int]:
        return dict(self.config.dims)

    def _check_task(self, task: str) -> str:
        if task not in self.task_modules:
            raise ConfigError(f"task {task!r} is not in this model (it has {list(self.tasks)})")
        return task

    def set_emotion_threshold(self, threshold: float) -> None:
        """Predict emotions at `threshold` (config and head), e.g. the service's setting."""
        self.config = self.config.replace(emotion_threshold=threshold)
        if "emotion" in self.task_modules:
            head = self.task_modules["emotion"].head
            assert isinstance(head, EmotionHead)
            head.threshold = threshold

    # -- text side (input-independent) -----------------------------------------------------------
    def encode_task(self, task: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(label embeddings Z^L (C, D), projected query (T_q, W)); cached when available."""
        cached = self._cache.get(task)
        if cached is not None and not self.training and self._fits(cached[1]):
            return cached
        tm = self.task_modules[task]
        labels = tm.labels(self.text).float()  # (C, D)
        query = self.query_proj(tm.query(self.text).float())  # (T_q, W)
        return labels, query

    def _fits(self, query: torch.Tensor) -> bool:
        """Whether a cached query was computed on the device and dtype the model has now: after
        a .to(device) / .half() the cache is stale and is recomputed rather than reused."""
        weight = self.query_proj.weight
        return query.device == weight.device and query.dtype == weight.dtype

    @torch.no_grad()
    def cache_encodings(self) -> None:
        """Compute every task's label and query encodings once (eval mode). Cleared by train()
        and load_state_dict(); not used after a move to another device or dtype (`_fits`)."""
        self.eval()
        self._cache = {}
        self._cache = {t: self.encode_task(t) for t in self.tasks}

    def train(self, mode: bool = True) -> MerClip:
        if mode:
            self._cache = {}
        super().train(mode)
        if self.config.freeze_clip:
            # A frozen tower stays deterministic (MiniLM has dropout); MiniLM's modules are also
            # the process's language feature encoder, which must never run in training mode.
            self.text.eval()
        return self

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        self._cache = {}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # -- forward ---------------------------------------------------------------------------------
    def forward(
        self, batch: ModalityBatch, task: str, targets: torch.Tensor | None = None
    ) -> TaskOutput:
        self._check_task(task)
        labels, query = self.encode_task(task)  # (C, D), (T_q, W)
        b = batch.size
        z = self.decoder(query.unsqueeze(0).expand(b, -1, -1), batch)  # (B, T_q, W)
        # The query is SOT..EOT, so its EOT token is the last one.
        pooled = z[:, -1] if self.config.pooling == "eot" else z.mean(dim=1)  # (B, W)
        emb = F.normalize(self.out_proj(pooled), dim=-1)  # (B, D)
        sim = emb @ F.normalize(labels, dim=-1).t()  # (B, C)
        head = self.task_modules[task].head
        if isinstance(head, EmotionHead):
            return head(sim, targets, batch.present())
        return head(sim, targets)


def create_model(
    name_or_config: str | MerClipConfig,
    clip: ClipBackbone | MiniLm | None = None,
    **overrides: Any,
) -> MerClip:
    """Build a MER-CLIP model from a named config (or a config) with field overrides.

    Without `clip`, the text tower is the bundled MiniLM (text_tower "minilm") or CLIP
    `config.clip_model` randomly initialised (a warning says so); pass a loaded `ClipBackbone`
    to use pretrained CLIP weights or to share one between models.
    """
    config = (
        load_model_config(name_or_config) if isinstance(name_or_config, str) else name_or_config
    )
    if overrides:
        config = config.replace(**overrides)
    if clip is None:
        clip = load_minilm() if config.text_tower == "minilm" else load_clip(config.clip_model, "")
    return MerClip(config, clip)

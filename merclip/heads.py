"""Prediction heads of MER-CLIP (supplement, Algorithm 1), given sim = cos(Z^[3], Z^L) (B, C).

Emotion recognition (multi-label):
    logits = normalise(sim)            "standard normalisation" (config.emotion_norm)
    probs  = sigmoid(logits)           normalisation happens BEFORE the sigmoid
    pred   = probs >= threshold        multi-hot (paper: 0.6)
    loss   = BCE-with-logits(logits, multi-hot targets), mean over samples and labels
  emotion_norm "batch": per-label standardisation over the batch (BatchNorm1d, affine=False,
  running statistics at inference, so a sample's output never depends on its batch-mates then);
  "sample": z-score across the C labels of each sample.
  "pattern": "batch" per evidence pattern (which of language / visual / audio a sample has):
  one set of statistics per pattern, so faces alone, words alone and a talking face are each
  standardised among their own kind (see EmotionHead).

Sentiment analysis (single-label):
    logits = sim * exp(logit_scale)    log scale starts at log(1/0.07), clamped at exp = 100
    probs  = softmax(logits); pred = one-hot argmax
    loss   = cross-entropy(logits, class index)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "PATTERNS",
    "EmotionHead",
    "SentimentHead",
    "TaskOutput",
    "pattern_index",
    "sample_normalise",
]

_MAX_LOGIT_SCALE = 100.0


@dataclass
class TaskOutput:
    similarity: torch.Tensor  # (B, C) cosine similarities
    logits: torch.Tensor  # (B, C) what the loss sees
    probs: torch.Tensor  # (B, C)
    prediction: torch.Tensor  # (B, C) multi-hot (emotion) or one-hot (sentiment), float
    loss: torch.Tensor | None = None


def sample_normalise(sim: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """z-score across labels per sample: (B, C) → (B, C)."""
    mean = sim.mean(dim=-1, keepdim=True)
    std = sim.std(dim=-1, keepdim=True, unbiased=False)
    return (sim - mean) / (std + eps)


PATTERNS = 8
"""Evidence patterns: bit i set = modality i (MODALITIES order) present; 0 = none."""


def pattern_index(present: torch.Tensor) -> torch.Tensor:
    """(B, M) bool presence → (B,) pattern index in [0, 2**M)."""
    weights = 2 ** torch.arange(present.shape[1], device=present.device)
    return (present.long() * weights).sum(dim=1)


def _batch_norm(bn: nn.BatchNorm1d, sim: torch.Tensor, training: bool) -> torch.Tensor:
    if training and sim.shape[0] == 1:
        # One sample has no batch variance: use the running statistics instead of failing.
        return F.batch_norm(sim, bn.running_mean, bn.running_var, eps=bn.eps)
    return bn(sim)


class EmotionHead(nn.Module):
    """Emotion head; with norm "pattern", one BatchNorm per evidence pattern.

    Why per pattern: trained on FER2013 faces, MELD words and RAVDESS voices together, one set
    of per-label statistics standardised every sample against the mixture, and the model that
    came out read MELD and RAVDESS far worse than models trained on each alone (micro-F1 0.36
    vs 0.44 on MELD dev, 0.31 vs 0.46 on RAVDESS val: docs/TRAINING.md). A pattern without
    statistics yet (never trained on) falls back to the pooled BatchNorm `bn`, which is
    trained on every sample.
    """

    def __init__(self, num_labels: int, norm: str, threshold: float) -> None:
        super().__init__()
        self.norm = norm
        self.threshold = threshold
        # Only used with norm "batch"/"pattern"; harmless otherwise, keeps state_dicts uniform.
        self.bn = nn.BatchNorm1d(num_labels, affine=False)
        self.pattern_bn = (
            nn.ModuleList(nn.BatchNorm1d(num_labels, affine=False) for _ in range(PATTERNS))
            if norm == "pattern"
            else None
        )

    def normalise(self, sim: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        if self.norm == "sample":
            return sample_normalise(sim)
        pooled = _batch_norm(self.bn, sim, self.training)
        if self.pattern_bn is None or present is None:
            return pooled
        index = pattern_index(present)
        out = pooled.clone()
        for k in index.unique().tolist():
            rows = index == k
            bn = self.pattern_bn[k]
            assert isinstance(bn, nn.BatchNorm1d)
            if self.training or int(bn.num_batches_tracked) > 0:
                out[rows] = _batch_norm(bn, sim[rows], self.training)
        return out

    def forward(
        self,
        sim: torch.Tensor,
        targets: torch.Tensor | None = None,
        present: torch.Tensor | None = None,
    ) -> TaskOutput:
        """`present` (B, M) bool: which modalities each sample has (norm "pattern")."""
        logits = self.normalise(sim, present)  # (B, C)
        probs = torch.sigmoid(logits)
        pred = (probs >= self.threshold).to(probs.dtype)
        loss = None
        if targets is not None:
            loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))
        return TaskOutput(sim, logits, probs, pred, loss)


class SentimentHead(nn.Module):
    def __init__(self, logit_scale_init: float) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale_init)))

    def forward(self, sim: torch.Tensor, targets: torch.Tensor | None = None) -> TaskOutput:
        scale = self.logit_scale.exp().clamp(max=_MAX_LOGIT_SCALE)
        logits = sim * scale  # (B, C)
        probs = logits.softmax(dim=-1)
        pred = F.one_hot(probs.argmax(dim=-1), probs.shape[-1]).to(probs.dtype)
        loss = None
        if targets is not None:
            # Class indices (B,), or one-hot / soft rows (B, C).
            t = targets.argmax(dim=-1) if targets.ndim == 2 else targets.long()
            loss = F.cross_entropy(logits, t)
        return TaskOutput(sim, logits, probs, pred, loss)

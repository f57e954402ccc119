"""Prediction heads of MER-CLIP (supplement, Algorithm 1), given sim = cos(Z^[3], Z^L) (B, C).

Emotion recognition (multi-label):
    logits = normalise(sim)            "standard normalisation" (config.emotion_norm)
    probs  = sigmoid(logits)           normalisation happens BEFORE the sigmoid
    pred   = probs >= threshold        multi-hot (paper: 0.6)
    loss   = BCE-with-logits(logits, multi-hot targets), mean over samples and labels
  emotion_norm "batch": per-label standardisation over the batch (BatchNorm1d, affine=False,
  running statistics at inference, so a sample's output never depends on its batch-mates then);
  "sample": z-score across the C labels of each sample.

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

__all__ = ["EmotionHead", "SentimentHead", "TaskOutput", "sample_normalise"]

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


class EmotionHead(nn.Module):
    def __init__(self, num_labels: int, norm: str, threshold: float) -> None:
        super().__init__()
        self.norm = norm
        self.threshold = threshold
        # Only used with norm == "batch"; harmless otherwise and keeps state_dicts uniform.
        self.bn = nn.BatchNorm1d(num_labels, affine=False)

    def normalise(self, sim: torch.Tensor) -> torch.Tensor:
        if self.norm == "sample":
            return sample_normalise(sim)
        if self.training and sim.shape[0] == 1:
            # One sample has no batch variance: use the running statistics instead of failing.
            return F.batch_norm(sim, self.bn.running_mean, self.bn.running_var, eps=self.bn.eps)
        return self.bn(sim)

    def forward(self, sim: torch.Tensor, targets: torch.Tensor | None = None) -> TaskOutput:
        logits = self.normalise(sim)  # (B, C)
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

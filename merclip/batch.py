"""The model's input: padded language, visual and audio sequences with validity masks.

Shared by training (datasets collate into it) and inference (the worker batches windows into it),
so it lives apart from both. A modality that is absent for a sample (no face in view, silence) has
an all-False mask row: the decoder skips it for that sample instead of attending to fake zeros.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["MODALITIES", "ModalityBatch", "Sample", "collate"]

MODALITIES: tuple[str, ...] = ("language", "visual", "audio")


@dataclass(frozen=True)
class Sample:
    """One example: per-modality feature sequences (T_m, D_m); a None or empty one is absent."""

    language: np.ndarray | None
    visual: np.ndarray | None
    audio: np.ndarray | None
    emotion: np.ndarray | None = None
    """Multi-hot (num_emotions,) float32, or None when unlabelled."""
    sentiment: int | None = None
    """Class index (0 negative, 1 positive), or None."""
    regression: float | None = None
    """Continuous sentiment in [-3, 3] when the dataset has it."""
    id: str = ""


@dataclass
class ModalityBatch:
    """Padded modality tensors. Masks are True where a position holds a real feature."""

    language: torch.Tensor  # (B, T_l, D_l)
    language_mask: torch.Tensor  # (B, T_l) bool
    visual: torch.Tensor  # (B, T_v, D_v)
    visual_mask: torch.Tensor  # (B, T_v) bool
    audio: torch.Tensor  # (B, T_a, D_a)
    audio_mask: torch.Tensor  # (B, T_a) bool

    @property
    def size(self) -> int:
        return int(self.language.shape[0])

    def features(self, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, mask) of one modality by name."""
        return getattr(self, modality), getattr(self, f"{modality}_mask")

    def present(self) -> torch.Tensor:
        """(B, 3) bool: which modalities each sample has, in MODALITIES order."""
        return torch.stack([getattr(self, f"{m}_mask").any(dim=1) for m in MODALITIES], dim=1)

    def to(self, device: torch.device | str) -> ModalityBatch:
        return ModalityBatch(**{k: v.to(device) for k, v in vars(self).items()})


def collate(samples: Sequence[Sample], dims: dict[str, int]) -> ModalityBatch:
    """Pad samples into a ModalityBatch; `dims` gives each modality's feature width.

    Every modality gets at least one (masked) position so tensor shapes never collapse to zero.
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    out: dict[str, torch.Tensor] = {}
    for m in MODALITIES:
        seqs = [getattr(s, m) for s in samples]
        lengths = [0 if x is None else int(np.asarray(x).shape[0]) for x in seqs]
        t_max = max(1, max(lengths))
        feats = torch.zeros(len(samples), t_max, dims[m], dtype=torch.float32)
        mask = torch.zeros(len(samples), t_max, dtype=torch.bool)
        for i, (x, n) in enumerate(zip(seqs, lengths, strict=False)):
            if n == 0 or x is None:
                continue
            arr = np.asarray(x, dtype=np.float32)
            if arr.ndim != 2 or arr.shape[1] != dims[m]:
                raise ValueError(
                    f"sample {samples[i].id or i}: {m} features have shape {arr.shape}, "
                    f"expected (T, {dims[m]})"
                )
            feats[i, :n] = torch.from_numpy(arr)
            mask[i, :n] = True
        out[m] = feats
        out[f"{m}_mask"] = mask
    return ModalityBatch(**out)

"""Modality adapters and the cross-modal decoder (CMD) of MER-CLIP.

The query Z^E attends to the modalities one stage at a time in `config.order` (paper: L, V, A):
Z^[1] = Stage_L(Z^E, X^L), Z^[2] = Stage_V(Z^[1], X^V), Z^[3] = Stage_A(Z^[2], X^A). Each stage is
`config.layers` pre-norm transformer decoder blocks (self-attention over the query tokens,
cross-attention to the modality, MLP, residuals).

A sample whose modality is absent (all-False mask) skips that stage's cross-attention: its
cross-attention residual is exactly zero, so it never attends to padding and never makes NaN.

Initialisation is PyTorch's default, on purpose: `nn.Linear` Kaiming-uniform, `nn.
MultiheadAttention` Xavier-uniform in-projection with zero biases, `nn.LayerNorm` 1 and 0, here
and for `query_proj` / `out_proj` in model.py. The shipped checkpoint and every result in
docs/TRAINING.md were trained from exactly this, and the decoder is shallow (`config.layers`
pre-norm blocks per modality, 1 in the shipped configs), so nanoGPT's `_init_weights` (N(0, 0.02),
depth-scaled output projections) is not needed; adding one would change every trained result.
The only explicit initialisations are the prompt contexts (prompts.py `_init_context`) and the
sentiment logit scale (heads.py).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from merclip.batch import ModalityBatch
from merclip.config import MerClipConfig

__all__ = ["CrossModalDecoder", "DecoderBlock", "ModalityAdapter", "with_summary_rows"]


class ModalityAdapter(nn.Module):
    """Linear (or a GELU MLP when hidden > 0) + LayerNorm: feature width → decoder width."""

    def __init__(self, in_dim: int, width: int, hidden: int = 0) -> None:
        super().__init__()
        self.proj: nn.Module = (
            nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, width))
            if hidden
            else nn.Linear(in_dim, width)
        )
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))  # (B, T, D_m) -> (B, T, width)


def with_summary_rows(
    feats: torch.Tensor, mask: torch.Tensor, eps: float = 1e-5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Append the masked mean, std and max over time: (B, T, D), (B, T) → (B, T + 3, D),
    (B, T + 3). An absent modality (all-False mask) stays absent, its rows zero."""
    present = mask.any(dim=1)  # (B,)
    m = mask.unsqueeze(-1).to(feats.dtype)
    n = m.sum(dim=1).clamp(min=1.0)
    mean = (feats * m).sum(dim=1) / n
    var = (((feats - mean.unsqueeze(1)) ** 2) * m).sum(dim=1) / n
    peak = feats.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)
    peak = torch.where(present.unsqueeze(-1), peak, torch.zeros_like(peak))
    rows = torch.stack([mean, (var + eps).sqrt(), peak], dim=1)  # (B, 3, D)
    rows = rows * present.to(rows.dtype)[:, None, None]
    extra = present.unsqueeze(1).expand(-1, 3)
    return torch.cat([feats, rows], dim=1), torch.cat([mask, extra], dim=1)


class DecoderBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.ln_self = nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.ln_query = nn.LayerNorm(width)
        self.ln_memory = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.ln_mlp = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, z: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """z (B, T_q, W) queries, memory (B, T_m, W), mask (B, T_m) True = real → (B, T_q, W)."""
        h = self.ln_self(z)
        z = z + self.drop(self.self_attn(h, h, h, need_weights=False)[0])
        present = mask.any(dim=1)  # (B,)
        # An all-masked row would softmax over nothing (NaN, also in the backward pass). Let such
        # rows see position 0, then zero their result: the sample skips this cross-attention.
        safe_mask = mask.clone()
        safe_mask[~present, 0] = True
        mem = self.ln_memory(memory)
        c = self.cross_attn(
            self.ln_query(z), mem, mem, key_padding_mask=~safe_mask, need_weights=False
        )[0]  # (B, T_q, W)
        z = z + self.drop(c) * present.to(c.dtype)[:, None, None]
        return z + self.drop(self.mlp(self.ln_mlp(z)))


class CrossModalDecoder(nn.Module):
    """Adapters + one stage of decoder blocks per modality, visited in `config.order`."""

    def __init__(self, config: MerClipConfig) -> None:
        super().__init__()
        self.order = tuple(config.order)
        self.adapters = nn.ModuleDict(
            {
                m: ModalityAdapter(config.dims[m], config.width, config.adapter_hidden)
                for m in self.order
            }
        )
        self.stages = nn.ModuleDict(
            {
                m: nn.ModuleList(
                    DecoderBlock(config.width, config.heads, config.mlp_ratio, config.dropout)
                    for _ in range(config.layers)
                )
                for m in self.order
            }
        )
        self.ln_out = nn.LayerNorm(config.width)
        self.summary_rows = config.summary_rows

    def forward(self, query: torch.Tensor, batch: ModalityBatch) -> torch.Tensor:
        """query (B, T_q, W) = Z^E → Z^[3] (B, T_q, W)."""
        z = query
        for m in self.order:
            feats, mask = batch.features(m)  # (B, T_m, D_m), (B, T_m)
            # Zero the padding: masked keys get no attention weight, but 0 * NaN is still NaN.
            feats = feats.masked_fill(~mask.unsqueeze(-1), 0.0)
            if self.summary_rows:
                feats, mask = with_summary_rows(feats, mask)
            memory = self.adapters[m](feats)  # (B, T_m, W)
            for block in self.stages[m]:
                z = block(z, memory, mask)
        return self.ln_out(z)

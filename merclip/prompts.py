"""CLIP's text tower and the two prompt-learned text encoders of MER-CLIP.

- `TextTower`: only the text half of an open_clip CLIP (token embedding, positional embedding,
  transformer, final norm, projection, causal mask). The visual tower is not part of MER-CLIP:
  visual features arrive precomputed. `merclip.minilm.MiniLmTextTower` is the other tower (a
  pretrained sentence encoder, for machines without CLIP weights); both offer `tokenize`,
  `token_embedding`, `eot_positions`, `encode` and `pool`, which is all the prompts use.
- `LabelEncoder` (CoOp prompt learner): "[V1]..[Vn] <label word>." with learnable context vectors
  V shared by all labels of a task; the end-of-text output is the label embedding (C, D).
- `QueryEncoder`: the emotion query Z^E = "[P1]..[Pn] <query word>" (word may be "") through the
  same text tower; the whole token sequence SOT..EOT of outputs is the query (T_q, D).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from merclip.clip_backbone import ClipBackbone, truncated_text_transformer

__all__ = ["LabelEncoder", "QueryEncoder", "TextTower"]

log = logging.getLogger(__name__)

# A single-token placeholder whose embedding slots are overwritten by the learnable context.
_PLACEHOLDER = "X"


class TextTower(nn.Module):
    """The text encoder of a CLIP model, sharing its modules (no copy)."""

    def __init__(self, clip: ClipBackbone) -> None:
        super().__init__()
        m = clip.model
        self.token_embedding = m.token_embedding
        self.positional_embedding = m.positional_embedding
        self.transformer = m.transformer
        self.ln_final = m.ln_final
        self.text_projection = m.text_projection
        self.register_buffer("attn_mask", m.attn_mask.clone(), persistent=False)
        self.tokenizer: Callable[..., torch.Tensor] = clip.tokenizer

    @property
    def width(self) -> int:
        return int(self.token_embedding.weight.shape[1])

    @property
    def embed_dim(self) -> int:
        proj: Any = self.text_projection
        return int(proj.out_features if isinstance(proj, nn.Linear) else proj.shape[-1])

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts).to(self.token_embedding.weight.device)  # (N, 77)

    def forward(self, embeddings: torch.Tensor, length: int) -> torch.Tensor:
        """Token embeddings (N, 77, W) → projected outputs (N, length, D).

        Only the first `length` positions are run (exact under CLIP's causal mask, ~7x cheaper):
        `clip_backbone.truncated_text_transformer`, the same code the live language features use.
        """
        return truncated_text_transformer(self, embeddings, length)  # (N, L, D)

    def eot_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """Index of the end-of-text token per row (it has the largest id in CLIP's vocab)."""
        return tokens.argmax(dim=-1)

    def encode(self, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Token embeddings (N, 77, W) of `tokens` → outputs (N, L, D) up to the last EOT."""
        return self(embeddings, int(self.eot_positions(tokens).max()) + 1)

    def pool(self, states: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(N, L, D) → (N, D): the EOT output, CLIP's pooled text embedding."""
        eot = self.eot_positions(tokens)
        return states[torch.arange(states.shape[0], device=states.device), eot]


def _init_context(tower: TextTower, n_ctx: int, template: str) -> torch.Tensor:
    """(n_ctx, W): token embeddings of `template` when it has n_ctx tokens, else N(0, 0.02)."""
    if n_ctx == 0:
        return torch.empty(0, tower.width)
    if template:
        tokens = tower.tokenize([template])[0]
        n_tok = int(tower.eot_positions(tokens[None])[0]) - 1  # between SOT and EOT
        if n_tok == n_ctx:
            with torch.no_grad():
                return tower.token_embedding(tokens[1 : 1 + n_ctx]).detach().float().cpu().clone()
        log.debug("ctx_init %r has %d tokens, n_ctx=%d: random init", template, n_tok, n_ctx)
    return torch.randn(n_ctx, tower.width) * 0.02


class _PromptedText(nn.Module):
    """Texts "SOT [ctx]*n_ctx <suffix> EOT" whose ctx slots hold learnable vectors."""

    def __init__(self, tower: TextTower, n_ctx: int, suffixes: list[str], ctx_init: str) -> None:
        super().__init__()
        self.n_ctx = n_ctx
        self.ctx = nn.Parameter(_init_context(tower, n_ctx, ctx_init))  # (n_ctx, W)
        prompts = [" ".join([_PLACEHOLDER] * n_ctx + ([s] if s else [])) for s in suffixes]
        tokens = tower.tokenize(prompts)  # (N, L_tok)
        # Non-persistent: the words travel in the checkpoint as text, not as token ids.
        self.register_buffer("tokens", tokens, persistent=False)

    def run(self, tower: TextTower) -> torch.Tensor:
        """Outputs (N, L, D) of the prompts with the current context vectors."""
        emb = tower.token_embedding(self.tokens)  # (N, L_tok, W)
        if self.n_ctx:
            ctx = self.ctx.to(emb.dtype).unsqueeze(0).expand(emb.shape[0], -1, -1)
            emb = torch.cat([emb[:, :1], ctx, emb[:, 1 + self.n_ctx :]], dim=1)
        return tower.encode(emb, self.tokens)  # (N, L, D)


class LabelEncoder(_PromptedText):
    """CoOp label encoder: one embedding per label word, (C, D)."""

    def __init__(self, tower: TextTower, words: list[str], n_ctx: int, ctx_init: str) -> None:
        super().__init__(tower, n_ctx, [f"{w}." for w in words], ctx_init)
        self.words = list(words)

    def forward(self, tower: TextTower) -> torch.Tensor:
        return tower.pool(self.run(tower), self.tokens)  # (C, D)


class QueryEncoder(_PromptedText):
    """Emotion query Z^E: learnable prompts + query word, all outputs SOT..EOT, (T_q, D)."""

    def __init__(self, tower: TextTower, word: str, n_ctx: int) -> None:
        # Prompts start random (the paper's query prompts are learnable; there is no template).
        super().__init__(tower, n_ctx, [word], ctx_init="")
        self.word = word

    def forward(self, tower: TextTower) -> torch.Tensor:
        eot = tower.eot_positions(self.tokens)
        return self.run(tower)[0, : int(eot[0]) + 1]  # (T_q, D)

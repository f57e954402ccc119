"""What MER-CLIP's outputs mean: the default label words of each task and the emotion threshold.

Torch-free on purpose: the model config (merclip/config.py), the service settings and the data
loaders (merclip/data/) all read these, and the settings must stay importable without torch.
"""

from __future__ import annotations

__all__ = ["EMOTION_LABELS", "EMOTION_THRESHOLD", "SENTIMENT_LABELS"]

EMOTION_LABELS: tuple[str, ...] = ("happy", "sad", "anger", "surprise", "disgust", "fear")
"""The six CMU-MOSEI emotions, in the order of every emotion multi-hot (and of the SDK's label
columns 1..6). Defined on the inference side; merclip.data imports it from here."""

SENTIMENT_LABELS: tuple[str, ...] = ("negative", "positive")

EMOTION_THRESHOLD = 0.6
"""The paper's emotion decision threshold: the one default of both `MerClipConfig.
emotion_threshold` (the model's) and the service setting `model.emotion_threshold`."""

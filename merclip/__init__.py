"""MER-CLIP: the model of "Leveraging CLIP Encoder for Multimodal Emotion Recognition" (WACV 2025),
with its training and evaluation. Inference code never imports `merclip.training` or `merclip.data`.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]

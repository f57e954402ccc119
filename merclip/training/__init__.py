"""Training, evaluation and the query-word ablation of MER-CLIP (never imported by inference).

Commands: `merclip train` (train.py), `merclip evaluate` (evaluate.py), `merclip ablate-query`
(ablate.py). Metrics and the label-frequency baseline live in metrics.py, plots in plots.py.
"""

from merclip.training.metrics import (
    LabelFrequencyBaseline,
    emotion_metrics,
    sentiment_metrics,
)
from merclip.training.train import TrainOptions, TrainResult, train

__all__ = [
    "LabelFrequencyBaseline",
    "TrainOptions",
    "TrainResult",
    "emotion_metrics",
    "sentiment_metrics",
    "train",
]

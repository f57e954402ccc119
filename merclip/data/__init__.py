"""Datasets for training and evaluation (never imported by inference code).

- `mmsa`: CMU-MOSI / CMU-MOSEI MMSA pickles (benchmark feature space)
- `mosei_labels`: CMU-MOSEI emotion labels (SDK .csd or exported .pkl/.json)
- `live_dataset`: the on-disk live feature-space format written by `merclip extract`
- `synthetic`: planted-signal data for tests and smoke runs
- `sources`: `--data SPEC` → a loaded dataset
"""

from merclip.data.live_dataset import LiveDataset, LiveDatasetWriter, load_live_dataset
from merclip.data.mmsa import MMSA_DIMS, load_mmsa
from merclip.data.mosei_labels import EMOTION_LABELS, load_emotion_labels
from merclip.data.sources import DataSource, load_data
from merclip.data.synthetic import SyntheticSpec, make_synthetic

__all__ = [
    "EMOTION_LABELS",
    "MMSA_DIMS",
    "DataSource",
    "LiveDataset",
    "LiveDatasetWriter",
    "SyntheticSpec",
    "load_data",
    "load_emotion_labels",
    "load_live_dataset",
    "load_mmsa",
    "make_synthetic",
]

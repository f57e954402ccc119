"""A synthetic dataset with planted, learnable signal in every modality.

Each label (6 emotions, and sentiment polarity) owns one random prototype direction per modality.
A sample's feature tokens are the sum of the prototypes of its labels (sentiment scaled by its
continuous score) plus Gaussian noise, so every modality alone carries the labels and a model that
learns nothing scores like the label-frequency baseline. Lengths are random and each modality is
absent with probability `p_absent` (at least one stays present), like windows with no face in view
or silence. Deterministic for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from merclip.batch import MODALITIES, Sample
from merclip.data.mosei_labels import EMOTION_LABELS

__all__ = ["SyntheticSpec", "make_synthetic"]


@dataclass(frozen=True)
class SyntheticSpec:
    n_train: int = 512
    n_valid: int = 128
    n_test: int = 256
    emotion_prevalence: tuple[float, ...] = (0.5, 0.35, 0.3, 0.2, 0.15, 0.1)
    """Probability that each emotion is present (unequal: the frequency baseline is not trivial)."""
    noise: float = 1.0
    """Per-coordinate noise std; prototypes have norm `signal` in a space of width D."""
    signal: float = 3.0
    max_len: dict[str, int] | None = None
    """Longest sequence per modality (default language 12, visual 6, audio 20)."""
    p_absent: float = 0.15


def make_synthetic(
    dims: dict[str, int], spec: SyntheticSpec | None = None, seed: int = 0
) -> dict[str, list[Sample]]:
    """{"train", "valid", "test"} lists of labelled Samples with features of width `dims[m]`."""
    spec = spec or SyntheticSpec()
    if len(spec.emotion_prevalence) != len(EMOTION_LABELS):
        raise ValueError(f"emotion_prevalence needs {len(EMOTION_LABELS)} values")
    rng = np.random.default_rng(seed)
    max_len = spec.max_len or {"language": 12, "visual": 6, "audio": 20}
    n_emo = len(EMOTION_LABELS)
    # (n_emo + 1, D) unit directions per modality; the last row is the sentiment direction.
    protos = {}
    for m in MODALITIES:
        p = rng.standard_normal((n_emo + 1, dims[m]))
        protos[m] = spec.signal * p / np.linalg.norm(p, axis=1, keepdims=True)
    prevalence = np.asarray(spec.emotion_prevalence)
    out: dict[str, list[Sample]] = {}
    for split, n in (("train", spec.n_train), ("valid", spec.n_valid), ("test", spec.n_test)):
        samples = []
        for i in range(n):
            emotion = (rng.random(n_emo) < prevalence).astype(np.float32)
            regression = float(np.round(rng.uniform(-3, 3), 1))
            if regression == 0.0:  # keep non-0 binarisation meaningful for every sample
                regression = 0.1
            present = rng.random(len(MODALITIES)) >= spec.p_absent
            if not present.any():
                present[rng.integers(len(MODALITIES))] = True
            feats: dict[str, np.ndarray | None] = {}
            for k, m in enumerate(MODALITIES):
                if not present[k]:
                    feats[m] = None
                    continue
                t = int(rng.integers(1, max_len[m] + 1))
                centre = emotion @ protos[m][:n_emo] + (regression / 3.0) * protos[m][n_emo]
                noise = spec.noise * rng.standard_normal((t, dims[m]))
                feats[m] = (centre + noise).astype(np.float32)
            samples.append(
                Sample(
                    language=feats["language"],
                    visual=feats["visual"],
                    audio=feats["audio"],
                    emotion=emotion,
                    sentiment=int(regression >= 0),
                    regression=regression,
                    id=f"synthetic-{split}-{i:05d}",
                )
            )
        out[split] = samples
    return out

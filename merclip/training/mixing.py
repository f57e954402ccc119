"""What one training epoch sees when several datasets are trained together.

Two decisions, both about the service's real input (a face, a voice and words in one window):
- Balance: a dataset larger than `max_per_dataset` contributes a fresh random subset of that
  size to each epoch (over the epochs it is still seen whole), and a dataset far smaller than the
  largest is repeated until it holds at least `min_share` of it (FER2013 28.7k faces vs RAVDESS
  960 clips), so the small ones still shape the shared decoder and its emotion calibration:
  with FER2013 at 70 % of an epoch, the shipped model's first run under-predicted on MELD words
  and RAVDESS voices (772 empty predictions for 470 neutral MELD dev utterances).
- Compose: FER2013, MELD and RAVDESS each carry one modality (RAVDESS: voice + its fixed neutral
  sentence), but every live window with a person talking carries all three. `compose` adds, per
  epoch, that fraction of extra samples built from items of the SAME emotion class (neutral with
  neutral) taken from different datasets: the words of a MELD utterance, a FER2013 face and a
  RAVDESS voice (a random subset of at least two), labelled with that class (sentiment from the
  MELD item when its words are in). The decoder thus learns to fuse modalities that agree, which
  single-modality samples alone never show it. Evaluation is always on real, uncomposed samples.

A sample's dataset is the prefix of its id before the first "/" (emotion_sets.py ids).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from merclip.batch import Sample

__all__ = ["COMPOSE_FROM", "balanced", "composed", "epoch_samples", "group_of"]

COMPOSE_FROM: dict[str, tuple[str, str]] = {
    "language": ("meld", "language"),
    "visual": ("fer2013", "visual"),
    "audio": ("ravdess", "audio"),
}
"""Composed modality → (dataset, modality of its items) it is taken from."""


def group_of(sample: Sample) -> str:
    return sample.id.split("/", 1)[0] if "/" in sample.id else ""


def _class_of(sample: Sample) -> int:
    """Index of the one emotion of a single-label sample, -1 for neutral (empty set)."""
    e = np.asarray(sample.emotion)
    return int(e.argmax()) if e.sum() > 0 else -1


def balanced(
    samples: Sequence[Sample],
    min_share: float,
    max_per_dataset: int | None = None,
    rng: np.random.Generator | None = None,
) -> list[Sample]:
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(group_of(s), []).append(s)
    if max_per_dataset:
        rng = rng or np.random.default_rng(0)
        for name, g in groups.items():
            if len(g) > max_per_dataset:
                keep = np.sort(rng.choice(len(g), max_per_dataset, replace=False))
                groups[name] = [g[i] for i in keep]
    largest = max(len(g) for g in groups.values())
    out: list[Sample] = []
    for g in groups.values():
        out.extend(g * max(1, math.ceil(min_share * largest / len(g))))
    return out


def composed(samples: Sequence[Sample], n: int, rng: np.random.Generator) -> list[Sample]:
    """`n` multimodal samples from single-dataset emotion samples of the same class."""
    by: dict[tuple[str, int], list[Sample]] = {}
    for s in samples:
        if s.emotion is not None and np.asarray(s.emotion).sum() <= 1:
            by.setdefault((group_of(s), _class_of(s)), []).append(s)
    classes = sorted({c for (_, c) in by})
    out: list[Sample] = []
    for k in range(n if classes else 0):
        c = classes[int(rng.integers(len(classes)))]
        sources = {m: by.get((g, c)) for m, (g, _) in COMPOSE_FROM.items()}
        have = [m for m, pool in sources.items() if pool]
        if len(have) < 2:
            continue
        size = int(rng.integers(2, len(have) + 1))
        chosen = [have[i] for i in sorted(rng.choice(len(have), size, replace=False))]
        parts: dict[str, np.ndarray | None] = {"language": None, "visual": None, "audio": None}
        sentiment = None
        for m in chosen:
            pool = sources[m]
            assert pool is not None
            item = pool[int(rng.integers(len(pool)))]
            parts[m] = getattr(item, COMPOSE_FROM[m][1])
            if m == "language":
                sentiment = item.sentiment
        if all(v is None for v in parts.values()):
            continue
        emotion = np.zeros(len(np.asarray(samples[0].emotion)), dtype=np.float32)
        if c >= 0:
            emotion[c] = 1.0
        out.append(Sample(**parts, emotion=emotion, sentiment=sentiment, id=f"composed/{k}"))
    return out


def epoch_samples(
    train: Sequence[Sample],
    rng: np.random.Generator,
    min_share: float,
    compose: float,
    max_per_dataset: int | None = None,
) -> list[Sample]:
    """The samples of one epoch (unshuffled): balanced datasets plus composed samples."""
    if min_share > 0 or max_per_dataset:
        pool = balanced(train, min_share, max_per_dataset, rng)
    else:
        pool = list(train)
    if compose > 0:
        pool += composed(train, int(compose * len(pool)), rng)
    return pool

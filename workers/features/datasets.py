"""Raw emotion datasets (FER2013 faces, MELD utterances, RAVDESS speech) → model samples, through
the same encoders that live ingest uses (train what you serve).

What each item goes through (the live path's own functions):
- FER2013 face crop → `encoders.faces([crop])` → visual (1, D_v). The crop IS the face: FER2013
  images are already tight 48×48 crops, so detection is skipped; live crops are framed to match
  (workers/features/expression.py EXPRESSION_MARGIN).
- MELD utterance → `encoders.language([text])` → language (T_l, D_l); Whisper's transcript takes
  its place live.
- RAVDESS clip → `log_mel_features(audio)` → audio (T_a, 64), plus the language features of the
  sentence the actor speaks (RAVDESS has two fixed, emotionally neutral statements, given by the
  file-name code): live windows with speech always carry their words, so the model learns from
  RAVDESS that neutral words with an emotional voice are the voice's emotion.

Features are cached per (dataset, split, encoder set) as a live dataset directory under
`cache_dir` (default ~/.cache/merclip/features), so a second `train` / `evaluate` / probe run
reads them in seconds; featurising all of ../shared/data takes a few minutes on 2 cores.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from merclip.batch import Sample
from merclip.data.emotion_sets import RawItem, available_splits, load_split
from merclip.data.live_dataset import LiveDatasetWriter, load_live_dataset
from merclip.data.mosei_labels import EMOTION_LABELS
from merclip.predictor import LIVE_PRETRAINED_DIMS
from workers.features.audio_features import log_mel_features
from workers.features.encoders import FeatureEncoders, PretrainedEncoders

__all__ = ["RAVDESS_STATEMENTS", "default_cache_dir", "featurize", "load_featurized"]

log = logging.getLogger(__name__)

RAVDESS_STATEMENTS = {"01": "Kids are talking by the door.", "02": "Dogs are sitting by the door."}
"""The two sentences of RAVDESS (statement code SS of the file name)."""
_FEATURIZER_VERSION = "1"
"""Bump when what an item goes through changes: old caches are then not reused."""
_BATCH = 64


def default_cache_dir() -> Path:
    env = os.environ.get("MERCLIP_FEATURE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "merclip" / "features"


def _ravdess_statement(item: RawItem) -> str:
    code = item.id.rsplit("/", 1)[-1].split(".")[0].split("-")
    return RAVDESS_STATEMENTS.get(code[4] if len(code) == 7 else "", "")


def featurize(items: Sequence[RawItem], encoders: FeatureEncoders) -> list[Sample]:
    """Samples of raw items, in order; each carries only the modalities its dataset has."""
    faces = [i for i, it in enumerate(items) if it.image is not None]
    texts = {
        i: it.text if it.text is not None else _ravdess_statement(it)
        for i, it in enumerate(items)
        if it.text is not None or it.audio is not None
    }
    visual: dict[int, np.ndarray] = {}
    for start in range(0, len(faces), _BATCH):
        chunk = faces[start : start + _BATCH]
        rows = encoders.faces([items[i].image for i in chunk])  # type: ignore[misc]
        visual.update({i: rows[k : k + 1] for k, i in enumerate(chunk)})
    language: dict[int, np.ndarray] = {}
    with_words = [i for i, t in texts.items() if t.strip()]
    for start in range(0, len(with_words), _BATCH):
        chunk = with_words[start : start + _BATCH]
        encoded = encoders.language([texts[i] for i in chunk])
        language.update(dict(zip(chunk, encoded, strict=True)))
    out = []
    for i, it in enumerate(items):
        audio = log_mel_features(it.audio) if it.audio is not None else None
        out.append(
            Sample(
                language=language.get(i),
                visual=visual.get(i),
                audio=audio,
                emotion=np.asarray(it.emotion, dtype=np.float32),
                sentiment=it.sentiment,
                id=it.id,
            )
        )
    return out


def _cache_key(kind: str, root: Path, split: str, limit: int | None, space: str) -> str:
    h = hashlib.sha256(
        f"{_FEATURIZER_VERSION}|{space}|{kind}|{root.resolve()}|{split}|{limit}".encode()
    ).hexdigest()[:16]
    return f"{kind}-{split}-{h}"


def load_featurized(
    kind: str,
    root: Path,
    splits: Sequence[str] | None = None,
    *,
    limit_per_class: int | None = None,
    encoders: FeatureEncoders | None = None,
    cache_dir: Path | None = None,
) -> dict[str, list[Sample]]:
    """{split: samples} of a raw dataset in the live-pretrained space, cached on disk."""
    cache = cache_dir or default_cache_dir()
    out: dict[str, list[Sample]] = {}
    for split in splits or available_splits(kind, root):
        path = cache / _cache_key(kind, root, split, limit_per_class, "live-pretrained")
        if (path / "meta.json").is_file():
            out[split] = load_live_dataset(path).splits.get(split, [])
            continue
        t = time.perf_counter()
        items = load_split(kind, root, split, limit_per_class)
        encoders = encoders or PretrainedEncoders.from_packages()
        samples = featurize(items, encoders)
        with LiveDatasetWriter(
            path,
            "",
            "",
            LIVE_PRETRAINED_DIMS,
            emotion_labels=EMOTION_LABELS,
            overwrite=True,
            feature_space="live-pretrained",
        ) as writer:
            for s in samples:
                writer.add(s.id, split, s.language, s.visual, s.audio, "", s.emotion, s.sentiment)
        log.info(
            "featurised %s %s: %d items in %.1f s (cached in %s)",
            kind,
            split,
            len(samples),
            time.perf_counter() - t,
            path,
        )
        out[split] = samples
    return out

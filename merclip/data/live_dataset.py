"""On-disk datasets in the live feature space (what `merclip extract` writes, `train` reads).

Layout of a dataset directory:
- `meta.json`: format_version, feature_space ("live" or "live-pretrained"), clip model and
  pretrained source ('' in live-pretrained), dims
  {language, visual, audio}, label words {emotion, sentiment}, counts per split, shard files.
- `<split>-<nnnnn>.npz` (compressed, no pickles): up to `shard_size` samples each. Ragged
  sequences are stored concatenated with per-sample lengths; length 0 = modality absent:
    `<m>` (sum T, D) float32 and `<m>_lengths` (N,) int64 for m in language/visual/audio,
    `id`, `transcript` (N,) str, `emotion` (N, C) float32 with `has_emotion` (N,) bool,
    `sentiment` (N,) int64 (-1 = none), `regression` (N,) float32 (NaN = none).

Shards keep memory bounded while writing a large corpus. `meta.json` is written last, by
`close()`, so a directory without it is an interrupted write and is refused by the loader.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from merclip.batch import MODALITIES, Sample
from merclip.data.mosei_labels import EMOTION_LABELS
from merclip.errors import DatasetError

__all__ = [
    "FORMAT_VERSION",
    "SENTIMENT_LABELS",
    "LiveDataset",
    "LiveDatasetWriter",
    "load_live_dataset",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
LIVE_SPACES: tuple[str, ...] = ("live", "live-pretrained")
SENTIMENT_LABELS: tuple[str, ...] = ("negative", "positive")


@dataclass
class LiveDataset:
    """A loaded live-space dataset."""

    splits: dict[str, list[Sample]]
    """{split: [Sample]} in the order they were written."""
    meta: dict[str, Any]
    """The parsed meta.json."""
    transcripts: dict[str, list[str]]
    """{split: [transcript]} aligned with `splits` (Sample has no text field)."""


@dataclass
class _Pending:
    id: str
    language: np.ndarray | None
    visual: np.ndarray | None
    audio: np.ndarray | None
    transcript: str
    emotion: np.ndarray | None
    sentiment: int | None
    regression: float | None


class LiveDatasetWriter:
    """Writes a live-space dataset sample by sample. Use as a context manager or call close()."""

    def __init__(
        self,
        path: str | Path,
        clip_model: str,
        clip_pretrained: str,
        dims: dict[str, int],
        *,
        emotion_labels: Sequence[str] = EMOTION_LABELS,
        sentiment_labels: Sequence[str] = SENTIMENT_LABELS,
        shard_size: int = 1024,
        overwrite: bool = False,
        feature_space: str = "live",
    ) -> None:
        self.path = Path(path)
        if feature_space not in LIVE_SPACES:
            raise DatasetError(f"feature_space {feature_space!r} is not one of {LIVE_SPACES}")
        self.feature_space = feature_space
        missing = [m for m in MODALITIES if m not in dims]
        if missing:
            raise DatasetError(f"dims must give a width for {missing} (got {dims})")
        if shard_size < 1:
            raise ValueError("shard_size must be >= 1")
        if self.path.exists() and any(self.path.iterdir()) and not overwrite:
            raise DatasetError(f"{self.path} is not empty; pick a new directory or overwrite=True")
        self.path.mkdir(parents=True, exist_ok=True)
        for old in list(self.path.glob("*.npz")) + list(self.path.glob("meta.json")):
            old.unlink()
        self.clip_model = clip_model
        self.clip_pretrained = clip_pretrained
        self.dims = {m: int(dims[m]) for m in MODALITIES}
        self.emotion_labels = list(emotion_labels)
        self.sentiment_labels = list(sentiment_labels)
        self.shard_size = shard_size
        self._pending: dict[str, list[_Pending]] = {}
        self._shards: dict[str, list[str]] = {}
        self._counts: dict[str, int] = {}
        self._ids: dict[str, set[str]] = {}
        self._closed = False

    def add(
        self,
        sample_id: str,
        split: str,
        language: np.ndarray | None,
        visual: np.ndarray | None,
        audio: np.ndarray | None,
        transcript: str,
        emotion: np.ndarray | Sequence[float] | None = None,
        sentiment: int | None = None,
        regression: float | None = None,
    ) -> None:
        """Queue one sample; a None or zero-length modality is stored as absent."""
        if self._closed:
            raise DatasetError(f"{self.path}: writer already closed")
        if not split or "-" in split or "/" in split:
            raise DatasetError(f"split name {split!r} must be non-empty without '-' or '/'")
        seen = self._ids.setdefault(split, set())
        if sample_id in seen:
            raise DatasetError(f"duplicate sample id {sample_id!r} in split {split!r}")
        arrays = {
            m: self._check(sample_id, m, x)
            for m, x in zip(MODALITIES, (language, visual, audio), strict=True)
        }
        emo = None
        if emotion is not None:
            emo = np.asarray(emotion, dtype=np.float32).reshape(-1)
            if emo.shape != (len(self.emotion_labels),):
                raise DatasetError(
                    f"{sample_id}: emotion has {emo.size} values, expected "
                    f"{len(self.emotion_labels)} ({self.emotion_labels})"
                )
        if sentiment is not None and not 0 <= int(sentiment) < len(self.sentiment_labels):
            raise DatasetError(f"{sample_id}: sentiment class {sentiment} out of range")
        seen.add(sample_id)
        self._pending.setdefault(split, []).append(
            _Pending(
                sample_id,
                *arrays.values(),
                transcript=transcript or "",
                emotion=emo,
                sentiment=None if sentiment is None else int(sentiment),
                regression=None if regression is None else float(regression),
            )
        )
        self._counts[split] = self._counts.get(split, 0) + 1
        if len(self._pending[split]) >= self.shard_size:
            self._flush(split)

    def _check(self, sample_id: str, modality: str, x: np.ndarray | None) -> np.ndarray | None:
        if x is None:
            return None
        arr = np.asarray(x, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != self.dims[modality]:
            raise DatasetError(
                f"{sample_id}: {modality} has shape {arr.shape}, expected (T, "
                f"{self.dims[modality]})"
            )
        if not np.isfinite(arr).all():
            raise DatasetError(f"{sample_id}: {modality} has NaN or infinite values")
        return arr if arr.shape[0] > 0 else None

    def _flush(self, split: str) -> None:
        items = self._pending.get(split) or []
        if not items:
            return
        shards = self._shards.setdefault(split, [])
        name = f"{split}-{len(shards):05d}.npz"
        n, c = len(items), len(self.emotion_labels)
        arrays: dict[str, np.ndarray] = {}
        for m in MODALITIES:
            seqs = [getattr(it, m) for it in items]
            arrays[f"{m}_lengths"] = np.array(
                [0 if s is None else s.shape[0] for s in seqs], dtype=np.int64
            )
            present = [s for s in seqs if s is not None]
            arrays[m] = (
                np.concatenate(present) if present else np.zeros((0, self.dims[m]), np.float32)
            )
        arrays["id"] = np.array([it.id for it in items], dtype=np.str_)
        arrays["transcript"] = np.array([it.transcript for it in items], dtype=np.str_)
        arrays["emotion"] = np.stack(
            [it.emotion if it.emotion is not None else np.zeros(c, np.float32) for it in items]
        ).reshape(n, c)
        arrays["has_emotion"] = np.array([it.emotion is not None for it in items], dtype=bool)
        arrays["sentiment"] = np.array(
            [-1 if it.sentiment is None else it.sentiment for it in items], dtype=np.int64
        )
        arrays["regression"] = np.array(
            [math.nan if it.regression is None else it.regression for it in items],
            dtype=np.float32,
        )
        np.savez_compressed(self.path / name, **arrays)
        shards.append(name)
        self._pending[split] = []

    def close(self) -> None:
        """Write the remaining shards and meta.json. Idempotent."""
        if self._closed:
            return
        for split in list(self._pending):
            self._flush(split)
        meta = {
            "format_version": FORMAT_VERSION,
            "feature_space": self.feature_space,
            "clip_model": self.clip_model,
            "clip_pretrained": self.clip_pretrained,
            "dims": self.dims,
            "labels": {"emotion": self.emotion_labels, "sentiment": self.sentiment_labels},
            "counts": dict(self._counts),
            "shards": self._shards,
        }
        (self.path / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        self._closed = True
        log.info("wrote live dataset %s: %s", self.path, self._counts)

    def __enter__(self) -> LiveDatasetWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # On error leave no meta.json: the partial directory is then refused by the loader.
        if exc_type is None:
            self.close()


def load_live_dataset(path: str | Path) -> LiveDataset:
    """Read a directory written by LiveDatasetWriter into {split: [Sample]} + meta."""
    path = Path(path)
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise DatasetError(
            f"{path}: no meta.json (not a live dataset, or its writer was interrupted)"
        )
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            f"{path}: format_version {meta.get('format_version')!r}, this code reads "
            f"{FORMAT_VERSION}"
        )
    if meta.get("feature_space") not in LIVE_SPACES:
        raise DatasetError(
            f"{path}: feature_space {meta.get('feature_space')!r}, expected one of {LIVE_SPACES}"
        )
    dims = {m: int(meta["dims"][m]) for m in MODALITIES}
    splits: dict[str, list[Sample]] = {}
    transcripts: dict[str, list[str]] = {}
    for split, names in meta["shards"].items():
        out = splits.setdefault(split, [])
        texts = transcripts.setdefault(split, [])
        for name in names:
            shard = path / name
            if not shard.is_file():
                raise DatasetError(f"{path}: shard {name} listed in meta.json is missing")
            with np.load(shard, allow_pickle=False) as z:
                out.extend(_samples(z, dims, shard))
                texts.extend(str(t) for t in z["transcript"])
        if len(out) != meta["counts"].get(split, -1):
            raise DatasetError(
                f"{path}: split {split} has {len(out)} samples, meta.json says "
                f"{meta['counts'].get(split)}"
            )
    return LiveDataset(splits, meta, transcripts)


def _samples(z: Any, dims: dict[str, int], where: Path) -> list[Sample]:
    n = int(z["id"].shape[0])
    seqs: dict[str, list[np.ndarray | None]] = {}
    for m in MODALITIES:
        data, lengths = z[m], z[f"{m}_lengths"]
        if data.shape[1] != dims[m] or int(lengths.sum()) != data.shape[0]:
            raise DatasetError(f"{where}: {m} arrays do not match meta.json dims / lengths")
        ends = np.cumsum(lengths).tolist()
        seqs[m] = [
            data[e - k : e] if k > 0 else None for e, k in zip(ends, lengths.tolist(), strict=True)
        ]
    emotion, has_emotion = z["emotion"], z["has_emotion"]
    sentiment, regression, ids = z["sentiment"], z["regression"], z["id"]
    return [
        Sample(
            language=seqs["language"][i],
            visual=seqs["visual"][i],
            audio=seqs["audio"][i],
            emotion=emotion[i].copy() if has_emotion[i] else None,
            sentiment=int(sentiment[i]) if sentiment[i] >= 0 else None,
            regression=float(regression[i]) if not np.isnan(regression[i]) else None,
            id=str(ids[i]),
        )
        for i in range(n)
    ]

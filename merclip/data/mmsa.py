"""CMU-MOSI / CMU-MOSEI pre-extracted features in the MMSA pickle layout (benchmark space).

`aligned_50.pkl` / `unaligned_50.pkl` (from the MMSA project) hold {"train", "valid", "test"};
each split is a dict of arrays over N clips:
- `text`: (N, T, 768) BERT features = the language modality (`text_bert` (N, 3, T) holds token
  ids / attention mask / segment ids; only its mask row is used here, to find real tokens);
- `audio`: (N, T, 74 MOSEI | 5 MOSI) COVAREP; `vision`: (N, T, 35 | 20) Facet;
- `audio_lengths`, `vision_lengths`: real frames per clip (padding follows);
- `regression_labels`: (N,) sentiment in [-3, 3]; `id`: "video_id$_$clip"; `raw_text`.

Lengths: audio/vision use `*_lengths` when present; language uses the `text_bert` mask when
present. Otherwise trailing all-zero rows count as padding. A zero length = modality absent.
Non-finite values (COVAREP has -inf) become 0, as MMSA's own loader does.

Sentiment class for training: has-0 binarisation (>= 0 positive); metrics report both has-0 and
non-0 from the kept regression label. Emotion multi-hot (MOSEI only) comes from an SDK label file
joined by clip id (see mosei_labels.py).
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any, Literal

import numpy as np

from merclip.batch import Sample
from merclip.data.mosei_labels import EMOTION_LABELS, clip_key, load_emotion_labels
from merclip.errors import DatasetError

__all__ = ["MMSA_DIMS", "load_mmsa"]

log = logging.getLogger(__name__)

MMSA_DIMS: dict[str, dict[str, int]] = {
    "mosi": {"language": 768, "visual": 20, "audio": 5},
    "mosei": {"language": 768, "visual": 35, "audio": 74},
}
"""Feature widths of the public MMSA pickles (benchmark feature space)."""

_SPLITS = ("train", "valid", "test")


def load_mmsa(
    path: str | Path,
    dataset: Literal["mosi", "mosei"] = "mosei",
    emotion_labels: str | Path | None = None,
    missing_labels: Literal["error", "skip"] = "error",
) -> dict[str, list[Sample]]:
    """Read an MMSA pickle into {"train", "valid", "test"} lists of Samples.

    With `emotion_labels` every sample gets its emotion multi-hot; a clip without labels raises
    DatasetError, or with missing_labels="skip" is dropped and counted in the log.
    """
    path = Path(path)
    if dataset not in MMSA_DIMS:
        raise DatasetError(f"unknown MMSA dataset {dataset!r} (mosi or mosei)")
    if not path.is_file():
        raise DatasetError(f"MMSA pickle not found: {path}")
    try:
        with path.open("rb") as f:
            raw = pickle.load(f)
    except (pickle.UnpicklingError, EOFError, AttributeError, ModuleNotFoundError) as exc:
        raise DatasetError(f"{path}: cannot unpickle ({exc})") from exc
    if not isinstance(raw, dict) or any(s not in raw for s in _SPLITS):
        raise DatasetError(f"{path}: expected a dict with splits {list(_SPLITS)}")
    labels = load_emotion_labels(emotion_labels) if emotion_labels is not None else None
    dims = MMSA_DIMS[dataset]
    out: dict[str, list[Sample]] = {}
    for split in _SPLITS:
        out[split] = _split(raw[split], dims, labels, missing_labels, f"{path}[{split}]")
    log.info("read %s: %s", path, {k: len(v) for k, v in out.items()})
    return out


def _array(part: dict[str, Any], key: str, width: int, where: str) -> np.ndarray:
    if key not in part:
        raise DatasetError(f"{where}: no {key!r} array (keys: {sorted(part)})")
    arr = np.asarray(part[key], dtype=np.float32)
    if arr.ndim != 3 or arr.shape[2] != width:
        hint = ""
        if key == "text" and arr.ndim == 3 and arr.shape[1] == 3:
            hint = " (this looks like text_bert token ids; 768-d BERT features are needed)"
        raise DatasetError(
            f"{where}: {key!r} has shape {arr.shape}, expected (N, T, {width}){hint}"
        )
    return np.where(np.isfinite(arr), arr, 0.0).astype(np.float32)


def _lengths(part: dict[str, Any], key: str, feats: np.ndarray) -> np.ndarray:
    n, t = feats.shape[:2]
    if f"{key}_lengths" in part:
        lengths = np.asarray(part[f"{key}_lengths"], dtype=np.int64).reshape(-1)
    elif key == "text" and "text_bert" in part:
        lengths = np.asarray(part["text_bert"])[:, 1, :].astype(bool).sum(axis=1)
    else:  # last non-zero row + 1
        nonzero = np.abs(feats).sum(axis=2) > 0  # (N, T)
        lengths = np.where(nonzero.any(axis=1), t - np.argmax(nonzero[:, ::-1], axis=1), 0)
    if lengths.shape != (n,):
        raise DatasetError(f"{key}_lengths has shape {lengths.shape}, expected ({n},)")
    return np.clip(lengths, 0, t)


def _split(
    part: dict[str, Any],
    dims: dict[str, int],
    labels: dict[tuple[str, int], np.ndarray] | None,
    missing_labels: str,
    where: str,
) -> list[Sample]:
    text = _array(part, "text", dims["language"], where)
    audio = _array(part, "audio", dims["audio"], where)
    vision = _array(part, "vision", dims["visual"], where)
    n = text.shape[0]
    if audio.shape[0] != n or vision.shape[0] != n:
        raise DatasetError(f"{where}: modalities disagree on the number of clips")
    lens = {
        "text": _lengths(part, "text", text),
        "audio": _lengths(part, "audio", audio),
        "vision": _lengths(part, "vision", vision),
    }
    if "regression_labels" not in part:
        raise DatasetError(f"{where}: no 'regression_labels'")
    reg = np.asarray(part["regression_labels"], dtype=np.float64).reshape(-1)
    ids = [str(x) for x in part.get("id", [f"{where}:{i}" for i in range(n)])]
    if reg.shape[0] != n or len(ids) != n:
        raise DatasetError(f"{where}: labels/ids do not match the {n} clips")

    def seq(arr: np.ndarray, length: int) -> np.ndarray | None:
        return arr[:length] if length > 0 else None

    samples: list[Sample] = []
    missing: list[str] = []
    for i in range(n):
        emotion = None
        if labels is not None:
            row = labels.get(clip_key(ids[i]))
            if row is None:
                missing.append(ids[i])
                continue
            emotion = (row[1 : 1 + len(EMOTION_LABELS)] > 0).astype(np.float32)
        samples.append(
            Sample(
                language=seq(text[i], int(lens["text"][i])),
                visual=seq(vision[i], int(lens["vision"][i])),
                audio=seq(audio[i], int(lens["audio"][i])),
                emotion=emotion,
                sentiment=int(reg[i] >= 0),
                regression=float(reg[i]),
                id=ids[i],
            )
        )
    if missing:
        msg = (
            f"{where}: {len(missing)} of {n} clips have no emotion labels "
            f"(first: {missing[:3]}); check the label file matches these features"
        )
        if missing_labels == "error":
            raise DatasetError(msg + ", or pass missing_labels='skip' to drop them")
        log.warning("%s; skipped them", msg)
    return samples

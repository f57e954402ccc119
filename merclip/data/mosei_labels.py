"""CMU-MOSEI emotion labels, read from the CMU-MultimodalSDK "All Labels" sequence or an export.

Every clip has 7 values [sentiment, happy, sad, anger, surprise, disgust, fear]; an emotion is
present when its intensity is > 0 (the convention of the MER papers the seed paper follows).

Accepted files (the key of a clip is "video_id[k]"; "video_id$_$k", MMSA's id form, is accepted
too and means the same clip):
- `.csd` / `.h5` / `.hdf5`: the SDK's HDF5 computational sequence: `<root>/data/<key>/features`
  (rows of 7 values) and `<root>/data/<key>/intervals`. Two shapes occur:
  - aligned (after `dataset.align('All Labels')`): keys "video_id[k]", one row each;
  - as shipped (CMU_MOSEI_Labels.csd): keys "video_id", one row per segment in time order; row k
    is taken to be clip k. This row order = MMSA clip number assumption is NOT verified on the
    real files (they cannot reach our machines); prefer the aligned form when you can.
- `.pkl` / `.pickle` / `.json`: a mapping key -> 7 numbers (a list or array).

Needs `h5py` for the HDF5 forms only.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from pathlib import Path

import numpy as np

from merclip.errors import DatasetError
from merclip.labels import EMOTION_LABELS

__all__ = ["EMOTION_LABELS", "SDK_COLUMNS", "clip_key", "load_emotion_labels"]

log = logging.getLogger(__name__)

# EMOTION_LABELS (merclip/labels.py) is the six emotions in the order of the SDK's columns 1..6.
SDK_COLUMNS: tuple[str, ...] = ("sentiment", *EMOTION_LABELS)

_KEY = re.compile(r"^(?P<video>.+?)(?:\[(?P<b>\d+)\]|\$_\$(?P<m>\d+))$")


def clip_key(clip_id: str) -> tuple[str, int]:
    """("video_id", k) of "video_id[k]" or "video_id$_$k"; DatasetError otherwise."""
    match = _KEY.match(clip_id.strip())
    if match is None:
        raise DatasetError(
            f"clip id {clip_id!r} is neither 'video_id[k]' (SDK) nor 'video_id$_$k' (MMSA)"
        )
    return match["video"], int(match["b"] if match["b"] is not None else match["m"])


def load_emotion_labels(path: str | Path) -> dict[tuple[str, int], np.ndarray]:
    """Map (video_id, clip) -> the 7 SDK values (float32) from any accepted file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"emotion label file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".csd", ".h5", ".hdf5"):
        return _from_csd(path)
    if suffix in (".pkl", ".pickle"):
        with path.open("rb") as f:
            raw = pickle.load(f)
    elif suffix == ".json":
        raw = json.loads(path.read_text(encoding="utf-8"))
    else:
        raise DatasetError(f"{path}: unknown label file type (use .csd/.h5, .pkl or .json)")
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: expected a mapping 'video_id[k]' -> 7 values")
    out: dict[tuple[str, int], np.ndarray] = {}
    for key, values in raw.items():
        out[clip_key(str(key))] = _row(values, f"{path}:{key}")
    return out


def _row(values: object, where: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float32).reshape(-1)
    if arr.shape != (len(SDK_COLUMNS),):
        raise DatasetError(
            f"{where}: expected {len(SDK_COLUMNS)} values {list(SDK_COLUMNS)}, got shape "
            f"{np.asarray(values).shape}"
        )
    return arr


def _from_csd(path: Path) -> dict[tuple[str, int], np.ndarray]:
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - h5py is a declared dependency
        raise DatasetError("reading .csd label files needs h5py: pip install h5py") from exc
    out: dict[tuple[str, int], np.ndarray] = {}
    with h5py.File(path, "r") as f:
        roots = list(f.keys())
        if not roots or "data" not in f[roots[0]]:
            raise DatasetError(f"{path}: not a CMU-MultimodalSDK sequence (no <root>/data group)")
        data = f[roots[0]]["data"]
        for key in data:
            feats = np.asarray(data[key]["features"], dtype=np.float32)
            if feats.ndim != 2 or feats.shape[1] != len(SDK_COLUMNS):
                raise DatasetError(
                    f"{path}: {key}/features has shape {feats.shape}, expected (n, 7)"
                )
            if _KEY.match(key):  # aligned: one clip per key
                out[clip_key(key)] = feats[0]
            else:  # as shipped: one row per segment of the video
                for k, row in enumerate(feats):
                    out[(key, k)] = row
    log.info("read %d clip labels from %s", len(out), path)
    return out

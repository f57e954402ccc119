"""Training composed with the live feature extractors: `merclip train`, `evaluate` and
`ablate-query` featurise raw emotion datasets (fer2013:, meld:, ravdess:) with exactly the
extractors the service runs (see merclip/raw_features.py for why this is a hook)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from merclip.raw_features import register_raw_featurizer

if TYPE_CHECKING:
    from merclip.batch import Sample

__all__ = ["use_live_featurizer"]


def _live_featurized(
    kind: str, root: Path, *, limit_per_class: int | None = None
) -> dict[str, list[Sample]]:
    # Imported on use: it loads torch, YuNet, the expression net and MiniLM.
    from workers.features.datasets import load_featurized

    return load_featurized(kind, root, limit_per_class=limit_per_class)


def use_live_featurizer() -> None:
    """Register the live extractors as merclip's raw-dataset featuriser."""
    register_raw_featurizer(_live_featurized)

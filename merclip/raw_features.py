"""Who turns raw emotion datasets (FER2013 faces, MELD utterances, RAVDESS speech) into features
for training: a hook, so that the model library does not import the layers above it.

The live-pretrained feature space is computed by the service's own extractors
(workers/features/: YuNet + the expression net, MiniLM on the transcript, log-mel audio), and
training on raw datasets must use exactly those. merclip/ sits below workers/, so instead of
importing them, `merclip/data/sources.py` calls the featuriser registered here. `merclip train`,
`evaluate` and `ablate-query` register the live one (`workers/app/training.py`), and so does the
test suite. This module is torch-free on purpose: the CLI imports it before every command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from merclip.errors import DatasetError

if TYPE_CHECKING:
    from merclip.batch import Sample

__all__ = ["RawFeaturizer", "raw_featurizer", "register_raw_featurizer"]

RawFeaturizer = Callable[..., "dict[str, list[Sample]]"]
"""`(kind, root, *, limit_per_class=None) -> {split: [Sample]}` in the live-pretrained space."""

_registered: RawFeaturizer | None = None


def register_raw_featurizer(featurizer: RawFeaturizer) -> None:
    global _registered
    _registered = featurizer


def raw_featurizer() -> RawFeaturizer:
    if _registered is None:
        raise DatasetError(
            "raw emotion datasets are featurised by the live extractors, and none is registered: "
            "run `merclip train`, or call workers.app.training.use_live_featurizer() first"
        )
    return _registered

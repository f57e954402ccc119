"""One way to name a dataset on the command line: `--data SPEC`.

- `synthetic`            planted-signal data (synthetic.py) with the model's dims
- `mosi:PATH.pkl`        CMU-MOSI MMSA pickle (benchmark feature space)
- `mosei:PATH.pkl`       CMU-MOSEI MMSA pickle; emotion labels from `emotion_labels`
- `live:DIR`             a live-space dataset written by `merclip extract`
- `fer2013:DIR`, `meld:DIR`, `ravdess:DIR`   real emotion datasets in their standard layouts
                         (merclip/data/emotion_sets.py), featurised through the live-pretrained
                         encoders (workers/features/datasets.py, cached on disk; registered through
                         merclip/raw_features.py)

Several specs (`--data` given more than once) are merged split by split (`load_sources`): each
sample keeps only the modalities its dataset has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from merclip.batch import Sample
from merclip.data.emotion_sets import KINDS as RAW_KINDS
from merclip.data.live_dataset import load_live_dataset
from merclip.data.mmsa import MMSA_DIMS, load_mmsa
from merclip.data.synthetic import SyntheticSpec, make_synthetic
from merclip.errors import DatasetError

__all__ = ["DataSource", "load_data", "load_sources"]


@dataclass
class DataSource:
    spec: str
    splits: dict[str, list[Sample]]
    dims: dict[str, int]
    feature_space: str | None
    """"live", "benchmark", or None for synthetic data (fits any model's space)."""
    meta: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> list[Sample]:
        if name not in self.splits or not self.splits[name]:
            raise DatasetError(f"{self.spec}: no samples in split {name!r} ({list(self.splits)})")
        return self.splits[name]

    def eval_split(self) -> str:
        """The split used to pick the best checkpoint: valid, else test."""
        for name in ("valid", "val", "dev", "test"):
            if self.splits.get(name):
                return name
        raise DatasetError(f"{self.spec}: needs a 'valid' or 'test' split")


def load_data(
    spec: str,
    model_dims: dict[str, int],
    emotion_labels: str | Path | None = None,
    seed: int = 0,
    synthetic: SyntheticSpec | None = None,
    limit_per_class: int | None = None,
) -> DataSource:
    """Load the dataset named by `spec` (see module docstring). `limit_per_class` keeps the
    first N items of each class of a raw emotion dataset (quick runs, tests)."""
    kind, _, arg = spec.partition(":")
    if kind == "synthetic":
        splits = make_synthetic(model_dims, synthetic, seed=seed)
        return DataSource(spec, splits, dict(model_dims), None, {"seed": seed})
    if not arg:
        raise DatasetError(f"--data {spec!r}: expected KIND:PATH (mosi:, mosei:, live:)")
    if kind in ("mosi", "mosei"):
        if kind == "mosi" and emotion_labels is not None:
            raise DatasetError("CMU-MOSI has no emotion labels; drop --emotion-labels")
        splits = load_mmsa(arg, kind, emotion_labels)  # type: ignore[arg-type]
        return DataSource(spec, splits, dict(MMSA_DIMS[kind]), "benchmark")
    if kind == "live":
        ds = load_live_dataset(arg)
        return DataSource(spec, ds.splits, dict(ds.meta["dims"]), ds.meta["feature_space"], ds.meta)
    if kind in RAW_KINDS:
        # The live extractors (workers/features/), registered by the training commands.
        from merclip.predictor import LIVE_PRETRAINED_DIMS
        from merclip.raw_features import raw_featurizer

        root = Path(arg)
        if not root.is_dir():
            raise DatasetError(f"--data {spec!r}: {root} is not a directory")
        splits = raw_featurizer()(kind, root, limit_per_class=limit_per_class)
        splits = {k: [s for s in v if _has_any_modality(s)] for k, v in splits.items()}
        meta = {"kind": kind, "root": str(root)}
        return DataSource(spec, splits, dict(LIVE_PRETRAINED_DIMS), "live-pretrained", meta)
    raise DatasetError(
        f"--data {spec!r}: unknown kind {kind!r} (synthetic, mosi, mosei, live, "
        f"{', '.join(RAW_KINDS)})"
    )


def _has_any_modality(s: Sample) -> bool:
    return any(x is not None and len(x) > 0 for x in (s.language, s.visual, s.audio))


def load_sources(
    specs: str | list[str] | tuple[str, ...],
    model_dims: dict[str, int],
    emotion_labels: str | Path | None = None,
    seed: int = 0,
    synthetic: SyntheticSpec | None = None,
    limit_per_class: int | None = None,
) -> DataSource:
    """One DataSource of one or several specs, merged split by split ("dev" counts as "val")."""
    specs = [specs] if isinstance(specs, str) else list(specs)
    if not specs:
        raise DatasetError("no --data given")
    sources = [
        load_data(s, model_dims, emotion_labels, seed, synthetic, limit_per_class) for s in specs
    ]
    if len(sources) == 1:
        return sources[0]
    first = sources[0]
    for other in sources[1:]:
        if other.feature_space != first.feature_space or other.dims != first.dims:
            raise DatasetError(
                f"--data {other.spec} ({other.feature_space}, dims {other.dims}) cannot be "
                f"trained with {first.spec} ({first.feature_space}, dims {first.dims})"
            )
    merged: dict[str, list[Sample]] = {}
    for src in sources:
        for name, samples in src.splits.items():
            merged.setdefault("val" if name == "dev" else name, []).extend(samples)
    meta = {"sources": {src.spec: {k: len(v) for k, v in src.splits.items()} for src in sources}}
    return DataSource(" + ".join(specs), merged, dict(first.dims), first.feature_space, meta)

"""One way to name a dataset on the command line: `--data SPEC`.

- `synthetic`            planted-signal data (synthetic.py) with the model's dims
- `mosi:PATH.pkl`        CMU-MOSI MMSA pickle (benchmark feature space)
- `mosei:PATH.pkl`       CMU-MOSEI MMSA pickle; emotion labels from `emotion_labels`
- `live:DIR`             a live-space dataset written by `merclip extract`
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from merclip.batch import Sample
from merclip.data.live_dataset import load_live_dataset
from merclip.data.mmsa import MMSA_DIMS, load_mmsa
from merclip.data.synthetic import SyntheticSpec, make_synthetic
from merclip.errors import DatasetError

__all__ = ["DataSource", "load_data"]


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
        for name in ("valid", "dev", "test"):
            if self.splits.get(name):
                return name
        raise DatasetError(f"{self.spec}: needs a 'valid' or 'test' split")


def load_data(
    spec: str,
    model_dims: dict[str, int],
    emotion_labels: str | Path | None = None,
    seed: int = 0,
    synthetic: SyntheticSpec | None = None,
) -> DataSource:
    """Load the dataset named by `spec` (see module docstring)."""
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
        return DataSource(spec, ds.splits, dict(ds.meta["dims"]), "live", ds.meta)
    raise DatasetError(f"--data {spec!r}: unknown kind {kind!r} (synthetic, mosi, mosei, live)")

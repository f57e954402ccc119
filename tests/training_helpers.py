"""Training runs small enough for a test: CPU, one thread, no progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from merclip.training.train import TrainOptions

__all__ = ["quick_options"]


def quick_options(out_dir: Path, **fields: Any) -> TrainOptions:
    """TrainOptions of a quick run into `out_dir` (default: the tiny live model, both tasks);
    `fields` set or replace any option."""
    base: dict[str, Any] = dict(
        out_dir=out_dir,
        model="merclip-tiny-live",
        tasks=("emotion", "sentiment"),
        device="cpu",
        threads=1,
        progress=False,
    )
    return TrainOptions(**{**base, **fields})

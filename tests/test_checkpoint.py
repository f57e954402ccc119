"""Checkpoints: exact round trip (random-init CLIP included) and clear mismatch errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from merclip.batch import Sample, collate
from merclip.checkpoint import (
    checkpoint_version,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from merclip.clip_backbone import ClipBackbone
from merclip.errors import CheckpointMismatchError
from merclip.model import MerClip, create_model

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture
def trained(clip: ClipBackbone) -> MerClip:
    """A model whose every learnable part moved away from its initial value."""
    torch.manual_seed(3)
    m = create_model("merclip-tiny-live", clip=clip, emotion_labels=["calm", "tense", "bored"])
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
        bn = m.task_modules["emotion"].head.bn
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.01, 0.1)
    return m.eval()


def _batch(dims: dict[str, int]) -> object:
    rng = np.random.default_rng(0)
    samples = [
        Sample(rng.normal(size=(6, 64)), rng.normal(size=(2, 64)), rng.normal(size=(9, 64))),
        Sample(rng.normal(size=(4, 64)), None, None),
    ]
    return collate(samples, dims)


def test_round_trip_gives_identical_predictions(trained: MerClip, tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "ck" / "best.pt", trained, {"epoch": 7, "micro_f1": 0.5})
    loaded = load_checkpoint(path)
    batch = _batch(trained.dims)
    for task in trained.tasks:
        a, b = trained(batch, task), loaded(batch, task)
        assert torch.equal(a.probs, b.probs) and torch.equal(a.prediction, b.prediction)
    assert loaded.labels("emotion") == ["calm", "tense", "bored"]
    assert loaded.extra == {"epoch": 7, "micro_f1": 0.5}
    assert loaded.config == trained.config
    # The text tower comes from the file, not from a fresh random CLIP.
    assert torch.equal(loaded.text.token_embedding.weight, trained.text.token_embedding.weight)
    payload = read_checkpoint(path)
    assert payload["clip"] == {"name": "merclip-tiny-clip", "pretrained": ""}
    assert payload["feature_space"] == "live" and payload["dims"] == trained.dims
    assert len(checkpoint_version(path)) == 12


def test_version_changes_with_weights(trained: MerClip, tmp_path: Path) -> None:
    a = checkpoint_version(save_checkpoint(tmp_path / "a.pt", trained))
    with torch.no_grad():
        trained.out_proj.bias.add_(1.0)
    b = checkpoint_version(save_checkpoint(tmp_path / "b.pt", trained))
    assert a != b


def test_mismatched_expectations_raise(trained: MerClip, tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", trained)
    with pytest.raises(CheckpointMismatchError, match="'live' features.*'benchmark'"):
        load_checkpoint(path, expect_feature_space="benchmark")
    with pytest.raises(CheckpointMismatchError, match="feature dims"):
        load_checkpoint(path, expect_dims={"language": 512, "visual": 512, "audio": 64})
    with pytest.raises(CheckpointMismatchError, match="ViT-B-32"):
        load_checkpoint(path, expect_clip_model="ViT-B-32")
    load_checkpoint(path, "live", {"language": 64, "visual": 64, "audio": 64}, "merclip-tiny-clip")


def test_corrupt_or_foreign_files_raise(trained: MerClip, tmp_path: Path) -> None:
    with pytest.raises(CheckpointMismatchError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointMismatchError, match="not a MER-CLIP checkpoint"):
        load_checkpoint(foreign)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointMismatchError, match="not a MER-CLIP checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    # A state_dict that does not fit its config (e.g. edited width).
    path = save_checkpoint(tmp_path / "ok.pt", trained)
    payload = read_checkpoint(path)
    payload["config"]["width"] = 32
    payload["config"]["heads"] = 4
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(CheckpointMismatchError, match="does not fit"):
        load_checkpoint(tmp_path / "edited.pt")
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointMismatchError, match="version 99"):
        load_checkpoint(tmp_path / "future.pt")

"""MiniLM in its two roles: the language features of a transcript, and the text tower that gives
MER-CLIP's label words and emotion query their meaning without CLIP weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from merclip.batch import Sample, collate
from merclip.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from merclip.errors import CheckpointMismatchError
from merclip.minilm import MINILM_DIM, load_minilm
from merclip.model import create_model

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def test_language_rows_are_token_states_then_the_sentence_embedding() -> None:
    minilm = load_minilm()
    rows = minilm.token_features(["I am so happy today.", "No."])
    assert [r.shape[1] for r in rows] == [MINILM_DIM, MINILM_DIM]
    assert rows[0].shape[0] > rows[1].shape[0] >= 3  # [CLS] No . [SEP] + pooled
    sentence = minilm.model.encode(["I am so happy today."], normalize_embeddings=True)[0]
    np.testing.assert_allclose(rows[0][-1], sentence, atol=1e-5)
    assert abs(float(np.linalg.norm(rows[0][-1])) - 1.0) < 1e-5


def test_untrained_label_prompts_already_mean_their_words() -> None:
    """With the MiniLM tower, "a person who feels happy." is nearest to a happy sentence."""
    model = create_model("merclip-minilm-live").eval()
    minilm = load_minilm()
    with torch.no_grad():
        labels = model.task_modules["emotion"].labels(model.text)  # (6, 384)
    labels = torch.nn.functional.normalize(labels, dim=-1).numpy()
    words = model.labels("emotion")
    sentences = {
        "happy": "I am so happy and cheerful today!",
        "sad": "I feel so sad and lonely, I want to cry.",
        "anger": "I am furious, this makes me so angry!",
        "fear": "I am terrified and scared of what comes next.",
    }
    for word, text in sentences.items():
        emb = minilm.token_features([text])[0][-1]
        assert words[int(np.argmax(labels @ emb))] == word, text


def test_checkpoint_leaves_the_packaged_tower_out_and_round_trips(tmp_path: Path) -> None:
    model = create_model("merclip-minilm-live").eval()
    path = save_checkpoint(tmp_path / "m.pt", model)
    payload = read_checkpoint(path)
    assert not any(k.startswith("text.") for k in payload["state_dict"])
    assert payload["text_tower"] == {"kind": "minilm", "stored": False}
    assert path.stat().st_size < 30e6
    again = load_checkpoint(path)
    rng = np.random.default_rng(0)
    samples = [
        Sample(rng.normal(size=(5, 384)).astype(np.float32), None, None),
        Sample(None, rng.normal(size=(1, 135)).astype(np.float32), None),
    ]
    batch = collate(samples, model.dims)
    for task in ("emotion", "sentiment"):
        with torch.no_grad():
            np.testing.assert_allclose(
                model(batch, task).probs.numpy(), again(batch, task).probs.numpy(), atol=1e-6
            )
    # a checkpoint missing trained (non-tower) weights is refused, not silently half-loaded
    del payload["state_dict"]["out_proj.weight"]
    torch.save(payload, tmp_path / "broken.pt")
    with pytest.raises(CheckpointMismatchError, match="out_proj.weight"):
        load_checkpoint(tmp_path / "broken.pt")


def test_training_mode_never_reaches_the_shared_language_encoder() -> None:
    """MiniLM has dropout; the model's tower IS the process's language encoder."""
    model = create_model("merclip-minilm-live")
    model.train()
    assert not load_minilm().bert.training
    a = load_minilm().token_features(["same words twice"])[0]
    b = load_minilm().token_features(["same words twice"])[0]
    np.testing.assert_array_equal(a, b)

"""MER-CLIP model: Algorithm 1 pinned on the tiny config (random-init tiny CLIP, CPU, fast)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from merclip import config as config_module
from merclip.batch import Sample, collate
from merclip.clip_backbone import ClipBackbone, load_clip
from merclip.config import MerClipConfig, add_model_config, list_model_configs, load_model_config
from merclip.decoder import with_summary_rows
from merclip.errors import ConfigError
from merclip.heads import EmotionHead, pattern_index, sample_normalise
from merclip.model import MerClip, create_model

TINY = "merclip-tiny-live"


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def clip() -> ClipBackbone:
    """Overrides conftest's clip: built from seed 0, so every run sees the same random CLIP."""
    torch.manual_seed(0)
    return load_clip("merclip-tiny-clip")


def _model(clip: ClipBackbone, seed: int = 0, **overrides: object) -> MerClip:
    torch.manual_seed(seed)
    return create_model(TINY, clip=clip, **overrides).eval()


def _samples(n: int = 4, seed: int = 1) -> list[Sample]:
    rng = np.random.default_rng(seed)
    return [
        Sample(
            language=rng.normal(size=(int(rng.integers(3, 9)), 64)).astype(np.float32),
            visual=rng.normal(size=(int(rng.integers(1, 4)), 64)).astype(np.float32),
            audio=rng.normal(size=(int(rng.integers(5, 20)), 64)).astype(np.float32),
            id=f"s{i}",
        )
        for i in range(n)
    ]


def test_named_configs_load_with_documented_dims() -> None:
    names = set(list_model_configs())
    assert {
        "merclip-tiny-live",
        "merclip-b32-live",
        "merclip-b32-mosei",
        "merclip-b32-mosi",
        "merclip-tiny-bench",
    } <= names
    assert load_model_config("merclip-b32-live").dims == {
        "language": 512,
        "visual": 512,
        "audio": 64,
    }
    assert load_model_config("merclip-b32-mosei").dims == {
        "language": 768,
        "visual": 35,
        "audio": 74,
    }
    assert load_model_config("merclip-b32-mosi").dims == {"language": 768, "visual": 20, "audio": 5}
    assert load_model_config("merclip-tiny-bench").feature_space == "benchmark"


def test_config_rejects_unknown_key_and_bad_values() -> None:
    cfg = load_model_config(TINY)
    with pytest.raises(ConfigError, match="widht"):
        cfg.replace(widht=32)
    with pytest.raises(ConfigError, match="emotion_norm"):
        cfg.replace(emotion_norm="layer")
    with pytest.raises(ConfigError, match="order"):
        cfg.replace(order=["language", "language", "audio"])
    with pytest.raises(ConfigError, match="unknown MER-CLIP model config"):
        load_model_config("no-such-model")


def test_algorithm1_defaults() -> None:
    cfg = MerClipConfig()
    assert cfg.order == ("language", "visual", "audio")
    assert cfg.emotion_threshold == 0.6
    assert cfg.emotion_labels == ("happy", "sad", "anger", "surprise", "disgust", "fear")
    assert cfg.sentiment_labels == ("negative", "positive")
    assert (cfg.emotion_query_word, cfg.sentiment_query_word) == ("Emotion", "Sentiment")
    assert load_model_config(TINY).order == ("language", "visual", "audio")


def test_logit_scale_starts_at_one_over_007(clip: ClipBackbone) -> None:
    m = _model(clip)
    scale = m.task_modules["sentiment"].head.logit_scale
    assert scale.requires_grad
    assert math.isclose(float(scale.detach().exp()), 1 / 0.07, rel_tol=1e-5)


def test_only_prompts_adapters_decoder_heads_learn(clip: ClipBackbone) -> None:
    m = _model(clip)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith("text.") for n in trainable)
    assert any(n.endswith("labels.ctx") for n in trainable)
    assert any(n.endswith("query.ctx") for n in trainable)
    # The visual tower is not part of MER-CLIP.
    visual_tower = {id(p) for p in clip.model.visual.parameters()}
    assert not any(id(p) in visual_tower for p in m.parameters())
    assert any(
        p.requires_grad
        for n, p in _model(clip, freeze_clip=False).named_parameters()
        if n.startswith("text.")
    )


def test_forward_shapes_loss_and_gradient(clip: ClipBackbone) -> None:
    m = _model(clip).train()
    batch = collate(_samples(4), m.dims)
    targets = torch.tensor(
        [[1, 0, 0, 0, 0, 1], [0, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0], [1] * 6], dtype=torch.float32
    )
    out = m(batch, "emotion", targets)
    assert out.similarity.shape == out.probs.shape == out.prediction.shape == (4, 6)
    assert out.loss is not None and out.loss.ndim == 0
    out.loss.backward()
    ctx = m.task_modules["emotion"].labels.ctx
    assert ctx.grad is not None and ctx.grad.abs().sum() > 0  # prompts learn through frozen CLIP
    out = m(batch, "sentiment", torch.tensor([0, 1, 1, 0]))
    assert out.probs.shape == (4, 2) and out.loss is not None
    assert torch.allclose(out.probs.sum(dim=1), torch.ones(4))
    assert torch.equal(out.prediction.sum(dim=1), torch.ones(4))  # one-hot
    assert m(batch, "sentiment").loss is None


def test_emotion_normalises_before_sigmoid(clip: ClipBackbone) -> None:
    for norm in ("sample", "batch"):
        m = _model(clip, emotion_norm=norm)
        if norm == "batch":  # non-trivial running statistics
            m.task_modules["emotion"].head.bn.running_mean.fill_(0.1)
            m.task_modules["emotion"].head.bn.running_var.fill_(0.04)
        out = m(collate(_samples(3), m.dims), "emotion")
        sim = out.similarity
        normed = sample_normalise(sim) if norm == "sample" else (sim - 0.1) / math.sqrt(0.04 + 1e-5)
        assert torch.allclose(out.probs, torch.sigmoid(normed), atol=1e-5)
        assert not torch.allclose(out.probs, torch.sigmoid(sim), atol=1e-3)
        assert torch.equal(out.prediction, (out.probs >= 0.6).float())


def test_threshold_is_config(clip: ClipBackbone) -> None:
    m = _model(clip, emotion_norm="sample", emotion_threshold=0.5)
    out = m(collate(_samples(3), m.dims), "emotion")
    assert torch.equal(out.prediction, (out.probs >= 0.5).float())
    assert out.prediction.sum() > 0  # z-scores: some label is always above the mean


def test_label_embeddings_change_with_label_words(clip: ClipBackbone) -> None:
    a = _model(clip, seed=0)
    b = _model(clip, seed=0, emotion_labels=["joy", "sad", "anger", "surprise", "disgust", "fear"])
    za, _ = a.encode_task("emotion")
    zb, _ = b.encode_task("emotion")
    assert not torch.allclose(za[0], zb[0])
    assert torch.allclose(za[1:], zb[1:], atol=1e-6)  # same context, same other words
    c = _model(clip, seed=0, sentiment_labels=["bad", "neutral", "good"])
    assert c.labels("sentiment") == ["bad", "neutral", "good"]
    assert c(collate(_samples(2), c.dims), "sentiment").probs.shape == (2, 3)


@pytest.mark.parametrize("word", ["", "Emotion", "Feeling", "Impression", "Mood", "Sensation"])
def test_query_words_including_none(clip: ClipBackbone, word: str) -> None:
    m = _model(clip, emotion_query_word=word)
    _, query = m.encode_task("emotion")
    n_word_tokens = 0 if word == "" else 1
    assert query.shape == (1 + m.config.n_ctx + n_word_tokens + 1, m.config.width)  # SOT..EOT
    assert torch.isfinite(m(collate(_samples(2), m.dims), "emotion").probs).all()


def test_query_word_changes_output(clip: ClipBackbone) -> None:
    batch = collate(_samples(2), load_model_config(TINY).dims)
    a = _model(clip, seed=0, emotion_query_word="Emotion")(batch, "emotion").similarity
    b = _model(clip, seed=0, emotion_query_word="Mood")(batch, "emotion").similarity
    assert not torch.allclose(a, b)


def test_decoder_visits_modalities_in_configured_order(clip: ClipBackbone) -> None:
    m = _model(clip)
    seen: list[str] = []
    for name in m.config.order:
        m.decoder.stages[name][0].cross_attn.register_forward_hook(
            lambda *_, n=name: seen.append(n)
        )
    m(collate(_samples(2), m.dims), "emotion")
    assert seen == ["language", "visual", "audio"]
    # Same weights, different order → different output.
    reordered = _model(clip, order=["audio", "visual", "language"])
    reordered.load_state_dict(m.state_dict())
    batch = collate(_samples(2), m.dims)
    assert not torch.allclose(
        m(batch, "emotion").similarity, reordered(batch, "emotion").similarity
    )


def test_absent_modality_is_skipped_not_attended(clip: ClipBackbone) -> None:
    m = _model(clip)
    full = _samples(3)
    no_face = Sample(full[1].language, None, full[1].audio, id="noface")
    nothing = Sample(None, None, None, id="empty")
    batch = collate([full[0], no_face, full[2], nothing], m.dims)
    # Garbage under the mask must not matter.
    batch.visual[1] = 1e4
    batch.language[3] = float("nan")
    for task in m.tasks:
        out = m(batch, task)
        assert torch.isfinite(out.probs).all() and torch.isfinite(out.similarity).all()
        alone = m(collate([no_face], m.dims), task)
        assert torch.allclose(out.similarity[1], alone.similarity[0], atol=1e-5)
        assert torch.allclose(out.probs[1], alone.probs[0], atol=1e-5)
        # And it differs from having the face: the stage really was skipped.
        with_face = m(collate([full[1]], m.dims), task)
        assert not torch.allclose(with_face.similarity[0], alone.similarity[0], atol=1e-4)


def test_absent_modality_gives_finite_gradients(clip: ClipBackbone) -> None:
    m = _model(clip).train()
    batch = collate([_samples(1)[0], Sample(None, None, None)], m.dims)
    out = m(batch, "emotion", torch.zeros(2, 6))
    out.loss.backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_cached_encodings_match_and_clear_on_train(clip: ClipBackbone) -> None:
    m = _model(clip)
    batch = collate(_samples(2), m.dims)
    before = m(batch, "emotion").probs
    m.cache_encodings()
    assert set(m._cache) == set(m.tasks)
    assert torch.allclose(m(batch, "emotion").probs, before, atol=1e-6)
    m.train()
    assert m._cache == {}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cached_encodings_are_not_reused_on_another_device(clip: ClipBackbone) -> None:
    m = _model(clip)
    batch = collate(_samples(2), m.dims)
    m.cache_encodings()
    before = m(batch, "emotion").probs
    try:
        with torch.no_grad():
            moved = m.to("cuda")(batch.to("cuda"), "emotion").probs.cpu()
    finally:
        m.to("cpu")  # the module's CLIP shares the text tower
    assert torch.allclose(moved, before, atol=1e-4)


def test_single_task_model(clip: ClipBackbone) -> None:
    m = _model(clip, tasks=["sentiment"])
    assert m.tasks == ("sentiment",)
    with pytest.raises(ConfigError, match="emotion"):
        m(collate(_samples(1), m.dims), "emotion")


def test_wrong_clip_for_config_is_an_error(clip: ClipBackbone) -> None:
    with pytest.raises(ConfigError, match="ViT-B-32"):
        create_model("merclip-b32-live", clip=clip)


def test_label_context_init_from_template(clip: ClipBackbone) -> None:
    m = _model(clip)  # n_ctx 4 == len("a photo of a")
    tokens = clip.tokenize(["a photo of a"])[0, 1:5]
    expected = clip.model.token_embedding.weight[tokens]
    assert torch.allclose(m.task_modules["emotion"].labels.ctx, expected)
    r = _model(clip, n_ctx=3)  # template does not fit: small random init
    ctx = r.task_modules["emotion"].labels.ctx
    assert ctx.shape == (3, clip.text_width) and float(ctx.detach().std()) < 0.05
    assert _model(clip, n_ctx=0)(collate(_samples(1), r.dims), "emotion").probs.shape == (1, 6)


def test_learns_a_toy_problem(clip: ClipBackbone) -> None:
    """A few Adam steps fit labels that depend on the language features: gradients reach
    adapters, decoder, prompts and heads in a useful direction."""
    torch.manual_seed(0)
    m = create_model(TINY, clip=clip, tasks=["sentiment"]).train()
    rng = np.random.default_rng(0)
    direction = rng.normal(size=64).astype(np.float32)
    samples, labels = [], []
    for _ in range(32):
        lang = rng.normal(size=(4, 64)).astype(np.float32)
        samples.append(Sample(lang, None, rng.normal(size=(5, 64)).astype(np.float32)))
        labels.append(int(lang.mean(axis=0) @ direction > 0))
    batch, targets = collate(samples, m.dims), torch.tensor(labels)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=3e-3)
    first = None
    for _ in range(40):
        loss = m(batch, "sentiment", targets).loss
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    acc = float((m(batch, "sentiment").probs.argmax(1) == targets).float().mean())
    assert float(loss.detach()) < 0.5 * first and acc >= 0.9


def test_summary_rows_are_masked_mean_std_and_max() -> None:
    feats = torch.tensor(
        [[[1.0, -2.0], [3.0, 4.0], [99.0, 99.0]], [[7.0, 7.0], [0.0, 0.0], [0, 0]]]
    )
    mask = torch.tensor([[True, True, False], [False, False, False]])
    out, out_mask = with_summary_rows(feats, mask)
    assert out.shape == (2, 6, 2) and out_mask.tolist() == [
        [True, True, False, True, True, True],
        [False] * 6,
    ]
    mean, std, peak = out[0, 3:]
    assert torch.allclose(mean, torch.tensor([2.0, 1.0]))  # the padding row is not counted
    assert torch.allclose(std, torch.tensor([1.0, 3.0]), atol=1e-4)
    assert torch.allclose(peak, torch.tensor([3.0, 4.0]))
    assert torch.equal(out[1, 3:], torch.zeros(3, 2))  # absent stays absent, and finite


def test_summary_rows_change_the_output_and_keep_absent_modalities_skipped(
    clip: ClipBackbone,
) -> None:
    plain, summed = _model(clip), _model(clip, summary_rows=True)
    summed.load_state_dict(plain.state_dict())  # same weights: only the extra rows differ
    full = _samples(2)
    no_face = Sample(full[1].language, None, full[1].audio, id="noface")
    a = plain(collate([full[0]], plain.dims), "emotion").similarity
    b = summed(collate([full[0]], summed.dims), "emotion").similarity
    assert not torch.allclose(a, b, atol=1e-4)
    batch = collate([full[0], no_face], summed.dims)
    batch.visual[1] = 1e4  # garbage under the mask
    out = summed(batch, "emotion")
    alone = summed(collate([no_face], summed.dims), "emotion")
    assert torch.allclose(out.similarity[1], alone.similarity[0], atol=1e-5)


def test_pattern_norm_standardises_each_evidence_pattern_among_its_own() -> None:
    """Faces and words whose similarities sit at different levels: one shared BatchNorm leaves
    the words all below the threshold; per-pattern statistics standardise each kind."""
    torch.manual_seed(0)
    faces = torch.randn(64, 6) * 0.2 + 0.5
    words = torch.randn(64, 6) * 0.02 - 0.1
    sim = torch.cat([faces, words])
    present = torch.tensor([[False, True, False]] * 64 + [[True, False, False]] * 64)
    pooled, per_pattern = EmotionHead(6, "batch", 0.6), EmotionHead(6, "pattern", 0.6)
    for head in (pooled, per_pattern):
        for _ in range(200):  # running statistics (momentum 0.1)
            head.train()(sim, None, present)
        head.eval()
    words_pooled = pooled(sim, None, present).logits[64:]
    words_own = per_pattern(sim, None, present).logits[64:]
    assert (words_pooled < 0).all()  # every word sample is "no emotion" against the mixture
    assert abs(float(words_own.mean())) < 0.2 and 0.8 < float(words_own.std()) < 1.2
    # In eval mode a sample's output does not depend on its batch-mates.
    one = per_pattern(sim[70:71], None, present[70:71]).logits
    assert torch.allclose(one, per_pattern(sim, None, present).logits[70:71], atol=1e-6)
    # A pattern never trained on (all three) falls back to the pooled statistics.
    all_three = torch.ones(1, 3, dtype=torch.bool)
    expect = EmotionHead.normalise(per_pattern, sim[:1], None)
    assert torch.allclose(per_pattern(sim[:1], None, all_three).logits, expect)
    assert pattern_index(present[:1]).item() == 2 and pattern_index(all_three).item() == 7


def test_label_encoders_and_live_features_run_one_text_transformer(clip: ClipBackbone) -> None:
    """TextTower (labels, query) and ClipBackbone (live language features) give the same rows."""
    m = _model(clip)
    tokens = clip.tokenize(["a happy face", "so sad"])
    emb = clip.token_embedding(tokens)
    length = int(clip.eot_positions(tokens).max()) + 1
    with torch.no_grad():
        assert torch.equal(m.text(emb, length), clip.text_transformer(emb, length))
        # Cutting at the last EOT is exact: the full 77 positions give the same rows up to it.
        full = clip.text_transformer(emb)[:, :length]
    assert torch.allclose(full, clip.text_transformer(emb, length), atol=1e-5)


def test_a_model_config_outside_the_package_can_be_registered(
    clip: ClipBackbone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config_module, "_config_paths", list(config_module._config_paths))
    values = {**load_model_config(TINY).to_dict(), "width": 32, "heads": 4}
    del values["name"]
    (tmp_path / "my-tiny.json").write_text(json.dumps(values), encoding="utf-8")
    assert "my-tiny" not in list_model_configs()
    add_model_config(tmp_path / "my-tiny.json")
    assert "my-tiny" in list_model_configs() and TINY in list_model_configs()
    cfg = load_model_config("my-tiny")
    assert (cfg.name, cfg.width, cfg.heads) == ("my-tiny", 32, 4)
    assert create_model("my-tiny", clip=clip).config.width == 32
    # A directory registers every JSON in it; a missing path is an error naming it.
    other = tmp_path / "more"
    other.mkdir()
    (other / "my-other.json").write_text(json.dumps(values), encoding="utf-8")
    add_model_config(other)
    assert "my-other" in list_model_configs()
    with pytest.raises(ConfigError, match="no-such-dir"):
        add_model_config(tmp_path / "no-such-dir")

"""What an epoch of several datasets holds: small sets repeated, same-class composites added."""

from __future__ import annotations

import numpy as np
import pytest

from merclip.batch import Sample
from merclip.training.mixing import balanced, composed, epoch_samples

pytestmark = pytest.mark.unit


def _emotion(c: int) -> np.ndarray:
    e = np.zeros(6, np.float32)
    if c >= 0:
        e[c] = 1.0
    return e


def _sets() -> list[Sample]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(40):  # faces: classes 0 and neutral
        c = 0 if i % 2 else -1
        out.append(Sample(None, rng.normal(size=(1, 5)), None, _emotion(c), id=f"fer2013/{i}"))
    for i in range(10):  # utterances: class 0 positive, neutral without sentiment
        c = 0 if i % 2 else -1
        sent = 1 if c == 0 else None
        lang = np.full((3, 4), float(i))
        out.append(Sample(lang, None, None, _emotion(c), sent, id=f"meld/{i}"))
    for i in range(4):  # voices
        c = 0 if i % 2 else -1
        out.append(Sample(None, None, rng.normal(size=(7, 2)), _emotion(c), id=f"ravdess/{i}"))
    return out


def test_a_small_dataset_is_repeated_to_its_minimum_share() -> None:
    pool = balanced(_sets(), min_share=0.5)
    groups = [s.id.split("/")[0] for s in pool]
    assert groups.count("fer2013") == 40
    assert groups.count("meld") == 20  # 10 × 2 ≥ 0.5 × 40
    assert groups.count("ravdess") == 20  # 4 × 5


def test_composites_join_modalities_of_the_same_class_from_different_datasets() -> None:
    train = _sets()
    by_id = {}
    for s in train:
        for m in ("language", "visual", "audio"):
            x = getattr(s, m)
            if x is not None:
                by_id[(m, np.asarray(x).tobytes())] = s
    made = composed(train, 200, np.random.default_rng(1))
    assert len(made) == 200
    for c in made:
        present = [m for m in ("language", "visual", "audio") if getattr(c, m) is not None]
        assert len(present) >= 2
        sources = [by_id[(m, np.asarray(getattr(c, m)).tobytes())] for m in present]
        # every part comes from an item of the composite's own class
        assert all(np.array_equal(s.emotion, c.emotion) for s in sources)
        assert len({s.id.split("/")[0] for s in sources}) == len(sources)
        words = [s for s in sources if s.language is not None]
        assert c.sentiment == (words[0].sentiment if words else None)
    assert {len([m for m in ("language", "visual", "audio") if getattr(c, m) is not None])
            for c in made} == {2, 3}  # fmt: skip


def test_an_epoch_is_the_balanced_pool_plus_its_composed_fraction() -> None:
    train = _sets()
    epoch = epoch_samples(train, np.random.default_rng(2), min_share=0.5, compose=0.25)
    assert len(epoch) == 80 + 20
    assert sum(s.id.startswith("composed/") for s in epoch) == 20
    assert len(epoch_samples(train, np.random.default_rng(2), 0.0, 0.0)) == len(train)


def test_a_large_dataset_gives_a_fresh_subset_to_each_epoch() -> None:
    train = _sets()
    one = epoch_samples(train, np.random.default_rng(3), 0.5, 0.0, max_per_dataset=20)
    two = epoch_samples(train, np.random.default_rng(4), 0.5, 0.0, max_per_dataset=20)
    faces = [[s.id for s in e if s.id.startswith("fer2013/")] for e in (one, two)]
    assert [len(f) for f in faces] == [20, 20] and len(set(faces[0])) == 20
    assert set(faces[0]) != set(faces[1])  # another subset next epoch
    groups = [s.id.split("/")[0] for s in one]
    assert groups.count("meld") == 10 and groups.count("ravdess") == 12  # ≥ 0.5 × 20

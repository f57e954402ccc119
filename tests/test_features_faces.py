"""Haar face detection: finds the astronaut, not faces in noise; crops are square RGB."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
from media import face_frame
from skimage import data

from merclip.errors import ConfigError
from workers.features.faces import FaceDetector


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


def test_finds_the_astronaut_face(detector: FaceDetector) -> None:
    img = data.astronaut()
    boxes = detector.boxes(img)
    assert len(boxes) == 1
    b = boxes[0]
    # Her face is centred near (224, 113) in the 512×512 photo.
    assert b.x < 224 < b.x + b.size and b.y < 113 < b.y + b.size
    crops = detector.crops(img)
    assert len(crops) == 1
    assert crops[0].shape == (b.size, b.size, 3) and crops[0].dtype == np.uint8
    np.testing.assert_array_equal(crops[0], img[b.y : b.y + b.size, b.x : b.x + b.size])


def test_no_face_in_noise(detector: FaceDetector) -> None:
    rng = np.random.default_rng(0)
    assert detector.boxes(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) == []
    assert detector.boxes(face_frame(0, face=False)) == []
    assert detector.crops(np.zeros((240, 320, 3), np.uint8)) == []


def test_every_frame_of_the_test_video_has_exactly_one_face(detector: FaceDetector) -> None:
    for i in range(0, 45, 5):
        assert len(detector.boxes(face_frame(i, fps=15, size=(640, 480)))) == 1
        assert len(detector.boxes(face_frame(i, fps=15, size=(320, 240)))) == 1


def test_crops_are_largest_first_and_inside_the_frame() -> None:
    detector = FaceDetector(detect_size=800)  # no downscale: the small face stays detectable
    canvas = np.full((360, 760, 3), 118, np.uint8)
    canvas[:, :480] = face_frame(0, size=(480, 360))
    canvas[90:270, 500:740] = face_frame(0, size=(240, 180))
    boxes = detector.boxes(canvas)
    assert len(boxes) == 2
    assert boxes[0].size > boxes[1].size
    assert boxes[0].x < 480 <= boxes[1].x
    # A face at the frame's corner: the square crop is shifted inside, never truncated.
    corner = face_frame(0, size=(640, 480))[80:330, 240:560]  # face touches the top-left
    (box,) = detector.boxes(corner)
    assert (box.x, box.y) == (0, 0) and box.size <= 250
    (crop,) = detector.crops(corner)
    assert crop.shape == (box.size, box.size, 3)


def test_threads_share_one_detector(detector: FaceDetector) -> None:
    frames = [face_frame(i) for i in range(8)]
    expected = [detector.boxes(f) for f in frames]
    got: dict[int, list] = {}

    def work(k: int) -> None:
        got[k] = [detector.boxes(f) for f in frames]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(got[k] == expected for k in range(3))


def test_missing_cascade_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(cv2.data, "haarcascades", str(tmp_path) + "/")
    with pytest.raises(ConfigError, match="haarcascade_frontalface_default"):
        FaceDetector()

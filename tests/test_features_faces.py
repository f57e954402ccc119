"""YuNet face detection: finds the astronaut, not faces in noise; crops are square RGB."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from media import face_frame
from skimage import data

import workers.features.faces as faces_module
from merclip.errors import ConfigError
from workers.features.faces import FaceBox, FaceDetector

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


def _rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


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


def test_margin_grows_the_square_around_the_face() -> None:
    img = data.astronaut()
    (tight,) = FaceDetector(margin=0.0).boxes(img)
    (wide,) = FaceDetector(margin=0.3).boxes(img)
    assert wide.size == pytest.approx(1.6 * tight.size, abs=2)
    # Same centre: the margin is added on every side.
    assert wide.x + wide.size / 2 == pytest.approx(tight.x + tight.size / 2, abs=1.5)
    assert wide.y + wide.size / 2 == pytest.approx(tight.y + tight.size / 2, abs=1.5)
    # YuNet's box is ~55×69 px at 320 px, so ~110 px in the photo: the face, not the whole frame.
    assert 90 < tight.size < 140


def test_no_face_in_noise(detector: FaceDetector) -> None:
    rng = np.random.default_rng(0)
    assert detector.boxes(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) == []
    assert detector.boxes(face_frame(0, face=False)) == []
    assert detector.crops(np.zeros((240, 320, 3), np.uint8)) == []


def test_every_frame_of_the_test_video_has_exactly_one_face(detector: FaceDetector) -> None:
    for i in range(0, 45, 5):
        assert len(detector.boxes(face_frame(i, fps=15, size=(640, 480)))) == 1
        assert len(detector.boxes(face_frame(i, fps=15, size=(320, 240)))) == 1


def test_large_frames_are_downscaled_and_boxes_mapped_back(detector: FaceDetector) -> None:
    small = face_frame(0, size=(640, 480))
    big = cv2.resize(small, (1920, 1440), interpolation=cv2.INTER_LINEAR)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # yuface.detect warns above 960 px; this must not
        (b_big,) = detector.boxes(big)
    (b_small,) = detector.boxes(small)
    # Both are detected at 320 px: the 3× frame gives the same box, 3× larger, in its own pixels.
    assert b_big.size == pytest.approx(3 * b_small.size, abs=4)
    assert b_big.x == pytest.approx(3 * b_small.x, abs=4)
    assert b_big.y == pytest.approx(3 * b_small.y, abs=4)


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


def test_min_confidence_filters_faces() -> None:
    img = data.astronaut()  # YuNet scores her face 0.93
    assert len(FaceDetector(min_confidence=0.9).boxes(img)) == 1
    assert FaceDetector(min_confidence=0.99).boxes(img) == []


def test_bad_input_is_a_value_error(detector: FaceDetector) -> None:
    with pytest.raises(ValueError, match="RGB"):
        detector.boxes(np.zeros((48, 64), np.uint8))
    with pytest.raises(ValueError, match="RGB"):
        detector.crops(np.zeros((48, 64, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        detector.boxes(np.zeros((48, 64, 3), np.float32))


def test_non_contiguous_frames_give_the_same_boxes(detector: FaceDetector) -> None:
    frame = face_frame(3)
    rgb_view = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)[..., ::-1]  # same pixels, negative stride
    assert not rgb_view.flags.c_contiguous
    assert detector.boxes(rgb_view) == detector.boxes(frame)
    wide = np.zeros((480, 1280, 3), np.uint8)
    wide[:, :640] = frame
    assert detector.boxes(wide[:, :640]) == detector.boxes(frame)  # row stride ≠ width · 3


def test_threads_share_one_detector(detector: FaceDetector) -> None:
    frames = [face_frame(i) for i in range(8)] + [data.astronaut()]
    expected = [detector.boxes(f) for f in frames]
    assert all(len(b) == 1 for b in expected)
    got: dict[int, list[list[FaceBox]]] = {}

    def work(k: int) -> None:
        got[k] = [detector.boxes(f) for _ in range(3) for f in frames]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(got[k] == expected * 3 for k in range(4))


def test_memory_does_not_grow_per_frame(detector: FaceDetector) -> None:
    # yuface.detect leaks a 36 KB buffer per call (35 MB over these 1000 frames); this must not.
    frame = np.full((48, 64, 3), 128, np.uint8)
    for _ in range(50):
        detector.boxes(frame)
    before = _rss_mib()
    for _ in range(1000):
        detector.boxes(frame)
    assert _rss_mib() - before < 8


def test_missing_library_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import yuface

    monkeypatch.setattr(faces_module, "_facedetect_cnn", None)
    monkeypatch.setattr(yuface, "__file__", str(tmp_path / "__init__.py"))
    with pytest.raises(ConfigError, match="yuface"):
        FaceDetector()

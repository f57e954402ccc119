"""Face crops with YuNet (libfacedetection, compiled into PyPI `yuface`, BSD-3-Clause).

Detection runs on a BGR copy downscaled so its longer side is at most `detect_size` pixels (320 by
default; YuNet itself warns above 960 px). Boxes are mapped back to the full frame, squared on
their longer side, grown by `margin` (fraction of the side added on each side) and shifted inside
the frame, never truncated. `min_confidence` is YuNet's face score (0..1, reported in percent).
The default margin, 0.2, gives CLIP hair, chin and some context; the FER2013 expression net reads
tighter crops best: use workers.features.expression.EXPRESSION_MARGIN (0.0) for it.

Measured on the shared 2-core machine (scratch scripts; medians of 30 calls on `face_frame(0)`,
640×480, load average ~2.5):
- ms per 640×480 frame: YuNet at 320 px 13 (OMP_NUM_THREADS=1: 19), at 480 px 32, at 640 px 60;
  the old Haar path (grey, 320 px, scaleFactor 1.1, minNeighbors 10, minSize 24) 37–41, Haar at
  640 px 129. So the default, YuNet at 320 px, is ~3× cheaper than what it replaces.
- scikit-image `lfw_subset()` (100 faces, 100 non-faces, 25 px, upscaled to 120 px, INTER_LINEAR):
  YuNet alone on the 120 px image finds 100/100 faces; its best non-face scores are 0.62 and 0.41
  (so 1 false at 0.5, none at 0.7). Pasted into a 640×480 mid-grey frame and detected at 320 px
  (the face is then 60 px): 95/100 at 0.5, 94/100 at 0.7, no non-face. Haar with the old
  parameters: 70/100 on the 120 px images (69–73 with other upscaling filters; the 95/100 the Haar
  version of this docstring gave did not reproduce), 93/100 pasted, no non-face. Hence
  min_confidence 0.7: every face the 0.5 default keeps but one, and no false one.
- On the test video (`tests/media.py` face_frame) the face scores 0.93–0.94 in every frame, and
  random noise / the smooth no-face texture return no candidate at all.

Why not `yuface.detect` (2023.5.1): its C wrapper mallocs a 36 KB (0x9000) result buffer per
call and never frees it (RSS grew 698 MB over 20,000 calls here: ~1.9 GB per hour per 15 fps
stream), and passes width·3 as the row step whatever the array's strides (a non-contiguous view is
read wrongly). Its results are int16 (not the uint16 its docstring says), and an x or y can be
negative at the frame's edge. So this module calls the library's own `facedetect_cnn(result, bgr,
width, height, step)` through ctypes, with a result buffer per call and a contiguous BGR copy: no
growth over the same 20,000 calls (and tests/test_features_faces.py checks 1,000), the same boxes.

Threads. `yuface.detect` is safe to call from several threads, but only because it holds the GIL
for the whole detection: calls never overlap (a pure-Python side thread made 0.6 M iterations
during 10 of its calls against 17 M during 10 ctypes calls, which release the GIL). Overlapping
calls, as here, are safe too: the library keeps its weights in globals filled on the *first* call
behind an unsynchronised flag (`param_initialized`), so that first call is made here, once, under
a lock, before any frame; afterwards the weights are only read, each call allocates its own
blobs, and the result buffer is per call. Checked: 4 threads × 90 overlapping calls on 8
test-video frames and the astronaut photo gave results identical to single-threaded ones (and so
did 4 threads × 50 `yuface.detect` calls); tests/test_features_faces.py repeats the check. Each
call is itself parallelised with OpenMP over all cores (yuface's bundled libgomp; OMP_NUM_THREADS
sets it), so concurrent calls share the cores rather than add up: 4 threads took ~50 ms per
640 px call against ~60 ms serially.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from merclip.errors import ConfigError

__all__ = ["FaceBox", "FaceDetector"]

log = logging.getLogger(__name__)

# facedetect_cnn writes an int32 count, then 16 int16 per face (score %, x, y, w, h, 5 landmark
# x/y pairs, one unused), at most 1024 faces: 4 + 1024 * 32 bytes fit the 0x9000 yuface uses.
_RESULT_BYTES = 0x9000
_MAX_FACES = 1024
_FIELDS = 16
# C++ name of: int* facedetect_cnn(unsigned char* result, unsigned char* bgr, int w, int h,
#                                  int step)
_SYMBOL = "_Z14facedetect_cnnPhS_iii"

_load_lock = threading.Lock()
_facedetect_cnn: Callable[..., object] | None = None


def _library_path() -> Path:
    try:
        import yuface
    except ImportError as e:
        raise ConfigError("face detection needs PyPI 'yuface' (pip install yuface)") from e
    return Path(yuface.__file__).parent / "libfacedetection.so"


def _open(path: Path) -> Callable[..., object]:
    """The library's facedetect_cnn through ctypes, its (initialising) first call made."""
    try:
        fn = getattr(ctypes.CDLL(str(path)), _SYMBOL)
    except (OSError, AttributeError) as e:
        raise ConfigError(
            f"cannot load YuNet's facedetect_cnn from {path} ({e}); reinstall PyPI 'yuface' "
            "(this module was checked against yuface 2023.5.1)"
        ) from e
    fn.restype = ctypes.c_void_p
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    _call(fn, np.zeros((32, 32, 3), np.uint8))  # fills the library's global weights
    return fn


def _load() -> Callable[..., object]:
    """The process-wide facedetect_cnn, opened on first use."""
    global _facedetect_cnn
    with _load_lock:  # the first call into the library must not race another
        if _facedetect_cnn is None:
            _facedetect_cnn = _open(_library_path())
        return _facedetect_cnn


def _call(fn: Callable[..., object], bgr: np.ndarray) -> np.ndarray:
    """(N, 5) int32 rows (score %, x, y, w, h) of one detection, in `bgr`'s pixels."""
    bgr = np.ascontiguousarray(bgr)  # the library reads rows of exactly width * 3 bytes
    h, w = bgr.shape[:2]
    buf = np.empty(_RESULT_BYTES, np.uint8)
    fn(buf.ctypes.data, bgr.ctypes.data, w, h, w * 3)  # ctypes releases the GIL meanwhile
    n = min(int(buf[:4].view(np.int32)[0]), _MAX_FACES)
    rows = buf[4 : 4 + 2 * _FIELDS * n].view(np.int16).reshape(n, _FIELDS)
    return rows[:, :5].astype(np.int32)


@dataclass(frozen=True)
class FaceBox:
    """A square crop box in full-frame pixels (x, y = top-left)."""

    x: int
    y: int
    size: int


class FaceDetector:
    """Detects faces with YuNet and returns square RGB crops, largest first."""

    def __init__(
        self, detect_size: int = 320, margin: float = 0.2, min_confidence: float = 0.7
    ) -> None:
        if detect_size < 32:
            raise ConfigError(f"detect_size must be at least 32 pixels, got {detect_size}")
        if not 0.0 <= min_confidence <= 1.0:
            raise ConfigError(f"min_confidence must be within [0, 1], got {min_confidence}")
        self.detect_size = detect_size
        self.margin = margin
        self.min_confidence = min_confidence
        self._fn = _load()  # fail at start-up, not on the first frame

    def boxes(self, rgb: np.ndarray) -> list[FaceBox]:
        """Square boxes (with margin) of the faces in an (H, W, 3) RGB frame, largest first."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {rgb.dtype} {rgb.shape}")
        h, w = rgb.shape[:2]
        scale = min(1.0, self.detect_size / max(h, w))
        small = rgb
        if scale < 1.0:
            size = (round(w * scale), round(h * scale))
            small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
        found = _call(self._fn, bgr)
        found = found[found[:, 0] >= round(self.min_confidence * 100)]
        out: list[FaceBox] = []
        for _, fx, fy, fw, fh in sorted(found.tolist(), key=lambda r: r[3] * r[4], reverse=True):
            cx, cy = (fx + fw / 2) / scale, (fy + fh / 2) / scale
            side = int(round(max(fw, fh) / scale * (1 + 2 * self.margin)))
            side = max(1, min(side, h, w))
            x = int(round(min(max(cx - side / 2, 0), w - side)))
            y = int(round(min(max(cy - side / 2, 0), h - side)))
            out.append(FaceBox(x, y, side))
        return out

    def crops(self, rgb: np.ndarray, max_faces: int | None = None) -> list[np.ndarray]:
        """Square RGB uint8 crops of the faces in the frame, largest first."""
        boxes = self.boxes(rgb)[:max_faces]
        return [np.ascontiguousarray(rgb[b.y : b.y + b.size, b.x : b.x + b.size]) for b in boxes]

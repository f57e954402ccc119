"""Per-frame cost of the visual path, old (Haar + CLIP image) vs new (YuNet + FER2013 net).

    python benchmarks/visual_cost.py [--frames 30] [--threads 1 0]

One 640×480 frame with one face (tests/media.py face_frame), per path: detect, crop the largest
face, embed it. Medians over --frames frames (the test video's first frames, so the face moves)
after 5 warm-up frames, for each torch thread setting (0 = torch's default).

- old: OpenCV Haar exactly as the old workers/features/faces.py ran it (grey, downscaled to a
  320 px longer side, scaleFactor 1.1, minNeighbors 10, minSize 24, 20 % margin), then the
  open_clip ViT-B-32 image encoder on the crop (random init: the cost is the same; open_clip's
  own preprocessing: PIL resize to 224, centre crop, normalise).
- new: FaceDetector (YuNet at 320 px, margin EXPRESSION_MARGIN), then
  ExpressionEncoder.features on the crop.

The target for the new default live feature space: new ≥ 5× cheaper than old.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from media import face_frame  # noqa: E402

from workers.features.expression import EXPRESSION_MARGIN, ExpressionEncoder  # noqa: E402
from workers.features.faces import FaceDetector  # noqa: E402


class HaarClip:
    """The old visual path, rebuilt from cv2 and open_clip directly."""

    def __init__(self) -> None:
        import open_clip
        from PIL import Image

        self._image = Image.fromarray
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise SystemExit(f"cannot load {path} (opencv-python-headless 4.x ships it)")
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(
            "ViT-B-32", pretrained=None
        )
        self.model.eval()

    def crop(self, rgb: np.ndarray) -> np.ndarray | None:
        h, w = rgb.shape[:2]
        scale = min(1.0, 320 / max(h, w))
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        grey = cv2.resize(grey, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        found = self.cascade.detectMultiScale(
            grey, scaleFactor=1.1, minNeighbors=10, minSize=(24, 24)
        )
        if len(found) == 0:
            return None
        fx, fy, fw, fh = max((tuple(int(v) for v in r) for r in found), key=lambda r: r[2] * r[3])
        cx, cy = (fx + fw / 2) / scale, (fy + fh / 2) / scale
        side = min(int(round(max(fw, fh) / scale * 1.4)), h, w)
        x = int(round(min(max(cx - side / 2, 0), w - side)))
        y = int(round(min(max(cy - side / 2, 0), h - side)))
        return rgb[y : y + side, x : x + side]

    def embed(self, crop: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            batch = self.preprocess(self._image(np.ascontiguousarray(crop))).unsqueeze(0)
            return self.model.encode_image(batch).float().numpy()[0]


class YuNetExpression:
    def __init__(self) -> None:
        self.detector = FaceDetector(margin=EXPRESSION_MARGIN)
        self.encoder = ExpressionEncoder.from_package()

    def crop(self, rgb: np.ndarray) -> np.ndarray | None:
        crops = self.detector.crops(rgb, max_faces=1)
        return crops[0] if crops else None

    def embed(self, crop: np.ndarray) -> np.ndarray:
        return self.encoder.features([crop])[0]


def median_ms(path: HaarClip | YuNetExpression, frames: list[np.ndarray]) -> tuple[float, ...]:
    """Median ms per frame of (detect + crop, embed, both)."""
    times = []
    for i, f in enumerate(frames[:5] + frames):
        t0 = time.perf_counter()
        crop = path.crop(f)
        t1 = time.perf_counter()
        if crop is None:
            raise SystemExit("a test frame had no face: the benchmark would time nothing")
        path.embed(crop)
        t2 = time.perf_counter()
        if i >= 5:
            times.append((t1 - t0, t2 - t1, t2 - t0))
    return tuple(1000 * statistics.median(col) for col in zip(*times, strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=30, help="timed frames per path (≥ 20)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 0], help="torch threads")
    args = ap.parse_args()
    default_threads = torch.get_num_threads()
    frames = [face_frame(i, size=(640, 480)) for i in range(args.frames)]
    old, new = HaarClip(), YuNetExpression()
    print(f"640×480 frame, one face; ms per frame, median of {args.frames} frames after 5 warm-up")
    print(
        f"{'torch threads':>13}  {'old: Haar':>9} {'+ CLIP':>7} {'= total':>8}   "
        f"{'new: YuNet':>10} {'+ FER':>6} {'= total':>8}   {'old/new':>7}"
    )
    for n in args.threads:
        torch.set_num_threads(n or default_threads)
        cv2.setNumThreads(n or -1)  # Haar's (and cv2.resize's) pool follows the same setting
        (od, oe, ot), (nd, ne, nt) = median_ms(old, frames), median_ms(new, frames)
        label = f"{n}" if n else f"default ({default_threads})"
        print(
            f"{label:>13}  {od:9.1f} {oe:7.1f} {ot:8.1f}   {nd:10.1f} {ne:6.1f} {nt:8.1f}   "
            f"{ot / nt:7.1f}"
        )


if __name__ == "__main__":
    main()

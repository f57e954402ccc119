"""Which FaceDetector margin frames a live face the way FER2013 framed its training faces?

    python benchmarks/expression_framing.py --data ../shared/data/fer2013 [--per-class 43]
                                            [--size 200] [--margins 0 0.05 0.1 0.15 0.2 0.3]

FER2013 images are tight 48×48 grey face crops; live, the expression net gets a YuNet crop of a
webcam frame. For a stratified sample of FER2013 *train* images (never val: this tunes a
constant), each image is upscaled to --size px, pasted (as RGB) into the centre of a 640×480
mid-grey frame, detected with FaceDetector (its default detect size and confidence), and the
largest face is cropped with each margin. Per margin the table gives, over the faces detected:

- agree:    the net's argmax on the crop equals its argmax on the original 48×48 image
- acc:      the crop's argmax equals the FER2013 label (the original's accuracy is the first line)
- p(orig):  mean probability the crop gives to the original's argmax class
- side:     mean crop side / pasted side (1.0: the crop is exactly the FER2013 image)

The detection rate (the same for every margin: the margin does not change detection) is printed
above the table. workers/features/expression.py's EXPRESSION_MARGIN comes from this table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.features.expression import EXPRESSION_CLASSES, ExpressionEncoder  # noqa: E402
from workers.features.faces import FaceDetector  # noqa: E402


def sample(train_dir: Path, per_class: int, seed: int) -> list[tuple[Path, int]]:
    """`per_class` images of each class (fewer if the class has fewer), drawn with `seed`."""
    rng = np.random.default_rng(seed)
    out = []
    for label, name in enumerate(EXPRESSION_CLASSES):
        files = sorted((train_dir / name).glob("*.jpg"))
        if not files:
            raise SystemExit(f"no images in {train_dir / name}: expected the msambare layout")
        pick = rng.choice(len(files), size=min(per_class, len(files)), replace=False)
        out += [(files[i], label) for i in sorted(pick)]
    return out


def paste(grey48: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The face upscaled to `size` px in the centre of a 640×480 mid-grey RGB frame."""
    frame = np.full((480, 640, 3), 128, np.uint8)
    face = cv2.resize(grey48, (size, size), interpolation=cv2.INTER_LINEAR)
    y0, x0 = (480 - size) // 2, (640 - size) // 2
    frame[y0 : y0 + size, x0 : x0 + size] = cv2.cvtColor(face, cv2.COLOR_GRAY2RGB)
    return frame, (x0, y0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="the fer2013 folder (train/<class>)")
    ap.add_argument("--per-class", type=int, default=43, help="images per class (7 classes)")
    ap.add_argument("--size", type=int, default=200, help="pasted face side in px")
    ap.add_argument("--margins", type=float, nargs="+", default=[0, 0.05, 0.1, 0.15, 0.2, 0.3])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    items = sample(args.data / "train", args.per_class, args.seed)
    enc = ExpressionEncoder.from_package()
    originals = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p, _ in items]
    labels = np.array([label for _, label in items])
    p_orig = enc.probabilities(originals)
    ref = p_orig.argmax(1)
    frames = [paste(img, args.size)[0] for img in originals]

    rows = []
    detected: np.ndarray | None = None
    for m in args.margins:
        det = FaceDetector(margin=m)
        crops, sides, found = [], [], []
        for frame in frames:
            boxes = det.boxes(frame)[:1]
            found.append(bool(boxes))
            if boxes:
                b = boxes[0]
                crops.append(frame[b.y : b.y + b.size, b.x : b.x + b.size])
                sides.append(b.size / args.size)
        hit = np.array(found)
        if detected is None:
            detected = hit
        elif not np.array_equal(hit, detected):
            raise SystemExit("detection changed with the margin: FaceDetector is not deterministic")
        p = enc.probabilities(crops)
        pred = p.argmax(1)
        rows.append(
            (
                m,
                float((pred == ref[hit]).mean()),
                float((pred == labels[hit]).mean()),
                float(p[np.arange(len(p)), ref[hit]].mean()),
                float(np.mean(sides)),
            )
        )
    assert detected is not None

    n, k = len(items), int(detected.sum())
    print(
        f"FER2013 train sample: {n} images ({args.per_class} per class, seed {args.seed}), "
        f"pasted at {args.size} px into 640×480 mid-grey"
    )
    print(f"detected by YuNet: {k}/{n} = {k / n:.3f}")
    acc_all = float((ref == labels).mean())
    acc_det = float((ref[detected] == labels[detected]).mean())
    print(f"original 48×48 images: acc {acc_all:.3f} (all), {acc_det:.3f} (detected ones)")
    print()
    print(f"{'margin':>6}  {'agree':>6}  {'acc':>6}  {'p(orig)':>7}  {'side':>5}")
    for m, agree, acc, p_ref, side in rows:
        print(f"{m:6.2f}  {agree:6.3f}  {acc:6.3f}  {p_ref:7.3f}  {side:5.2f}")
    best = max(rows, key=lambda r: (r[1], r[3]))
    print(f"\nbest agreement: margin {best[0]:.2f}  ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()

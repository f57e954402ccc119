"""MER-CLIP inference throughput: windows/s at batch 1 and batch N, CLIP encoders excluded.

What is timed is what the inference worker pays per batch once the model is loaded: collate +
adapters + cross-modal decoder + both heads (emotion and sentiment). Label and query encodings are
computed once at load (`MerClip.cache_encodings`), and the language/visual CLIP features arrive
precomputed from ingest, so no CLIP encoder runs here.

Window shape (defaults match a 4 s live window): 12 transcript tokens, 2 face crops, 40 audio
frames (100 ms log-mel frames). Weights are random (no pretrained CLIP, no checkpoint): throughput
does not depend on the weight values.

    python benchmarks/model_throughput.py [--model merclip-b32-live] [--batch 1 32] [--threads N]

On a busy machine compare --threads 1 with the default: measured on the shared 2-core dev box
(load average 3-5), 2 intra-op threads ran the batch-1 step 25-60x slower than 1 thread
(OpenMP workers spinning against other processes); in one quieter run 2 threads were 1.4x faster.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import numpy as np
import torch

from merclip.batch import Sample, collate
from merclip.model import create_model


def _windows(n: int, dims: dict[str, int], tokens: int, faces: int, frames: int) -> list[Sample]:
    rng = np.random.default_rng(0)
    return [
        Sample(
            rng.normal(size=(tokens, dims["language"])).astype(np.float16),
            rng.normal(size=(faces, dims["visual"])).astype(np.float16),
            rng.normal(size=(frames, dims["audio"])).astype(np.float16),
        )
        for _ in range(n)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="merclip-b32-live")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per batch size")
    ap.add_argument("--tokens", type=int, default=12)
    ap.add_argument("--faces", type=int, default=2)
    ap.add_argument("--frames", type=int, default=40)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model).to(args.device)
    model.cache_encodings()
    dims = model.dims
    print(
        f"model {args.model} (CLIP {model.clip_name}, RANDOM INIT weights: timing only), "
        f"device {args.device}, torch threads {torch.get_num_threads()}"
    )
    print(
        f"window: {args.tokens} tokens x{dims['language']}, {args.faces} faces "
        f"x{dims['visual']}, {args.frames} audio frames x{dims['audio']}; tasks {model.tasks}"
    )
    rates: dict[int, float] = {}
    for bs in args.batch:
        samples = _windows(bs, dims, args.tokens, args.faces, args.frames)

        def step(samples: list[Sample] = samples) -> None:
            batch = collate(samples, dims).to(args.device)
            for task in model.tasks:
                model(batch, task).probs.cpu()

        with torch.inference_mode():
            for _ in range(3):  # warm-up
                step()
            times: list[float] = []
            start = time.perf_counter()
            while time.perf_counter() - start < args.seconds or len(times) < 5:
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
        median = statistics.median(times)
        rates[bs] = bs / median
        print(
            f"batch {bs:3d}: {rates[bs]:8.1f} windows/s  (median {median * 1e3:7.2f} ms/batch, "
            f"{len(times)} runs)"
        )
    if len(rates) >= 2:
        lo, hi = min(rates), max(rates)
        print(f"throughput ratio batch {hi} / batch {lo}: {rates[hi] / rates[lo]:.1f}x")


if __name__ == "__main__":
    main()

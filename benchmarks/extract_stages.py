"""Per-stage cost of live feature extraction for one window, on this machine's CPU.

    python benchmarks/extract_stages.py [--clip ViT-B-32] [--windows 5] [--asr-threads]
                                        [--frame-batches]

Builds the window the way ingest does: 4 s of espeak-ng speech (16 kHz) and the 640×480 test
camera sampled at ingest.video_fps through SessionWindower, then times WindowExtractor.extract
(median over --windows runs after one warm-up). CLIP is randomly initialised (no weights ship
offline; the cost is the same), Whisper is the bundled tiny.en (int8).

--asr-threads also measures Whisper throughput for concurrent callers: one shared model behind
the Transcriber's lock vs a faster-whisper model with num_workers=2 (one core each), which is the
evidence for the lock in workers/features/asr.py.

--frame-batches times faces + CLIP per frame at batch sizes 1, 2, 4 and 8: the evidence for
workers/batcher.py.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from media import SPEECH_TEXT, face_frame, read_wav_16k, speech_wav  # noqa: E402

from merclip.clip_backbone import load_clip  # noqa: E402
from workers.app.settings import Settings  # noqa: E402
from workers.features.asr import Transcriber, resolve_model  # noqa: E402
from workers.features.extractor import WindowExtractor  # noqa: E402
from workers.schemas import EXTRACTION_STAGES as STAGES  # noqa: E402
from workers.windowing import RawWindow, SessionWindower  # noqa: E402


def make_window(settings: Settings, speech: np.ndarray) -> RawWindow:
    ing = settings.ingest
    w = SessionWindower(ing.window_seconds, ing.hop_seconds, ing.video_fps)
    n = int(ing.window_seconds * 16000)
    audio = np.zeros(n, np.float32)
    audio[: min(n, len(speech))] = speech[:n]
    for i in range(0, n, 320):
        w.push_audio(audio[i : i + 320], (i + 320) / 16000)
        t = i / 16000
        if i % 1066 < 320 and w.offer_frame(t):  # ~15 fps camera
            w.push_frame(face_frame(int(t * 15), size=(640, 480)), t)
    (window,) = w.pop_ready(time.time())
    return window


def asr_threads(speech: np.ndarray, calls: int = 4) -> None:
    from faster_whisper import WhisperModel

    shared = Transcriber("bundled")
    audio = speech[: 4 * 16000]

    def run(fn, threads: int) -> float:
        t0 = time.perf_counter()
        per = calls // threads
        ts = [
            threading.Thread(target=lambda: [fn(audio) for _ in range(per)]) for _ in range(threads)
        ]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return (time.perf_counter() - t0) / calls * 1e3

    print(f"asr threads ({calls} calls of 4 s, ms per call):")
    print(f"  1 thread,  shared model + lock       : {run(shared.transcribe, 1):7.1f}")
    print(f"  2 threads, shared model + lock       : {run(shared.transcribe, 2):7.1f}")
    model = WhisperModel(
        resolve_model("bundled"), device="cpu", compute_type="int8", cpu_threads=1, num_workers=2
    )

    def two_workers(a: np.ndarray) -> str:
        segs, _ = model.transcribe(
            a,
            language="en",
            beam_size=1,
            condition_on_previous_text=False,
            without_timestamps=True,
        )
        return " ".join(s.text for s in segs)

    print(f"  2 threads, num_workers=2, 1 core each: {run(two_workers, 2):7.1f}")


def frame_batches(extractor: WindowExtractor, frames: list[np.ndarray], rounds: int = 5) -> None:
    """Faces + CLIP per frame, one frame at a time vs in batches (what Batcher forms when
    frames from several sessions wait). Sizes interleave within each round, so machine noise hits
    all of them alike; the minimum over rounds is reported."""
    n = 8
    frames = (frames * n)[:n]
    extractor.frame_features(frames)  # warm-up
    best: dict[int, float] = {}
    for _ in range(rounds):
        for size in (1, 2, 4, 8):
            t0 = time.perf_counter()
            for i in range(0, n, size):
                extractor.frame_features(frames[i : i + size])
            per_frame = (time.perf_counter() - t0) * 1e3 / n
            best[size] = min(best.get(size, float("inf")), per_frame)
    print(f"faces + CLIP per frame by batch size (min of {rounds} rounds of {n} frames):")
    for size, ms in best.items():
        print(f"  batch {size}: {ms:7.1f} ms/frame  ({best[1] / ms:.2f}x batch 1)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--clip", default="ViT-B-32")
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--asr-threads", action="store_true")
    ap.add_argument("--frame-batches", action="store_true")
    args = ap.parse_args()

    settings = Settings().replace("clip", model=args.clip)
    with tempfile.TemporaryDirectory() as tmp:
        speech = read_wav_16k(speech_wav(tmp, SPEECH_TEXT))
    t0 = time.perf_counter()
    clip = load_clip(args.clip, "", "cpu")
    t_clip = time.perf_counter() - t0
    t0 = time.perf_counter()
    asr = Transcriber.from_settings(settings.asr)
    t_asr = time.perf_counter() - t0
    extractor = WindowExtractor(settings, clip, asr)
    window = make_window(settings, speech)
    silent = RawWindow(0, 0.0, 4.0, 0.0, 4.0, np.zeros(64000, np.float32), window.frames)

    print(
        f"CPU threads: torch {torch.get_num_threads()}; load: CLIP {args.clip} {t_clip:.2f} s, "
        f"Whisper bundled tiny.en {t_asr:.2f} s"
    )
    print(
        f"window: {settings.ingest.window_seconds:g} s speech, {len(window.frames)} frames "
        f"640x480 at {settings.ingest.video_fps:g} fps, max_faces {extractor.max_faces}"
    )
    for label, raw in (("speech + faces", window), ("silent + faces", silent)):
        extractor.extract(raw, "bench")  # warm-up
        runs = []
        for _ in range(args.windows):
            t0 = time.perf_counter()
            fw = extractor.extract(raw, "bench")
            runs.append(((time.perf_counter() - t0) * 1e3, fw.stage_ms))
        med = {s: statistics.median(r[1][s] for r in runs) for s in STAGES}
        total = statistics.median(r[0] for r in runs)
        faces = 0 if fw.visual is None else fw.visual.shape[0]
        print(f"{label}: transcript {fw.transcript!r}, {faces} faces (median of {args.windows})")
        for s in STAGES:
            print(f"  {s:<10} {med[s]:8.1f} ms")
        print(f"  {'total':<10} {total:8.1f} ms")
    if args.asr_threads:
        asr_threads(speech)
    if args.frame_batches:
        frame_batches(extractor, [rgb for _, rgb in window.frames])


if __name__ == "__main__":
    main()

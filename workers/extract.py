"""`merclip extract DIR --out OUT`: a folder of videos → a training set in the live feature space.

Each video goes through the very code the live ingest runs: PyAV decodes it, audio is resampled
to 16 kHz mono by one stateful `av.AudioResampler`, video frames are offered to the same
`SessionWindower` (latest-frame sampling at `ingest.video_fps`) and the window goes through the
same `WindowExtractor` (Whisper behind the energy gate, Haar + CLIP image, CLIP text, log-mel).

One sample per video, the clip taken as ONE window (window = hop = `--max-seconds`, emitted by
`flush()` at the end of the file). Why not the live 4 s windows concatenated: the live model input
is one window = one transcript with a single EOT row, up to `max_faces_per_window` face embeddings
and log-mel rows; a whole clip as one window has exactly that structure (just a longer span, e.g.
70 audio rows for a 7 s CMU-MOSEI segment instead of 40), whereas concatenating windows would put
several SOT..EOT sequences into one language input, something the live model never sees. Clips
longer than `--max-seconds` (default 30 s, Whisper's context) are cut there, with a warning.

Labels CSV (`--labels`), one row per video, header required:

    id,split,happy,sad,anger,surprise,disgust,fear,sentiment
    clip_a,train,1,0,0,0,0,0,1.6
    clip_b,test,0,1,0,0,0,1,negative

- id: the video's path relative to DIR without its extension, '/'-separated (`sub/clip_a`); a bare
  file stem also matches when it is unique.
- split (optional column): train / valid / test (any name without '-' or '/').
- the six emotion columns (all six, or none): presence when the value is > 0, so CMU-MOSEI's
  0..3 intensities can be pasted as they are; an all-empty row means "no emotion label".
- sentiment (optional): a score in [-3, 3] (stored as `regression`; class positive when >= 0,
  CMU-MOSEI's non-negative vs negative convention) or the word negative / positive.
Videos absent from the CSV are written unlabelled.

Split of each video: `--split-file` (JSON `{"train": [ids], "valid": [...], "test": [...]}`) wins
over the CSV's split column, which wins over `--default-split` (train).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from merclip.data.live_dataset import SENTIMENT_LABELS, LiveDatasetWriter
from merclip.data.mosei_labels import EMOTION_LABELS
from merclip.errors import DatasetError
from merclip.predictor import feature_dims
from workers.features.audio_features import SAMPLE_RATE
from workers.features.extractor import WindowExtractor
from workers.schemas import FeatureWindow
from workers.settings import WorkerSettings
from workers.windowing import RawWindow, SessionWindower

__all__ = ["Label", "add_arguments", "decode_clip", "read_labels", "run"]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".flv")


@dataclass(frozen=True)
class Label:
    split: str | None
    emotion: np.ndarray | None
    sentiment: int | None
    regression: float | None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", type=Path, help="folder of video files (searched recursively)")
    parser.add_argument("--out", type=Path, required=True, help="dataset directory to write")
    parser.add_argument("--labels", type=Path, default=None, help="labels CSV (see module doc)")
    parser.add_argument(
        "--split-file", type=Path, default=None, help='JSON {"train": [ids], "test": [ids], ...}'
    )
    parser.add_argument("--default-split", default="train", help="split of unassigned videos")
    parser.add_argument(
        "--max-seconds", type=float, default=30.0, help="cut longer clips here (default 30)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    parser.add_argument("--device", default="cpu", help="torch device for CLIP (cpu, cuda)")


def run(args: argparse.Namespace, settings: WorkerSettings) -> int:
    root: Path = args.dir
    if not root.is_dir():
        raise DatasetError(f"{root} is not a directory")
    videos = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
    if not videos:
        raise DatasetError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) under {root}")
    ids = [_video_id(root, p) for p in videos]
    labels = read_labels(args.labels, ids) if args.labels else {}
    split_of = _read_split_file(args.split_file) if args.split_file else {}

    extractor = WindowExtractor.from_settings(settings, device=args.device)
    dims = feature_dims(settings)
    failed = 0
    t_start = time.perf_counter()
    stage_totals: dict[str, float] = {}
    with LiveDatasetWriter(
        args.out,
        extractor.encoders.name,
        extractor.encoders.pretrained_source,
        dims,
        overwrite=args.overwrite,
        feature_space=extractor.encoders.space,
    ) as writer:
        for n, (path, vid) in enumerate(zip(videos, ids, strict=True), 1):
            label = labels.get(vid)
            from_file = split_of.get(vid) or split_of.get(vid.rsplit("/", 1)[-1])
            split = from_file or (label.split if label else None) or args.default_split
            try:
                fw = extract_clip(path, vid, extractor, settings, args.max_seconds)
            except (av.FFmpegError, OSError, ValueError) as exc:
                failed += 1
                log.error("%s: cannot decode, skipped: %s", path, exc)
                continue
            if fw is None:
                failed += 1
                log.error("%s: no audio or video decoded, skipped", path)
                continue
            for k, v in fw.stage_ms.items():
                stage_totals[k] = stage_totals.get(k, 0.0) + v
            writer.add(
                vid,
                split,
                fw.language,
                fw.visual,
                fw.audio,
                fw.transcript,
                emotion=label.emotion if label else None,
                sentiment=label.sentiment if label else None,
                regression=label.regression if label else None,
            )
            log.info(
                "[%d/%d] %s → %s: %r, %s faces, %s audio rows",
                n,
                len(videos),
                vid,
                split,
                fw.transcript,
                0 if fw.visual is None else fw.visual.shape[0],
                0 if fw.audio is None else fw.audio.shape[0],
            )
    ok = len(videos) - failed
    log.info(
        "extracted %d/%d videos into %s in %.1f s; stage totals (ms): %s",
        ok,
        len(videos),
        args.out,
        time.perf_counter() - t_start,
        {k: round(v) for k, v in stage_totals.items()},
    )
    return 0 if failed == 0 else 1


def extract_clip(
    path: Path,
    sample_id: str,
    extractor: WindowExtractor,
    settings: WorkerSettings,
    max_seconds: float = 30.0,
) -> FeatureWindow | None:
    """Features of one video file taken as a single window (None if nothing decodes)."""
    window = decode_clip(path, settings.ingest.video_fps, max_seconds)
    return None if window is None else extractor.extract(window, sample_id)


def decode_clip(path: Path, video_fps: float, max_seconds: float = 30.0) -> RawWindow | None:
    """Decode a file into one RawWindow through SessionWindower (window = hop = max_seconds)."""
    windower = SessionWindower(max_seconds, max_seconds, video_fps, SAMPLE_RATE)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    audio_t0: float | None = None
    audio_n = 0
    with av.open(str(path)) as container:
        streams: dict[str, Any] = {}
        if container.streams.audio:
            streams["audio"] = 0
        if container.streams.video:
            streams["video"] = 0
            container.streams.video[0].thread_type = "AUTO"
        if not streams:
            return None
        for frame in container.decode(**streams):
            t = max(0.0, float(frame.time or 0.0))
            if t >= max_seconds:
                if isinstance(frame, av.VideoFrame) or "video" not in streams:
                    break
                continue
            if isinstance(frame, av.AudioFrame):
                if audio_t0 is None:
                    audio_t0 = t
                for out in resampler.resample(frame):
                    samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                    audio_n += samples.size
                    windower.push_audio(samples, audio_t0 + audio_n / SAMPLE_RATE)
            elif windower.offer_frame(t):
                windower.push_frame(frame.to_ndarray(format="rgb24"), t)
        if audio_t0 is not None:
            for out in resampler.resample(None):  # drain the resampler's delay line
                samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                audio_n += samples.size
                windower.push_audio(samples, audio_t0 + audio_n / SAMPLE_RATE)
    end = min(windower.media_time, max_seconds)
    windows = windower.flush(0.0, media_now=end)
    if len(windows) > 1 or (windows and not windows[0].partial):
        log.warning("%s is longer than %.0f s: only that much is used", path, max_seconds)
    return windows[0] if windows else None


def read_labels(path: Path, video_ids: list[str]) -> dict[str, Label]:
    """Parse the labels CSV (format in the module docstring) into {video id: Label}."""
    stems: dict[str, list[str]] = {}
    for video_id in video_ids:
        stems.setdefault(video_id.rsplit("/", 1)[-1], []).append(video_id)
    known = set(video_ids)
    out: dict[str, Label] = {}
    unmatched = 0
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        if "id" not in header:
            raise DatasetError(f"{path}: the header needs an 'id' column (got {header})")
        emo_cols = [c for c in EMOTION_LABELS if c in header]
        if emo_cols and len(emo_cols) != len(EMOTION_LABELS):
            missing = [c for c in EMOTION_LABELS if c not in header]
            raise DatasetError(f"{path}: emotion columns must be all six; missing {missing}")
        for line, raw_row in enumerate(reader, 2):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw_row.items()}
            rid = row["id"]
            vid: str | None = rid if rid in known else _unique(stems.get(rid, []))
            if vid is None:
                unmatched += 1
                continue
            try:
                out[vid] = Label(
                    split=row.get("split") or None,
                    emotion=_emotion(row, emo_cols),
                    **_sentiment(row.get("sentiment", "")),
                )
            except ValueError as exc:
                raise DatasetError(f"{path}:{line}: {exc}") from exc
    if unmatched:
        log.warning("%s: %d rows name no video under the input folder", path, unmatched)
    return out


def _emotion(row: dict[str, str], cols: list[str]) -> np.ndarray | None:
    if not cols or all(row.get(c, "") == "" for c in cols):
        return None
    return np.array([float(row[c] or 0) > 0 for c in cols], dtype=np.float32)


def _sentiment(text: str) -> dict[str, Any]:
    if text == "":
        return {"sentiment": None, "regression": None}
    word = text.lower()
    if word in SENTIMENT_LABELS:
        return {"sentiment": SENTIMENT_LABELS.index(word), "regression": None}
    score = float(text)
    if not math.isfinite(score) or not -3.0 <= score <= 3.0:
        raise ValueError(f"sentiment {text!r} is neither a score in [-3, 3] nor a label word")
    return {"sentiment": int(score >= 0), "regression": score}


def _read_split_file(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"--split-file {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise DatasetError(f"--split-file {path}: expected {{split: [ids]}}")
    return {str(i): split for split, items in data.items() for i in items}


def _unique(options: list[str]) -> str | None:
    return options[0] if len(options) == 1 else None


def _video_id(root: Path, path: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()

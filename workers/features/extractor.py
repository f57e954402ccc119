"""One window of raw media → one FeatureWindow in the configured live feature space.

Used unchanged by the streaming ingest (called from executor threads) and by `merclip extract`.
Stages (workers.schemas.EXTRACTION_STAGES, the keys of FeatureWindow.stage_ms) and what they
produce (float16 on the wire); the encoders are those of
settings.features.space (encoders.py: MiniLM + FER expression net, or CLIP):
- asr:          transcript and its timed words (faster-whisper behind the energy gate, see
                asr.py); FeatureWindow.words gets every word, the streaming ingest keeps the
                ones the window owns (workers/transcript.py)
- text_encoder: language = encoders.language([transcript])[0], (T_l, D_l); None if no words
- faces:        YuNet on at most `ingest.max_faces_per_window` of the window's sampled frames
                (evenly spread when there are more), the largest face of each frame
- face_encoder: visual = encoders.faces(crops) in one batch, (N_faces, D_v); None without faces

Streaming ingest computes faces + CLIP per sampled frame as the frame arrives (`frame_feature`)
and hands those to `extract(..., frame_features=...)`: overlapping windows then share the work of
their common frames, and only ASR and text remain between a window's end and its features.
- audio:      audio = log-mel rows (T_a, 64); None when silent or no audio

Thread safety: the Transcriber serialises Whisper calls itself, the face detector is safe across
threads (faces.py), and the encoders' forward passes only read the shared weights, so one
WindowExtractor may be called from several threads at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from merclip.clip_backbone import ClipBackbone
from workers.features.asr import AsrResult, Transcriber
from workers.features.audio_features import log_mel_features, speech_ratio
from workers.features.encoders import ClipEncoders, FeatureEncoders, load_encoders
from workers.features.faces import FaceDetector
from workers.schemas import FeatureWindow, Word
from workers.settings import WorkerSettings
from workers.windowing import RawWindow

__all__ = ["FrameFeature", "WindowExtractor", "select_frames"]

log = logging.getLogger(__name__)


class WindowTranscriber(Protocol):
    """What extract needs of ASR (Transcriber, BatchedTranscriber)."""

    def transcribe_window(self, audio16k: np.ndarray | None, offset: float = 0.0) -> AsrResult: ...


@dataclass(frozen=True)
class FrameFeature:
    """Visual features of one sampled frame: the largest face's encoding, or None."""

    embedding: np.ndarray | None  # (D_v,) float32
    faces_ms: float
    encoder_ms: float


def select_frames(
    frames: list[tuple[float, np.ndarray]], limit: int
) -> list[tuple[float, np.ndarray]]:
    """At most `limit` frames spread evenly over the window (first and last kept)."""
    if len(frames) <= limit:
        return list(frames)
    idx = np.unique(np.linspace(0, len(frames) - 1, limit).round().astype(int))
    return [frames[i] for i in idx]


class WindowExtractor:
    """Turns RawWindows into FeatureWindows with shared, already-loaded models."""

    def __init__(
        self,
        settings: WorkerSettings,
        encoders: FeatureEncoders | ClipBackbone,
        asr: Transcriber | None,
        faces: FaceDetector | None = None,
    ) -> None:
        self.settings = settings
        self.encoders: FeatureEncoders = (
            ClipEncoders(encoders) if isinstance(encoders, ClipBackbone) else encoders
        )
        self.clip: ClipBackbone | None = getattr(self.encoders, "clip", None)
        """The CLIP of the "live" space (shared with zero-shot inference); None otherwise."""
        self.asr = asr
        self.faces = faces if faces is not None else FaceDetector(margin=self.encoders.face_margin)
        self.max_faces = settings.ingest.max_faces_per_window
        self.min_speech_ratio = settings.asr.min_speech_ratio
        if asr is None:
            log.warning("no ASR model: windows get no transcript and no language features")

    @classmethod
    def from_settings(cls, settings: WorkerSettings, device: str = "cpu") -> WindowExtractor:
        """Load the encoders and Whisper as configured (start-up cost: once per process)."""
        encoders = load_encoders(settings, device)
        return cls(settings, encoders, Transcriber.from_settings(settings.asr, device=device))

    def warm_up(self) -> None:
        """Run every stage once on synthetic input: the first real window should not pay for
        lazy initialisation (thread pools, kernels, allocator growth). About 1 s at start-up."""
        t = time.perf_counter()
        tone = np.zeros(32000, np.float32)  # 1 s of silence, then 1 s of a tone: passes the gate
        tone[16000:] = 0.1 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000)
        if self.asr is not None:
            self.asr.transcribe_window(tone)
        self.encoders.language(["warming up"])
        self.encoders.faces([np.full((64, 64, 3), 128, np.uint8)])
        self.faces.crops(np.full((240, 320, 3), 128, np.uint8), max_faces=1)
        log_mel_features(tone)
        log.info("extractor warmed up in %.2f s", time.perf_counter() - t)

    def frame_feature(self, rgb: np.ndarray) -> FrameFeature:
        """Face + encoder for one frame (the largest face), for per-frame streaming extraction."""
        return self.frame_features([rgb])[0]

    def frame_features(self, frames: Sequence[np.ndarray]) -> list[FrameFeature]:
        """`frame_feature` for several frames, with ONE face-encoder pass over all their faces
        (batched: cheaper per face). Each frame's `encoder_ms` is its share of that pass."""
        faces_ms: list[float] = []
        crops: list[np.ndarray] = []
        has_face: list[bool] = []
        for rgb in frames:
            t = time.perf_counter()
            found = self.faces.crops(rgb, max_faces=1)
            faces_ms.append(_ms(t))
            has_face.append(bool(found))
            crops.extend(found[:1])
        if not crops:
            return [FrameFeature(None, ms, 0.0) for ms in faces_ms]
        t = time.perf_counter()
        embeddings = iter(np.asarray(self.encoders.faces(crops), dtype=np.float32))
        share = round(_ms(t) / len(crops), 3)
        return [
            FrameFeature(next(embeddings), ms, share) if face else FrameFeature(None, ms, 0.0)
            for ms, face in zip(faces_ms, has_face, strict=True)
        ]

    def extract(
        self,
        raw: RawWindow,
        session_id: str,
        frame_features: Mapping[float, FrameFeature] | None = None,
        compute_missing: bool = True,
        asr: WindowTranscriber | None = None,
    ) -> FeatureWindow:
        """Features of one window. `frame_features` (by frame media time) are reused instead of
        running face detection + encoding again on frames already processed; with
        `compute_missing=False` frames without one are left out (streaming under load sheds them
        instead of queueing). `asr` replaces the extractor's own Transcriber for this call
        (streaming ingest batches the sessions' windows: BatchedTranscriber)."""
        stage_ms: dict[str, float] = {}
        known = frame_features or {}

        t = time.perf_counter()
        words: list[Word] = []
        transcriber = asr or self.asr
        if transcriber is not None:
            offset = raw.media_start if raw.audio_start is None else raw.audio_start
            result = transcriber.transcribe_window(raw.audio, offset)
            transcript, speech_present = result.text, result.speech_present
            words = list(result.words)
        else:
            transcript = ""
            speech_present = speech_ratio(raw.audio) >= self.min_speech_ratio
        stage_ms["asr"] = _ms(t)

        t = time.perf_counter()
        language = None
        if transcript:
            language = self.encoders.language([transcript])[0].astype(np.float16)
        stage_ms["text_encoder"] = _ms(t)

        selected = select_frames(raw.frames, self.max_faces)
        missing = [rgb for ts, rgb in selected if ts not in known] if compute_missing else []
        computed = iter(self.frame_features(missing) if missing else [])
        rows: list[np.ndarray | None] = []  # per selected frame, in time order
        faces_ms = encoder_ms = 0.0
        for ts, _ in selected:
            if ts in known:
                rows.append(known[ts].embedding)
            elif compute_missing:
                f = next(computed)
                rows.append(f.embedding)
                faces_ms += f.faces_ms
                encoder_ms += f.encoder_ms
        stage_ms["faces"] = round(faces_ms, 3)
        present = [r for r in rows if r is not None]
        visual = np.stack(present).astype(np.float16) if present else None
        stage_ms["face_encoder"] = round(encoder_ms, 3)
        ahead = [known[ts] for ts, _ in selected if ts in known]
        if ahead:
            # Per-frame work done before the window ended (not on the latency path).
            stage_ms["frames_ahead"] = round(sum(f.faces_ms + f.encoder_ms for f in ahead), 3)

        t = time.perf_counter()
        mel = log_mel_features(raw.audio)
        audio = None if mel is None else mel.astype(np.float16)
        stage_ms["audio"] = _ms(t)

        return FeatureWindow(
            session_id=session_id,
            seq=raw.seq,
            media_start=raw.media_start,
            media_end=raw.media_end,
            wall_start=raw.wall_start,
            wall_end=raw.wall_end,
            transcript=transcript,
            language=language,
            visual=visual,
            audio=audio,
            face_present=visual is not None,
            speech_present=speech_present,
            clip_model=self.encoders.name,
            clip_pretrained=self.encoders.pretrained_source,
            features_ready_wall=time.time(),
            stage_ms=stage_ms,
            feature_space=self.encoders.space,
            words=words,
        )


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1e3, 3)

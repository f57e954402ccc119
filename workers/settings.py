"""The settings sections of the pipeline stages: [asr], [ingest], [redis], [inference].

Defaults are the ones documented in the repository's `config.toml`; `workers/app/settings.py`
reads the file and the environment into them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from merclip.settings import MerClipSettings
from merclip.typed_config import check

__all__ = [
    "AsrSettings",
    "InferenceSettings",
    "IngestSettings",
    "RedisSettings",
    "WorkerSettings",
]


@dataclass(frozen=True)
class AsrSettings:
    model: str = "bundled"
    compute_type: str = "int8"
    language: str = "en"
    beam_size: int = 1
    min_speech_ratio: float = 0.1
    context_seconds: float = 10.0
    """Whisper encoder context; < 30 pads windows only this far (faster), 30 = faster-whisper."""
    cpu_threads: int = 1
    """CTranslate2 threads of the windows' Whisper model (0 = its default); the partials' model
    has one thread of its own."""
    partial_seconds: float = 0.5
    """How often each talking session's words are transcribed between windows (partial
    transcripts, workers/partials.py); 0 turns them off."""
    partial_max_share: float = 0.35
    """At most this share of one core goes to partial transcripts (with many talkers each
    session's come less often)."""

    def validate(self) -> None:
        check(self.beam_size >= 1, "asr.beam_size", "must be >= 1")
        check(self.cpu_threads >= 0, "asr.cpu_threads", "must be >= 0 (0: CTranslate2's default)")
        check(1.0 <= self.context_seconds <= 30.0, "asr.context_seconds", "must be in [1, 30]")
        check(0.0 <= self.min_speech_ratio <= 1.0, "asr.min_speech_ratio", "must be in [0, 1]")
        check(
            self.partial_seconds == 0 or self.partial_seconds >= 0.1,
            "asr.partial_seconds",
            "must be 0 (off) or >= 0.1",
        )
        check(0 < self.partial_max_share <= 1, "asr.partial_max_share", "must be in (0, 1]")


@dataclass(frozen=True)
class IngestSettings:
    window_seconds: float = 4.0
    hop_seconds: float = 2.0
    video_fps: float = 1.0
    max_faces_per_window: int = 4
    max_pending_windows: int = 2
    extract_threads: int = 4
    max_unsent_windows: int = 64
    """Extracted windows held while Redis is unreachable; beyond it the oldest are dropped."""

    def validate(self) -> None:
        check(self.window_seconds > 0, "ingest.window_seconds", "must be > 0")
        check(
            0 < self.hop_seconds <= self.window_seconds,
            "ingest.hop_seconds",
            "must be > 0 and <= window_seconds",
        )
        check(self.video_fps > 0, "ingest.video_fps", "must be > 0")
        check(self.max_faces_per_window >= 1, "ingest.max_faces_per_window", "must be >= 1")
        check(self.max_pending_windows >= 1, "ingest.max_pending_windows", "must be >= 1")
        check(self.extract_threads >= 1, "ingest.extract_threads", "must be >= 1")
        check(self.max_unsent_windows >= 1, "ingest.max_unsent_windows", "must be >= 1")


@dataclass(frozen=True)
class RedisSettings:
    url: str = ""
    """Empty: `merclip serve` starts an embedded Redis server."""
    prefix: str = "merclip"
    windows_maxlen: int = 10000
    events_maxlen: int = 1000
    events_ttl_s: int = 86400
    """A session's event history expires this long after its latest event (0: never), so
    Redis memory is bounded by the traffic of one TTL, however many sessions come and go."""
    cluster: Literal["auto", "on", "off"] = "auto"
    """Redis Cluster client: "auto" asks the server at connect (INFO cluster: cluster_enabled),
    "on" / "off" force it (off: a cluster's MOVED replies are an error that says so)."""
    partitions: int = 1
    """Work-queue streams, each in its own hash slot (`P:windows:{p<i>}`); a session's windows
    all go to one. On a cluster, use the number of masters (or a multiple). Producers and
    workers must agree on it."""

    def validate(self) -> None:
        check(1 <= self.partitions <= 1024, "redis.partitions", "must be in [1, 1024]")
        check(self.windows_maxlen >= 10, "redis.windows_maxlen", "must be >= 10")
        check(self.events_maxlen >= 1, "redis.events_maxlen", "must be >= 1")
        check(self.events_ttl_s >= 0, "redis.events_ttl_s", "must be >= 0 (0: never expire)")
        check(bool(self.prefix) and ":" not in self.prefix, "redis.prefix", "non-empty, no ':'")


@dataclass(frozen=True)
class InferenceSettings:
    batch_size: int = 16
    block_ms: int = 200
    consumer_group: str = "infer"
    claim_idle_ms: int = 5000
    max_deliveries: int = 3
    deadline_seconds: float = 10.0
    smoothing_alpha: float = 0.5
    device: str = "auto"

    def validate(self) -> None:
        check(self.batch_size >= 1, "inference.batch_size", "must be >= 1")
        check(self.max_deliveries >= 1, "inference.max_deliveries", "must be >= 1")
        check(0.0 < self.smoothing_alpha <= 1.0, "inference.smoothing_alpha", "in (0, 1]")
        check(self.device in ("auto", "cpu", "cuda"), "inference.device", "auto|cpu|cuda")


class WorkerSettings(MerClipSettings, Protocol):
    """What the stages read (workers.app.settings.Settings has it all)."""

    @property
    def asr(self) -> AsrSettings: ...
    @property
    def ingest(self) -> IngestSettings: ...
    @property
    def redis(self) -> RedisSettings: ...
    @property
    def inference(self) -> InferenceSettings: ...

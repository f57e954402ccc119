"""Service and training settings: `config.toml` read into frozen dataclasses.

Every field has the default documented in the repository's `config.toml`. Unknown keys and values
of the wrong type are errors that name the key. Environment variables `MERCLIP_<SECTION>_<KEY>`
override the file; command-line flags override both (via `Settings.replace`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from merclip.errors import ConfigError
from merclip.labels import EMOTION_THRESHOLD

__all__ = [
    "AsrSettings",
    "AuthSettings",
    "ClipSettings",
    "FeaturesSettings",
    "InferenceSettings",
    "IngestSettings",
    "ModelSettings",
    "RedisSettings",
    "ServerSettings",
    "Settings",
    "TrainSettings",
    "load_settings",
]


@dataclass(frozen=True)
class ModelSettings:
    name: str = "merclip-minilm-live"
    """Named MER-CLIP architecture in merclip/model_configs/ (zero-shot and `train` default)."""
    checkpoint: str = "bundled"
    """Trained checkpoint: "bundled" = the one shipped in merclip/checkpoints/, a path, or empty
    for CLIP zero-shot (features.space "live" only)."""
    emotion_threshold: float = EMOTION_THRESHOLD
    """Probability at or above which the service reports an emotion; it wins over the served
    model's own `MerClipConfig.emotion_threshold` (the Predictor applies it to the model) and
    defaults to the paper's 0.6 (merclip/labels.py), the default of that field too."""

    def validate(self) -> None:
        _check(0.0 < self.emotion_threshold < 1.0, "model.emotion_threshold", "must be in (0, 1)")


@dataclass(frozen=True)
class FeaturesSettings:
    space: Literal["live-pretrained", "live"] = "live-pretrained"
    """What ingest computes per window and the model reads: "live-pretrained" = MiniLM token
    states, FER2013 expression features of YuNet faces, log-mel audio; "live" = CLIP text and
    image embeddings of clip.model (needs CLIP weights to mean anything)."""


@dataclass(frozen=True)
class ClipSettings:
    model: str = "ViT-B-32"
    pretrained: str = ""
    """open_clip pretrained tag or local checkpoint file; empty = random init (warned)."""


@dataclass(frozen=True)
class AsrSettings:
    model: str = "bundled"
    compute_type: str = "int8"
    language: str = "en"
    beam_size: int = 1
    min_speech_ratio: float = 0.1
    context_seconds: float = 10.0
    """Whisper encoder context; < 30 pads windows only this far (faster), 30 = faster-whisper."""

    def validate(self) -> None:
        _check(self.beam_size >= 1, "asr.beam_size", "must be >= 1")
        _check(1.0 <= self.context_seconds <= 30.0, "asr.context_seconds", "must be in [1, 30]")
        _check(0.0 <= self.min_speech_ratio <= 1.0, "asr.min_speech_ratio", "must be in [0, 1]")


@dataclass(frozen=True)
class IngestSettings:
    window_seconds: float = 4.0
    hop_seconds: float = 2.0
    video_fps: float = 1.0
    max_faces_per_window: int = 4
    max_pending_windows: int = 2
    extract_threads: int = 2
    max_unsent_windows: int = 64
    """Extracted windows held while Redis is unreachable; beyond it the oldest are dropped."""

    def validate(self) -> None:
        _check(self.window_seconds > 0, "ingest.window_seconds", "must be > 0")
        _check(
            0 < self.hop_seconds <= self.window_seconds,
            "ingest.hop_seconds",
            "must be > 0 and <= window_seconds",
        )
        _check(self.video_fps > 0, "ingest.video_fps", "must be > 0")
        _check(self.max_faces_per_window >= 1, "ingest.max_faces_per_window", "must be >= 1")
        _check(self.max_pending_windows >= 1, "ingest.max_pending_windows", "must be >= 1")
        _check(self.extract_threads >= 1, "ingest.extract_threads", "must be >= 1")
        _check(self.max_unsent_windows >= 1, "ingest.max_unsent_windows", "must be >= 1")


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    ice_servers: tuple[str, ...] = ()
    max_sessions: int = 8
    max_body_bytes: int = 262144
    inactivity_timeout_seconds: float = 20.0
    connect_timeout_seconds: float = 10.0
    """A session whose peer has not reached ICE/DTLS "connected" this long after its offer is
    closed (review L1)."""
    read_timeout_seconds: float = 10.0
    """Request headers, and a POST body, must arrive within this (slowloris, review L4); also
    how long an idle keep-alive connection stays open."""
    max_event_streams: int = 64
    """Server-sent event streams (/events/*, /dashboard/events) open at once; more get 503."""

    def validate(self) -> None:
        _check(0 <= self.port <= 65535, "server.port", "must be in 0..65535")
        _check(self.max_sessions >= 1, "server.max_sessions", "must be >= 1")
        _check(self.max_event_streams >= 1, "server.max_event_streams", "must be >= 1")
        _check(self.connect_timeout_seconds > 0, "server.connect_timeout_seconds", "must be > 0")
        _check(self.read_timeout_seconds > 0, "server.read_timeout_seconds", "must be > 0")
        _check(self.max_body_bytes >= 1024, "server.max_body_bytes", "must be >= 1024")


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

    def validate(self) -> None:
        _check(self.windows_maxlen >= 10, "redis.windows_maxlen", "must be >= 10")
        _check(self.events_maxlen >= 1, "redis.events_maxlen", "must be >= 1")
        _check(self.events_ttl_s >= 0, "redis.events_ttl_s", "must be >= 0 (0: never expire)")
        _check(bool(self.prefix) and ":" not in self.prefix, "redis.prefix", "non-empty, no ':'")


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
        _check(self.batch_size >= 1, "inference.batch_size", "must be >= 1")
        _check(self.max_deliveries >= 1, "inference.max_deliveries", "must be >= 1")
        _check(0.0 < self.smoothing_alpha <= 1.0, "inference.smoothing_alpha", "in (0, 1]")
        _check(self.device in ("auto", "cpu", "cuda"), "inference.device", "auto|cpu|cuda")


@dataclass(frozen=True)
class AuthSettings:
    enabled: Literal["auto", "on", "off"] = "auto"
    """auto: on whenever server.host is not a loopback address."""
    secret: str = ""
    """HMAC key for access tokens (>= 16 bytes); set it via MERCLIP_AUTH_SECRET, not the file."""
    token_ttl_s: float = 3600.0
    """Default lifetime of tokens minted with `python -m stream.auth issue`."""

    def validate(self) -> None:
        _check(self.token_ttl_s > 0, "auth.token_ttl_s", "must be > 0")


@dataclass(frozen=True)
class TrainSettings:
    task: Literal["emotion", "sentiment"] = "emotion"
    query_word: str = ""
    epochs: int = 20
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.01
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    out_dir: str = "runs"

    def validate(self) -> None:
        _check(self.epochs >= 1, "train.epochs", "must be >= 1")
        _check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        _check(self.lr > 0, "train.lr", "must be > 0")
        _check(self.device in ("auto", "cpu", "cuda"), "train.device", "auto|cpu|cuda")


@dataclass(frozen=True)
class Settings:
    model: ModelSettings = field(default_factory=ModelSettings)
    features: FeaturesSettings = field(default_factory=FeaturesSettings)
    clip: ClipSettings = field(default_factory=ClipSettings)
    asr: AsrSettings = field(default_factory=AsrSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    inference: InferenceSettings = field(default_factory=InferenceSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    train: TrainSettings = field(default_factory=TrainSettings)

    def replace(self, section: str, **values: Any) -> Settings:
        """A copy with some keys of one section changed (validated like the file)."""
        current = getattr(self, section, None)
        if current is None:
            raise ConfigError(f"unknown config section [{section}]")
        merged = {**dataclasses.asdict(current), **values}
        return dataclasses.replace(self, **{section: _build(section, type(current), merged)})


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from `path` (default: no file = all defaults) plus environment overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    env = os.environ if env is None else env
    sections = {f.name: f.type for f in dataclasses.fields(Settings)}
    hints = get_type_hints(Settings)
    for name in raw:
        if name not in sections:
            raise ConfigError(f"unknown config section [{name}] (known: {', '.join(sections)})")
    built: dict[str, Any] = {}
    for name in sections:
        cls = hints[name]
        values = dict(raw.get(name, {}))
        if not isinstance(raw.get(name, {}), dict):
            raise ConfigError(f"[{name}] must be a table")
        for f in dataclasses.fields(cls):
            env_key = f"MERCLIP_{name.upper()}_{f.name.upper()}"
            if env_key in env:
                values[f.name] = _parse_env(env[env_key], get_type_hints(cls)[f.name], env_key)
        built[name] = _build(name, cls, values)
    return Settings(**built)


def _build(section: str, cls: type, values: dict[str, Any]) -> Any:
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            raise ConfigError(
                f"unknown config key {section}.{key} (known: {', '.join(sorted(known))})"
            )
    coerced = {k: _coerce(v, hints[k], f"{section}.{k}") for k, v in values.items()}
    obj = cls(**coerced)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate()
    return obj


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = get_origin(hint)
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{key} must be one of {allowed}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
            raise ConfigError(f"{key} must be a list of strings, got {value!r}")
        return tuple(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    return value


def _parse_env(text: str, hint: Any, key: str) -> Any:
    if hint is str or get_origin(hint) is Literal:
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{key}: cannot parse {text!r}: {exc}") from exc


def _check(ok: bool, key: str, what: str) -> None:
    if not ok:
        raise ConfigError(f"{key} {what}")

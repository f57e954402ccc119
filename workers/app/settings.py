"""Every settings section in one frozen `Settings`: `config.toml` plus the environment.

Every field has the default documented in the repository's `config.toml`. Unknown keys and values
of the wrong type are errors that name the key. Environment variables `MERCLIP_<SECTION>_<KEY>`
override the file; command-line flags override both (via `Settings.replace`). Each section is
defined by the layer that reads it: merclip/settings.py, stream/settings.py, workers/settings.py.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from merclip.errors import ConfigError
from merclip.settings import ClipSettings, FeaturesSettings, ModelSettings, TrainSettings
from merclip.typed_config import coerce, parse_env
from stream.settings import AuthSettings, ServerSettings
from workers.settings import AsrSettings, InferenceSettings, IngestSettings, RedisSettings

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
                values[f.name] = parse_env(env[env_key], get_type_hints(cls)[f.name], env_key)
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
    coerced = {k: coerce(v, hints[k], f"{section}.{k}") for k, v in values.items()}
    obj = cls(**coerced)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate()
    return obj

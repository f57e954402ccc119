"""The error hierarchy of MER-CLIP Live. Each message says what failed and what to do."""

from __future__ import annotations

__all__ = [
    "CheckpointMismatchError",
    "ConfigError",
    "DatasetError",
    "MerClipError",
    "SchemaError",
]


class MerClipError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(MerClipError, ValueError):
    """A setting is unknown or has a bad value; the message names the key."""


class CheckpointMismatchError(MerClipError):
    """A checkpoint does not fit the model config or feature space it is loaded into."""


class DatasetError(MerClipError):
    """A dataset file is missing or not in the expected layout."""


class SchemaError(MerClipError, ValueError):
    """A message on Redis cannot be decoded into its schema (wrong version, type or fields)."""

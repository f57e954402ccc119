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

    exit_code = 1
    """What `merclip` exits with: 1 = a failure at run time (an unreachable server, a refused
    session: retrying may help), 2 = the command line or configuration must be fixed first."""


class ConfigError(MerClipError, ValueError):
    """A setting is unknown or has a bad value; the message names the key."""

    exit_code = 2


class CheckpointMismatchError(MerClipError):
    """A checkpoint does not fit the model config or feature space it is loaded into."""

    exit_code = 2


class DatasetError(MerClipError):
    """A dataset file is missing or not in the expected layout."""

    exit_code = 2


class SchemaError(MerClipError, ValueError):
    """A message on Redis cannot be decoded into its schema (wrong version, type or fields)."""

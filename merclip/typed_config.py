"""Typed values from TOML, JSON and environment strings: the one rule set behind model configs
(`merclip/config.py`) and service settings (`merclip/settings.py`, `stream/settings.py`,
`workers/settings.py`, composed in `workers/app/settings.py`).

Each value is checked against its dataclass field's type hint, so a config file's mistake names
the key ("ingest.hop_seconds must be a number, got 'two'") instead of surfacing later as a
TypeError deep inside a stage. bool is never accepted as an int (TOML `true` is not 1).
"""

from __future__ import annotations

import json
from typing import Any, Literal, get_args, get_origin

from merclip.errors import ConfigError

__all__ = ["check", "coerce", "parse_env"]


def coerce(value: Any, hint: Any, key: str) -> Any:
    """`value` as the type `hint` names, or ConfigError("KEY must be ..., got VALUE")."""

    def bad(what: str) -> ConfigError:
        return ConfigError(f"{key} must be {what}, got {value!r}")

    if get_origin(hint) is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{key} must be one of {allowed}, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
            raise bad("a list of strings")
        return tuple(value)
    if hint == dict[str, int]:
        if not isinstance(value, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value.values()
        ):
            raise bad("a table of integers")
        return dict(value)
    return value


def parse_env(text: str, hint: Any, key: str) -> Any:
    """An environment variable's text: taken as is for strings, else parsed as JSON."""
    if hint is str or get_origin(hint) is Literal:
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{key}: cannot parse {text!r}: {exc}") from exc


def check(ok: bool, key: str, what: str) -> None:
    """A `validate()` rule: ConfigError("KEY WHAT") unless `ok`."""
    if not ok:
        raise ConfigError(f"{key} {what}")

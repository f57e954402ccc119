"""config.toml is the documented defaults; bad keys and values are errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from merclip.errors import ConfigError
from workers.app.settings import Settings, load_settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def test_config_toml_documents_exactly_the_defaults() -> None:
    assert load_settings(ROOT / "config.toml", env={}) == Settings()


def test_every_setting_appears_in_config_toml() -> None:
    import dataclasses
    import tomllib

    raw = tomllib.loads((ROOT / "config.toml").read_text())
    for section in dataclasses.fields(Settings):
        keys = {f.name for f in dataclasses.fields(getattr(Settings(), section.name))}
        assert keys == set(raw[section.name]), section.name


def test_unknown_key_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[redis]\nurll = 'redis://x'\n")
    with pytest.raises(ConfigError, match=r"redis\.urll"):
        load_settings(cfg, env={})


def test_unknown_section_is_an_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[redsi]\nurl = ''\n")
    with pytest.raises(ConfigError, match="redsi"):
        load_settings(cfg, env={})


@pytest.mark.parametrize(
    "text, key",
    [
        ("[server]\nport = 'eighty'\n", "server.port"),
        ("[ingest]\nhop_seconds = 9.0\n", "ingest.hop_seconds"),
        ("[train]\ntask = 'regression'\n", "train.task"),
        ("[model]\nemotion_threshold = 1.5\n", "model.emotion_threshold"),
        ("[server]\nice_servers = 'stun:x'\n", "server.ice_servers"),
    ],
)
def test_bad_value_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(cfg, env={})


def test_environment_overrides_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[redis]\nurl = 'redis://file:6379'\n[server]\nport = 1\n")
    s = load_settings(
        cfg, env={"MERCLIP_REDIS_URL": "redis://env:6379", "MERCLIP_SERVER_PORT": "9"}
    )
    assert s.redis.url == "redis://env:6379"
    assert s.server.port == 9


def test_replace_validates() -> None:
    s = Settings().replace("inference", batch_size=4)
    assert s.inference.batch_size == 4
    with pytest.raises(ConfigError, match="inference.batch_size"):
        Settings().replace("inference", batch_size=0)

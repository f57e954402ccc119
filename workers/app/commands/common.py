"""What several commands share: the Redis URL a command on a shared deployment needs."""

from __future__ import annotations

import argparse

from merclip.errors import ConfigError
from workers.app.settings import Settings

__all__ = ["shared_redis_url"]


def shared_redis_url(args: argparse.Namespace, settings: Settings, missing: str) -> str:
    """`--redis-url`, else redis.url; ConfigError(`missing`, which says where to find it)."""
    url: str = getattr(args, "redis_url", None) or settings.redis.url
    if not url:
        raise ConfigError(missing)
    return url

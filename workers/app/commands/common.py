"""What several commands share: the Redis URL a command on a shared deployment needs."""

from __future__ import annotations

import argparse

from merclip.errors import ConfigError
from workers.app.settings import Settings

__all__ = ["shared_redis_url"]


NO_REDIS_URL: dict[str, str] = {
    "dashboard": (
        "merclip dashboard needs the Redis URL of the deployment: pass --redis-url "
        "(merclip serve logs the URL of its embedded Redis, and serves /dashboard itself) "
        "or set redis.url"
    ),
    "subscribe": (
        "merclip subscribe needs the Redis URL of the running service: pass --redis-url "
        "(merclip serve logs the file that holds its embedded Redis's URL: --redis-url "
        '"$(cat FILE)"), or set redis.url'
    ),
    "infer": (
        "merclip infer needs a shared Redis: set redis.url (or MERCLIP_REDIS_URL) or pass "
        "--redis-url; `merclip serve` runs inference on its embedded Redis by itself"
    ),
}
"""What each command says when it has no Redis URL: where the user finds one."""


def shared_redis_url(args: argparse.Namespace, settings: Settings, command: str) -> str:
    """`--redis-url`, else redis.url; a ConfigError that says where to find one."""
    url: str = getattr(args, "redis_url", None) or settings.redis.url
    if not url:
        raise ConfigError(NO_REDIS_URL[command])
    return url

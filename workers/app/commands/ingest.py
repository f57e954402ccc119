"""`merclip ingest`: the WebRTC server and feature extraction only, publishing to a shared Redis
where `merclip infer` workers consume the windows."""

from __future__ import annotations

import argparse

from merclip.errors import ConfigError
from workers.app.commands.serve import add_service_arguments, apply_service_arguments, run_service
from workers.app.settings import Settings

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_service_arguments(parser)


def run(args: argparse.Namespace, settings: Settings) -> int:
    settings = apply_service_arguments(settings, args)
    if not settings.redis.url:
        raise ConfigError(
            "redis.url: `merclip ingest` needs a shared Redis (set redis.url, MERCLIP_REDIS_URL "
            "or --redis-url); use `merclip serve` for a single machine with embedded Redis"
        )
    return run_service(settings, ("ingest",))

"""`merclip subscribe`: print events as JSON lines (EmotionEvent.to_json_dict()), one per line.

merclip subscribe --redis-url redis://127.0.0.1:6379 --session abc --replay 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys

from workers.app.commands.common import shared_redis_url
from workers.app.settings import RedisSettings, Settings
from workers.subscriber import subscribe

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--session", default=None, help="one session id (default: all sessions)")
    parser.add_argument(
        "--replay", type=int, default=0, help="first print the last N stored events"
    )
    parser.add_argument("--redis-url", default=None, help="overrides redis.url")
    parser.add_argument(
        "--count", type=int, default=0, help="exit after N events (default: run until Ctrl-C)"
    )


async def _print_events(url: str, args: argparse.Namespace, redis: RedisSettings) -> int:
    printed = 0
    async with contextlib.aclosing(
        subscribe(
            url,
            session=args.session,
            replay=max(0, args.replay),
            prefix=redis.prefix,
            cluster=redis.cluster,
        )
    ) as events:
        async for event in events:
            sys.stdout.write(json.dumps(event.to_json_dict()) + "\n")
            sys.stdout.flush()
            printed += 1
            if args.count and printed >= args.count:
                break
    return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    url = shared_redis_url(args, settings, "subscribe")
    try:
        return asyncio.run(_print_events(url, args, settings.redis))
    except BrokenPipeError:  # e.g. `merclip subscribe | head`
        with contextlib.suppress(OSError):
            sys.stdout.close()
        return 0

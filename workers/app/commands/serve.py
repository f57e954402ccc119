"""`merclip serve`: every role of one machine (WebRTC ingest + inference), embedded Redis by
default. Open the printed address in a browser to join.

The path of a start: `run` applies the flags to the settings, `run_service` runs a
`workers.app.service.LiveService` (Redis, models, ingest, inference, HTTP) until a signal.
`merclip ingest` (commands/ingest.py) shares the flags and the runner with one role only.

Stopping: SIGINT/SIGTERM stop promptly (live sessions are closed, windows in flight finished);
SIGUSR2, or `--recycle-after-sessions N`, drains: no new session (503 `draining`, /readyz 503),
the live ones go on to their end, their last windows are sent, then the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os

from workers.app.service import LiveService, Role
from workers.app.settings import Settings
from workers.app.signals import drain_on_sigusr2, dump_stacks_on_sigusr1, stop_on_signals

__all__ = [
    "add_arguments",
    "add_service_arguments",
    "apply_service_arguments",
    "run",
    "run_service",
]

log = logging.getLogger(__name__)


def add_service_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (server.host)")
    parser.add_argument("--port", type=int, help="HTTP port, 0 = any free port (server.port)")
    parser.add_argument("--redis-url", help="shared Redis URL (redis.url); default: embedded")
    parser.add_argument("--model", help="named MER-CLIP config (model.name)")
    parser.add_argument("--checkpoint", help="trained MER-CLIP checkpoint (model.checkpoint)")
    parser.add_argument("--clip-model", help="open_clip model name (clip.model)")
    parser.add_argument("--clip-pretrained", help="open_clip pretrained tag or file")
    parser.add_argument("--asr-model", help="faster-whisper size, directory or 'bundled'")
    parser.add_argument(
        "--max-sessions",
        type=int,
        help="sessions streaming at once in this process (server.max_sessions)",
    )
    parser.add_argument(
        "--recycle-after-sessions",
        type=int,
        metavar="N",
        help="drain and exit 0 after N new sessions (server.recycle_after_sessions)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        metavar="SECONDS",
        help="close sessions still live this long into a drain (server.drain_timeout_seconds)",
    )


def apply_service_arguments(settings: Settings, args: argparse.Namespace) -> Settings:
    """Flags override config file and environment."""
    mapping = {
        ("server", "host"): args.host,
        ("server", "port"): args.port,
        ("redis", "url"): args.redis_url,
        ("model", "name"): args.model,
        ("model", "checkpoint"): args.checkpoint,
        ("clip", "model"): args.clip_model,
        ("clip", "pretrained"): args.clip_pretrained,
        ("asr", "model"): args.asr_model,
        ("server", "max_sessions"): args.max_sessions,
        ("server", "recycle_after_sessions"): args.recycle_after_sessions,
        ("server", "drain_timeout_seconds"): args.drain_timeout,
    }
    for (section, key), value in mapping.items():
        if value is not None:
            settings = settings.replace(section, **{key: value})
    return settings


# A graceful stop finishes the windows in flight; past this, or on a second signal, it gives up.
SHUTDOWN_TIMEOUT_SECONDS = 45.0


async def _serve_until_signal(settings: Settings, roles: tuple[Role, ...]) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop, second_signal_exits=True)
    service = LiveService(settings, roles)
    async with contextlib.AsyncExitStack() as stack:
        await service.start()
        stack.push_async_callback(_close_within, service, SHUTDOWN_TIMEOUT_SECONDS)
        drain_on_sigusr2(service.drain)
        # One line on stdout that scripts and tests can wait for.
        print(f"merclip: serving at {service.url}", flush=True)
        stopped = asyncio.create_task(stop.wait(), name="stop-signal")
        drained = asyncio.create_task(service.drain_when_asked(), name="drain")
        done, _ = await asyncio.wait({stopped, drained}, return_when=asyncio.FIRST_COMPLETED)
        for task in (stopped, drained):
            task.cancel()
        if drained in done:
            drained.result()
            log.info("drained; shutting down")
        else:
            log.info("shutting down (signal again to exit at once)")
    log.info("stopped")


async def _close_within(service: LiveService, timeout: float) -> None:
    try:
        await asyncio.wait_for(service.aclose(), timeout)
    except TimeoutError:
        log.error("shutdown took over %.0f s; exiting anyway", timeout)
        os._exit(1)


def run_service(settings: Settings, roles: tuple[Role, ...]) -> int:
    dump_stacks_on_sigusr1()
    asyncio.run(_serve_until_signal(settings, roles))
    log.info("event loop closed; exiting")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_service_arguments(parser)


def run(args: argparse.Namespace, settings: Settings) -> int:
    return run_service(apply_service_arguments(settings, args), ("ingest", "infer"))

"""Flags shared by `merclip serve` and `merclip ingest`, and the signal-aware runner."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import logging
import os
import signal

from merclip.settings import Settings
from workers.service import LiveService, Role

__all__ = ["add_service_arguments", "apply_service_arguments", "run_service"]

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
    }
    for (section, key), value in mapping.items():
        if value is not None:
            settings = settings.replace(section, **{key: value})
    return settings


# A graceful stop finishes the windows in flight; past this, or on a second signal, it gives up.
SHUTDOWN_TIMEOUT_SECONDS = 45.0


async def _serve_until_signal(settings: Settings, roles: tuple[Role, ...]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            log.warning("second signal: exiting now without finishing windows in flight")
            os._exit(130)  # children (embedded Redis) die with us (PR_SET_PDEATHSIG)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    service = LiveService(settings, roles)
    async with contextlib.AsyncExitStack() as stack:
        await service.start()
        stack.push_async_callback(_close_within, service, SHUTDOWN_TIMEOUT_SECONDS)
        # One line on stdout that scripts and tests can wait for.
        print(f"merclip: serving at {service.url}", flush=True)
        await stop.wait()
        log.info("shutting down (signal again to exit at once)")
    log.info("stopped")


async def _close_within(service: LiveService, timeout: float) -> None:
    try:
        await asyncio.wait_for(service.aclose(), timeout)
    except TimeoutError:
        log.error("shutdown took over %.0f s; exiting anyway", timeout)
        os._exit(1)


def run_service(settings: Settings, roles: tuple[Role, ...]) -> int:
    # `kill -USR1 PID` prints every thread's stack to stderr: what a stuck service waits on.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    asyncio.run(_serve_until_signal(settings, roles))
    log.info("event loop closed; exiting")
    return 0

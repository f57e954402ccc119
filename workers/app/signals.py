"""SIGINT/SIGTERM to a graceful stop, for every long-running command (serve, ingest, infer,
dashboard), SIGUSR1 to a stack dump, and SIGUSR2 to a drain (serve, ingest).

The first signal sets an `asyncio.Event` the command waits on, so it finishes the windows in
flight and closes its parts in order. With `second_signal_exits`, a second signal exits at once
(`serve` and `ingest`, whose graceful stop can take tens of seconds); the embedded Redis dies
with the process (PR_SET_PDEATHSIG).

SIGTERM stays a prompt stop (live sessions are closed), as process managers expect; a drain,
which may wait for sessions minutes long, has a signal of its own, so nobody gets one by surprise.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import os
import signal
from collections.abc import Callable

__all__ = ["drain_on_sigusr2", "dump_stacks_on_sigusr1", "stop_on_signals"]

log = logging.getLogger(__name__)


def stop_on_signals(stop: asyncio.Event, *, second_signal_exits: bool = False) -> None:
    """Set `stop` on SIGINT or SIGTERM (call from the running loop's thread)."""
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if second_signal_exits and stop.is_set():
            log.warning("second signal: exiting now without finishing windows in flight")
            os._exit(130)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not the main thread (a test running the command in a thread): no signal handling.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal)


def dump_stacks_on_sigusr1() -> None:
    """`kill -USR1 PID` prints every thread's stack to stderr: what a stuck service waits on."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)


def drain_on_sigusr2(drain: Callable[[], None]) -> None:
    """`kill -USR2 PID` calls `drain()` (call from the running loop's thread)."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGUSR2, drain)

"""`merclip infer`: one inference worker (workers/inference.py) against a shared Redis, until
SIGINT/SIGTERM; optionally with its own Prometheus endpoint (`--metrics-port`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from workers import metrics
from workers.app.commands.common import shared_redis_url
from workers.app.settings import Settings
from workers.app.signals import stop_on_signals
from workers.bus import Bus, BusError
from workers.inference import InferenceWorker

if TYPE_CHECKING:  # torch: loaded by run_inference, after the arguments are checked
    from merclip.predictor import Predictor

__all__ = ["add_arguments", "run", "run_inference"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", default=None, help="shared Redis (overrides redis.url)")
    parser.add_argument("--consumer", default=None, help="consumer name (default: host-pid-rand)")
    parser.add_argument("--batch-size", type=int, default=None, help="overrides batch_size")
    parser.add_argument(
        "--stats-every", type=float, default=30.0, help="log counters every N seconds (0: never)"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics at http://HOST:PORT/metrics (0: any free port)",
    )
    parser.add_argument(
        "--metrics-host", default="0.0.0.0", help="address for --metrics-port (default 0.0.0.0)"
    )


async def run_inference(
    settings: Settings,
    url: str,
    *,
    predictor: Predictor | None = None,
    consumer: str | None = None,
    stop: asyncio.Event | None = None,
    stats_every_s: float = 30.0,
    metrics_port: int | None = None,
    metrics_host: str = "0.0.0.0",
) -> InferenceWorker:
    """Run one worker against `url` until `stop` is set (or SIGINT/SIGTERM when stop is None).

    Loads the model first (before joining the group), so a worker never takes windows it cannot
    serve yet. Returns the stopped worker (its counters). With `metrics_port`, Prometheus
    metrics (this worker's counters, and the lag gauges refreshed from Redis each second) are
    served at http://metrics_host:metrics_port/metrics.
    """
    if predictor is None:
        from merclip.predictor import Predictor

        loop = asyncio.get_running_loop()
        predictor = await loop.run_in_executor(None, Predictor.from_settings, settings)
    if not predictor.pretrained:
        log.warning(
            "CLIP %s has RANDOM weights (clip.pretrained is empty): every event says "
            "pretrained=false and its emotions are meaningless",
            predictor.clip_model,
        )
    if stop is None:
        stop = asyncio.Event()
        stop_on_signals(stop)
    async with Bus.connect(url, settings.redis) as bus, contextlib.AsyncExitStack() as stack:
        if metrics_port is not None:
            from workers.monitor import Monitor

            metrics.start_metrics_server(metrics_port, metrics_host)
            await stack.enter_async_context(Monitor(bus, settings, count_events=False))
        async with InferenceWorker(settings, bus, predictor, consumer=consumer) as worker:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), stats_every_s or None)
                if not worker.running:
                    raise BusError("the inference worker stopped unexpectedly")
                if stats_every_s:
                    log.info("inference stats %s", worker.stats(), extra=worker.log_extra)
    log.info(
        "inference worker %s stopped: %s", worker.consumer, worker.stats(), extra=worker.log_extra
    )
    return worker


def run(args: argparse.Namespace, settings: Settings) -> int:
    url = shared_redis_url(args, settings, "infer")
    if args.batch_size is not None:
        settings = settings.replace("inference", batch_size=args.batch_size)
    asyncio.run(
        run_inference(
            settings,
            url,
            consumer=args.consumer,
            stats_every_s=args.stats_every,
            metrics_port=args.metrics_port,
            metrics_host=args.metrics_host,
        )
    )
    return 0
